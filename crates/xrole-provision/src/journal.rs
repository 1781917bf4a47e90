//! The step journal: what a job meant to create, and what it got.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::{Error, JobId};

/// The stable name of one step of a job, such as `vpc`, `subnet/private/1`,
/// `instance/web/0` or `teardown/vpc`. Keys are derived from the plan, so the
/// same plan always yields the same keys; they are also written to each
/// resource's `xrole:step` tag, which is how a resumed job finds resources the
/// journal did not hear about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StepKey(String);

impl StepKey {
    /// Parses a key: 1 to 128 characters of `[a-z0-9/._-]`.
    pub fn new(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into();
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "/._-".contains(c);
        if key.is_empty() || key.len() > 128 || !key.chars().all(ok_char) {
            return Err(format!(
                "`{key}` is not a step key (1-128 characters of [a-z0-9/._-])"
            ));
        }
        Ok(StepKey(key))
    }

    /// Builds a key from parts the crate controls (already valid).
    pub(crate) fn from_parts(parts: &[&str]) -> Self {
        StepKey(parts.join("/"))
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The teardown step of this create step (`teardown/<key>`).
    pub fn teardown(&self) -> StepKey {
        StepKey(format!("teardown/{}", self.0))
    }

    /// Whether this is a teardown step.
    pub fn is_teardown(&self) -> bool {
        self.0.starts_with("teardown/")
    }
}

impl TryFrom<String> for StepKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        StepKey::new(s)
    }
}

impl From<StepKey> for String {
    fn from(k: StepKey) -> String {
        k.0
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One journal row: a step whose intent was recorded, with the AWS id once
/// the step finished (`None` means the outcome is unknown: the process may
/// have stopped before, during or after the AWS call).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The step.
    pub step: StepKey,
    /// What the step produced (an AWS id such as `vpc-0abc…`, or a marker
    /// such as `done` for steps without a resource).
    pub aws_id: Option<String>,
}

/// Durable memory of a provisioning job, written before and after every AWS
/// call.
///
/// The executor calls [`record_intent`](StepJournal::record_intent) before a
/// step touches AWS and [`record_result`](StepJournal::record_result) once
/// it has, and reads everything back with [`load`](StepJournal::load) when a
/// job starts or resumes. A SQL implementation is one table:
///
/// ```sql
/// CREATE TABLE provision_steps (
///     job_id   TEXT NOT NULL,
///     step_key TEXT NOT NULL,
///     aws_id   TEXT,              -- NULL until the step finished
///     PRIMARY KEY (job_id, step_key)
/// );
/// -- record_intent: INSERT ... ON CONFLICT (job_id, step_key) DO NOTHING
/// -- record_result: INSERT ... ON CONFLICT (job_id, step_key) DO UPDATE SET aws_id = excluded.aws_id
/// -- load:          SELECT step_key, aws_id FROM provision_steps WHERE job_id = ?
/// ```
///
/// Each call must be durable when its future resolves. Implementations wrap
/// their own failures with [`Error::journal`].
pub trait StepJournal: Send + Sync {
    /// Records that `step` is about to run. Recording an intent that already
    /// exists keeps the existing row (and its result) unchanged.
    fn record_intent(
        &self,
        job: JobId,
        step: &StepKey,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Records what `step` produced. Also used by an operator to adopt a
    /// resource found by hand for a step reported by
    /// [`Error::ReconciliationRequired`].
    fn record_result(
        &self,
        job: JobId,
        step: &StepKey,
        aws_id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Every entry of `job`, in any order.
    fn load(&self, job: JobId) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send;
}

impl<T: StepJournal + ?Sized> StepJournal for Arc<T> {
    fn record_intent(
        &self,
        job: JobId,
        step: &StepKey,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).record_intent(job, step)
    }
    fn record_result(
        &self,
        job: JobId,
        step: &StepKey,
        aws_id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).record_result(job, step, aws_id)
    }
    fn load(&self, job: JobId) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send {
        (**self).load(job)
    }
}

impl<T: StepJournal + ?Sized> StepJournal for &T {
    fn record_intent(
        &self,
        job: JobId,
        step: &StepKey,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).record_intent(job, step)
    }
    fn record_result(
        &self,
        job: JobId,
        step: &StepKey,
        aws_id: &str,
    ) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).record_result(job, step, aws_id)
    }
    fn load(&self, job: JobId) -> impl Future<Output = Result<Vec<JournalEntry>, Error>> + Send {
        (**self).load(job)
    }
}

/// A journal in process memory, for library users without a database and
/// for tests. It does not survive a restart.
#[derive(Debug, Default)]
pub struct InMemoryJournal {
    jobs: Mutex<BTreeMap<JobId, BTreeMap<StepKey, Option<String>>>>,
}

impl InMemoryJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut BTreeMap<JobId, BTreeMap<StepKey, Option<String>>>) -> R,
    ) -> Result<R, Error> {
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| Error::journal(PoisonedJournal))?;
        Ok(f(&mut jobs))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the in-memory journal's lock is poisoned")]
struct PoisonedJournal;

impl StepJournal for InMemoryJournal {
    async fn record_intent(&self, job: JobId, step: &StepKey) -> Result<(), Error> {
        self.with(|jobs| {
            jobs.entry(job)
                .or_default()
                .entry(step.clone())
                .or_insert(None);
        })
    }

    async fn record_result(&self, job: JobId, step: &StepKey, aws_id: &str) -> Result<(), Error> {
        self.with(|jobs| {
            jobs.entry(job)
                .or_default()
                .insert(step.clone(), Some(aws_id.to_owned()));
        })
    }

    async fn load(&self, job: JobId) -> Result<Vec<JournalEntry>, Error> {
        self.with(|jobs| {
            jobs.get(&job)
                .map(|steps| {
                    steps
                        .iter()
                        .map(|(k, v)| JournalEntry {
                            step: k.clone(),
                            aws_id: v.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn intent_then_result_and_intent_again_keeps_the_result() {
        let j = InMemoryJournal::new();
        let job = JobId::new();
        let k = StepKey::new("vpc").unwrap();
        j.record_intent(job, &k).await.unwrap();
        assert_eq!(
            j.load(job).await.unwrap(),
            vec![JournalEntry {
                step: k.clone(),
                aws_id: None
            }]
        );
        j.record_result(job, &k, "vpc-1").await.unwrap();
        j.record_intent(job, &k).await.unwrap();
        assert_eq!(
            j.load(job).await.unwrap()[0].aws_id.as_deref(),
            Some("vpc-1")
        );
        assert!(j.load(JobId::new()).await.unwrap().is_empty());
    }

    #[test]
    fn step_keys_are_checked() {
        assert!(StepKey::new("subnet/public/0").is_ok());
        assert!(StepKey::new("").is_err());
        assert!(StepKey::new("Vpc").is_err());
        assert!(StepKey::new("a b").is_err());
        assert_eq!(
            StepKey::new("vpc").unwrap().teardown().as_str(),
            "teardown/vpc"
        );
    }
}
