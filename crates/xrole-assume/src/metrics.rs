//! Counters the caller can read: [`Metrics`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::sts::Class;

/// A snapshot of a broker's counters since it was built.
///
/// ```no_run
/// # async fn f(broker: xrole_assume::Broker) {
/// let m = broker.metrics();
/// println!("hit ratio {:.3}, {} STS calls", m.hits as f64 / (m.hits + m.misses).max(1) as f64, m.sts_calls);
/// # }
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Requests answered from the cache (including callers that waited for another
    /// caller's fetch of the same session).
    pub hits: u64,
    /// Requests that had to fetch a session (nothing cached, or too close to expiry).
    pub misses: u64,
    /// Successful refreshes ahead of expiry.
    pub refreshes: u64,
    /// Failed refreshes (the still-valid session kept being served).
    pub refresh_failures: u64,
    /// Sessions dropped by the size bound or the idle timeout.
    pub evictions: u64,
    /// Sessions cached right now (approximate, updated by maintenance).
    pub entries: u64,
    /// STS requests sent (AssumeRole and GetCallerIdentity, retries included).
    pub sts_calls: u64,
    /// Failed STS requests, by class.
    pub sts_errors: StsErrors,
    /// STS requests not sent because the broker's STS budget was spent.
    pub budget_refusals: u64,
}

/// Failed STS requests by class; see [`Error`](crate::Error) for what each means.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StsErrors {
    /// AccessDenied: trust policy or External ID mismatch, or role not (yet) present.
    pub access_denied: u64,
    /// STS disabled in the region.
    pub region_disabled: u64,
    /// Request rejected as invalid (policy malformed or too large…).
    pub invalid_request: u64,
    /// The broker's own identity failed (no or invalid credentials).
    pub base_identity: u64,
    /// Throttled.
    pub throttled: u64,
    /// Network, timeout or 5xx.
    pub transient: u64,
    /// Anything else.
    pub unexpected: u64,
}

impl StsErrors {
    /// The sum over all classes.
    pub fn total(&self) -> u64 {
        self.access_denied
            + self.region_disabled
            + self.invalid_request
            + self.base_identity
            + self.throttled
            + self.transient
            + self.unexpected
    }
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) refreshes: AtomicU64,
    pub(crate) refresh_failures: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) sts_calls: AtomicU64,
    pub(crate) budget_refusals: AtomicU64,
    errors: [AtomicU64; 7],
}

impl Counters {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub(crate) fn sts_error(&self, class: Class) {
        let i = match class {
            Class::AccessDenied => 0,
            Class::RegionDisabled => 1,
            Class::InvalidRequest => 2,
            Class::BaseIdentity => 3,
            Class::Throttled => 4,
            Class::Transient => 5,
            Class::Unexpected => 6,
            // Nothing was sent: counted as a refusal, not an STS error.
            Class::BudgetExhausted => return,
        };
        Counters::inc(&self.errors[i]);
    }

    pub(crate) fn snapshot(&self, entries: u64) -> Metrics {
        let e = |i: usize| self.errors[i].load(Relaxed);
        Metrics {
            hits: self.hits.load(Relaxed),
            misses: self.misses.load(Relaxed),
            refreshes: self.refreshes.load(Relaxed),
            refresh_failures: self.refresh_failures.load(Relaxed),
            evictions: self.evictions.load(Relaxed),
            entries,
            sts_calls: self.sts_calls.load(Relaxed),
            budget_refusals: self.budget_refusals.load(Relaxed),
            sts_errors: StsErrors {
                access_denied: e(0),
                region_disabled: e(1),
                invalid_request: e(2),
                base_identity: e(3),
                throttled: e(4),
                transient: e(5),
                unexpected: e(6),
            },
        }
    }
}
