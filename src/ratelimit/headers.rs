//! The `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` response headers.
//!
//! They are on every limited response, so they are made without allocating where the numbers
//! are small: integers below [`SMALL`] (most tiers' counts, what remains of them, and resets
//! in seconds) are slices of one static table of digits, which `HeaderValue` holds as a
//! static `Bytes` (no allocation, no reference count). Larger numbers are formatted as usual.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::limits::Limit;
use super::store::Decision;

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Integers below this come from [`DIGITS`].
const SMALL: u64 = 10_000;
/// Width of one number in [`DIGITS`]: `SMALL - 1` has this many digits.
const WIDTH: usize = 4;

/// `"0000" "0001" … "9999"`: number `n` is the last (its digit count) bytes of slot `n`.
static DIGITS: [u8; SMALL as usize * WIDTH] = digits();

const fn digits() -> [u8; SMALL as usize * WIDTH] {
    let mut table = [0u8; SMALL as usize * WIDTH];
    let mut n = 0;
    while n < SMALL as usize {
        let mut rest = n;
        let mut at = WIDTH;
        while at > 0 {
            at -= 1;
            table[n * WIDTH + at] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        n += 1;
    }
    table
}

/// `n` as a header value: from the table when it is small, formatted otherwise.
fn integer(n: u64) -> HeaderValue {
    if n < SMALL {
        let digits = match n {
            0..=9 => 1,
            10..=99 => 2,
            100..=999 => 3,
            _ => WIDTH,
        };
        let end = (n as usize + 1) * WIDTH;
        let bytes = Bytes::from_static(&DIGITS[end - digits..end]);
        // Always ASCII digits; the fallback is never taken.
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes) {
            return value;
        }
    }
    HeaderValue::from(n)
}

/// Whole seconds, rounded up (a reset in 0.2 s is announced as 1 s, never 0).
pub(super) fn secs_ceil(duration: Duration) -> u64 {
    let secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs + 1
    } else {
        secs
    }
}

/// Sets the three headers of `limit` and `decision` on a response.
pub(super) fn add_headers(headers: &mut HeaderMap, limit: Limit, decision: &Decision) {
    headers.insert(RATELIMIT_LIMIT, integer(u64::from(limit.count())));
    headers.insert(RATELIMIT_REMAINING, integer(u64::from(decision.remaining)));
    headers.insert(RATELIMIT_RESET, integer(secs_ceil(decision.reset)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_integer_reads_as_itself_from_the_table_and_beyond() {
        for n in (0..SMALL + 50).chain([99_999, 1_000_000_000, u64::from(u32::MAX)]) {
            assert_eq!(integer(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }

    #[test]
    fn resets_round_up_to_whole_seconds() {
        assert_eq!(secs_ceil(Duration::ZERO), 0);
        assert_eq!(secs_ceil(Duration::from_millis(200)), 1);
        assert_eq!(secs_ceil(Duration::from_secs(60)), 60);
        assert_eq!(secs_ceil(Duration::from_millis(60_001)), 61);
    }
}
