//! Who a job acts for: the job id and the tags every resource carries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of a provisioning job. It seeds every `ClientToken`, resource name
/// and `xrole:job` tag of the job, so a job resumed under the same id finds
/// its own resources and nobody else's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh random id (UUID v7, time-ordered).
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for JobId {
    fn from(u: Uuid) -> Self {
        JobId(u)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(JobId(s.parse()?))
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// The tenant a job works for, written on every resource as `xrole:org`,
/// `xrole:link` and `xrole:job` (next to `xrole:managed-by=xrole`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobScope {
    org: String,
    link: String,
    job: JobId,
}

impl JobScope {
    /// Checks that `org` and `link` are valid tag values (1 to 128
    /// characters of letters, digits, spaces and `_.:/=+-@`).
    ///
    /// ```
    /// use xrole_provision::{JobId, JobScope};
    /// let scope = JobScope::new("org_123", "link_456", JobId::new()).unwrap();
    /// assert!(JobScope::new("", "link", JobId::new()).is_err());
    /// ```
    pub fn new(
        org: impl Into<String>,
        link: impl Into<String>,
        job: JobId,
    ) -> Result<Self, String> {
        let org = org.into();
        let link = link.into();
        for (what, v) in [("org", &org), ("link", &link)] {
            let ok = |c: char| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c);
            if v.is_empty() || v.len() > 128 || !v.chars().all(ok) {
                return Err(format!("{what} `{v}` is not a valid tag value"));
            }
        }
        Ok(JobScope { org, link, job })
    }

    /// The organisation id.
    pub fn org(&self) -> &str {
        &self.org
    }

    /// The account link id.
    pub fn link(&self) -> &str {
        &self.link
    }

    /// The job id.
    pub fn job(&self) -> JobId {
        self.job
    }
}

/// 64-bit FNV-1a: a stable, dependency-free hash for deriving names and tokens
/// (not for security: collisions are caught by checking the `xrole:job` tag).
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.iter().chain(b"\0") {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
