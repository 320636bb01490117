//! Counters behind [`crate::ClerkSync::stats`].

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};

use crate::error::AuthError;

/// Live counters shared by the verifier, the key store and the syncer.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) tokens_verified: AtomicU64,
    pub(crate) token_cache_hits: AtomicU64,
    pub(crate) user_cache_hits: AtomicU64,
    pub(crate) user_cache_misses: AtomicU64,
    pub(crate) upserts_ok: AtomicU64,
    pub(crate) upserts_failed: AtomicU64,
    pub(crate) organization_writes: AtomicU64,
    pub(crate) membership_writes: AtomicU64,
    pub(crate) api_fetches: AtomicU64,
    pub(crate) api_failures: AtomicU64,
    pub(crate) api_budget_skips: AtomicU64,
    pub(crate) jwks_fetches: AtomicU64,
    pub(crate) jwks_fetch_failures: AtomicU64,
    pub(crate) webhooks_applied: AtomicU64,
    pub(crate) webhooks_duplicate: AtomicU64,
    pub(crate) webhooks_ignored: AtomicU64,
    pub(crate) webhooks_rejected: AtomicU64,
    pub(crate) invalidations_received: AtomicU64,
    pub(crate) listener_connects: AtomicU64,
    /// Requests admitted on the slow path with their user synced (or a machine).
    pub(crate) requests_synced: AtomicU64,
    /// Requests passed under the fail-open policy.
    pub(crate) requests_unsynced: AtomicU64,
    pub(crate) requests_anonymous: AtomicU64,
    /// Token-cache hits that did not admit the request (a type the layer does not take, a
    /// signed-out cookie): subtracted from the hits to count requests by outcome.
    pub(crate) hits_not_admitted: AtomicU64,
    /// A [`ListenerState`].
    listener_state: AtomicU8,
    rejected: [AtomicU64; crate::error::ERROR_CODES.len()],
}

/// Where the invalidation listener is, for [`crate::ClerkSync::health`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ListenerState {
    /// `background()` is not running (or the handle has no channel).
    NotRunning,
    /// Subscribing for the first time.
    Connecting,
    /// Subscribed: evictions of other processes arrive.
    Listening,
    /// The subscription was lost; the channel is trying again.
    Lost,
}

impl Counters {
    pub(crate) fn set_listener(&self, state: ListenerState) {
        self.listener_state.store(state as u8, Relaxed);
    }

    pub(crate) fn listener(&self) -> ListenerState {
        match self.listener_state.load(Relaxed) {
            1 => ListenerState::Connecting,
            2 => ListenerState::Listening,
            3 => ListenerState::Lost,
            _ => ListenerState::NotRunning,
        }
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn reject(&self, error: &AuthError) {
        Self::bump(&self.rejected[error.index()]);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let load = |counter: &AtomicU64| counter.load(Relaxed);
        Stats {
            tokens_verified: load(&self.tokens_verified),
            token_cache_hits: load(&self.token_cache_hits),
            user_cache_hits: load(&self.user_cache_hits),
            user_cache_misses: load(&self.user_cache_misses),
            upserts_ok: load(&self.upserts_ok),
            upserts_failed: load(&self.upserts_failed),
            organization_writes: load(&self.organization_writes),
            membership_writes: load(&self.membership_writes),
            api_fetches: load(&self.api_fetches),
            api_failures: load(&self.api_failures),
            api_budget_skips: load(&self.api_budget_skips),
            jwks_fetches: load(&self.jwks_fetches),
            jwks_fetch_failures: load(&self.jwks_fetch_failures),
            webhooks_applied: load(&self.webhooks_applied),
            webhooks_duplicate: load(&self.webhooks_duplicate),
            webhooks_ignored: load(&self.webhooks_ignored),
            webhooks_rejected: load(&self.webhooks_rejected),
            invalidations_received: load(&self.invalidations_received),
            listener_connects: load(&self.listener_connects),
            // The token-cache hits are the core's to add (see `Core::stats`).
            requests_hit: 0,
            requests_synced: load(&self.requests_synced),
            requests_unsynced: load(&self.requests_unsynced),
            requests_anonymous: load(&self.requests_anonymous),
            rejected: std::array::from_fn(|i| load(&self.rejected[i])),
        }
    }
}

/// A snapshot of the counters of one [`crate::ClerkSync`] since it was built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Tokens whose signature and claims were checked (verified-token cache misses that passed).
    pub tokens_verified: u64,
    /// Requests whose token was found in the verified-token cache (no RSA work).
    pub token_cache_hits: u64,
    /// Requests whose user was found in the synced-user cache (no SQL).
    pub user_cache_hits: u64,
    /// Requests whose user was not in the synced-user cache.
    pub user_cache_misses: u64,
    /// Upserts that reached the store and succeeded (including deleted-user answers).
    pub upserts_ok: u64,
    /// Upserts that failed or timed out.
    pub upserts_failed: u64,
    /// Organization upserts of the request path that reached the store (once per
    /// organization and cache lifetime, shared by concurrent first requests), failed or not.
    pub organization_writes: u64,
    /// Membership upserts of the request path that reached the store (once per member and
    /// cache lifetime), failed or not.
    pub membership_writes: u64,
    /// Backend API `GET /v1/users/{id}` calls made to enrich a profile.
    pub api_fetches: u64,
    /// Those calls that failed (after their retries) or timed out, and 404s that were not
    /// trusted (a secret key of another instance).
    pub api_failures: u64,
    /// Enrichment calls not made because the per-process Backend API budget was spent.
    pub api_budget_skips: u64,
    /// JWKS fetch attempts.
    pub jwks_fetches: u64,
    /// JWKS fetch attempts that failed.
    pub jwks_fetch_failures: u64,
    /// Webhook deliveries applied (including older snapshots that changed nothing).
    pub webhooks_applied: u64,
    /// Webhook deliveries whose `svix-id` was seen before.
    pub webhooks_duplicate: u64,
    /// Webhook deliveries of other event types, or for deleted users.
    pub webhooks_ignored: u64,
    /// Webhook deliveries answered with an error.
    pub webhooks_rejected: u64,
    /// Users and organizations evicted because another process (or this one) published an
    /// invalidation.
    pub invalidations_received: u64,
    /// Times the invalidation listener (re)connected.
    pub listener_connects: u64,
    /// Requests the verified-token cache answered (and admitted).
    pub requests_hit: u64,
    /// Requests whose token was verified now and whose user was synced or found in the
    /// user cache; machines admitted on a verification count here too.
    pub requests_synced: u64,
    /// Requests passed with an unsynced user under [`crate::FailurePolicy::Open`].
    pub requests_unsynced: u64,
    /// Requests without a token under the optional layer (or a signed-out browser's).
    pub requests_anonymous: u64,
    rejected: [u64; crate::error::ERROR_CODES.len()],
}

impl Stats {
    /// All counters at 0.
    pub(crate) fn zero() -> Self {
        Counters::default().snapshot()
    }

    /// Rejections with this error code (for example `"token_expired"`); 0 for unknown codes.
    pub fn rejected(&self, code: &str) -> u64 {
        crate::error::ERROR_CODES
            .iter()
            .position(|(known, _)| *known == code)
            .map_or(0, |i| self.rejected[i])
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// `(code, count)` for every code with at least one rejection.
    pub fn rejections(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        crate::error::ERROR_CODES
            .iter()
            .zip(self.rejected)
            .filter(|(_, count)| *count > 0)
            .map(|((code, _), count)| (*code, count))
    }
}
