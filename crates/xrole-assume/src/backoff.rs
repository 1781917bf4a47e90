//! Jittered exponential backoff.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Exponential backoff between `initial` and `max`, with "equal jitter": each delay is
/// drawn from `[d/2, d]`, so retries of many callers spread out but never collapse to 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Backoff {
    /// The first delay before jitter.
    pub(crate) initial: Duration,
    /// The cap before jitter.
    pub(crate) max: Duration,
}

impl Backoff {
    /// The un-jittered delay before retry number `retry` (1-based).
    pub(crate) fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32
            .checked_shl(retry.saturating_sub(1).min(20))
            .unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// The jittered delay before retry number `retry` (1-based).
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let d = self.ceiling(retry);
        d / 2 + jitter(d / 2)
    }
}

/// A uniformly drawn duration in `[0, max]`.
///
/// Not cryptographic: std's randomly keyed SipHash over a counter spreads retries and
/// refreshes, which is all it is for.
pub(crate) fn jitter(max: Duration) -> Duration {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = RandomState::new().hash_one(n);
    let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(r % nanos.saturating_add(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_caps_and_jitters_within_bounds() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.ceiling(1), Duration::from_millis(100));
        assert_eq!(b.ceiling(2), Duration::from_millis(200));
        assert_eq!(b.ceiling(5), Duration::from_secs(1));
        assert_eq!(b.ceiling(100), Duration::from_secs(1));
        let mut seen = std::collections::HashSet::new();
        for retry in 1..50 {
            let d = b.delay(retry);
            assert!(d >= b.ceiling(retry) / 2 && d <= b.ceiling(retry), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 10, "jitter should vary");
        assert_eq!(jitter(Duration::ZERO), Duration::ZERO);
    }
}
