//! [`Budget`]: a token bucket that bounds calls per process.

use std::sync::Mutex;
use std::time::Instant;

/// A token bucket: `burst` calls at once, refilled at `per_second`. Cheap to ask (one mutex,
/// taken only on the paths that would call the Backend API).
#[derive(Debug)]
pub(crate) struct Budget {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Budget {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second),
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one call from the bucket; `false` when it is empty.
    pub(crate) fn try_take(&self) -> bool {
        self.try_take_at(Instant::now()).is_ok()
    }

    /// Takes one call from the bucket, or says how long until one is back.
    pub(crate) fn take_or_wait(&self) -> Result<(), std::time::Duration> {
        self.try_take_at(Instant::now())
    }

    fn try_take_at(&self, now: Instant) -> Result<(), std::time::Duration> {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        let (tokens, last) = &mut *state;
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else if self.per_second > 0.0 {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - *tokens) / self.per_second,
            ))
        } else {
            Err(std::time::Duration::from_secs(3600))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill_at_the_rate() {
        let budget = Budget::new(20, 40);
        let start = Instant::now();
        let taken = (0..100)
            .filter(|_| budget.try_take_at(start).is_ok())
            .count();
        assert_eq!(taken, 40, "the burst");
        // 20 per second: 10 after half a second, never more than the burst.
        let later = start + Duration::from_millis(500);
        let taken = (0..100)
            .filter(|_| budget.try_take_at(later).is_ok())
            .count();
        assert_eq!(taken, 10);
        let much_later = later + Duration::from_secs(3600);
        let taken = (0..100)
            .filter(|_| budget.try_take_at(much_later).is_ok())
            .count();
        assert_eq!(taken, 40);
        // Empty: the wait until the next call is back, at 20 per second.
        let wait = budget.try_take_at(much_later).unwrap_err();
        assert!(
            wait <= Duration::from_millis(50) && wait > Duration::ZERO,
            "{wait:?}"
        );
    }

    #[test]
    fn a_zero_rate_is_the_burst_once() {
        let budget = Budget::new(0, 2);
        let now = Instant::now();
        assert!(budget.try_take_at(now).is_ok());
        assert!(budget.try_take_at(now).is_ok());
        assert!(budget.try_take_at(now + Duration::from_secs(60)).is_err());
    }
}
