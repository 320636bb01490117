//! [`ClerkSync`], the handle the app keeps, and its builder.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use http::HeaderMap;
use tokio::sync::watch;

use crate::clerk_api::{ClerkApi, RetryPolicy};
use crate::client_addr::ClientAddress;
use crate::config::{ClerkConfig, WebhookSecret};
use crate::error::{AuthError, ConfigError};
use crate::extract::ClerkUser;
use crate::layer::{AnonymousRequest, ClerkSyncLayer, Mode};
use crate::sessions::{Lookup, SessionCache};
use crate::stats::{Counters, Stats};
use crate::sync::budget::Budget;
use crate::sync::cache::{SyncOptions, Syncer};
use crate::sync::{
    FailurePolicy, ProfileClaims, ProfileSource, StoreError, UserChange, UserStore, WebhookOutcome,
};
use crate::token::extract::{Located, locate};
use crate::token::keys::{KeyOptions, KeyStore};
use crate::token::verify::{VerifierOptions, unix_now};
use crate::token::{AuthorizedPartyPolicy, SessionClaims, Verifier};
use crate::webhook::{self, WebhookError};

/// Verifies Clerk session tokens and keeps users synced; cheap to clone (an `Arc` inside).
///
/// Build one per process with [`ClerkSync::builder`], then put [`ClerkSync::layer`] in front
/// of authenticated routes.
#[derive(Clone)]
pub struct ClerkSync {
    inner: Arc<Inner>,
}

struct Inner {
    verifier: Verifier,
    syncer: Syncer,
    // `None` when the token cache is off (`token_cache_capacity(0)`).
    sessions: Option<SessionCache>,
    counters: Arc<Counters>,
    webhook_secret: Option<WebhookSecret>,
    cookie_suffix: Option<String>,
    client_address: ClientAddress,
    // Dropped with the last clone: tells the store's listener task to end.
    _alive: watch::Sender<()>,
}

impl fmt::Debug for ClerkSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkSync")
            .field("verifier", &self.inner.verifier)
            .field("cached_users", &self.inner.syncer.cached_users())
            .field(
                "cached_sessions",
                &self.inner.sessions.as_ref().map_or(0, SessionCache::len),
            )
            .finish_non_exhaustive()
    }
}

impl ClerkSync {
    /// Starts a builder for this Clerk instance.
    pub fn builder(config: ClerkConfig) -> ClerkSyncBuilder {
        ClerkSyncBuilder::new(config)
    }

    /// A layer that requires a valid session: requests without one get 401.
    pub fn layer(&self) -> ClerkSyncLayer {
        ClerkSyncLayer::new(self.clone(), Mode::Required)
    }

    /// A layer that lets requests without any token through with no [`ClerkUser`]. A token
    /// that is present must still be valid: a bad or expired one gets 401, so clients learn
    /// that their session broke instead of silently becoming anonymous.
    pub fn optional_layer(&self) -> ClerkSyncLayer {
        ClerkSyncLayer::new(self.clone(), Mode::Optional)
    }

    /// The token verifier, for code outside the layer (WebSocket upgrades, jobs, the CLI).
    pub fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }

    /// Forgets the synced user in this process and tells the other processes on the same
    /// store to do the same, so the next request of that user upserts again and reads its
    /// tier afresh. Call it after changing a user's tier.
    ///
    /// The local eviction always happens; the error says the other processes could not be
    /// told (their caches expire after the user-cache TTL at the latest).
    pub async fn invalidate(&self, user_id: &str) -> Result<(), StoreError> {
        self.inner.syncer.invalidate(user_id).await;
        self.inner
            .syncer
            .store()
            .publish_invalidation(user_id)
            .await
    }

    /// A router with one route, `POST path`, that receives Clerk's webhooks (Svix-signed
    /// `user.created`, `user.updated`, `user.deleted`) and applies them through the store.
    /// Merge it into your app outside the session layer. Needs
    /// `CLERK_WEBHOOK_SIGNING_SECRET`.
    pub fn webhook_router(&self, path: &str) -> Result<Router, ConfigError> {
        let secret = self.inner.webhook_secret.clone().ok_or_else(|| {
            ConfigError::new(
                "CLERK_WEBHOOK_SIGNING_SECRET",
                "not set: copy the endpoint's signing secret (`whsec_...`) from Clerk's dashboard",
            )
        })?;
        Ok(webhook::router(self.clone(), secret, path))
    }

    /// The marker of an anonymous request, with the client's network when the server
    /// provides `ConnectInfo<SocketAddr>`.
    pub(crate) fn anonymous<B>(&self, request: &http::Request<B>) -> AnonymousRequest {
        let network = request
            .extensions()
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| {
                let client = &self.inner.client_address;
                client.network(client.client_ip(info.0.ip(), request.headers()))
            });
        AnonymousRequest { network }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// Applies a verified webhook change and evicts the user here; the store notifies the
    /// other processes.
    pub(crate) async fn apply_webhook(
        &self,
        delivery_id: &str,
        change: &UserChange,
    ) -> Result<WebhookOutcome, WebhookError> {
        let syncer = &self.inner.syncer;
        let applied = tokio::time::timeout(
            syncer.timeout(),
            syncer.store().apply_webhook(delivery_id, change),
        )
        .await;
        match applied {
            Ok(Ok(outcome)) => {
                // A duplicate too: the first attempt may have committed while its caller timed
                // out, before it reached this eviction.
                syncer.invalidate(change.user_id()).await;
                Ok(outcome)
            }
            Ok(Err(error)) => {
                tracing::error!(user.id = change.user_id(), %error, "webhook write failed");
                Err(WebhookError::StoreUnavailable)
            }
            Err(_) => {
                tracing::error!(user.id = change.user_id(), "webhook write timed out");
                Err(WebhookError::StoreUnavailable)
            }
        }
    }

    /// Counters since this `ClerkSync` was built.
    pub fn stats(&self) -> Stats {
        let mut stats = self.inner.counters.snapshot();
        // A session hit is a token-cache hit and a user-cache hit at once.
        let session_hits = self.inner.sessions.as_ref().map_or(0, SessionCache::hits);
        stats.token_cache_hits += session_hits;
        stats.user_cache_hits += session_hits;
        stats
    }

    /// The synchronous first look at a request, run inside `Service::call`: a rejection that
    /// needs no I/O, a request without a token, or a cached session whose user is current.
    /// [`Quick::Miss`] sends the request to [`authenticate`](Self::authenticate).
    pub(crate) fn authenticate_quick(&self, headers: &HeaderMap, mode: Mode) -> Quick {
        let located = match self.locate(headers, mode) {
            Ok(Some(located)) => located,
            Ok(None) => return Quick::Anonymous,
            Err(error) => return self.rejected(error),
        };
        let Some(sessions) = &self.inner.sessions else {
            return Quick::Miss;
        };
        match self.lookup(sessions, located.token(), unix_now()) {
            // The cookie rule holds for cached sessions too: a browser that signed out since is
            // signed out here.
            Lookup::Hit(user) => match signed_in(mode, located.check_client_uat(user.claims().iat))
            {
                Ok(true) => Quick::Hit(user),
                Ok(false) => Quick::Anonymous,
                Err(error) => self.rejected(error),
            },
            Lookup::Expired => self.rejected(AuthError::TokenExpired),
            Lookup::Stale(_) | Lookup::Absent => Quick::Miss,
        }
    }

    /// The request's token, `Ok(None)` for an anonymous request of the optional layer: no
    /// token, or a session cookie of a signed-out browser (Clerk treats that browser as signed
    /// out, not as an error). Everything here is decided without I/O.
    fn locate<'h>(
        &self,
        headers: &'h HeaderMap,
        mode: Mode,
    ) -> Result<Option<Located<'h>>, AuthError> {
        let located = match locate(headers, self.inner.cookie_suffix.as_deref())? {
            Some(located) => located,
            None if mode == Mode::Optional => return Ok(None),
            None => return Err(AuthError::MissingToken),
        };
        Ok(signed_in(mode, located.check_signed_in())?.then_some(located))
    }

    /// The cached session of `token`, its user judged current or not by the syncer.
    fn lookup(&self, sessions: &SessionCache, token: &str, now: i64) -> Lookup {
        sessions.get(token, now, |user| self.inner.syncer.is_current(user))
    }

    fn rejected(&self, error: AuthError) -> Quick {
        self.record_rejection(&error);
        Quick::Rejected(error)
    }

    fn record_rejection(&self, error: &AuthError) {
        self.inner.counters.reject(error);
        if error.is_server_fault() {
            tracing::warn!(code = error.code(), "request rejected: {error}");
        } else {
            tracing::debug!(code = error.code(), "request rejected: {error}");
        }
    }

    /// Verifies the request's token and makes sure its user is synced. `Ok(None)` only in
    /// [`Mode::Optional`] for a request without a token. Rejections are counted and logged.
    pub(crate) async fn authenticate(
        &self,
        headers: &HeaderMap,
        mode: Mode,
    ) -> Result<Option<ClerkUser>, AuthError> {
        let result = self.authenticate_inner(headers, mode).await;
        if let Err(error) = &result {
            self.record_rejection(error);
        }
        result
    }

    async fn authenticate_inner(
        &self,
        headers: &HeaderMap,
        mode: Mode,
    ) -> Result<Option<ClerkUser>, AuthError> {
        let Some(located) = self.locate(headers, mode)? else {
            return Ok(None);
        };
        let token = located.token();
        let inner = &*self.inner;
        // A cookie token minted before the browser's last session change is outdated; under
        // the optional layer the request is anonymous. Checked before anything is written.
        let signed_in =
            |claims: &SessionClaims| signed_in(mode, located.check_client_uat(claims.iat));
        let Some(sessions) = &inner.sessions else {
            let claims = inner.verifier.verify(token).await?;
            if !signed_in(&claims)? {
                return Ok(None);
            }
            let (user, synced) = inner.syncer.ensure(&claims, token).await?;
            return Ok(Some(ClerkUser::new(claims, user.tier.clone(), synced)));
        };
        let now = unix_now();
        let key_epoch = sessions.key_epoch();
        // A known token whose user was invalidated keeps its verified claims; anything else is
        // verified now (the session cache is the token cache, so the verifier's is bypassed).
        let claims = match self.lookup(sessions, token, now) {
            Lookup::Hit(user) => {
                return Ok(signed_in(user.claims())?.then_some(user));
            }
            Lookup::Expired => return Err(AuthError::TokenExpired),
            Lookup::Stale(claims) => {
                Counters::bump(&inner.counters.token_cache_hits);
                claims
            }
            Lookup::Absent => inner.verifier.verify_fresh(token).await?,
        };
        if !signed_in(&claims)? {
            return Ok(None);
        }
        let (user, synced) = inner.syncer.ensure(&claims, token).await?;
        let answer = ClerkUser::new(claims, user.tier.clone(), synced);
        if synced {
            sessions.insert(token, answer.clone(), user, now, key_epoch);
        }
        Ok(Some(answer))
    }
}

/// Applies the outcome of a cookie check (Clerk's `__client_uat` rule): `Ok(true)` signed in;
/// an outdated cookie is `Ok(false)` (anonymous) under the optional layer, as Clerk treats a
/// signed-out browser, and the rejection under the required one.
fn signed_in(mode: Mode, check: Result<(), AuthError>) -> Result<bool, AuthError> {
    match check {
        Ok(()) => Ok(true),
        Err(_) if mode == Mode::Optional => Ok(false),
        Err(error) => Err(error),
    }
}

/// What [`ClerkSync::authenticate_quick`] found.
pub(crate) enum Quick {
    /// A cached session whose user is current.
    Hit(ClerkUser),
    /// No token, and the layer is optional.
    Anonymous,
    /// Rejected without I/O (already counted and logged).
    Rejected(AuthError),
    /// Needs verification or a sync.
    Miss,
}

/// Builder for [`ClerkSync`]. Every setter documents its default.
pub struct ClerkSyncBuilder {
    config: ClerkConfig,
    store: Option<Arc<dyn UserStore>>,
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
    client_address: ClientAddress,
    default_tier: String,
}

impl fmt::Debug for ClerkSyncBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClerkSyncBuilder")
            .field("config", &self.config)
            .field("has_store", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

impl ClerkSyncBuilder {
    fn new(config: ClerkConfig) -> Self {
        Self {
            config,
            store: None,
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
            client_address: ClientAddress::new(),
            default_tier: "free".to_owned(),
        }
    }

    /// Where users are written, for example [`crate::PgUserStore`]. Required.
    pub fn store(mut self, store: impl UserStore) -> Self {
        self.store = Some(Arc::new(store));
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
    /// 1.25 KB each with Clerk-sized tokens, so at most ~120 MiB; see BENCHMARKS.md).
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

    /// The Backend API client used for profiles, instead of one built from the config's
    /// `CLERK_API_URL` and `CLERK_SECRET_KEY`.
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

    /// Builds the handle. Keys are fetched by the first request that needs them. When called
    /// inside a Tokio runtime, it also starts the store's invalidation listener (for
    /// [`crate::PgUserStore`]: `LISTEN` on one pooled connection), which ends when the last
    /// clone of the handle is dropped.
    pub fn build(self) -> Result<ClerkSync, ConfigError> {
        let store = self.store.ok_or_else(|| {
            ConfigError::new(
                "store",
                "no user store: call .store(PgUserStore::new(pool))",
            )
        })?;
        if self.azp_policy == AuthorizedPartyPolicy::Required
            && self.config.authorized_parties.is_empty()
        {
            return Err(ConfigError::new(
                "CLERK_AUTHORIZED_PARTIES",
                "the `Required` azp policy needs at least one authorized party",
            ));
        }
        let api = match self.profile_source {
            ProfileSource::Claims => None,
            ProfileSource::ClaimsThenApi | ProfileSource::Api => match self.api {
                Some(api) => Some(api),
                None => ClerkApi::from_config(&self.config)?,
            }
            .map(|api| {
                api.with_retry(RetryPolicy {
                    max_retries: 1,
                    initial_backoff: Duration::from_millis(100),
                    max_wait: Duration::from_secs(1),
                })
            }),
        };
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
        let (alive, closed) = watch::channel(());
        if tokio::runtime::Handle::try_current().is_ok() {
            syncer.store().start_listener(syncer.invalidator(closed));
        } else {
            tracing::warn!(
                "ClerkSync built outside a Tokio runtime: no cross-process invalidation listener"
            );
        }
        let leeway = i64::try_from(self.leeway.as_secs()).unwrap_or(i64::MAX);
        let sessions = (self.token_cache_capacity > 0)
            .then(|| SessionCache::new(self.token_cache_capacity, leeway, verifier.key_epoch()));
        Ok(ClerkSync {
            inner: Arc::new(Inner {
                verifier,
                syncer,
                sessions,
                counters,
                webhook_secret: self.config.webhook_secret.clone(),
                cookie_suffix: self.config.cookie_suffix.clone(),
                client_address: self.client_address,
                _alive: alive,
            }),
        })
    }
}
