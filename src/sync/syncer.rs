//! [`Syncer`]: the synced-user cache in front of the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::evidence::{Evidence, UntilTokenExpiry};
use super::options::{FailurePolicy, ProfileSource, SyncOptions};
use super::orgs::{OrgSync, Organizations};
use super::users::{SyncedUser, SyncedUsers};
use crate::clerk_api::{ApiError, ClerkApi};
use crate::error::AuthError;
use crate::invalidate::InvalidationChannel;
use crate::log_throttle::Throttle;
use crate::stats::Counters;
use crate::store::{
    OrganizationChange, StoreError, UpsertOutcome, UserChange, UserProfile, UserStore,
    WebhookOutcome,
};
use crate::token::SessionClaims;

#[derive(Debug, Clone)]
enum SyncFailure {
    Deleted,
    /// Clerk's Backend API (of the token's own instance) does not know the user: 403 until
    /// the token's `exp` (Unix seconds).
    DeletedInClerk {
        until: i64,
    },
    Unavailable,
    /// The upsert succeeded but an eviction landed while it ran: the result answers the
    /// requests that waited for it and is not cached.
    Superseded(Arc<SyncedUser>),
}

/// Keeps "this process has synced user X, whose tier is T" and runs the upsert on a miss.
pub(crate) struct Syncer {
    store: Arc<dyn UserStore>,
    /// Where evictions are published for the other processes; `None` for one process.
    channel: Option<Arc<dyn InvalidationChannel>>,
    /// Set by the handle's background task; a channel nobody listens on is warned about once.
    listening: AtomicBool,
    not_listening_warned: AtomicBool,
    /// An outage logs its first failed upsert at `error`, then one line a minute.
    upsert_failures: Throttle,
    users: SyncedUsers,
    organizations: Organizations,
    options: SyncOptions,
    counters: Arc<Counters>,
    /// Users the Backend API answered 404 for: user id → the token's `exp`, until which the
    /// verdict stands (so a client's retries cost no more calls).
    gone: moka::sync::Cache<Arc<str>, i64>,
    /// The `kid`s of the Backend API's own instance, and when they were read.
    backend_kids: tokio::sync::Mutex<Option<(Instant, Arc<[String]>)>>,
    /// The "secret key of another instance" error is logged once.
    misconfiguration_logged: AtomicBool,
}

/// How long the Backend API's `kid`s are trusted before they are read again.
const BACKEND_KIDS_MAX_AGE: Duration = Duration::from_secs(60);

impl Syncer {
    pub(crate) fn new(
        store: Arc<dyn UserStore>,
        channel: Option<Arc<dyn InvalidationChannel>>,
        options: SyncOptions,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            store,
            channel,
            listening: AtomicBool::new(false),
            not_listening_warned: AtomicBool::new(false),
            upsert_failures: Throttle::new(Duration::from_secs(60)),
            users: SyncedUsers::new(options.capacity, options.ttl),
            organizations: Organizations::new(options.capacity, options.ttl),
            gone: moka::sync::Cache::builder()
                .max_capacity(options.capacity)
                .expire_after(UntilTokenExpiry)
                .build(),
            options,
            counters,
            backend_kids: tokio::sync::Mutex::new(None),
            misconfiguration_logged: AtomicBool::new(false),
        }
    }

    /// `true` while `user` is still the cached, current state of that user.
    pub(crate) fn is_current(&self, user: &SyncedUser) -> bool {
        self.users.is_current(user)
    }

    /// `true` while `organization` (an entry of [`ensure_organization`](Self::ensure_organization))
    /// is still current.
    pub(crate) fn organization_is_current(&self, organization: &SyncedUser) -> bool {
        self.organizations.orgs().is_current(organization)
    }

    /// Makes sure the session's active organization and membership rows exist (after its
    /// user's, `user` being its synced entry): see [`Organizations`].
    pub(crate) async fn ensure_organization(
        &self,
        claims: &SessionClaims,
        user: &Arc<SyncedUser>,
    ) -> Result<OrgSync, AuthError> {
        self.organizations
            .ensure(
                self.store.organizations(),
                claims,
                user,
                &self.users,
                &self.options,
                &self.counters,
            )
            .await
    }

    /// The synced user (its tier), and whether the row is known to exist. `evidence` says
    /// what vouches for `claims.sub` (see [`Evidence`]).
    pub(crate) async fn ensure(
        &self,
        claims: &SessionClaims,
        evidence: Evidence<'_>,
    ) -> Result<(Arc<SyncedUser>, bool), AuthError> {
        if let Some(user) = self.users.cache.get(claims.sub.as_str()).await {
            Counters::bump(&self.counters.user_cache_hits);
            tracing::trace!(user.id = %claims.sub, "synced-user cache hit");
            return Ok((user, true));
        }
        Counters::bump(&self.counters.user_cache_misses);
        self.warn_if_not_listening();
        if self.gone.get(claims.sub.as_str()).is_some() {
            return Err(AuthError::UserDeleted);
        }
        // Concurrent misses for one user wait on a single upsert; failures are not cached, and
        // neither is a result that an eviction overtook (see `SyncedUsers`).
        let epoch = self.users.epoch();
        let result = self
            .users
            .cache
            .try_get_with(Arc::from(claims.sub.as_str()), self.load(claims, evidence))
            .await;
        match result {
            Ok(user) => {
                // An eviction that landed between the load's own check and moka's insert.
                if self.users.epoch() != epoch && self.is_current(&user) {
                    self.users.remove(&claims.sub).await;
                }
                Ok((user, true))
            }
            Err(failure) => match *failure {
                SyncFailure::Superseded(ref user) => {
                    user.valid.store(false, Ordering::Release);
                    Ok((user.clone(), true))
                }
                SyncFailure::Deleted => Err(AuthError::UserDeleted),
                SyncFailure::DeletedInClerk { mut until } => {
                    // A machine token may live for months: its user is refused for a minute
                    // at a time, then asked about again.
                    if !matches!(evidence, Evidence::Session(_)) {
                        until = until.min(crate::time::unix_now().saturating_add(60));
                    }
                    self.gone.insert(Arc::from(claims.sub.as_str()), until);
                    Err(AuthError::UserDeleted)
                }
                SyncFailure::Unavailable => match self.options.failure_policy {
                    FailurePolicy::Closed => Err(AuthError::SyncUnavailable),
                    FailurePolicy::Open => {
                        Ok((self.users.synced(self.options.default_tier.clone()), false))
                    }
                },
            },
        }
    }

    /// After an upsert that left the row without an email: one Backend API call for the
    /// profile, then a second write with it, both before `deadline`. Anything that fails here
    /// leaves the row as the upsert wrote it and the request goes on, except a 404 from the
    /// token's own instance, which is the user's deletion in Clerk.
    async fn enrich(
        &self,
        api: &ClerkApi,
        claims: &SessionClaims,
        evidence: Evidence<'_>,
        deadline: tokio::time::Instant,
    ) -> Result<(), SyncFailure> {
        let user_id = claims.sub.as_str();
        if !self.options.api_budget.try_take() {
            Counters::bump(&self.counters.api_budget_skips);
            tracing::debug!(user.id = %user_id, "profile enrichment skipped: the Backend API budget is spent");
            return Ok(());
        }
        Counters::bump(&self.counters.api_fetches);
        let started = Instant::now();
        let fetched = tokio::time::timeout_at(deadline, api.get_user(user_id)).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        let profile = match fetched {
            Ok(Ok(profile)) if profile.id == user_id => profile,
            Ok(Ok(profile)) => {
                Counters::bump(&self.counters.api_failures);
                tracing::error!(user.id = %user_id, returned = %profile.id, "Backend API returned another user");
                return Ok(());
            }
            Ok(Err(ApiError::Rejected { status, .. })) if status == http::StatusCode::NOT_FOUND => {
                return if self.same_instance(api, evidence).await {
                    tracing::info!(user.id = %user_id, "Clerk does not know this user: refused until the token expires");
                    Err(SyncFailure::DeletedInClerk { until: claims.exp })
                } else {
                    Counters::bump(&self.counters.api_failures);
                    Ok(())
                };
            }
            Ok(Err(error)) => {
                Counters::bump(&self.counters.api_failures);
                tracing::warn!(user.id = %user_id, %error, elapsed_ms, "Backend API profile fetch failed; the row stays as synced");
                return Ok(());
            }
            Err(_) => {
                Counters::bump(&self.counters.api_failures);
                tracing::warn!(user.id = %user_id, elapsed_ms, "Backend API profile fetch ran out of sync_timeout; the row stays as synced");
                return Ok(());
            }
        };
        tracing::debug!(user.id = %user_id, elapsed_ms, "profile read from the Backend API");
        match tokio::time::timeout_at(deadline, self.store.upsert(&profile)).await {
            Ok(Ok(_)) => Counters::bump(&self.counters.upserts_ok),
            Ok(Err(error)) => {
                Counters::bump(&self.counters.upserts_failed);
                tracing::warn!(user.id = %user_id, %error, "writing the Backend API profile failed");
            }
            Err(_) => {
                Counters::bump(&self.counters.upserts_failed);
                tracing::warn!(user.id = %user_id, "writing the Backend API profile timed out");
            }
        }
        Ok(())
    }

    /// Whether `token` was minted by the instance the Backend API's secret key belongs to:
    /// its `kid` is among `GET /v1/jwks`'s (read at most once a minute while they match). A
    /// secret key of another instance would make every user look deleted, so then a 404 is
    /// not trusted, and the misconfiguration is logged once.
    async fn same_instance(&self, api: &ClerkApi, evidence: Evidence<'_>) -> bool {
        let token = match evidence {
            Evidence::Session(token) | Evidence::MachineJwt(token) => token,
            // The Backend API verified the token with this very secret key.
            Evidence::Opaque => return true,
        };
        let Some(kid) = crate::token::verify::header_kid(token) else {
            return false;
        };
        let mut cached = self.backend_kids.lock().await;
        let fresh = cached
            .as_ref()
            .filter(|(read, kids)| read.elapsed() < BACKEND_KIDS_MAX_AGE && kids.contains(&kid))
            .map(|(_, kids)| kids.clone());
        let kids = match fresh {
            Some(kids) => kids,
            None => match api.jwks_kids().await {
                Ok(kids) => {
                    let kids: Arc<[String]> = kids.into();
                    *cached = Some((Instant::now(), kids.clone()));
                    kids
                }
                Err(error) => {
                    tracing::warn!(%error, "could not read the Backend API's JWKS to judge a 404");
                    return false;
                }
            },
        };
        drop(cached);
        let same = kids.contains(&kid);
        if !same && !self.misconfiguration_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                token.kid = %kid,
                "CLERK_SECRET_KEY belongs to another Clerk instance than the session tokens \
                 (their kid is not in GET /v1/jwks): Backend API 404s are ignored and profiles \
                 cannot be read; fix the secret key"
            );
        }
        same
    }

    /// The load behind one cache miss: the upsert, kept out of the cache when an eviction
    /// landed while it ran. Its span carries the user id for everything below it.
    #[tracing::instrument(name = "clerk_sync.sync", skip_all, fields(user.id = %claims.sub))]
    async fn load(
        &self,
        claims: &SessionClaims,
        evidence: Evidence<'_>,
    ) -> Result<Arc<SyncedUser>, SyncFailure> {
        let epoch = self.users.epoch();
        let user = self.upsert(claims, evidence).await?;
        if self.users.epoch() == epoch {
            Ok(user)
        } else {
            tracing::debug!(user.id = %claims.sub, "an eviction overtook the sync; not cached");
            Err(SyncFailure::Superseded(user))
        }
    }

    /// The upsert, then (when the row has no email and the Backend API may be asked) the
    /// profile from the API, all within one `sync_timeout`.
    async fn upsert(
        &self,
        claims: &SessionClaims,
        evidence: Evidence<'_>,
    ) -> Result<Arc<SyncedUser>, SyncFailure> {
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let profile = match (self.options.profile_source, evidence) {
            // Machine tokens carry no versioned snapshot of the user: the row gets its id.
            (_, Evidence::MachineJwt(_) | Evidence::Opaque) | (ProfileSource::Api, _) => {
                UserProfile::new(claims.sub.clone())
            }
            (ProfileSource::Claims | ProfileSource::ClaimsThenApi, Evidence::Session(_)) => {
                self.options.profile_claims.read(claims)
            }
        };
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(deadline, self.store.upsert(&profile)).await;
        let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Ok(Ok(UpsertOutcome::Active {
                tier,
                inserted,
                has_email,
            })) => {
                Counters::bump(&self.counters.upserts_ok);
                tracing::debug!(user.id = %claims.sub, inserted, elapsed_ms, "synced user");
                if let Some(api) = &self.options.api
                    && !has_email
                {
                    self.enrich(api, claims, evidence, deadline).await?;
                }
                Ok(self.users.synced(tier.into()))
            }
            Ok(Ok(UpsertOutcome::Deleted)) => {
                Counters::bump(&self.counters.upserts_ok);
                tracing::info!(user.id = %claims.sub, "deleted user presented a valid token");
                Err(SyncFailure::Deleted)
            }
            Ok(Err(error)) => {
                Counters::bump(&self.counters.upserts_failed);
                if let Some(failures) = self.upsert_failures.hit() {
                    tracing::error!(%error, elapsed_ms, failures, "user upsert failed (one line a minute while it fails)");
                }
                Err(SyncFailure::Unavailable)
            }
            Err(_) => {
                Counters::bump(&self.counters.upserts_failed);
                if let Some(failures) = self.upsert_failures.hit() {
                    tracing::error!(
                        elapsed_ms,
                        failures,
                        "user upsert timed out (one line a minute while it fails)"
                    );
                }
                Err(SyncFailure::Unavailable)
            }
        }
    }

    /// Evicts the user here, then publishes the id for the other processes (when there is
    /// a channel). The local eviction always happens; the error says the others could not be
    /// told.
    /// `source` labels the eviction in the metrics (`webhook`, `invalidate`).
    pub(crate) async fn invalidate(
        &self,
        id: &str,
        source: &'static str,
    ) -> Result<(), StoreError> {
        crate::metrics::invalidation(source);
        self.evict(id).await;
        self.publish(id).await
    }

    /// Evicts a user (`user_…`, and with it their memberships and cached sessions) or an
    /// organization (`org_…`, and with it every membership and cached session that holds it)
    /// from this process's caches.
    pub(crate) async fn evict(&self, id: &str) {
        if id.starts_with("org_") {
            self.organizations.orgs().evict(id).await;
        } else {
            self.users.evict(id).await;
        }
    }

    async fn publish(&self, id: &str) -> Result<(), StoreError> {
        let Some(channel) = &self.channel else {
            return Ok(());
        };
        self.warn_if_not_listening();
        match tokio::time::timeout(self.options.timeout, channel.publish(id)).await {
            Ok(published) => published,
            Err(_) => Err(StoreError::Other(
                "publishing the invalidation timed out".into(),
            )),
        }
    }

    /// Applies a verified webhook change through the store, within `sync_timeout`, then evicts
    /// the user here and publishes the eviction. A duplicate delivery evicts and publishes
    /// too: the first attempt may have committed while its caller timed out, before it got
    /// this far. A failed publish is an error, so Svix retries and the retry publishes again.
    #[tracing::instrument(skip_all, fields(user.id = change.user_id(), delivery.id = delivery_id))]
    pub(crate) async fn apply_webhook(
        &self,
        delivery_id: &str,
        change: &UserChange,
    ) -> Result<WebhookOutcome, StoreError> {
        let applied = tokio::time::timeout(
            self.options.timeout,
            self.store.apply_webhook(delivery_id, change),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Other("the webhook write timed out".into())));
        let outcome =
            applied.inspect_err(|error| tracing::error!(%error, "webhook write failed"))?;
        self.invalidate(change.user_id(), "webhook")
            .await
            .inspect_err(|error| tracing::error!(%error, "webhook applied, but the invalidation could not be published"))?;
        Ok(outcome)
    }

    /// Applies a verified organization or membership webhook change, as
    /// [`apply_webhook`](Self::apply_webhook) does for users; then evicts and publishes the
    /// organization (organization events) or the member (membership events: their cached
    /// sessions are synced again). `Ok(None)`: the store keeps no organizations.
    #[tracing::instrument(skip_all, fields(organization.id = change.organization_id(), delivery.id = delivery_id))]
    pub(crate) async fn apply_organization_webhook(
        &self,
        delivery_id: &str,
        change: &OrganizationChange,
    ) -> Result<Option<WebhookOutcome>, StoreError> {
        let Some(store) = self.store.organizations() else {
            return Ok(None);
        };
        let applied = tokio::time::timeout(
            self.options.timeout,
            store.apply_webhook(delivery_id, change),
        )
        .await
        .unwrap_or_else(|_| Err(StoreError::Other("the webhook write timed out".into())));
        let outcome =
            applied.inspect_err(|error| tracing::error!(%error, "webhook write failed"))?;
        let evicted = change.user_id().unwrap_or(change.organization_id());
        self.invalidate(evicted, "webhook")
            .await
            .inspect_err(|error| tracing::error!(%error, "webhook applied, but the invalidation could not be published"))?;
        Ok(Some(outcome))
    }

    /// The handle's background task is listening on the channel.
    pub(crate) fn mark_listening(&self) {
        self.listening.store(true, Ordering::Relaxed);
    }

    /// The channel, for the background task.
    pub(crate) fn channel(&self) -> Option<&Arc<dyn InvalidationChannel>> {
        self.channel.as_ref()
    }

    /// The store, for the background task.
    /// The sync timeout: store calls give up after it.
    pub(crate) fn timeout(&self) -> std::time::Duration {
        self.options.timeout
    }

    pub(crate) fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    fn warn_if_not_listening(&self) {
        if self.channel.is_some()
            && !self.listening.load(Ordering::Relaxed)
            && !self.not_listening_warned.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "an invalidation channel is configured but nobody listens on it: spawn \
                 `clerk.background()` so that other processes' evictions reach this one"
            );
        }
    }

    /// The cache, for the invalidation listener.
    pub(crate) fn users(&self) -> &SyncedUsers {
        &self.users
    }

    /// The organization cache, for the invalidation listener.
    pub(crate) fn organization_cache(&self) -> &SyncedUsers {
        self.organizations.orgs()
    }

    pub(crate) fn cached_users(&self) -> u64 {
        self.users.entry_count()
    }
}
