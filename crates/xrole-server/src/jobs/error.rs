//! How a job run ends when it does not succeed.

use std::time::Duration;

/// Why a job attempt did not finish.
#[derive(Debug)]
pub enum JobError {
    /// It failed and may work later: spends an attempt; `after` replaces
    /// the usual backoff.
    Retry {
        /// What failed.
        reason: String,
        /// When to try again, if not the usual backoff.
        after: Option<Duration>,
    },
    /// It waits on something outside itself (IAM propagation, its link
    /// being verified): queued again for `after`, without spending an
    /// attempt and without holding a worker meanwhile.
    Wait {
        /// What it waits for.
        reason: String,
        /// When to look again.
        after: Duration,
    },
    /// It cannot work, however often it is tried.
    Permanent {
        /// Why.
        reason: String,
    },
    /// Another worker owns the job now (this one stalled past its lease).
    LeaseLost,
}

impl JobError {
    pub(crate) fn permanent(m: impl Into<String>) -> Self {
        JobError::Permanent { reason: m.into() }
    }
    pub(crate) fn retry(m: impl Into<String>) -> Self {
        JobError::Retry {
            reason: m.into(),
            after: None,
        }
    }
    pub(crate) fn wait(m: impl Into<String>, after: Duration) -> Self {
        JobError::Wait {
            reason: m.into(),
            after,
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::Retry { reason, .. } | JobError::Permanent { reason } => f.write_str(reason),
            JobError::Wait { reason, .. } => write!(f, "waiting: {reason}"),
            JobError::LeaseLost => f.write_str("job lease lost"),
        }
    }
}

impl From<xrole_store::Error> for JobError {
    fn from(e: xrole_store::Error) -> Self {
        match e {
            xrole_store::Error::LeaseLost => JobError::LeaseLost,
            xrole_store::Error::NotFound => JobError::permanent("not found"),
            other => JobError::retry(format!("database: {other}")),
        }
    }
}

impl From<diesel::result::Error> for JobError {
    fn from(e: diesel::result::Error) -> Self {
        xrole_store::Error::from(e).into()
    }
}

impl From<xrole_provision::Error> for JobError {
    fn from(e: xrole_provision::Error) -> Self {
        if e.is_retryable() {
            JobError::retry(e.to_string())
        } else {
            JobError::permanent(e.to_string())
        }
    }
}

impl From<xrole_assume::Error> for JobError {
    fn from(e: xrole_assume::Error) -> Self {
        if let xrole_assume::Error::BudgetExhausted { retry_after } = e {
            // Back-pressure, not a failure: run again when STS has room.
            return JobError::wait(
                "the STS budget shared by all tenants is spent",
                retry_after.max(Duration::from_millis(100)),
            );
        }
        if e.is_retryable() {
            JobError::retry(e.to_string())
        } else {
            JobError::permanent(e.to_string())
        }
    }
}
