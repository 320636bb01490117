//! [`ClerkSyncBuilder`]: every setting of a [`ClerkSync`], and the wiring that builds it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::response::Response;
use tokio::sync::watch;

use crate::clerk_api::{ClerkApi, RetryPolicy};
use crate::client_addr::ClientAddress;
use crate::config::ClerkConfig;
use crate::core::{Core, RejectionHook};
use crate::error::{AuthError, ConfigError};
use crate::invalidate::InvalidationChannel;
use crate::log_throttle::Throttle;
use crate::machine::verifier::{MachineOptions, MachineVerifier};
use crate::stats::Counters;
use crate::store::UserStore;
use crate::sync::budget::Budget;
use crate::sync::{FailurePolicy, ProfileClaims, ProfileSource, SyncOptions, Syncer};
use crate::token::keys::{KeyOptions, KeyStore};
use crate::token::verify::VerifierOptions;
use crate::token::{AuthorizedPartyPolicy, Verifier};
use crate::token_cache::TokenCache;

use super::ClerkSync;

/// Builder for [`ClerkSync`]. Every setter documents its default.
pub struct ClerkSyncBuilder {
    config: ClerkConfig,
    store: Arc<dyn UserStore>,
    /// `None`: the store's own channel.
    channel: Option<Option<Arc<dyn InvalidationChannel>>>,
    on_rejection: Option<RejectionHook>,
    leeway: Duration,
    azp_policy: AuthorizedPartyPolicy,
    allow_pending_sessions: bool,
    accept_jwt_templates: bool,
    failure_policy: FailurePolicy,
    user_cache_capacity: u64,
    user_cache_ttl: Duration,
    token_cache_capacity: u64,
    sync_timeout: Duration,
    jwks_min_refresh_interval: Duration,
    jwks_max_age: Duration,
    jwks_timeout: Duration,
    profile_claims: ProfileClaims,
    profile_source: ProfileSource,
    api: Option<ClerkApi>,
    api_budget: (u32, u32),
    machine: MachineOptions,
    client_address: ClientAddress,
    default_tier: String,
}

impl fmt::Debug for ClerkSyncBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkSyncBuilder")
            .field("config", &self.config)
            .field("custom_channel", &self.channel.is_some())
            .finish_non_exhaustive()
    }
}

impl ClerkSyncBuilder {
    pub(super) fn new(config: ClerkConfig, store: Arc<dyn UserStore>) -> Self {
        Self {
            config,
            store,
            channel: None,
            on_rejection: None,
            leeway: Duration::from_secs(5),
            azp_policy: AuthorizedPartyPolicy::default(),
            allow_pending_sessions: false,
            accept_jwt_templates: false,
            failure_policy: FailurePolicy::default(),
            user_cache_capacity: 100_000,
            user_cache_ttl: Duration::from_secs(600),
            token_cache_capacity: 100_000,
            sync_timeout: Duration::from_secs(5),
            jwks_min_refresh_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(3600),
            jwks_timeout: Duration::from_secs(5),
            profile_claims: ProfileClaims::default(),
            profile_source: ProfileSource::default(),
            api: None,
            api_budget: (20, 40),
            machine: MachineOptions::default(),
            client_address: ClientAddress::new(),
            default_tier: "free".to_owned(),
        }
    }

    /// How evictions reach the other processes: a channel the handle publishes on after
    /// every write that changes a user, and that its [`background`](ClerkSync::background)
    /// task listens on. Default: the store's own
    /// ([`UserStore::invalidation_channel`]): `LISTEN`/`NOTIFY` for [`crate::PgUserStore`],
    /// none for SQLite and memory.
    pub fn invalidation(mut self, channel: impl InvalidationChannel) -> Self {
        self.channel = Some(Some(Arc::new(channel)));
        self
    }

    /// No invalidation channel, whatever the store offers: for a single process (the user
    /// cache TTL bounds staleness otherwise). Default: the store's own channel.
    pub fn without_invalidation(mut self) -> Self {
        self.channel = Some(None);
        self
    }

    /// Shapes every rejection of the layers (401, 403, 503) instead of the default JSON body
    /// `{"error": "<code>", "message": "..."}`. The hook sees the [`AuthError`] (its
    /// [`code`](AuthError::code) and [`status`](AuthError::status) are the defaults' own); the
    /// crate still adds `WWW-Authenticate` to a 401 and `Retry-After` to a 503 when the
    /// hook's response lacks them. Default: the JSON body.
    ///
    /// ```
    /// # fn doc(builder: clerk_sync::ClerkSyncBuilder) -> clerk_sync::ClerkSyncBuilder {
    /// use axum::response::IntoResponse;
    ///
    /// builder.on_rejection(|error| {
    ///     (error.status(), format!("sign in again ({})", error.code())).into_response()
    /// })
    /// # }
    /// ```
    pub fn on_rejection(
        mut self,
        hook: impl Fn(&AuthError) -> Response + Send + Sync + 'static,
    ) -> Self {
        self.on_rejection = Some(Arc::new(hook));
        self
    }

    /// Clock-skew allowance for `exp`, `nbf` and `iat`. Default: 5 s, as Clerk's SDKs.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How `azp` is checked. Default: [`AuthorizedPartyPolicy::CheckWhenPresent`].
    pub fn authorized_party_policy(mut self, policy: AuthorizedPartyPolicy) -> Self {
        self.azp_policy = policy;
        self
    }

    /// Accept sessions with `sts: pending` (unfinished session tasks). Default: `false`, they
    /// get 401 `session_pending` as Clerk treats them as signed out.
    pub fn allow_pending_sessions(mut self, allow: bool) -> Self {
        self.allow_pending_sessions = allow;
        self
    }

    /// Accept Clerk JWT templates (header `cat: cl_B7d4PD222AAA`) on the session layer.
    /// Default: refused with 401 `invalid_token_category`, as Clerk's `authenticateRequest`
    /// refuses them.
    ///
    /// Templates are minted for third parties (Supabase, Hasura, ...), may live for hours or
    /// years and carry no session id: a template that leaks from a third party would
    /// authenticate as its user for its whole lifetime. Turn this on only for an app that is
    /// itself the audience of a template. Accepted templates pass every other check (issuer,
    /// signature, `azp`, expiry, machine subjects) and are cached no longer than their `exp`.
    pub fn accept_jwt_templates(mut self) -> Self {
        self.accept_jwt_templates = true;
        self
    }

    /// What happens when the store fails. Default: [`FailurePolicy::Closed`] (503).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Most users kept in the synced-user cache. Default: 100,000.
    pub fn user_cache_capacity(mut self, capacity: u64) -> Self {
        self.user_cache_capacity = capacity;
        self
    }

    /// How long a synced user stays cached; bounds how stale a tier can be in a process that
    /// was not told to [`invalidate`](ClerkSync::invalidate). Default: 10 minutes.
    pub fn user_cache_ttl(mut self, ttl: Duration) -> Self {
        self.user_cache_ttl = ttl;
        self
    }

    /// Most sessions (verified token + synced user) the layer keeps; each is answered until its
    /// token's `exp`, and only while its user is still current (not invalidated, evicted or
    /// cleared). A repeat request costs one lookup. `0` turns the cache off: every request
    /// pays one RSA verification and a synced-user lookup. Default: 100,000 (about
    /// 1.4 KB each with Clerk-shaped claims, so at most ~140 MiB; see BENCHMARKS.md). The
    /// token itself is not kept: an entry holds a keyed 128-bit digest of it.
    ///
    /// [`ClerkSync::verifier`] keeps a separate, smaller token cache (at most 10,000) for code
    /// outside the layer.
    pub fn token_cache_capacity(mut self, capacity: u64) -> Self {
        self.token_cache_capacity = capacity;
        self
    }

    /// Deadline of one sync: the upsert, and when the Backend API fills the profile, the call
    /// and the write of its answer (on top of the pool's own acquire timeout). Default: 5 s.
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// At most one JWKS fetch per this interval, however many unknown `kid`s arrive.
    /// Default: 10 s.
    pub fn jwks_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.jwks_min_refresh_interval = interval;
        self
    }

    /// A key set older than this is refetched on the next new token, so keys removed from
    /// the JWKS stop being accepted. Default: 1 hour.
    pub fn jwks_max_age(mut self, max_age: Duration) -> Self {
        self.jwks_max_age = max_age;
        self
    }

    /// Timeout of one JWKS request. Default: 5 s.
    pub fn jwks_timeout(mut self, timeout: Duration) -> Self {
        self.jwks_timeout = timeout;
        self
    }

    /// Which custom claims carry profile fields. Default: [`ProfileClaims::default`].
    pub fn profile_claims(mut self, claims: ProfileClaims) -> Self {
        self.profile_claims = claims;
        self
    }

    /// Where a newly seen user's profile comes from. Default:
    /// [`ProfileSource::ClaimsThenApi`]: the upsert writes what the token's claims carry, and
    /// when the row then has no email and `CLERK_SECRET_KEY` is set, the Backend API is asked.
    ///
    /// The upsert always runs first, so a user whose row already has an email never costs an
    /// API call. The call (retried once after 100 ms on a `5xx` or connection error; a `429`
    /// waits at most 1 s) and the write of its answer share [`sync_timeout`](Self::sync_timeout)
    /// with the upsert, so a fast answer is visible to the first handler. When it fails, times
    /// out or the [budget](Self::enrichment_budget) is spent, the request goes on with the row
    /// as the upsert wrote it, and the next user-cache miss tries again. A 404 from the token's
    /// own instance answers 403 `user_deleted` until the token expires (the row stays; the
    /// `user.deleted` webhook or a reconcile writes the tombstone).
    pub fn profile_source(mut self, source: ProfileSource) -> Self {
        self.profile_source = source;
        self
    }

    /// Bounds the Backend API calls of profile enrichment in this process: a token bucket of
    /// `burst` calls refilled at `per_second`. Default: 20 calls/s, burst 40.
    ///
    /// Clerk allows 1000 Backend API requests per 10 s per production instance (100 per 10 s
    /// for development instances), shared by everything that uses the secret key. N
    /// processes at the default spend at most N × 20 calls/s after their bursts: 5 processes
    /// use the whole production limit, so with more processes (or a backfill running) set
    /// `per_second` to about `100 / N` minus a margin, e.g. `enrichment_budget(8, 16)` for 10
    /// processes; for a development instance `enrichment_budget(2, 5)`. A cache clear (a
    /// listener reconnect) then costs at most the burst at once, not one call per user.
    pub fn enrichment_budget(mut self, per_second: u32, burst: u32) -> Self {
        self.api_budget = (per_second, burst);
        self
    }

    /// How long a verified opaque machine token (API key, M2M or OAuth token) is trusted
    /// before the Backend API is asked again: the revocation latency, since a key revoked in
    /// Clerk keeps working here until then. Never past the token's own expiration. Default:
    /// 30 s.
    pub fn machine_token_cache_ttl(mut self, ttl: Duration) -> Self {
        self.machine.ttl = ttl;
        self
    }

    /// How long a machine token that the Backend API refused (unknown, revoked, expired) is
    /// refused without asking again, so that a client retrying a bad key costs one call per
    /// interval. Failures of the API itself are never cached. Default: 30 s.
    pub fn machine_token_negative_ttl(mut self, ttl: Duration) -> Self {
        self.machine.negative_ttl = ttl;
        self
    }

    /// Bounds the Backend API calls for machine tokens not cached yet, per client network
    /// (by [`ClientAddress`]; one bucket for all without `ConnectInfo`, with a warning): a
    /// token bucket of `burst` calls refilled at `per_second`. Over it, 429 `rate_limited`
    /// before any call, so a flood of random keys cannot spend the instance's Backend API
    /// quota. Default: 10/s, burst 20.
    pub fn machine_token_budget(mut self, per_second: u32, burst: u32) -> Self {
        self.machine.budget = (per_second, burst);
        self
    }

    /// The Backend API client used for profiles and machine tokens, instead of one built
    /// from the config's `CLERK_API_URL` and `CLERK_SECRET_KEY`.
    pub fn clerk_api(mut self, api: ClerkApi) -> Self {
        self.api = Some(api);
        self
    }

    /// How the client's address is found (trusted proxies, forwarding headers) and grouped
    /// into networks (IPv6 by /64), for [`crate::ratelimit::AnonymousPolicy::ByIp`] and the
    /// other per-client limits. Default: [`ClientAddress::new`], no trusted proxies: the
    /// connection's peer is the client and forwarding headers are ignored.
    pub fn client_address(mut self, client_address: ClientAddress) -> Self {
        self.client_address = client_address;
        self
    }

    /// The tier reported for users that could not be synced under [`FailurePolicy::Open`].
    /// Rows get their tier from the column default. Default: `free`.
    pub fn default_tier(mut self, tier: impl Into<String>) -> Self {
        self.default_tier = tier.into();
        self
    }

    /// Builds the handle. Keys are fetched by the first request that needs them; nothing is
    /// spawned (see [`ClerkSync::background`]).
    pub fn build(self) -> Result<ClerkSync, ConfigError> {
        let store = self.store;
        let channel = match self.channel {
            Some(chosen) => chosen,
            None => store.invalidation_channel(),
        };
        if self.azp_policy == AuthorizedPartyPolicy::Required
            && self.config.authorized_parties.is_empty()
        {
            return Err(ConfigError::new(
                "CLERK_AUTHORIZED_PARTIES",
                "the `Required` azp policy needs at least one authorized party",
            ));
        }
        let base_api = match self.api {
            Some(api) => Some(api),
            None => ClerkApi::from_config(&self.config)?,
        };
        // Machine tokens: a 429 or 5xx is a 503 at once (the client retries), no retry here.
        let machine = base_api
            .clone()
            .map(|api| MachineVerifier::new(api.with_retry(RetryPolicy::none()), self.machine));
        let api = match self.profile_source {
            ProfileSource::Claims => None,
            ProfileSource::ClaimsThenApi | ProfileSource::Api => base_api,
        }
        .map(|api| {
            api.with_retry(RetryPolicy {
                max_retries: 1,
                initial_backoff: Duration::from_millis(100),
                max_wait: Duration::from_secs(1),
            })
        });
        if self.profile_source == ProfileSource::Api && api.is_none() {
            return Err(ConfigError::new(
                "CLERK_SECRET_KEY",
                "`ProfileSource::Api` reads profiles from the Backend API and needs the secret key",
            ));
        }
        let counters = Arc::new(Counters::default());
        let keys = KeyStore::new(
            &self.config.key_source,
            KeyOptions {
                min_refresh_interval: self.jwks_min_refresh_interval,
                max_age: self.jwks_max_age,
                http_timeout: self.jwks_timeout,
            },
            counters.clone(),
        )?;
        let verifier = Verifier::new(
            keys,
            VerifierOptions {
                issuer: self.config.issuer.clone(),
                leeway_secs: self.leeway.as_secs(),
                authorized_parties: self.config.authorized_parties.clone(),
                azp_policy: self.azp_policy,
                allow_pending_sessions: self.allow_pending_sessions,
                accept_jwt_templates: self.accept_jwt_templates,
                // The layer caches sessions itself; this cache serves `verifier()` callers.
                token_cache_capacity: self.token_cache_capacity.min(10_000),
            },
            counters.clone(),
        );
        let syncer = Syncer::new(
            store,
            channel,
            SyncOptions {
                capacity: self.user_cache_capacity,
                ttl: self.user_cache_ttl,
                timeout: self.sync_timeout,
                failure_policy: self.failure_policy,
                profile_claims: self.profile_claims,
                profile_source: self.profile_source,
                api,
                api_budget: Budget::new(self.api_budget.0, self.api_budget.1),
                default_tier: self.default_tier.into(),
            },
            counters.clone(),
        );
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let tokens = (self.token_cache_capacity > 0)
            .then(|| TokenCache::new(self.token_cache_capacity, leeway, verifier.key_epoch()));
        let (alive, _) = watch::channel(());
        let core = Core {
            verifier,
            machine,
            no_secret_key: Throttle::new(Duration::from_secs(60)),
            syncer,
            tokens,
            counters,
            cookie_suffix: self.config.cookie_suffix.clone(),
            client_address: self.client_address,
            on_rejection: self.on_rejection,
            alive,
            exported: crate::metrics::Exported::default(),
        };
        Ok(ClerkSync {
            core: Arc::new(core),
            webhook_secret: self.config.webhook_secret.clone(),
        })
    }
}
