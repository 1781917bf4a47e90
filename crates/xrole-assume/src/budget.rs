//! The STS budget: one token bucket for every STS request the broker sends
//! (AssumeRole and GetCallerIdentity, for all tenants), so no tenant's
//! burst can push the SaaS's own account into STS throttling for everyone.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// A token bucket on the broker's clock.
#[derive(Debug)]
pub(crate) struct Budget {
    per_second: f64,
    burst: f64,
    state: Mutex<(f64, SystemTime)>,
}

impl Budget {
    pub(crate) fn new(per_second: f64, burst: u32, now: SystemTime) -> Budget {
        let burst = f64::from(burst.max(1));
        Budget {
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst,
            state: Mutex::new((burst, now)),
        }
    }

    /// Takes a token: `Ok(())`, or how long until one is free.
    #[cfg(test)]
    pub(crate) fn take(&self, now: SystemTime) -> Result<(), Duration> {
        self.take_n(1, now).map(|_| ())
    }

    /// Takes `n` tokens at once (at most the burst: the number taken is
    /// returned), or none and how long until they are free. A task that
    /// needs several calls to finish takes them together, so tasks sharing
    /// a spent budget never each get part of what they need and all fail.
    pub(crate) fn take_n(&self, n: u32, now: SystemTime) -> Result<u32, Duration> {
        let n = f64::from(n.max(1)).min(self.burst);
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.duration_since(st.1).unwrap_or_default().as_secs_f64();
        let tokens = (st.0 + elapsed * self.per_second).min(self.burst);
        if tokens >= n {
            *st = (tokens - n, now);
            // n is a whole number between 1 and u32::MAX.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(n as u32)
        } else {
            *st = (tokens, now);
            Err(Duration::from_secs_f64((n - tokens) / self.per_second))
        }
    }

    /// Returns `n` unused tokens (never above the burst).
    pub(crate) fn give_back(&self, n: u32) {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.0 = (st.0 + f64::from(n)).min(self.burst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_its_rate_up_to_its_burst() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let b = Budget::new(10.0, 3, t0);
        for _ in 0..3 {
            b.take(t0).unwrap();
        }
        let wait = b.take(t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(99) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        b.take(t0 + Duration::from_millis(100)).unwrap();
        assert!(b.take(t0 + Duration::from_millis(100)).is_err());
        // Idle for long: still only the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            b.take(later).unwrap();
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn several_tokens_are_taken_together_or_not_at_all() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let b = Budget::new(4.0, 5, t0);
        assert_eq!(b.take_n(5, t0), Ok(5));
        // Two tokens later, a task needing five takes none of them...
        let t1 = t0 + Duration::from_millis(500);
        let wait = b.take_n(5, t1).unwrap_err();
        assert!(
            wait > Duration::from_millis(749) && wait <= Duration::from_millis(750),
            "{wait:?}"
        );
        // ...so they are still there for a one-call task.
        b.take(t1).unwrap();
        b.take(t1).unwrap();
        assert!(b.take(t1).is_err());
        // More than the burst: the burst.
        let t2 = t1 + Duration::from_secs(10);
        assert_eq!(b.take_n(50, t2), Ok(5));
        b.give_back(3);
        assert_eq!(b.take_n(5, t2), Err(Duration::from_millis(500)));
        assert_eq!(b.take_n(3, t2), Ok(3));
        b.give_back(100);
        assert_eq!(b.take_n(5, t2), Ok(5));
    }
}
