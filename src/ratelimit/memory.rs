//! [`MemoryRateLimitStore`]: GCRA state in this process, in a bounded sharded map.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::Limit;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::error::StoreFuture;

const SHARDS: usize = 64;

/// The keys' hash: foldhash (a few instructions where SipHash takes hundreds, on every
/// request), randomly seeded per map, so the shard's hash and the map's are independent.
type Hasher = foldhash::fast::RandomState;

/// Keys and their theoretical arrival time (TAT), in nanoseconds since the store's origin.
struct ShardedMap<K> {
    shards: Box<[Mutex<HashMap<K, u64, Hasher>>]>,
    hasher: Hasher,
    per_shard: usize,
}

impl<K: Hash + Eq> ShardedMap<K> {
    fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Hasher::default())))
                .collect(),
            hasher: Hasher::default(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> MutexGuard<'_, HashMap<K, u64, Hasher>> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // The map holds plain numbers; a panic elsewhere cannot leave it half-written.
        match self.shards[index].lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Runs `step` on the key's TAT (0 for a new key, created by `make_key`) under the shard's
    /// lock.
    fn with_tat<Q, R>(
        &self,
        key: &Q,
        make_key: impl FnOnce() -> K,
        now: u64,
        step: impl FnOnce(&mut u64) -> R,
    ) -> R
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
    {
        let mut shard = self.shard(key);
        if let Some(tat) = shard.get_mut(key) {
            return step(tat);
        }
        if shard.len() >= self.per_shard {
            // A key whose TAT has passed has its whole budget back: forgetting it loses
            // nothing. If every key is still active, drop the one closest to refilled.
            shard.retain(|_, tat| *tat > now);
            if shard.len() >= self.per_shard {
                let oldest = shard
                    .iter()
                    .min_by_key(|(_, tat)| **tat)
                    .map(|(key, _)| key.clone());
                if let Some(oldest) = oldest {
                    shard.remove::<K>(&oldest);
                }
            }
        }
        step(shard.entry(make_key()).or_insert(0))
    }

    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |map| map.len()))
            .sum()
    }
}

/// Rate-limit state for one process: GCRA per key in a sharded map (one short lock per
/// request), at most `capacity` users and `capacity` IPs. When a shard is full, keys whose
/// budget is fully back are dropped first (nothing is lost); only if every key is active is
/// the one closest to refilled dropped.
///
/// Every process has its own budget: with N processes a user gets N times the limit. Use
/// [`crate::PgRateLimitStore`] to share one limit.
#[derive(Clone)]
pub struct MemoryRateLimitStore {
    users: Arc<ShardedMap<Box<str>>>,
    ips: Arc<ShardedMap<IpAddr>>,
    origin: Instant,
}

impl std::fmt::Debug for MemoryRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimitStore")
            .field("users", &self.users.len())
            .field("ips", &self.ips.len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRateLimitStore {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryRateLimitStore {
    /// A store that keeps at most about `capacity` users and `capacity` IPs. Default: 100,000.
    pub fn new(capacity: usize) -> Self {
        Self {
            users: Arc::new(ShardedMap::new(capacity)),
            ips: Arc::new(ShardedMap::new(capacity)),
            origin: Instant::now(),
        }
    }

    /// The GCRA step, synchronous.
    pub(crate) fn decide(&self, key: RateLimitKey<'_>, limit: Limit) -> Decision {
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        // +1 so that a stored 0 ("new key") is always in the past.
        let now = nanos(self.origin.elapsed()) + 1;
        let interval = nanos(limit.emission_interval());
        let tolerance = nanos(limit.period()).saturating_sub(interval);
        let step = |stored: &mut u64| {
            let tat = (*stored).max(now);
            if tat - now > tolerance {
                (false, tat - now)
            } else {
                *stored = tat + interval;
                (true, *stored - now)
            }
        };
        let (allowed, ahead) = match key {
            // Clerk's ids carry their kind (`user_`, `mch_`, `org_`): one map holds all three.
            RateLimitKey::User(id) | RateLimitKey::Machine(id) | RateLimitKey::Organization(id) => {
                self.users.with_tat(id, || id.into(), now, step)
            }
            RateLimitKey::Ip(ip) => self.ips.with_tat(&ip, || ip, now, step),
        };
        Decision::from_gcra(allowed, Duration::from_nanos(ahead), limit)
    }
}

impl RateLimitStore for MemoryRateLimitStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        let decision = self.decide(key, limit);
        Box::pin(std::future::ready(Ok(decision)))
    }

    fn check_now(&self, key: RateLimitKey<'_>, limit: Limit) -> Option<Decision> {
        Some(self.decide(key, limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn exactly_the_limit_passes_then_the_budget_refills() {
        let store = MemoryRateLimitStore::default();
        let limit = Limit::per_minute(5).unwrap();
        let key = RateLimitKey::User("user_1");
        for expected_remaining in (0..5).rev() {
            let decision = store.decide(key, limit);
            assert!(decision.allowed);
            assert_eq!(decision.remaining, expected_remaining);
        }
        let refused = store.decide(key, limit);
        assert!(!refused.allowed);
        // One request's worth of budget comes back after 60 s / 5 = 12 s.
        assert_eq!(refused.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(refused.reset, Duration::from_secs(60));

        tokio::time::advance(Duration::from_secs(12)).await;
        assert!(store.decide(key, limit).allowed);
        assert!(!store.decide(key, limit).allowed);

        tokio::time::advance(Duration::from_secs(60)).await;
        let passed = (0..10).filter(|_| store.decide(key, limit).allowed).count();
        assert_eq!(passed, 5, "a full period refills the whole budget, no more");
    }

    #[tokio::test(start_paused = true)]
    async fn keys_do_not_share_budgets() {
        let store = MemoryRateLimitStore::default();
        let limit = Limit::per_minute(1).unwrap();
        assert!(store.decide(RateLimitKey::User("a"), limit).allowed);
        assert!(store.decide(RateLimitKey::User("b"), limit).allowed);
        assert!(
            store
                .decide(RateLimitKey::Ip([127, 0, 0, 1].into()), limit)
                .allowed
        );
        assert!(!store.decide(RateLimitKey::User("a"), limit).allowed);
    }

    #[test]
    fn concurrent_requests_never_exceed_the_limit() {
        let store = Arc::new(MemoryRateLimitStore::default());
        let limit = Limit::per_hour(1000).unwrap();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let store = store.clone();
                std::thread::spawn(move || {
                    (0..500)
                        .filter(|_| store.decide(RateLimitKey::User("hot"), limit).allowed)
                        .count()
                })
            })
            .collect();
        let passed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(passed, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded_under_many_keys() {
        let store = MemoryRateLimitStore::new(64);
        let limit = Limit::per_minute(1).unwrap();
        for i in 0..10_000 {
            assert!(
                store
                    .decide(RateLimitKey::User(&format!("user_{i}")), limit)
                    .allowed
            );
            if i % 100 == 0 {
                tokio::time::advance(Duration::from_secs(61)).await;
            }
        }
        // One key per shard at most (64 keys over 64 shards).
        assert!(store.users.len() <= SHARDS, "{}", store.users.len());
        // A key still in the map keeps its state.
        assert!(!store.decide(RateLimitKey::User("user_9999"), limit).allowed);
    }
}
