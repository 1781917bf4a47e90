//! Token-bucket rate limiting per API key, in memory (each replica limits on
//! its own; the limit is a guard against runaway clients, not a quota).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::clock::Clock;
use crate::config::RateLimit;

/// Buckets beyond this many are pruned of full (idle) buckets.
const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at_ms: i64,
}

/// Per-key token buckets.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limit: RateLimit,
    clock: Arc<dyn Clock>,
    buckets: Arc<Mutex<HashMap<String, Bucket>>>,
}

impl RateLimiter {
    /// A limiter refilling `limit.per_second` tokens up to `limit.burst`.
    pub fn new(limit: RateLimit, clock: Arc<dyn Clock>) -> Self {
        RateLimiter {
            limit,
            clock,
            buckets: Arc::default(),
        }
    }

    /// Takes a token for `key`; `Err(seconds)` says when to retry.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        if self.limit.per_second <= 0.0 {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let burst = f64::from(self.limit.burst);
        let rate = self.limit.per_second;
        // A poisoned lock only means another request panicked mid-update; the
        // buckets are still usable numbers.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            map.retain(|_, b| refill(*b, now, rate, burst) < burst);
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            at_ms: now,
        });
        let tokens = refill(*b, now, rate, burst);
        if tokens >= 1.0 {
            *b = Bucket {
                tokens: tokens - 1.0,
                at_ms: now,
            };
            Ok(())
        } else {
            *b = Bucket { tokens, at_ms: now };
            let wait = ((1.0 - tokens) / rate).ceil().max(1.0);
            // `wait` is at most 1/rate seconds, a finite small number.
            Err(wait as u64)
        }
    }
}

fn refill(b: Bucket, now_ms: i64, rate: f64, burst: f64) -> f64 {
    let elapsed = (now_ms - b.at_ms).max(0) as f64 / 1000.0;
    (b.tokens + elapsed * rate).min(burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn burst_then_refill() {
        let clock = FakeClock::new(0);
        let l = RateLimiter::new(
            RateLimit {
                per_second: 2.0,
                burst: 3,
            },
            Arc::new(clock.clone()),
        );
        for _ in 0..3 {
            l.check("k").unwrap();
        }
        assert_eq!(l.check("k"), Err(1));
        // Another key has its own bucket.
        l.check("other").unwrap();
        clock.advance_ms(500);
        l.check("k").unwrap();
        assert!(l.check("k").is_err());
        clock.advance_ms(10_000);
        for _ in 0..3 {
            l.check("k").unwrap();
        }
        assert!(l.check("k").is_err());
    }

    #[test]
    fn zero_rate_disables() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 0.0,
                burst: 1,
            },
            Arc::new(FakeClock::new(0)),
        );
        for _ in 0..100 {
            l.check("k").unwrap();
        }
    }

    #[test]
    fn slow_rate_asks_to_wait_longer() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 0.1,
                burst: 1,
            },
            Arc::new(FakeClock::new(0)),
        );
        l.check("k").unwrap();
        assert_eq!(l.check("k"), Err(10));
    }
}
