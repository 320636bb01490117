//! [`DeniedUntil`]: a shared store's refusals remembered in this process until their retry
//! time, so that a client hammering past its limit costs no round trip until it may pass.
//!
//! A refusal changes no GCRA state, and a budget only refills with time: until the retry time
//! the store would refuse again with the same numbers, so answering locally changes no
//! decision. Entries are keyed by the key *and* its limit: after a tier change (and
//! [`crate::ClerkSync::invalidate`]) the request comes with another limit, misses, and asks
//! the store.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::limits::Limit;
use super::store::{Decision, RateLimitKey};

/// At most this many refusals are remembered per kind of key (ids, networks); past it a
/// refusal is not remembered (the store answers it again), so memory stays bounded.
const CAPACITY: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Denied {
    limit: Limit,
    /// When the next request would pass.
    until: Instant,
    /// When the whole budget is back.
    reset_at: Instant,
}

#[derive(Debug)]
struct Map<K>(Mutex<HashMap<K, Denied>>);

impl<K: Hash + Eq> Map<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Denied>> {
        // Plain values: a panic elsewhere cannot leave the map half-written.
        match self.0.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

/// Refusals until their retry time, by key and limit.
#[derive(Debug)]
pub(crate) struct DeniedUntil {
    /// Entries in both maps: 0 lets every allowed request skip the locks.
    len: AtomicUsize,
    ids: Map<Box<str>>,
    ips: Map<IpAddr>,
}

impl Default for DeniedUntil {
    fn default() -> Self {
        Self {
            len: AtomicUsize::new(0),
            ids: Map(Mutex::default()),
            ips: Map(Mutex::default()),
        }
    }
}

impl DeniedUntil {
    /// The refusal remembered for `key` under `limit`, with its times counted from now;
    /// `None` when there is none (or it has passed, or was for another limit).
    pub(crate) fn get(&self, key: RateLimitKey<'_>, limit: Limit) -> Option<Decision> {
        if self.len.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let now = Instant::now();
        let found = match key {
            // Clerk ids carry their kind (`user_`, `mch_`, `org_`): one map holds all three.
            RateLimitKey::User(id) | RateLimitKey::Machine(id) | RateLimitKey::Organization(id) => {
                self.take_current(&mut self.ids.lock(), id, limit, now)
            }
            RateLimitKey::Ip(ip) => self.take_current(&mut self.ips.lock(), &ip, limit, now),
        }?;
        Some(Decision::new(
            false,
            0,
            found.reset_at.saturating_duration_since(now),
            Some(found.until.saturating_duration_since(now)),
        ))
    }

    /// The entry when it still applies; a passed one (or one for another limit) is removed.
    fn take_current<K, Q>(
        &self,
        map: &mut HashMap<K, Denied>,
        key: &Q,
        limit: Limit,
        now: Instant,
    ) -> Option<Denied>
    where
        K: Hash + Eq + std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entry = *map.get(key)?;
        if entry.limit == limit && now < entry.until {
            return Some(entry);
        }
        if now >= entry.until {
            map.remove(key);
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
        None
    }

    /// Remembers the store's refusal `decision` for `key` under `limit`.
    pub(crate) fn insert(&self, key: RateLimitKey<'_>, limit: Limit, decision: &Decision) {
        let Some(retry_after) = decision.retry_after.filter(|wait| !wait.is_zero()) else {
            return;
        };
        let retry_after = retry_after.min(LONGEST);
        let now = Instant::now();
        let entry = Denied {
            limit,
            until: now + retry_after,
            reset_at: now + decision.reset.clamp(retry_after, LONGEST),
        };
        match key {
            RateLimitKey::User(id) | RateLimitKey::Machine(id) | RateLimitKey::Organization(id) => {
                self.put(&mut self.ids.lock(), id.into(), entry, now);
            }
            RateLimitKey::Ip(ip) => self.put(&mut self.ips.lock(), ip, entry, now),
        }
    }

    fn put<K: Hash + Eq>(&self, map: &mut HashMap<K, Denied>, key: K, entry: Denied, now: Instant) {
        if map.len() >= CAPACITY {
            let before = map.len();
            map.retain(|_, denied| denied.until > now);
            self.len.fetch_sub(before - map.len(), Ordering::Relaxed);
            if map.len() >= CAPACITY {
                return;
            }
        }
        if map.insert(key, entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// How long a refusal is remembered at most, whatever the store said: a guard against a
/// store answering a wild retry time.
pub(crate) const LONGEST: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(retry: u64, reset: u64) -> Decision {
        Decision::new(
            false,
            0,
            Duration::from_secs(reset),
            Some(Duration::from_secs(retry)),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_answers_until_its_retry_time_then_is_forgotten() {
        let denied = DeniedUntil::default();
        let limit = Limit::per_minute(5).unwrap();
        let key = RateLimitKey::User("user_1");
        assert_eq!(denied.get(key, limit), None);
        denied.insert(key, limit, &refusal(12, 60));

        tokio::time::advance(Duration::from_secs(2)).await;
        let answer = denied.get(key, limit).unwrap();
        assert!(!answer.allowed);
        assert_eq!(answer.retry_after, Some(Duration::from_secs(10)));
        assert_eq!(answer.reset, Duration::from_secs(58));
        // Other keys and kinds are not refused.
        assert_eq!(denied.get(RateLimitKey::User("user_2"), limit), None);
        assert_eq!(
            denied.get(RateLimitKey::Ip([127, 0, 0, 1].into()), limit),
            None
        );

        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(denied.get(key, limit), None, "the retry time has come");
        assert_eq!(denied.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn another_limit_misses_and_keeps_nothing_stale() {
        let denied = DeniedUntil::default();
        let free = Limit::per_minute(5).unwrap();
        let pro = Limit::per_minute(600).unwrap();
        let ip = RateLimitKey::Ip([10, 0, 0, 1].into());
        denied.insert(ip, free, &refusal(12, 60));
        // A tier upgrade: the same key under another limit asks the store.
        assert_eq!(denied.get(ip, pro), None);
        assert!(
            denied.get(ip, free).is_some(),
            "the old entry is kept for its limit"
        );
        // A refusal without a wait is not remembered.
        denied.insert(
            RateLimitKey::User("u"),
            free,
            &Decision::new(false, 0, Duration::ZERO, None),
        );
        assert_eq!(denied.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn memory_stays_bounded() {
        let denied = DeniedUntil::default();
        let limit = Limit::per_minute(1).unwrap();
        for i in 0..CAPACITY + 10 {
            denied.insert(
                RateLimitKey::User(&format!("user_{i}")),
                limit,
                &refusal(60, 60),
            );
        }
        assert_eq!(denied.len(), CAPACITY);
        // Once they have passed, room is made for new ones.
        tokio::time::advance(Duration::from_secs(61)).await;
        denied.insert(RateLimitKey::User("user_new"), limit, &refusal(60, 60));
        assert_eq!(denied.len(), 1);
        assert!(denied.get(RateLimitKey::User("user_new"), limit).is_some());
    }
}
