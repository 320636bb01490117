//! The synced-user cache: [`SyncedUsers`] and the [`SyncedUser`] entries it hands out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use moka::future::Cache;

/// "This process has synced the user; their tier is T", shared by the synced-user cache and
/// every cached session of that user. It stops being current when the user is evicted or
/// invalidated (`valid`), or when the whole cache is cleared (`generation`), so a session
/// found in the verified-token cache is only trusted while its user is.
#[derive(Debug)]
pub(crate) struct SyncedUser {
    pub(crate) tier: Arc<str>,
    pub(super) valid: AtomicBool,
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
/// from it; cheap to clone (shared by the [`super::Syncer`] and the invalidation listener).
///
/// `generation` moves on [`clear`](Self::clear) and makes every [`SyncedUser`] made before it
/// stale at once. `epoch` moves on every eviction and clear: a load reads it before its store
/// call and keeps its result out of the cache when it moved meanwhile, because moka inserts
/// the result of a pending load unconditionally and an eviction cannot see a pending entry.
/// The epoch is process-wide, not per user: an eviction makes every load then in flight
/// answer its own request only, and the next request of those users loads again.
#[derive(Clone)]
pub(crate) struct SyncedUsers {
    pub(super) cache: UserCache,
    generation: Arc<AtomicU64>,
    epoch: Arc<AtomicU64>,
}

impl SyncedUsers {
    pub(super) fn new(capacity: u64, ttl: Duration) -> Self {
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
    pub(super) async fn remove(&self, user_id: &str) {
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

    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    pub(crate) fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// `true` while `user` is still the cached, current state of that user.
    pub(crate) fn is_current(&self, user: &SyncedUser) -> bool {
        user.valid.load(Ordering::Acquire)
            && user.generation == self.generation.load(Ordering::Acquire)
    }

    /// A new current entry with `tier`.
    pub(super) fn synced(&self, tier: Arc<str>) -> Arc<SyncedUser> {
        Arc::new(SyncedUser {
            tier,
            valid: AtomicBool::new(true),
            generation: self.generation.load(Ordering::Acquire),
        })
    }
}
