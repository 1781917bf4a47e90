//! Login throttling: password guessing slows down exponentially per account
//! and per client address, and password checks (argon2id, 19 MiB each) are
//! bounded, so logins can exhaust neither accounts nor the server.
//!
//! In memory, per replica (like the rate limits): a guard against guessing
//! and floods, not a ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::clock::Clock;

/// Failures an account may have before it is slowed down.
const FREE_FAILURES_PER_ACCOUNT: u32 = 5;
/// Failures one client address may have (across accounts) before it is
/// slowed down: higher, for offices behind one address.
const FREE_FAILURES_PER_ADDRESS: u32 = 20;
/// The first pause after the free failures, doubling with each failure.
const FIRST_PAUSE_MS: i64 = 1_000;
/// The longest pause.
const MAX_PAUSE_MS: i64 = 15 * 60 * 1_000;
/// Failures are forgotten this long after the last one.
const FORGET_AFTER_MS: i64 = 60 * 60 * 1_000;
/// Entries beyond this many are pruned of forgotten ones.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last_ms: i64,
    blocked_until_ms: i64,
}

/// What a login attempt is throttled by.
#[derive(Debug, Clone)]
pub struct LoginKeys {
    account: String,
    address: Option<String>,
}

impl LoginKeys {
    /// The account (organization and email, as submitted: unknown users
    /// are throttled like known ones) and the client address.
    pub fn new(org: &str, email: &str, address: Option<&str>) -> Self {
        LoginKeys {
            account: format!("a:{org}:{}", email.to_ascii_lowercase()),
            address: address.map(|a| format!("ip:{a}")),
        }
    }
}

/// Why a login may not proceed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too many recent failures: try again after this many seconds.
    Throttled {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// Every password-check slot is busy.
    Busy,
}

/// Failure counters and the password-check slots.
#[derive(Debug)]
pub struct LoginGuard {
    clock: Arc<dyn Clock>,
    failures: Mutex<HashMap<String, Failures>>,
    slots: Arc<Semaphore>,
}

impl LoginGuard {
    /// `concurrency` password checks at once.
    pub fn new(concurrency: usize, clock: Arc<dyn Clock>) -> Self {
        LoginGuard {
            clock,
            failures: Mutex::new(HashMap::new()),
            slots: Arc::new(Semaphore::new(concurrency)),
        }
    }

    /// Admits an attempt: a password-check slot to hold while hashing, or
    /// why not. Throttled attempts and busy slots cost no hashing at all.
    pub fn admit(&self, keys: &LoginKeys) -> Result<OwnedSemaphorePermit, Refused> {
        let now = self.clock.now_ms();
        {
            let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let until = [Some(&keys.account), keys.address.as_ref()]
                .into_iter()
                .flatten()
                .filter_map(|k| map.get(k))
                .map(|f| f.blocked_until_ms)
                .max()
                .unwrap_or(0);
            if until > now {
                let secs = (until - now + 999) / 1000;
                return Err(Refused::Throttled {
                    retry_after_secs: u64::try_from(secs).unwrap_or(1).max(1),
                });
            }
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)
    }

    /// Records a failed attempt: past the free failures, each one doubles
    /// the pause before the next attempt of that account or address.
    pub fn failed(&self, keys: &LoginKeys) {
        let now = self.clock.now_ms();
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, f| now - f.last_ms < FORGET_AFTER_MS || f.blocked_until_ms > now);
        }
        let targets = [
            (Some(&keys.account), FREE_FAILURES_PER_ACCOUNT),
            (keys.address.as_ref(), FREE_FAILURES_PER_ADDRESS),
        ];
        for (key, free) in targets {
            let Some(key) = key else { continue };
            let f = map.entry(key.clone()).or_insert(Failures {
                count: 0,
                last_ms: now,
                blocked_until_ms: 0,
            });
            if now - f.last_ms >= FORGET_AFTER_MS {
                f.count = 0;
            }
            f.count = f.count.saturating_add(1);
            f.last_ms = now;
            if f.count > free {
                let doublings = (f.count - free - 1).min(20);
                let pause = (FIRST_PAUSE_MS << doublings).min(MAX_PAUSE_MS);
                f.blocked_until_ms = now + pause;
            }
        }
    }

    /// Records a successful login: the account's failures are forgotten
    /// (the address's are not: it may be guessing other accounts).
    pub fn succeeded(&self, keys: &LoginKeys) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&keys.account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    #[test]
    fn failures_slow_an_account_down_exponentially_and_success_resets() {
        let clock = FakeClock::new(1_000_000);
        let g = LoginGuard::new(2, Arc::new(clock.clone()));
        let k = LoginKeys::new("org", "a@x.com", Some("10.0.0.1"));
        for _ in 0..FREE_FAILURES_PER_ACCOUNT {
            drop(g.admit(&k).unwrap());
            g.failed(&k);
        }
        drop(g.admit(&k).unwrap());
        g.failed(&k);
        assert_eq!(
            g.admit(&k).unwrap_err(),
            Refused::Throttled {
                retry_after_secs: 1
            }
        );
        clock.advance_ms(1_000);
        drop(g.admit(&k).unwrap());
        g.failed(&k);
        assert_eq!(
            g.admit(&k).unwrap_err(),
            Refused::Throttled {
                retry_after_secs: 2
            }
        );
        // Case does not make a new account.
        let upper = LoginKeys::new("org", "A@X.COM", None);
        assert!(g.admit(&upper).is_err());
        // Another account from another address is not affected.
        let other = LoginKeys::new("org", "b@x.com", Some("10.0.0.2"));
        assert!(g.admit(&other).is_ok());
        clock.advance_ms(2_000);
        drop(g.admit(&k).unwrap());
        g.succeeded(&k);
        drop(g.admit(&k).unwrap());
        // The pause is capped.
        for _ in 0..40 {
            g.failed(&k);
        }
        assert_eq!(
            g.admit(&k).unwrap_err(),
            Refused::Throttled {
                retry_after_secs: 900
            }
        );
    }

    #[test]
    fn one_address_guessing_many_accounts_is_slowed_down() {
        let clock = FakeClock::new(0);
        let g = LoginGuard::new(2, Arc::new(clock));
        for i in 0..FREE_FAILURES_PER_ADDRESS {
            let k = LoginKeys::new("org", &format!("u{i}@x.com"), Some("192.0.2.7"));
            drop(g.admit(&k).unwrap());
            g.failed(&k);
        }
        let k = LoginKeys::new("org", "fresh@x.com", Some("192.0.2.7"));
        drop(g.admit(&k).unwrap());
        g.failed(&k);
        assert!(matches!(g.admit(&k), Err(Refused::Throttled { .. })));
        let elsewhere = LoginKeys::new("org", "fresh2@x.com", Some("192.0.2.8"));
        assert!(g.admit(&elsewhere).is_ok());
    }

    #[test]
    fn password_checks_are_bounded() {
        let g = LoginGuard::new(2, Arc::new(FakeClock::new(0)));
        let k = LoginKeys::new("org", "a@x.com", None);
        let a = g.admit(&k).unwrap();
        let b = g.admit(&k).unwrap();
        assert_eq!(g.admit(&k).unwrap_err(), Refused::Busy);
        drop(a);
        let c = g.admit(&k).unwrap();
        drop((b, c));
    }
}
