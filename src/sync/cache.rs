//! [`Syncer`]: the synced-user cache in front of the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::future::Cache;
use tracing::Instrument as _;

use super::budget::Budget;
use super::profile::{ProfileClaims, UserProfile};
use super::store::{UpsertOutcome, UserStore};
use crate::clerk_api::{ApiError, ClerkApi};
use crate::error::AuthError;
use crate::invalidate::Invalidator;
use crate::stats::Counters;
use crate::token::SessionClaims;

/// What the layer does when the store fails on a cache miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Answer 503 `sync_unavailable` with `Retry-After` (the default): no handler runs without
    /// its user row.
    #[default]
    Closed,
    /// Let the request through with [`crate::ClerkUser::synced`] `== false` and the default
    /// tier; the failure is logged and counted, and the next request tries again.
    Open,
}

/// Where a newly seen user's profile comes from.
///
/// Clerk's session tokens carry no email or name unless the instance adds them as custom
/// claims, so a row synced from claims alone often holds just the id. With a secret key, the
/// Backend API fills the gap: after the upsert, a row that has no email costs one
/// `GET /v1/users/{id}` (at most once per user-cache lifetime, under a per-process budget),
/// and the snapshot is versioned by Clerk's `updated_at`. A row that has the email never costs
/// a call, and a failed call never fails the request: the row the upsert wrote stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ProfileSource {
    /// Token claims only; the Backend API is never called.
    Claims,
    /// Token claims, and the Backend API when the row still has no email and a secret key is
    /// configured (the default).
    #[default]
    ClaimsThenApi,
    /// The Backend API only (needs a secret key); profile claims are ignored, the upsert
    /// writes the id alone and the API fills a row that has no email.
    Api,
}

pub(crate) struct SyncOptions {
    pub(crate) capacity: u64,
    pub(crate) ttl: Duration,
    pub(crate) timeout: Duration,
    pub(crate) failure_policy: FailurePolicy,
    pub(crate) profile_claims: ProfileClaims,
    pub(crate) profile_source: ProfileSource,
    /// Present when a secret key is configured and the source may use it.
    pub(crate) api: Option<ClerkApi>,
    /// Bounds the Backend API calls of profile enrichment in this process.
    pub(crate) api_budget: Budget,
    pub(crate) default_tier: Arc<str>,
}

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

/// "This process has synced the user; their tier is T", shared by the synced-user cache and
/// every cached session of that user. It stops being current when the user is evicted or
/// invalidated (`valid`), or when the whole cache is cleared (`generation`), so a session
/// found in the session cache is only trusted while its user is.
#[derive(Debug)]
pub(crate) struct SyncedUser {
    pub(crate) tier: Arc<str>,
    valid: AtomicBool,
    generation: u64,
}

/// A current synced user, for unit tests elsewhere in the crate.
#[cfg(test)]
pub(crate) fn test_user(tier: &str, generation: &AtomicU64) -> Arc<SyncedUser> {
    Arc::new(SyncedUser {
        tier: tier.into(),
        valid: AtomicBool::new(true),
        generation: generation.load(Ordering::Acquire),
    })
}

/// The synced-user cache: user id → [`SyncedUser`]. Any removal (invalidation, TTL expiry,
/// capacity eviction) marks the user as no longer current.
type UserCache = Cache<Arc<str>, Arc<SyncedUser>>;

/// The synced-user cache with the two counters that make evictions reach everything derived
/// from it; cheap to clone (shared by the [`Syncer`] and the store's [`Invalidator`]).
///
/// `generation` moves on [`clear`](Self::clear) and makes every [`SyncedUser`] made before it
/// stale at once. `epoch` moves on every eviction and clear: a load reads it before its store
/// call and keeps its result out of the cache when it moved meanwhile, because moka inserts
/// the result of a pending load unconditionally and an eviction cannot see a pending entry.
/// The epoch is process-wide, not per user: an eviction makes every load then in flight
/// answer its own request only, and the next request of those users loads again.
#[derive(Clone)]
pub(crate) struct SyncedUsers {
    cache: UserCache,
    generation: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
}

impl SyncedUsers {
    fn new(capacity: u64, ttl: Duration) -> Self {
        let cache = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(|_id, user: Arc<SyncedUser>, _cause| {
                user.valid.store(false, Ordering::Release);
            })
            .build();
        Self {
            cache,
            generation: Arc::new(AtomicU64::new(0)),
            epoch: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Marks `user_id` as no longer current and removes it; loads in flight stay uncached.
    pub(crate) async fn evict(&self, user_id: &str) {
        // First the epoch, so that a load finishing from now on sees it before caching.
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.remove(user_id).await;
    }

    /// Marks `user_id` as no longer current and removes it, leaving the epoch alone.
    async fn remove(&self, user_id: &str) {
        if let Some(user) = self.cache.get(user_id).await {
            user.valid.store(false, Ordering::Release);
        }
        self.cache.invalidate(user_id).await;
    }

    /// Makes every synced user stale at once (cheaper than visiting them) and empties the
    /// cache; loads in flight stay uncached.
    pub(crate) fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate_all();
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }
}

/// Keeps "this process has synced user X, whose tier is T" and runs the upsert on a miss.
pub(crate) struct Syncer {
    store: Arc<dyn UserStore>,
    users: SyncedUsers,
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

/// Keeps a 404 verdict until the token's `exp`.
struct UntilTokenExpiry;

impl moka::Expiry<Arc<str>, i64> for UntilTokenExpiry {
    fn expire_after_create(&self, _id: &Arc<str>, until: &i64, _now: Instant) -> Option<Duration> {
        let left = until
            .saturating_sub(crate::token::verify::unix_now())
            .max(0);
        Some(Duration::from_secs(left.unsigned_abs()))
    }
}

impl Syncer {
    pub(crate) fn new(
        store: Arc<dyn UserStore>,
        options: SyncOptions,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            store,
            users: SyncedUsers::new(options.capacity, options.ttl),
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
        user.valid.load(Ordering::Acquire)
            && user.generation == self.users.generation.load(Ordering::Acquire)
    }

    /// The synced user (its tier), and whether the row is known to exist. `token` is the
    /// verified token itself, read only to judge a 404 of the Backend API.
    pub(crate) async fn ensure(
        &self,
        claims: &SessionClaims,
        token: &str,
    ) -> Result<(Arc<SyncedUser>, bool), AuthError> {
        if let Some(user) = self.users.cache.get(claims.sub.as_str()).await {
            Counters::bump(&self.counters.user_cache_hits);
            tracing::trace!(user.id = %claims.sub, "synced-user cache hit");
            return Ok((user, true));
        }
        Counters::bump(&self.counters.user_cache_misses);
        if self.gone.get(claims.sub.as_str()).is_some() {
            return Err(AuthError::UserDeleted);
        }
        // Concurrent misses for one user wait on a single upsert; failures are not cached, and
        // neither is a result that an eviction overtook (see `SyncedUsers`).
        let epoch = self.users.epoch();
        let result = self
            .users
            .cache
            .try_get_with(Arc::from(claims.sub.as_str()), self.load(claims, token))
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
                SyncFailure::DeletedInClerk { until } => {
                    self.gone.insert(Arc::from(claims.sub.as_str()), until);
                    Err(AuthError::UserDeleted)
                }
                SyncFailure::Unavailable => match self.options.failure_policy {
                    FailurePolicy::Closed => Err(AuthError::SyncUnavailable),
                    FailurePolicy::Open => {
                        Ok((self.synced(self.options.default_tier.clone()), false))
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
        token: &str,
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
                return if self.same_instance(api, token).await {
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
    async fn same_instance(&self, api: &ClerkApi, token: &str) -> bool {
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

    fn synced(&self, tier: Arc<str>) -> Arc<SyncedUser> {
        Arc::new(SyncedUser {
            tier,
            valid: AtomicBool::new(true),
            generation: self.users.generation.load(Ordering::Acquire),
        })
    }

    /// The load behind one cache miss: the upsert, kept out of the cache when an eviction
    /// landed while it ran.
    async fn load(
        &self,
        claims: &SessionClaims,
        token: &str,
    ) -> Result<Arc<SyncedUser>, SyncFailure> {
        let epoch = self.users.epoch();
        let user = self.upsert(claims, token).await?;
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
        token: &str,
    ) -> Result<Arc<SyncedUser>, SyncFailure> {
        let deadline = tokio::time::Instant::now() + self.options.timeout;
        let profile = match self.options.profile_source {
            ProfileSource::Api => UserProfile::new(claims.sub.clone()),
            ProfileSource::Claims | ProfileSource::ClaimsThenApi => {
                UserProfile::from_claims(claims, &self.options.profile_claims)
            }
        };
        let span = tracing::debug_span!("clerk_sync.upsert", user.id = %claims.sub);
        let started = Instant::now();
        let outcome = tokio::time::timeout_at(deadline, self.store.upsert(&profile))
            .instrument(span)
            .await;
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
                    self.enrich(api, claims, token, deadline).await?;
                }
                Ok(self.synced(tier.into()))
            }
            Ok(Ok(UpsertOutcome::Deleted)) => {
                Counters::bump(&self.counters.upserts_ok);
                tracing::info!(user.id = %claims.sub, "deleted user presented a valid token");
                Err(SyncFailure::Deleted)
            }
            Ok(Err(error)) => {
                Counters::bump(&self.counters.upserts_failed);
                tracing::error!(user.id = %claims.sub, %error, elapsed_ms, "user upsert failed");
                Err(SyncFailure::Unavailable)
            }
            Err(_) => {
                Counters::bump(&self.counters.upserts_failed);
                tracing::error!(user.id = %claims.sub, elapsed_ms, "user upsert timed out");
                Err(SyncFailure::Unavailable)
            }
        }
    }

    pub(crate) async fn invalidate(&self, user_id: &str) {
        self.users.evict(user_id).await;
    }

    pub(crate) fn store(&self) -> &dyn UserStore {
        &*self.store
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.options.timeout
    }

    /// A handle on the cache for a store's invalidation listener.
    pub(crate) fn invalidator(&self, closed: tokio::sync::watch::Receiver<()>) -> Invalidator {
        Invalidator::new(self.users.clone(), self.counters.clone(), closed)
    }

    pub(crate) fn cached_users(&self) -> u64 {
        self.users.entry_count()
    }
}
