//! [`MemoryRateLimitStore`]: GCRA state in this process, bounded and evicted when idle.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::Expiry;
use moka::sync::Cache;
use tokio::time::Instant;

use super::limits::Limit;
use super::store::{Decision, RateLimitKey, RateLimitStore};
use crate::sync::StoreFuture;

/// One key's state: its theoretical arrival time, in nanoseconds since the store's origin.
#[derive(Debug)]
struct Slot {
    tat: AtomicU64,
    period: Duration,
}

/// A slot idle for a whole period has its full budget back: forgetting it changes nothing.
struct IdleForAPeriod;

impl<K> Expiry<K, Arc<Slot>> for IdleForAPeriod {
    fn expire_after_create(
        &self,
        _key: &K,
        slot: &Arc<Slot>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(slot.period)
    }

    fn expire_after_read(
        &self,
        _key: &K,
        slot: &Arc<Slot>,
        _read_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
        _last_modified_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(slot.period)
    }
}

/// Rate-limit state for one process: GCRA per key, lock-free per request (one atomic
/// compare-and-swap), at most `capacity` keys, and keys idle for a whole period forgotten.
///
/// Every process has its own budget: with N processes a user gets N times the limit. Use
/// [`crate::PgRateLimitStore`] to share one limit.
#[derive(Clone)]
pub struct MemoryRateLimitStore {
    users: Cache<Box<str>, Arc<Slot>>,
    ips: Cache<IpAddr, Arc<Slot>>,
    origin: Instant,
}

impl std::fmt::Debug for MemoryRateLimitStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimitStore")
            .field("users", &self.users.entry_count())
            .field("ips", &self.ips.entry_count())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryRateLimitStore {
    fn default() -> Self {
        Self::new(100_000)
    }
}

impl MemoryRateLimitStore {
    /// A store that keeps at most `capacity` users and `capacity` IPs. Default: 100,000.
    pub fn new(capacity: u64) -> Self {
        Self {
            users: Cache::builder()
                .max_capacity(capacity)
                .expire_after(IdleForAPeriod)
                .build(),
            ips: Cache::builder()
                .max_capacity(capacity)
                .expire_after(IdleForAPeriod)
                .build(),
            origin: Instant::now(),
        }
    }

    fn slot(&self, key: RateLimitKey<'_>, limit: Limit) -> Arc<Slot> {
        let fresh = || {
            Arc::new(Slot {
                tat: AtomicU64::new(0),
                period: limit.period(),
            })
        };
        match key {
            RateLimitKey::User(id) => match self.users.get(id) {
                Some(slot) => slot,
                None => self.users.get_with(id.into(), fresh),
            },
            RateLimitKey::Ip(ip) => self.ips.get_with(ip, fresh),
        }
    }

    /// The GCRA step, synchronous.
    pub(crate) fn decide(&self, key: RateLimitKey<'_>, limit: Limit) -> Decision {
        let slot = self.slot(key, limit);
        let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let now = nanos(self.origin.elapsed());
        let interval = nanos(limit.emission_interval());
        let tolerance = nanos(limit.period()).saturating_sub(interval);
        let mut current = slot.tat.load(Ordering::Acquire);
        loop {
            let tat = current.max(now);
            if tat - now > tolerance {
                return Decision::from_gcra(false, Duration::from_nanos(tat - now), limit);
            }
            let next = tat + interval;
            match slot
                .tat
                .compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Decision::from_gcra(true, Duration::from_nanos(next - now), limit),
                Err(actual) => current = actual,
            }
        }
    }
}

impl RateLimitStore for MemoryRateLimitStore {
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision> {
        let decision = self.decide(key, limit);
        Box::pin(std::future::ready(Ok(decision)))
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
}
