//! Job workers: they claim jobs through the store's leases, so workers in
//! several processes on one PostgreSQL share the work, and a job whose
//! worker died (its lease expired) is taken over and resumed from its
//! journal by another.
//!
//! What each kind carries is the job contract, [`crate::jobs`]. Kinds:
//! `verify_link` (the broker's trust check), `provision_vpc`,
//! `provision_instances`, `provision_database` (an [`EnvironmentPlan`] run
//! by `xrole-provision` with the customer's session) and `teardown`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use xrole_assume::{
    AssumeSpec, AwsAccountId, RoleArn, SessionName, SourceIdentity, VerifyOptions, VerifyOutcome,
};
use xrole_provision::{EnvironmentPlan, Executor, ExecutorOptions, JobScope, Progress};
use xrole_store::jobs::{Claimed, Job, Lease, RetryPolicy};
use xrole_store::resources::{NewResource, Resource};
use xrole_store::{AccessLevel, Conn, JobId, LinkId, LinkState, OrgId, ResourceId, ResourceState};

use crate::jobs::{
    JobSpec, KIND_DATABASE, KIND_INSTANCES, KIND_TEARDOWN, KIND_VERIFY, KIND_VPC, ProvisionPayload,
    RES_DATABASE, RES_INSTANCE, RES_VPC, TeardownPayload, VerifyPayload,
};
use crate::journal::{SourceView, StepFilter, StoreJournal};
use crate::link_flow::{AwsRuntime, interpret};
use crate::state::AppState;

/// Tag holding the step that created a resource.
const STEP_TAG: &str = xrole_provision::tags::STEP;

/// Job counters of this process's workers, in `/metrics`.
#[derive(Debug, Default)]
pub struct WorkerMetrics {
    claimed: std::sync::atomic::AtomicU64,
    taken_over: std::sync::atomic::AtomicU64,
    succeeded: std::sync::atomic::AtomicU64,
    failed_attempts: std::sync::atomic::AtomicU64,
    leases_lost: std::sync::atomic::AtomicU64,
    deferred: std::sync::atomic::AtomicU64,
}

impl crate::metrics::MetricsCollector for WorkerMetrics {
    fn write_prometheus(&self, out: &mut String) {
        use std::fmt::Write as _;
        for (name, help, v) in [
            (
                "xrole_jobs_claimed_total",
                "Jobs claimed by this process's workers",
                &self.claimed,
            ),
            (
                "xrole_jobs_taken_over_total",
                "Jobs taken over after another worker's lease expired",
                &self.taken_over,
            ),
            (
                "xrole_jobs_succeeded_total",
                "Jobs finished successfully",
                &self.succeeded,
            ),
            (
                "xrole_jobs_failed_attempts_total",
                "Job attempts that failed",
                &self.failed_attempts,
            ),
            (
                "xrole_jobs_leases_lost_total",
                "Jobs abandoned because their lease was lost",
                &self.leases_lost,
            ),
            (
                "xrole_jobs_deferred_total",
                "Job runs queued again to wait (IAM propagation, a link being verified) without spending an attempt",
                &self.deferred,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
    }
}

/// The job runner of one process: one claim loop and up to `count` jobs
/// running at once as async tasks (a job mostly waits on AWS, so many fit
/// on few cores). Dropping the pool stops everything at once (a job in
/// progress is left to its lease, like a crash).
#[derive(Debug)]
pub struct WorkerPool {
    stop: Arc<AtomicBool>,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl WorkerPool {
    /// Starts the claim loop on the current Tokio runtime, running up to
    /// `count` jobs at once (none when `count` is 0).
    pub fn spawn(state: AppState, aws: Arc<AwsRuntime>, count: usize) -> WorkerPool {
        let stop = Arc::new(AtomicBool::new(false));
        let metrics = Arc::new(WorkerMetrics::default());
        let dispatcher = (count > 0).then(|| {
            state.metrics.add_collector(metrics.clone());
            let tag = uuid::Uuid::new_v4().simple().to_string();
            let worker = format!("{}-{}", std::process::id(), &tag[..8]);
            tokio::spawn(run_loop(state, aws, worker, count, stop.clone(), metrics))
        });
        WorkerPool { stop, dispatcher }
    }

    /// Claims nothing more and lets every running job finish, then returns.
    pub async fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(d) = self.dispatcher.take() {
            let _ = d.await;
        }
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        if let Some(d) = &self.dispatcher {
            // Aborting the loop drops its JoinSet, which aborts every job.
            d.abort();
        }
    }
}

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
    fn permanent(m: impl Into<String>) -> Self {
        JobError::Permanent { reason: m.into() }
    }
    fn retry(m: impl Into<String>) -> Self {
        JobError::Retry {
            reason: m.into(),
            after: None,
        }
    }
    fn wait(m: impl Into<String>, after: Duration) -> Self {
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

/// Runs `f` with a pooled connection on the blocking pool.
async fn db<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&mut Conn) -> Result<T, JobError> + Send + 'static,
) -> Result<T, JobError> {
    let pool = state.pool.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = pool
            .get()
            .map_err(|e| JobError::retry(format!("no database connection: {e}")))?;
        f(&mut conn)
    })
    .await
    .map_err(|e| JobError::retry(e.to_string()))?
}

async fn run_loop(
    state: AppState,
    aws: Arc<AwsRuntime>,
    worker: String,
    count: usize,
    stop: Arc<AtomicBool>,
    metrics: Arc<WorkerMetrics>,
) {
    let lease_ms = i64::try_from(aws.settings.lease.as_millis()).unwrap_or(60_000);
    let fairness = xrole_store::jobs::Fairness {
        max_running_per_org: state.config.jobs_per_org,
    };
    let slots = Arc::new(tokio::sync::Semaphore::new(count));
    let mut running = tokio::task::JoinSet::new();
    let mut idle_rounds: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        // Finished jobs leave the set (their panics are logged, not fatal).
        while let Some(done) = running.try_join_next() {
            if let Err(e) = done
                && e.is_panic()
            {
                tracing::error!(%worker, "a job task panicked");
            }
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let now = state.now_ms();
        let w = worker.clone();
        let claimed = db(&state, move |conn| {
            Ok(xrole_store::jobs::claim_with(
                conn, &w, lease_ms, now, &fairness,
            )?)
        })
        .await;
        match claimed {
            Ok(Some(c)) => {
                idle_rounds = 0;
                tracing::info!(job = %c.job.id, kind = %c.job.kind, org = %c.job.org_id, attempt = c.job.attempts, took_over = c.took_over, %worker, "job claimed");
                metrics.claimed.fetch_add(1, Ordering::Relaxed);
                if c.took_over {
                    metrics.taken_over.fetch_add(1, Ordering::Relaxed);
                }
                let (state, aws, metrics) = (state.clone(), aws.clone(), metrics.clone());
                running.spawn(async move {
                    run_claimed(&state, &aws, c, lease_ms, &metrics).await;
                    drop(permit);
                });
            }
            Ok(None) => {
                drop(permit);
                idle_rounds += 1;
                if idle_rounds % 1200 == 1 {
                    // Replays are refused by timestamp after 5 minutes, so
                    // ids older than an hour are no longer needed.
                    let before = now - 3_600_000;
                    let purged = db(&state, move |conn| {
                        Ok(xrole_store::webhooks::purge_webhook_ids(conn, before)?)
                    })
                    .await;
                    if let Err(e) = purged {
                        tracing::debug!(error = %e, "cannot purge webhook ids");
                    }
                }
                // Nothing runnable: look again after the poll interval, or
                // at once when a running job ends (it may have queued more).
                tokio::select! {
                    () = tokio::time::sleep(aws.settings.job_poll) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                }
            }
            Err(e) => {
                drop(permit);
                tracing::warn!(error = %e, %worker, "cannot claim jobs");
                tokio::time::sleep(aws.settings.job_poll.max(Duration::from_secs(1))).await;
            }
        }
    }
    // Shutting down: every running job finishes first.
    while running.join_next().await.is_some() {}
}

/// Progress shared between the executor's callback and the lease renewer.
#[derive(Debug, Default)]
struct Counter {
    done: AtomicI64,
    total: AtomicI64,
}

async fn run_claimed(
    state: &AppState,
    aws: &Arc<AwsRuntime>,
    c: Claimed,
    lease_ms: i64,
    metrics: &WorkerMetrics,
) {
    let Claimed {
        job,
        lease,
        took_over,
    } = c;
    let counter = Arc::new(Counter::default());
    let lost = Arc::new(tokio::sync::Notify::new());
    // Renew the lease (and publish progress) while the job runs.
    let renewer = {
        let state = state.clone();
        let mut lease = lease.clone();
        let counter = counter.clone();
        let lost = lost.clone();
        let every = Duration::from_millis(u64::try_from(lease_ms / 3).unwrap_or(1000).max(200));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let now = state.now_ms();
                let (done, total) = (
                    counter.done.load(Ordering::SeqCst),
                    counter.total.load(Ordering::SeqCst),
                );
                let l = lease.clone();
                let r = db(&state, move |conn| {
                    let mut l = l;
                    xrole_store::jobs::renew(conn, &mut l, lease_ms, now)?;
                    xrole_store::jobs::set_progress(conn, &l, done, total, now)?;
                    Ok(l)
                })
                .await;
                match r {
                    Ok(l) => lease = l,
                    Err(JobError::LeaseLost) => {
                        lost.notify_one();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
            }
        })
    };
    let outcome = tokio::select! {
        r = run_job(state, aws, &job, &lease, counter.clone(), took_over) => Some(r),
        () = lost.notified() => None,
    };
    renewer.abort();
    let outcome = outcome.unwrap_or(Err(JobError::LeaseLost));
    let now = state.now_ms();
    let job_id = job.id;
    let result = match outcome {
        Ok(()) => {
            metrics.succeeded.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(JobError::LeaseLost) => {
            metrics.leases_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(job = %job.id, "lease lost; another worker owns the job now");
            return;
        }
        Err(JobError::Wait { reason, after }) => {
            metrics.deferred.fetch_add(1, Ordering::Relaxed);
            tracing::info!(job = %job_id, %reason, after = ?after, "job waits; queued again");
            let lease = lease.clone();
            let run_after = now + i64::try_from(after.as_millis()).unwrap_or(i64::MAX / 2);
            db(state, move |conn| {
                let note = format!("waiting: {reason}");
                Ok(xrole_store::jobs::defer(
                    conn, &lease, run_after, &note, now,
                )?)
            })
            .await
        }
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, "job attempt failed");
            metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
            let lease = lease.clone();
            let kind = job.kind.clone();
            let payload = job.payload.clone();
            let (org, link) = (job.org_id, job.link_id);
            db(state, move |conn| {
                let message = e.to_string();
                let final_failure = match &e {
                    JobError::Retry { after, .. } => {
                        let policy = match after {
                            Some(d) => {
                                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2);
                                RetryPolicy {
                                    base_ms: ms,
                                    max_ms: ms,
                                }
                            }
                            None => RetryPolicy {
                                base_ms: 2_000,
                                max_ms: 5 * 60 * 1000,
                            },
                        };
                        let out = xrole_store::jobs::fail(conn, &lease, &message, &policy, now)?;
                        out == xrole_store::jobs::FailOutcome::Failed
                    }
                    _ => {
                        xrole_store::jobs::fail_permanently(conn, &lease, &message, now)?;
                        true
                    }
                };
                // A verification that cannot finish must not leave the link
                // `verifying` for ever; it speaks only for what it tested.
                if final_failure
                    && kind == KIND_VERIFY
                    && let Some(link) = link
                {
                    let current = xrole_store::links::get(conn, org, link)?;
                    let p: VerifyPayload = serde_json::from_value(payload).unwrap_or_default();
                    if current.state == LinkState::Verifying
                        && let Some(role) = p.role_arn.or(current.role_arn)
                    {
                        let reason = format!(
                            "verification could not complete ({message}); verify again later"
                        );
                        let tested = xrole_store::links::Tested {
                            generation: p.generation.unwrap_or(current.generation),
                            role_arn: &role,
                        };
                        let v = xrole_store::links::Verification {
                            state: LinkState::Failed,
                            result: "error",
                            error: Some(&reason),
                            trust_policy_audit: None,
                        };
                        xrole_store::links::record_verification(conn, org, link, &tested, &v, now)?;
                    }
                }
                Ok(())
            })
            .await
        }
    };
    if let Err(e) = result {
        tracing::warn!(job = %job_id, error = %e, "cannot record the job's outcome");
    }
}

async fn run_job(
    state: &AppState,
    aws: &Arc<AwsRuntime>,
    job: &Job,
    lease: &Lease,
    counter: Arc<Counter>,
    took_over: bool,
) -> Result<(), JobError> {
    match JobSpec::from_row(&job.kind, &job.payload).map_err(JobError::permanent)? {
        JobSpec::VerifyLink(p) => verify(state, aws, job, lease, p).await,
        JobSpec::ProvisionVpc(p)
        | JobSpec::ProvisionInstances(p)
        | JobSpec::ProvisionDatabase(p) => {
            provision(state, aws, job, lease, counter, took_over, p).await
        }
        JobSpec::Teardown(p) => teardown(state, aws, job, lease, counter, p).await,
    }
}

fn link_of(job: &Job) -> Result<LinkId, JobError> {
    job.link_id
        .ok_or_else(|| JobError::permanent("the job has no AWS account link"))
}

/// Appends an audit event outside a request (the worker's own transaction).
fn audit(
    conn: &mut Conn,
    org: OrgId,
    actor: &str,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
    now: i64,
) -> Result<(), JobError> {
    let e = xrole_store::audit::NewAuditEvent {
        actor,
        action,
        target: target.as_deref(),
        request_id: None,
        source_ip: None,
        details,
    };
    xrole_store::audit::append(conn, org, &e, now)?;
    Ok(())
}

/// The link's role, External ID and account, for AssumeRole.
struct Access {
    link: xrole_store::links::Link,
    role: RoleArn,
    external_id: xrole_crypto::ExternalId,
    account: AwsAccountId,
}

async fn access(state: &AppState, org: OrgId, link: LinkId) -> Result<Access, JobError> {
    let keyring = state.keyring();
    let (link, external_id) = db(state, move |conn| {
        let l = xrole_store::links::get(conn, org, link)?;
        let ext = xrole_store::links::reveal_external_id(conn, &keyring, org, link)?;
        Ok((l, ext))
    })
    .await?;
    let arn = link
        .role_arn
        .clone()
        .ok_or_else(|| JobError::permanent("the link has no role yet"))?;
    let role = RoleArn::parse(&arn).map_err(|e| JobError::permanent(e.to_string()))?;
    let account = if link.aws_account_id.is_empty() {
        role.account_id()
    } else {
        AwsAccountId::parse(&link.aws_account_id).map_err(|e| JobError::permanent(e.to_string()))?
    };
    Ok(Access {
        link,
        role,
        external_id,
        account,
    })
}

/// The management account an organization connection's account link must
/// belong to, when the connection names one.
async fn organization_of(
    state: &AppState,
    org: OrgId,
    link: &xrole_store::links::Link,
) -> Result<Option<AwsAccountId>, JobError> {
    let Some(connection) = link.connection_id else {
        return Ok(None);
    };
    let management = db(state, move |conn| {
        Ok(xrole_store::connections::get(conn, org, connection)?.management_account_id)
    })
    .await?;
    management
        .map(|m| AwsAccountId::parse(&m).map_err(|e| JobError::permanent(e.to_string())))
        .transpose()
}

/// The `SourceIdentity` of a session acting for `actor` (`user:<id>` →
/// `xrole-user-<id>`), so the customer's CloudTrail names who asked.
fn source_identity_of(actor: &str) -> Option<String> {
    let (kind, id) = actor.split_once(':')?;
    matches!(kind, "user" | "api_key").then(|| format!("xrole-{kind}-{id}").replace('_', "-"))
}

/// Records the AssumeRole about to happen: who, which link, why, and the
/// session name the customer sees in CloudTrail.
#[expect(
    clippy::too_many_arguments,
    reason = "every audit field is named at the call"
)]
async fn audit_assume(
    state: &AppState,
    org: OrgId,
    actor: &str,
    link: LinkId,
    job: JobId,
    purpose: &str,
    session_name: &str,
    role: &RoleArn,
) -> Result<(), JobError> {
    let now = state.now_ms();
    let details = serde_json::json!({
        "link_id": link.to_string(),
        "job_id": job.to_string(),
        "purpose": purpose,
        "session_name": session_name,
        "source_identity": (purpose != "verify").then(|| source_identity_of(actor)).flatten(),
        "role_arn": role.as_str(),
    });
    let actor = actor.to_owned();
    db(state, move |conn| {
        audit(
            conn,
            org,
            &actor,
            "aws.assume_role",
            Some(format!("aws_account:{link}")),
            details,
            now,
        )
    })
    .await
}

async fn verify(
    state: &AppState,
    aws: &Arc<AwsRuntime>,
    job: &Job,
    lease: &Lease,
    payload: VerifyPayload,
) -> Result<(), JobError> {
    let org = job.org_id;
    let link_id = link_of(job)?;
    let a = access(state, org, link_id).await?;
    // What this job was queued to test (older rows: the link as it is).
    let generation = payload.generation.unwrap_or(a.link.generation);
    let tested_role = payload
        .role_arn
        .clone()
        .unwrap_or_else(|| a.role.as_str().to_owned());
    let outcome = if generation == a.link.generation && tested_role == a.role.as_str() {
        audit_assume(
            state,
            org,
            &payload.actor,
            link_id,
            job.id,
            "verify",
            xrole_assume::VERIFY_SESSION_NAME,
            &a.role,
        )
        .await?;
        let mut options = VerifyOptions::new()
            .trusted_principal(aws.saas_principal_arn.clone())
            .wait_for_propagation(false);
        if let Some(management) = organization_of(state, org, &a.link).await? {
            options = options.in_organization_of(management);
        }
        let outcome = aws
            .broker
            .verify_link_with(&a.role, &a.external_id, &a.account, &options)
            .await?;
        Some(propagation_wait(state, aws, job, &a.role, outcome)?)
    } else {
        // The link changed since: this job's result could only be stale.
        None
    };
    let v = outcome.as_ref().map(|o| interpret(o, &a.role, &a.account));
    let now = state.now_ms();
    let lease = lease.clone();
    let actor = payload.actor;
    db(state, move |conn| {
        xrole_store::write_transaction(conn, |conn| {
            let tested = xrole_store::links::Tested {
                generation,
                role_arn: &tested_role,
            };
            let applied = match &v {
                Some(v) => {
                    let rec = xrole_store::links::Verification {
                        state: v.state,
                        result: v.result,
                        error: v.reason.as_deref(),
                        trust_policy_audit: v.trust_policy_audit,
                    };
                    xrole_store::links::record_verification(conn, org, link_id, &tested, &rec, now)?
                }
                None => None,
            };
            let target = Some(format!("aws_account:{link_id}"));
            let mut details = serde_json::json!({
                "job_id": job_id_string(&lease),
                "role_arn": tested_role,
                "generation": generation,
                "state": v.as_ref().map(|v| v.state.as_str()),
                "result": v.as_ref().map(|v| v.result),
                "trust_policy_audit": v.as_ref().and_then(|v| v.trust_policy_audit),
            });
            if let Some(link) = &applied {
                audit(conn, org, &actor, "aws_account.verified", target, details, now)?;
                let result = serde_json::json!({
                    "state": link.state.as_str(),
                    "result": v.as_ref().map(|v| v.result),
                    "reason": v.as_ref().and_then(|v| v.reason.clone()),
                    "trust_policy_audit": v.as_ref().and_then(|v| v.trust_policy_audit),
                    "applied": true,
                });
                xrole_store::jobs::complete(conn, &lease, &result, now)?;
            } else {
                // Kept in the audit trail, applied nowhere: the role or the
                // External ID changed (or the stack went) while it ran.
                let current = xrole_store::links::get(conn, org, link_id)?;
                details["current_generation"] = serde_json::json!(current.generation);
                audit(
                    conn,
                    org,
                    &actor,
                    "aws_account.verification_discarded",
                    target,
                    details,
                    now,
                )?;
                let result = serde_json::json!({
                    "state": current.state.as_str(),
                    "result": v.as_ref().map(|v| v.result),
                    "reason": "the link changed while this verification ran; its result applies to nothing",
                    "applied": false,
                });
                xrole_store::jobs::complete(conn, &lease, &result, now)?;
            }
            Ok::<_, JobError>(())
        })
    })
    .await
}

fn job_id_string(lease: &Lease) -> String {
    lease.job_id().to_string()
}

/// AccessDenied with the link's External ID right after a role was made:
/// IAM may still be propagating. The job waits (queued again, no worker
/// held) until the propagation window since its first run has passed; then
/// the role is not assumable.
fn propagation_wait(
    state: &AppState,
    aws: &AwsRuntime,
    job: &Job,
    role: &RoleArn,
    outcome: VerifyOutcome,
) -> Result<VerifyOutcome, JobError> {
    let VerifyOutcome::NotAssumable(xrole_assume::Error::AccessDenied { message, .. }) = &outcome
    else {
        return Ok(outcome);
    };
    let now = state.now_ms();
    let since = job.started_ms.unwrap_or(now);
    let waited = Duration::from_millis(u64::try_from(now - since).unwrap_or(0));
    let window = aws.settings.propagation_window;
    if waited < window {
        // Roughly doubling checks, 1 s to 15 s apart, never past the window.
        let after = (waited / 2)
            .clamp(Duration::from_secs(1), Duration::from_secs(15))
            .min(window - waited + Duration::from_millis(10));
        return Err(JobError::wait(
            "the role is not assumable with the External ID yet (IAM propagation)",
            after,
        ));
    }
    Ok(VerifyOutcome::NotAssumable(
        xrole_assume::Error::NotAssumable {
            role: role.clone(),
            attempts: u32::try_from(job.attempts).unwrap_or(1).max(1),
            waited,
            message: message.clone(),
        },
    ))
}

fn tags_for(org: OrgId, link: LinkId, job: JobId, step: &str) -> BTreeMap<String, String> {
    use xrole_provision::tags;
    BTreeMap::from([
        (tags::MANAGED_BY.to_owned(), "xrole".to_owned()),
        (tags::ORG.to_owned(), org.to_string()),
        (tags::LINK.to_owned(), link.to_string()),
        (tags::JOB.to_owned(), job.to_string()),
        (tags::STEP.to_owned(), step.to_owned()),
    ])
}

fn executor_options(aws: &AwsRuntime) -> ExecutorOptions {
    ExecutorOptions {
        poll_interval: aws.settings.executor_poll,
        ..ExecutorOptions::default()
    }
}

/// How many steps a create runs (for progress).
fn create_step_count(plan: &EnvironmentPlan, kind: &str) -> i64 {
    let n = |x: usize| i64::try_from(x).unwrap_or(0);
    match kind {
        KIND_VPC => {
            let z = n(plan.vpc.availability_zones.len());
            let sgs = n(plan.vpc.security_groups.len());
            let ingress = n(plan
                .vpc
                .security_groups
                .iter()
                .filter(|g| !g.ingress.is_empty())
                .count());
            7 + 3 * z + sgs + ingress
        }
        KIND_INSTANCES => plan
            .instances
            .iter()
            .map(|i| 1 + 2 * i64::from(i.count))
            .sum(),
        KIND_DATABASE => 3 * n(plan.databases.len()),
        _ => 0,
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the session's scope, named at the call"
)]
async fn customer_session(
    state: &AppState,
    aws: &AwsRuntime,
    org: OrgId,
    link: LinkId,
    job: &Job,
    actor: &str,
    purpose: &str,
    region: &str,
) -> Result<aws_config::SdkConfig, JobError> {
    let a = access(state, org, link).await?;
    match a.link.state {
        LinkState::Active => {}
        // The role changed (or its stack reported) and is being verified:
        // no session until that exact role has passed. Wait, bounded.
        LinkState::Verifying => {
            let now = state.now_ms();
            let since = job.created_ms.max(a.link.updated_ms);
            let waited = Duration::from_millis(u64::try_from(now - since).unwrap_or(0));
            if waited >= aws.settings.session_wait {
                return Err(JobError::permanent(format!(
                    "the AWS account link's role has been verifying for {} s without passing; \
                     check the link (GET /v1/aws-accounts/{link}) and retry",
                    waited.as_secs()
                )));
            }
            return Err(JobError::wait(
                "the AWS account link's role is being verified",
                Duration::from_secs(2),
            ));
        }
        other => {
            return Err(JobError::permanent(format!(
                "the AWS account link is {other}, not active"
            )));
        }
    }
    if a.link.access_level != AccessLevel::Provisioning {
        return Err(JobError::permanent("the AWS account link is read-only"));
    }
    let session = SessionName::for_tenant(&org.to_string(), purpose)
        .map_err(|e| JobError::permanent(e.to_string()))?;
    audit_assume(
        state,
        org,
        actor,
        link,
        job.id,
        purpose,
        session.as_str(),
        &a.role,
    )
    .await?;
    let mut spec = AssumeSpec::builder(a.role, a.external_id, session);
    if let Some(id) = source_identity_of(actor).and_then(|s| SourceIdentity::parse(&s).ok()) {
        spec = spec.source_identity(id);
    }
    let spec = spec
        .build()
        .map_err(|e| JobError::permanent(e.to_string()))?;
    // Fail early (and retry if transient) rather than deep inside a step.
    aws.broker.credentials(&spec).await?;
    Ok(aws
        .broker
        .sdk_config(&spec, aws_config::Region::new(region.to_owned())))
}

async fn provision(
    state: &AppState,
    aws: &Arc<AwsRuntime>,
    job: &Job,
    lease: &Lease,
    counter: Arc<Counter>,
    took_over: bool,
    p: ProvisionPayload,
) -> Result<(), JobError> {
    let org = job.org_id;
    let link = link_of(job)?;
    let plan = p.plan.clone().validate()?;
    counter
        .total
        .store(create_step_count(&p.plan, &job.kind), Ordering::SeqCst);
    let sdk =
        customer_session(state, aws, org, link, job, &p.actor, "provision", &p.region).await?;
    let mut journal = StoreJournal::new(state.pool.clone(), state.clock.clone(), lease.clone());
    if let Some(vpc_job) = &p.vpc_job {
        let vpc_job: JobId = vpc_job
            .parse()
            .map_err(|_| JobError::permanent("bad vpc_job"))?;
        journal = journal.with_source(SourceView {
            job: vpc_job,
            filter: StepFilter::All,
        });
    }
    let scope = JobScope::new(
        org.to_string(),
        link.to_string(),
        (*job.id.as_uuid()).into(),
    )
    .map_err(JobError::permanent)?;
    let c = counter.clone();
    let job_id = job.id;
    let executor = Executor::new(&sdk, journal, scope)?
        .with_options(executor_options(aws))
        .on_progress(move |p| {
            if let Progress::StepDone {
                step,
                aws_id,
                discovered,
            } = p
            {
                c.done.fetch_add(1, Ordering::SeqCst);
                // An earlier run's create reached AWS but its answer was
                // never journaled (the worker died or lost its lease).
                if *discovered {
                    tracing::info!(
                        job = %job_id,
                        %step,
                        %aws_id,
                        "adopted: an earlier attempt had created it (found by its tags); not created again"
                    );
                }
            }
        });
    let env = match executor.apply(&plan).await {
        // The worker that held this job before lost it (it died, stalled or
        // lost the database for a whole lease) after journaling the intent
        // of a VPC or internet gateway step and before journaling its id,
        // and the resource is not in the account under the job's tags: the
        // create call never reached AWS. Without the lease that worker
        // cannot journal a new intent, and it renews every third of a lease,
        // so its last create went out at least two thirds of a lease ago: a
        // resource it made would be visible by now. Creating the step again
        // cannot make a twin; without this a crash at that point would fail
        // the job for good, with nothing left to reconcile.
        Err(xrole_provision::Error::ReconciliationRequired { steps }) if took_over => {
            tracing::warn!(
                job = %job.id,
                steps = %steps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
                "taken over after a crash: steps begun by the previous worker are not in the account; creating them"
            );
            let options = ExecutorOptions {
                recreate: steps.into_iter().collect(),
                ..executor_options(aws)
            };
            executor.with_options(options).apply(&plan).await?
        }
        r => r?,
    };

    // Record what was made, and finish the job, in one transaction.
    let now = state.now_ms();
    let lease = lease.clone();
    let kind = job.kind.clone();
    let job_id = job.id;
    let region = p.region.clone();
    let vpc_resource: Option<ResourceId> = p.vpc_resource.as_deref().and_then(|s| s.parse().ok());
    let plan_name = p.plan.name.clone();
    let actor = p.actor.clone();
    let total = counter.total.load(Ordering::SeqCst);
    let environment = serde_json::json!({
        "vpc_id": env.vpc_id,
        "public_subnet_ids": env.public_subnet_ids,
        "private_subnet_ids": env.private_subnet_ids,
        "internet_gateway_id": env.internet_gateway_id,
        "route_table_id": env.route_table_id,
        "security_group_ids": env.security_group_ids,
        "instance_ids": env.instance_ids,
        "db_instance_identifiers": env.db_instance_identifiers,
    });
    db(state, move |conn| {
        xrole_store::write_transaction(conn, |conn| {
            let mut made: Vec<Resource> = Vec::new();
            let mut add = |conn: &mut Conn, kind: &str, aws_id: &str, parent: Option<ResourceId>, step: &str| {
                let tags = tags_for(org, link, job_id, step);
                let new = NewResource {
                    link,
                    job: Some(job_id),
                    kind,
                    aws_id,
                    region: &region,
                    parent,
                    state: ResourceState::Available,
                    tags: &tags,
                };
                let r = match xrole_store::resources::create(conn, org, &new, now) {
                    Ok(r) => r,
                    Err(xrole_store::Error::Duplicate(_)) => {
                        xrole_store::resources::find_by_aws_id(conn, org, link, &region, aws_id)?
                            .ok_or(xrole_store::Error::NotFound)?
                    }
                    Err(e) => return Err(JobError::from(e)),
                };
                made.push(r);
                Ok::<_, JobError>(())
            };
            match kind.as_str() {
                KIND_VPC => add(conn, RES_VPC, &env.vpc_id, None, "vpc")?,
                KIND_INSTANCES => {
                    for (name, ids) in &env.instance_ids {
                        for (n, id) in ids.iter().enumerate() {
                            add(conn, RES_INSTANCE, id, vpc_resource, &format!("instance/{name}/{n}"))?;
                        }
                    }
                }
                KIND_DATABASE => {
                    for (name, id) in &env.db_instance_identifiers {
                        add(conn, RES_DATABASE, id, vpc_resource, &format!("db/{name}"))?;
                    }
                }
                _ => {}
            }
            let resources: Vec<serde_json::Value> = made
                .iter()
                .map(|r| serde_json::json!({"id": r.id.to_string(), "kind": r.kind, "aws_id": r.aws_id}))
                .collect();
            audit(
                conn,
                org,
                &actor,
                "job.succeeded",
                Some(format!("job:{job_id}")),
                serde_json::json!({"kind": kind, "name": plan_name, "resources": resources}),
                now,
            )?;
            xrole_store::jobs::set_progress(conn, &lease, total, total, now)?;
            let result = serde_json::json!({"resources": resources, "environment": environment});
            xrole_store::jobs::complete(conn, &lease, &result, now)?;
            Ok(())
        })
    })
    .await
}

/// The resource and everything under it, children first.
fn subtree(conn: &mut Conn, org: OrgId, root: Resource) -> Result<Vec<Resource>, JobError> {
    let mut out = Vec::new();
    for child in xrole_store::resources::children(conn, org, root.id)? {
        out.extend(subtree(conn, org, child)?);
    }
    out.push(root);
    Ok(out)
}

async fn teardown(
    state: &AppState,
    aws: &Arc<AwsRuntime>,
    job: &Job,
    lease: &Lease,
    counter: Arc<Counter>,
    p: TeardownPayload,
) -> Result<(), JobError> {
    let org = job.org_id;
    let link = link_of(job)?;
    let rid: ResourceId = p
        .resource
        .parse()
        .map_err(|_| JobError::permanent("bad resource id"))?;
    let cascade = p.cascade;
    // The same name on every retry of this job: a retry after AWS took the
    // delete finds the database deleting, never a second snapshot.
    let final_snapshot = p
        .final_snapshot
        .then(|| format!("final-{}", &job.id.as_uuid().simple().to_string()[..8]));
    let order = db(state, move |conn| {
        let root = match xrole_store::resources::get(conn, org, rid) {
            Ok(r) => r,
            Err(xrole_store::Error::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let all = subtree(conn, org, root)?;
        if all.len() > 1 && !cascade {
            return Err(JobError::permanent(
                "the resource has dependents; delete them first or use ?cascade=true",
            ));
        }
        // The creating job of each, for its plan and journal.
        let mut out = Vec::new();
        for r in all {
            let creator = match r.job_id {
                Some(j) => Some(xrole_store::jobs::get(conn, org, j)?),
                None => None,
            };
            out.push((r, creator));
        }
        Ok(out)
    })
    .await?;
    counter
        .total
        .store(i64::try_from(order.len()).unwrap_or(0), Ordering::SeqCst);
    let mut deleted = Vec::new();
    let mut region_session: Option<(String, aws_config::SdkConfig)> = None;
    for (r, creator) in order {
        if let Some(creator) = creator {
            let cp: ProvisionPayload = serde_json::from_value(creator.payload.clone())
                .map_err(|e| JobError::permanent(format!("the creating job's plan: {e}")))?;
            let sdk = match &region_session {
                Some((region, sdk)) if *region == cp.region => sdk.clone(),
                _ => {
                    let sdk = customer_session(
                        state, aws, org, link, job, &p.actor, "teardown", &cp.region,
                    )
                    .await?;
                    region_session = Some((cp.region.clone(), sdk.clone()));
                    sdk
                }
            };
            let plan = cp.plan.clone().validate()?;
            let filter = match r.kind.as_str() {
                RES_INSTANCE => match r.tags.get(STEP_TAG) {
                    Some(step) => StepFilter::Under(vec![step.clone()]),
                    None => StepFilter::All,
                },
                _ => StepFilter::All,
            };
            let journal = StoreJournal::new(state.pool.clone(), state.clock.clone(), lease.clone())
                .with_source(SourceView {
                    job: creator.id,
                    filter,
                })
                .with_namespace(format!("r/{}", r.id));
            let scope = JobScope::new(
                org.to_string(),
                link.to_string(),
                (*creator.id.as_uuid()).into(),
            )
            .map_err(JobError::permanent)?;
            let executor = Executor::new(&sdk, journal, scope)?.with_options(ExecutorOptions {
                final_snapshot: final_snapshot.clone(),
                ..executor_options(aws)
            });
            executor.teardown(&plan).await?;
        }
        let id = r.id;
        db(state, move |conn| {
            match xrole_store::resources::delete(conn, org, id) {
                Ok(()) | Err(xrole_store::Error::NotFound) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await?;
        counter.done.fetch_add(1, Ordering::SeqCst);
        let mut entry =
            serde_json::json!({"id": r.id.to_string(), "kind": r.kind, "aws_id": r.aws_id});
        if r.kind == RES_DATABASE
            && let Some(suffix) = &final_snapshot
        {
            entry["final_snapshot"] = serde_json::json!(format!("{}-{suffix}", r.aws_id));
        }
        deleted.push(entry);
    }
    let now = state.now_ms();
    let lease = lease.clone();
    let actor = p.actor;
    let job_id = job.id;
    let total = counter.total.load(Ordering::SeqCst);
    db(state, move |conn| {
        xrole_store::write_transaction(conn, |conn| {
            audit(
                conn,
                org,
                &actor,
                "job.succeeded",
                Some(format!("job:{job_id}")),
                serde_json::json!({"kind": KIND_TEARDOWN, "deleted": deleted}),
                now,
            )?;
            xrole_store::jobs::set_progress(conn, &lease, total, total, now)?;
            xrole_store::jobs::complete(
                conn,
                &lease,
                &serde_json::json!({"deleted": deleted}),
                now,
            )?;
            Ok(())
        })
    })
    .await
}
