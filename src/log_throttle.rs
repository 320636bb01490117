//! [`Throttle`]: one log line per interval during an outage, with a count, instead of one per
//! failure.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Counts failures; [`hit`](Self::hit) says when to log: at the first failure, then at most
/// once per interval, with the number of failures since the last line.
#[derive(Debug)]
pub(crate) struct Throttle {
    interval: Duration,
    total: AtomicU64,
    unreported: AtomicU64,
    last_line: Mutex<Option<Instant>>,
}

impl Throttle {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            total: AtomicU64::new(0),
            unreported: AtomicU64::new(0),
            last_line: Mutex::new(None),
        }
    }

    /// Records one failure; `Some(failures since the last line)` when a line is due.
    pub(crate) fn hit(&self) -> Option<u64> {
        self.total.fetch_add(1, Ordering::Relaxed);
        self.unreported.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self
            .last_line
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.interval) {
            return None;
        }
        *last = Some(now);
        Some(self.unreported.swap(0, Ordering::Relaxed))
    }

    /// Failures recorded so far.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failure_logs_then_one_line_per_interval_with_the_count() {
        let throttle = Throttle::new(Duration::from_secs(3600));
        assert_eq!(throttle.hit(), Some(1));
        assert_eq!(throttle.hit(), None);
        assert_eq!(throttle.hit(), None);
        assert_eq!(throttle.total(), 3);
        let quick = Throttle::new(Duration::ZERO);
        assert_eq!(quick.hit(), Some(1));
        assert_eq!(quick.hit(), Some(1));
    }
}
