//! [`RateLimitStore`]: where rate-limit state lives, and the GCRA arithmetic every store shares.

use std::net::IpAddr;
use std::time::Duration;

use super::limits::Limit;
use crate::error::StoreFuture;

/// Whose budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RateLimitKey<'a> {
    /// A synced user, by Clerk user id: the user's sessions, API keys and OAuth tokens
    /// share it.
    User(&'a str),
    /// A machine (`mch_…`), by machine id.
    Machine(&'a str),
    /// An organization's API keys (`org_…`), by organization id.
    Organization(&'a str),
    /// An anonymous request, by the client's network: its address with the host bits past
    /// the configured prefix cleared (IPv6 by /64 by default, see
    /// [`crate::ClientAddress`]).
    Ip(IpAddr),
}

impl RateLimitKey<'_> {
    /// The key as shared stores write it: a namespace, a colon, the id. `user:<Clerk user id>`,
    /// `mch:<machine id>`, `org:<organization id>` and `ip:<network address>`. Namespaces keep
    /// keys of different kinds apart in one table or keyspace.
    pub fn storage_key(&self) -> String {
        match self {
            Self::User(id) => format!("user:{id}"),
            Self::Machine(id) => format!("mch:{id}"),
            Self::Organization(id) => format!("org:{id}"),
            Self::Ip(ip) => format!("ip:{ip}"),
        }
    }
}

/// The answer for one request. A custom store builds it with [`Decision::new`] or, from GCRA
/// state, [`Decision::from_gcra`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Decision {
    /// Whether the request may go on.
    pub allowed: bool,
    /// Requests left right now (`RateLimit-Remaining`).
    pub remaining: u32,
    /// Time until the whole budget is back (`RateLimit-Reset`).
    pub reset: Duration,
    /// For a refused request, time until the next one would pass (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Decision {
    /// A decision: `allowed` or not, `remaining` requests now, the whole budget back after
    /// `reset`, and for a refusal the wait before the next request would pass.
    pub fn new(
        allowed: bool,
        remaining: u32,
        reset: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        Self {
            allowed,
            remaining,
            reset,
            retry_after,
        }
    }

    /// Derives the decision from GCRA state: whether the request was allowed and how far the
    /// theoretical arrival time (TAT) now lies ahead of the clock.
    ///
    /// With emission interval `T = period / count` and burst tolerance `τ = period − T`, a
    /// request is allowed while `TAT − now ≤ τ`; an allowed request pushes TAT by `T`.
    pub fn from_gcra(allowed: bool, ahead: Duration, limit: Limit) -> Self {
        let interval = limit.emission_interval();
        let tolerance = limit.period().saturating_sub(interval);
        if allowed {
            // Stores that keep time in microseconds (PostgreSQL) round the interval; a few
            // microseconds of slack keep `remaining` from dropping one short because of it.
            let slack = Duration::from_micros(10).min(interval / 2);
            let spare = limit.period().saturating_sub(ahead) + slack;
            let remaining = (spare.as_nanos() / interval.as_nanos().max(1)) as u32;
            Self {
                allowed,
                remaining: remaining.min(limit.count()),
                reset: ahead,
                retry_after: None,
            }
        } else {
            Self {
                allowed,
                remaining: 0,
                reset: ahead,
                retry_after: Some(ahead.saturating_sub(tolerance)),
            }
        }
    }
}

/// Keeps the GCRA state of every key. Implement it for another backend (Redis, say); the
/// memory and Postgres stores ship with the crate.
pub trait RateLimitStore: Send + Sync + 'static {
    /// Spends one request of `key`'s budget under `limit`, atomically, and answers.
    fn check<'a>(&'a self, key: RateLimitKey<'a>, limit: Limit) -> StoreFuture<'a, Decision>;

    /// The same as [`check`](Self::check) for stores that answer without I/O; the layer tries
    /// it first and skips the future. The default returns `None`: use `check`.
    fn check_now(&self, key: RateLimitKey<'_>, limit: Limit) -> Option<Decision> {
        let _ = (key, limit);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_decisions_count_down_and_say_when_to_retry() {
        let limit = Limit::new(3, Duration::from_secs(3)).unwrap();
        let first = Decision::from_gcra(true, Duration::from_secs(1), limit);
        assert_eq!((first.remaining, first.reset), (2, Duration::from_secs(1)));
        let last = Decision::from_gcra(true, Duration::from_secs(3), limit);
        assert_eq!(last.remaining, 0);
        // 2/3 s rounded to microseconds, as PostgreSQL returns it, still leaves 2 of 3.
        let thirds = Limit::new(3, Duration::from_secs(2)).unwrap();
        let rounded = Decision::from_gcra(true, Duration::from_micros(666_667), thirds);
        assert_eq!(rounded.remaining, 2);
        let refused = Decision::from_gcra(false, Duration::from_millis(2500), limit);
        assert_eq!(refused.retry_after, Some(Duration::from_millis(500)));
        assert_eq!(refused.remaining, 0);
    }
}
