//! [`xrole_provision::StepJournal`] over the store's job steps.
//!
//! The store cannot depend on the provisioning crate, so the adapter lives
//! here. Writes go to the job the worker holds the lease of (a lost lease
//! stops the executor); reads merge that job's steps with read-only views of
//! earlier jobs. That is how an instance job reuses the network its VPC job
//! built (the VPC steps come back finished and are skipped), and how a
//! teardown job sees exactly the steps of the resource it removes.

use std::collections::BTreeMap;
use std::sync::Arc;

use xrole_provision::{Error, JobId as ProvisionJobId, JournalEntry, StepJournal, StepKey};
use xrole_store::jobs::Lease;
use xrole_store::{JobId, OrgId, Pool};

use crate::clock::Clock;

/// Which steps of an earlier job a view shows.
#[derive(Debug, Clone)]
pub enum StepFilter {
    /// Every step.
    All,
    /// Steps equal to one of these keys or below them (`key/…`).
    Under(Vec<String>),
}

impl StepFilter {
    fn keeps(&self, key: &str) -> bool {
        match self {
            StepFilter::All => true,
            StepFilter::Under(roots) => roots.iter().any(|r| {
                key == r
                    || key
                        .strip_prefix(r.as_str())
                        .is_some_and(|rest| rest.starts_with('/'))
            }),
        }
    }
}

/// A read-only view of an earlier job's finished steps.
#[derive(Debug, Clone)]
pub struct SourceView {
    /// The earlier job.
    pub job: JobId,
    /// Which of its steps count.
    pub filter: StepFilter,
}

/// The journal of one leased job.
#[derive(Clone)]
pub struct StoreJournal {
    pool: Pool,
    clock: Arc<dyn Clock>,
    lease: Lease,
    sources: Vec<SourceView>,
    /// Prefix of this job's own keys, so one teardown job can journal several
    /// resources whose step keys coincide.
    namespace: Option<String>,
}

impl std::fmt::Debug for StoreJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreJournal")
            .field("job", &self.lease.job_id())
            .field("sources", &self.sources)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct JournalError(String);

fn journal_error(e: impl std::fmt::Display) -> Error {
    Error::journal(JournalError(e.to_string()))
}

impl StoreJournal {
    /// A journal writing to the leased job.
    pub fn new(pool: Pool, clock: Arc<dyn Clock>, lease: Lease) -> Self {
        StoreJournal {
            pool,
            clock,
            lease,
            sources: Vec::new(),
            namespace: None,
        }
    }

    /// Adds a read-only view of an earlier job.
    pub fn with_source(mut self, source: SourceView) -> Self {
        self.sources.push(source);
        self
    }

    /// Prefixes this job's own step keys with `ns/`.
    pub fn with_namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = Some(ns.into());
        self
    }

    fn org(&self) -> OrgId {
        self.lease.org_id()
    }

    fn own_key(&self, step: &StepKey) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{step}"),
            None => step.as_str().to_owned(),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut xrole_store::Conn) -> xrole_store::Result<T> + Send + 'static,
    ) -> Result<T, Error> {
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = pool
                .get()
                .map_err(|e| journal_error(format!("no database connection: {e}")))?;
            f(&mut conn).map_err(journal_error)
        })
        .await
        .map_err(journal_error)?
    }
}

impl StepJournal for StoreJournal {
    async fn record_intent(&self, _job: ProvisionJobId, step: &StepKey) -> Result<(), Error> {
        let key = self.own_key(step);
        let lease = self.lease.clone();
        let now = self.clock.now_ms();
        self.blocking(move |conn| {
            xrole_store::jobs::record_intent(conn, &lease, &key, &serde_json::json!({}), now)
                .map(|_| ())
        })
        .await
    }

    async fn record_result(
        &self,
        _job: ProvisionJobId,
        step: &StepKey,
        aws_id: &str,
    ) -> Result<(), Error> {
        let key = self.own_key(step);
        let lease = self.lease.clone();
        let now = self.clock.now_ms();
        let aws_id = aws_id.to_owned();
        self.blocking(move |conn| {
            // An operator may record a result without an intent; make one.
            xrole_store::jobs::record_intent(conn, &lease, &key, &serde_json::json!({}), now)?;
            xrole_store::jobs::record_step_result(conn, &lease, &key, &aws_id, now).map(|_| ())
        })
        .await
    }

    async fn load(&self, _job: ProvisionJobId) -> Result<Vec<JournalEntry>, Error> {
        let org = self.org();
        let own = self.lease.job_id();
        let sources = self.sources.clone();
        let namespace = self.namespace.clone();
        let rows = self
            .blocking(move |conn| {
                let mut merged: BTreeMap<String, Option<String>> = BTreeMap::new();
                for s in &sources {
                    for step in xrole_store::jobs::steps(conn, org, s.job)? {
                        // Only finished steps of other jobs: their unknowns are theirs.
                        if step.aws_id.is_some() && s.filter.keeps(&step.step_key) {
                            merged.insert(step.step_key, step.aws_id);
                        }
                    }
                }
                for step in xrole_store::jobs::steps(conn, org, own)? {
                    let key = match &namespace {
                        Some(ns) => match step.step_key.strip_prefix(&format!("{ns}/")) {
                            Some(k) => k.to_owned(),
                            None => continue,
                        },
                        None => step.step_key,
                    };
                    let keep_existing =
                        step.aws_id.is_none() && merged.get(&key).is_some_and(Option::is_some);
                    if !keep_existing {
                        merged.insert(key, step.aws_id);
                    }
                }
                Ok(merged)
            })
            .await?;
        rows.into_iter()
            .map(|(k, aws_id)| {
                let step = StepKey::new(k).map_err(journal_error)?;
                Ok(JournalEntry { step, aws_id })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_keep_keys_under_their_roots() {
        let f = StepFilter::Under(vec!["instance/web/0".into(), "db/main".into()]);
        assert!(f.keeps("instance/web/0"));
        assert!(f.keeps("instance/web/0/running"));
        assert!(!f.keeps("instance/web/01"));
        assert!(!f.keeps("instance/web/1"));
        assert!(f.keeps("db/main/available"));
        assert!(!f.keeps("vpc"));
        assert!(StepFilter::All.keeps("vpc"));
    }
}
