//! Job workers: they claim jobs through the store's leases, so workers in
//! several processes on one PostgreSQL share the work, and a job whose
//! worker died (its lease expired) is taken over and resumed from its
//! journal by another.
//!
//! What each kind carries is the job contract, [`crate::jobs`]. Kinds:
//! `verify_link` (the broker's trust check), `provision_vpc`,
//! `provision_instances`, `provision_database` (an [`EnvironmentPlan`](xrole_provision::EnvironmentPlan) run
//! by `xrole-provision` with the customer's session) and `teardown`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use xrole_store::LinkState;
use xrole_store::jobs::{Claimed, Job, Lease, RetryPolicy};

use crate::jobs::context::*;
use crate::jobs::{self, JobError};
use crate::jobs::{JobSpec, KIND_VERIFY, VerifyPayload};
use crate::link_flow::AwsRuntime;
use crate::state::AppState;

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
    let run = Run {
        state,
        aws,
        job,
        lease,
        counter,
        took_over,
    };
    match JobSpec::from_row(&job.kind, &job.payload).map_err(JobError::permanent)? {
        JobSpec::VerifyLink(p) => jobs::verify::run(run, p).await,
        JobSpec::ProvisionVpc(p)
        | JobSpec::ProvisionInstances(p)
        | JobSpec::ProvisionDatabase(p) => jobs::provision::run(run, p).await,
        JobSpec::Teardown(p) => jobs::teardown::run(run, p).await,
    }
}
