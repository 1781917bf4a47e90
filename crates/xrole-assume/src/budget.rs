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
    pub(crate) fn take(&self, now: SystemTime) -> Result<(), Duration> {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.duration_since(st.1).unwrap_or_default().as_secs_f64();
        let tokens = (st.0 + elapsed * self.per_second).min(self.burst);
        if tokens >= 1.0 {
            *st = (tokens - 1.0, now);
            Ok(())
        } else {
            *st = (tokens, now);
            Err(Duration::from_secs_f64((1.0 - tokens) / self.per_second))
        }
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
}
