//! The job queue and job steps.
//!
//! A worker [`claim`]s the next runnable job with a lease, [`renew`]s the
//! lease while it works, reports [`set_progress`], and ends with
//! [`complete`] or [`fail`] (which re-queues with backoff until the attempts
//! are spent). A job whose lease expired (its worker died) is taken over by
//! the next `claim`. Every write that needs the lease checks its token, so a
//! worker that lost its job gets [`Error::LeaseLost`] instead of clobbering
//! the new owner's work.
//!
//! Steps make resumption safe: record the intent before each AWS call
//! ([`record_intent`]) and the resource id after it ([`record_step_result`]).

use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;

use crate::backend::{
    Conn, fair_org_order, insert_or_ignore, next_runnable_job, record_org_turn, write_transaction,
};
use crate::error::{Error, Result};
use crate::schema::job_steps::dsl as s;
use crate::schema::jobs::dsl as j;
use crate::types::{
    JobId, JobState, JobStepId, LinkId, OrgId, Page, PageRequest, before_cursor, paginate,
    parse_col,
};

/// A job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Its id.
    pub id: JobId,
    /// Organization.
    pub org_id: OrgId,
    /// The AWS account link it acts through, if any.
    pub link_id: Option<LinkId>,
    /// What to do (`provision_environment`, `verify_link`, …).
    pub kind: String,
    /// Its input.
    pub payload: serde_json::Value,
    /// State.
    pub state: JobState,
    /// How many times a worker claimed it.
    pub attempts: i32,
    /// How many claims it gets before failing for good.
    pub max_attempts: i32,
    /// Not runnable before this time, unix ms (retry backoff).
    pub run_after_ms: i64,
    /// The worker holding the lease.
    pub lease_owner: Option<String>,
    /// When the lease runs out, unix ms.
    pub lease_expires_ms: Option<i64>,
    /// Progress: units done.
    pub progress_done: i64,
    /// Progress: units in all (0 = unknown).
    pub progress_total: i64,
    /// Output of a successful run.
    pub result: Option<serde_json::Value>,
    /// Last error.
    pub error: Option<String>,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
    /// First claim, unix ms.
    pub started_ms: Option<i64>,
    /// End (success, failure or cancellation), unix ms.
    pub finished_ms: Option<i64>,
}

/// What [`enqueue`] needs.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    /// The link it acts through; must belong to the same organization.
    pub link: Option<LinkId>,
    /// What to do.
    pub kind: &'a str,
    /// Its input.
    pub payload: &'a serde_json::Value,
    /// Claims before failing for good (at least 1).
    pub max_attempts: u32,
}

/// A worker's hold on a running job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    job_id: JobId,
    org_id: OrgId,
    token: String,
    expires_ms: i64,
}

impl Lease {
    /// The leased job.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }
    /// Its organization.
    pub fn org_id(&self) -> OrgId {
        self.org_id
    }
    /// When the lease runs out unless renewed, unix ms.
    pub fn expires_ms(&self) -> i64 {
        self.expires_ms
    }
}

/// A job [`claim`] handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// The job, as it is now (state `running`).
    pub job: Job,
    /// The lease to pass to every later call.
    pub lease: Lease,
    /// Whether the job was taken over from a worker whose lease expired:
    /// the steps it recorded tell what already happened.
    pub took_over: bool,
}

/// Retry backoff: `base_ms · 2^(attempts−1)`, capped at `max_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Delay after the first failed attempt.
    pub base_ms: i64,
    /// Longest delay.
    pub max_ms: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base_ms: 5_000,
            max_ms: 10 * 60 * 1000,
        }
    }
}

impl RetryPolicy {
    /// The delay after attempt number `attempts` (1-based) failed.
    pub fn delay_ms(&self, attempts: i32) -> i64 {
        let shift = u32::try_from(attempts.saturating_sub(1).clamp(0, 40)).unwrap_or(0);
        self.base_ms.saturating_mul(1_i64 << shift).min(self.max_ms)
    }
}

/// What [`fail`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again, runnable from this time (unix ms).
    Retrying {
        /// The next run time.
        next_run_ms: i64,
    },
    /// Attempts spent: the job is `failed`.
    Failed,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStep {
    /// Its id.
    pub id: JobStepId,
    /// The job.
    pub job_id: JobId,
    /// The step's stable name within the job (`vpc`, `subnet-a`, …).
    pub step_key: String,
    /// What was about to be done (request parameters, client token).
    pub intent: serde_json::Value,
    /// The AWS resource id, once the call returned.
    pub aws_id: Option<String>,
    /// When the intent was recorded, unix ms.
    pub created_ms: i64,
    /// When the result was recorded, unix ms.
    pub completed_ms: Option<i64>,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::jobs)]
struct Row {
    id: String,
    org_id: String,
    link_id: Option<String>,
    kind: String,
    payload: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_after_ms: i64,
    lease_owner: Option<String>,
    lease_token: Option<String>,
    lease_expires_ms: Option<i64>,
    progress_done: i64,
    progress_total: i64,
    result: Option<String>,
    error: Option<String>,
    created_ms: i64,
    updated_ms: i64,
    started_ms: Option<i64>,
    finished_ms: Option<i64>,
}

impl TryFrom<Row> for Job {
    type Error = Error;
    fn try_from(r: Row) -> Result<Job> {
        Ok(Job {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            link_id: r.link_id.as_deref().map(parse_col).transpose()?,
            kind: r.kind,
            payload: serde_json::from_str(&r.payload)?,
            state: r.state.parse()?,
            attempts: r.attempts,
            max_attempts: r.max_attempts,
            run_after_ms: r.run_after_ms,
            lease_owner: r.lease_owner,
            lease_expires_ms: r.lease_expires_ms,
            progress_done: r.progress_done,
            progress_total: r.progress_total,
            result: r.result.as_deref().map(serde_json::from_str).transpose()?,
            error: r.error,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            started_ms: r.started_ms,
            finished_ms: r.finished_ms,
        })
    }
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::job_steps)]
struct StepRow {
    id: String,
    org_id: String,
    job_id: String,
    step_key: String,
    intent: String,
    aws_id: Option<String>,
    created_ms: i64,
    completed_ms: Option<i64>,
}

impl TryFrom<StepRow> for JobStep {
    type Error = Error;
    fn try_from(r: StepRow) -> Result<JobStep> {
        Ok(JobStep {
            id: parse_col(&r.id)?,
            job_id: parse_col(&r.job_id)?,
            step_key: r.step_key,
            intent: serde_json::from_str(&r.intent)?,
            aws_id: r.aws_id,
            created_ms: r.created_ms,
            completed_ms: r.completed_ms,
        })
    }
}

/// Queues a job for `org`, runnable now. [`Error::NotFound`] when `link`
/// is not a link of `org`.
pub fn enqueue(conn: &mut Conn, org: OrgId, new: &NewJob<'_>, now_ms: i64) -> Result<Job> {
    if let Some(link) = new.link {
        crate::links::ensure_exists(conn, org, link)?;
    }
    let row = Row {
        id: JobId::new().to_string(),
        org_id: org.to_string(),
        link_id: new.link.map(|l| l.to_string()),
        kind: new.kind.to_owned(),
        payload: serde_json::to_string(new.payload)?,
        state: JobState::Queued.as_str().to_owned(),
        attempts: 0,
        max_attempts: i32::try_from(new.max_attempts.max(1)).unwrap_or(i32::MAX),
        run_after_ms: now_ms,
        lease_owner: None,
        lease_token: None,
        lease_expires_ms: None,
        progress_done: 0,
        progress_total: 0,
        result: None,
        error: None,
        created_ms: now_ms,
        updated_ms: now_ms,
        started_ms: None,
        finished_ms: None,
    };
    diesel::insert_into(j::jobs).values(&row).execute(conn)?;
    row.try_into()
}

fn load(conn: &mut Conn, org: &str, id: &str) -> Result<Row> {
    j::jobs
        .filter(j::org_id.eq(org))
        .filter(j::id.eq(id))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// Reads a job of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: JobId) -> Result<Job> {
    load(conn, &org.to_string(), &id.to_string())?.try_into()
}

/// The jobs of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<Job>> {
    let limit = page.clamped_limit();
    let q = j::jobs
        .filter(j::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    let q = before_cursor!(q, &page.cursor, j::created_ms, j::id);
    let rows = q
        .order((j::created_ms.desc(), j::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.created_ms, r.id.clone()),
        Job::try_from,
    )
}

/// The queued (not yet running) jobs of `kind` on link `link` of `org`,
/// oldest first: what a new request of the same kind may join instead of
/// queueing another.
pub fn queued_for_link(conn: &mut Conn, org: OrgId, link: LinkId, kind: &str) -> Result<Vec<Job>> {
    let rows: Vec<Row> = j::jobs
        .filter(j::org_id.eq(org.to_string()))
        .filter(j::link_id.eq(link.to_string()))
        .filter(j::kind.eq(kind))
        .filter(j::state.eq(JobState::Queued.as_str()))
        .select(Row::as_select())
        .order((j::created_ms.asc(), j::id.asc()))
        .load(conn)?;
    rows.into_iter().map(Job::try_from).collect()
}

/// Deletes every job of link `link` of `org` that is not running (their
/// steps go with them), before the link itself is deleted; returns how many.
/// A running job keeps its row, so the link's deletion then fails with
/// [`Error::InUse`]. One statement, so it joins the caller's transaction.
pub fn delete_idle_of_link(conn: &mut Conn, org: OrgId, link: LinkId) -> Result<usize> {
    Ok(diesel::delete(
        j::jobs
            .filter(j::org_id.eq(org.to_string()))
            .filter(j::link_id.eq(link.to_string()))
            .filter(j::state.ne(JobState::Running.as_str())),
    )
    .execute(conn)?)
}

/// Cancels a queued or running job of `org` (a running worker then gets
/// [`Error::LeaseLost`] on its next call). A finished job stays as it is.
pub fn cancel(conn: &mut Conn, org: OrgId, id: JobId, now_ms: i64) -> Result<Job> {
    let (org_s, id_s) = (org.to_string(), id.to_string());
    load(conn, &org_s, &id_s)?;
    diesel::update(
        j::jobs
            .filter(j::org_id.eq(&org_s))
            .filter(j::id.eq(&id_s))
            .filter(j::state.eq_any([JobState::Queued.as_str(), JobState::Running.as_str()])),
    )
    .set((
        j::state.eq(JobState::Cancelled.as_str()),
        j::lease_owner.eq(None::<String>),
        j::lease_token.eq(None::<String>),
        j::lease_expires_ms.eq(None::<i64>),
        j::updated_ms.eq(now_ms),
        j::finished_ms.eq(Some(now_ms)),
    ))
    .execute(conn)?;
    load(conn, &org_s, &id_s)?.try_into()
}

/// How [`claim_with`] shares the workers among organizations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fairness {
    /// Jobs of one organization running at once (under a live lease), at
    /// most; its other jobs wait while others' run.
    pub max_running_per_org: u32,
}

impl Default for Fairness {
    fn default() -> Self {
        Fairness {
            max_running_per_org: u32::MAX,
        }
    }
}

/// [`claim_with`] with no cap per organization (turns still rotate).
pub fn claim(conn: &mut Conn, worker: &str, lease_ms: i64, now_ms: i64) -> Result<Option<Claimed>> {
    claim_with(conn, worker, lease_ms, now_ms, &Fairness::default())
}

/// Claims the next runnable job for `worker` with a lease of `lease_ms`.
/// Organizations take turns: the job comes from the organization served
/// longest ago among those with a runnable job and fewer than
/// `fairness.max_running_per_org` running; within it, the job due first (a
/// queued job whose run time has come, or a running job whose lease expired:
/// taken over). A taken-over job whose attempts are spent is failed instead.
/// `None` when nothing is runnable.
///
/// PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED`, so workers on several
/// replicas never wait on each other (two replicas claiming at the same
/// instant may each let an organization reach its cap, once). SQLite:
/// `BEGIN IMMEDIATE`.
pub fn claim_with(
    conn: &mut Conn,
    worker: &str,
    lease_ms: i64,
    now_ms: i64,
    fairness: &Fairness,
) -> Result<Option<Claimed>> {
    let cap = i64::from(fairness.max_running_per_org.max(1));
    loop {
        let claimed = write_transaction(conn, |conn| -> Result<Option<Option<Claimed>>> {
            // A few organizations in turn order: on PostgreSQL another
            // replica may hold the rows of the first one.
            let mut next = None;
            for org in fair_org_order(conn, now_ms, cap, 8)? {
                if let Some(id) = next_runnable_job(conn, &org, now_ms)? {
                    next = Some((org, id));
                    break;
                }
            }
            let Some((org, id)) = next else {
                return Ok(None);
            };
            let row: Row = j::jobs.find(&id).select(Row::as_select()).first(conn)?;
            let took_over = row.state == JobState::Running.as_str();
            // Guard on the state we saw (and the old lease token) so a
            // concurrent claimer can never win the same row twice.
            let guard = j::id
                .eq(&id)
                .and(j::state.eq(&row.state))
                .and(j::attempts.eq(row.attempts));
            if took_over && row.attempts >= row.max_attempts {
                diesel::update(j::jobs.filter(guard))
                    .set((
                        j::state.eq(JobState::Failed.as_str()),
                        j::error.eq(Some("lease expired and attempts are spent")),
                        j::lease_owner.eq(None::<String>),
                        j::lease_token.eq(None::<String>),
                        j::lease_expires_ms.eq(None::<i64>),
                        j::updated_ms.eq(now_ms),
                        j::finished_ms.eq(Some(now_ms)),
                    ))
                    .execute(conn)?;
                return Ok(Some(None)); // look again
            }
            let token = Uuid::new_v4().to_string();
            let n = diesel::update(j::jobs.filter(guard))
                .set((
                    j::state.eq(JobState::Running.as_str()),
                    j::attempts.eq(row.attempts + 1),
                    j::lease_owner.eq(Some(worker)),
                    j::lease_token.eq(Some(&token)),
                    j::lease_expires_ms.eq(Some(now_ms + lease_ms)),
                    j::started_ms.eq(Some(row.started_ms.unwrap_or(now_ms))),
                    j::updated_ms.eq(now_ms),
                ))
                .execute(conn)?;
            if n != 1 {
                return Ok(Some(None));
            }
            record_org_turn(conn, &org, now_ms)?;
            let job: Job = j::jobs
                .find(&id)
                .select(Row::as_select())
                .first(conn)?
                .try_into()?;
            let lease = Lease {
                job_id: job.id,
                org_id: job.org_id,
                token,
                expires_ms: now_ms + lease_ms,
            };
            Ok(Some(Some(Claimed {
                job,
                lease,
                took_over,
            })))
        })?;
        match claimed {
            None => return Ok(None),
            Some(Some(c)) => return Ok(Some(c)),
            Some(None) => continue,
        }
    }
}

macro_rules! leased {
    ($lease:expr) => {
        j::jobs
            .filter(j::id.eq($lease.job_id.to_string()))
            .filter(j::org_id.eq($lease.org_id.to_string()))
            .filter(j::state.eq(JobState::Running.as_str()))
            .filter(j::lease_token.eq(&$lease.token))
    };
}

/// Extends the lease to `now_ms + lease_ms`.
pub fn renew(conn: &mut Conn, lease: &mut Lease, lease_ms: i64, now_ms: i64) -> Result<()> {
    let expires = now_ms + lease_ms;
    let n = diesel::update(leased!(lease))
        .set((
            j::lease_expires_ms.eq(Some(expires)),
            j::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    lease.expires_ms = expires;
    Ok(())
}

/// Records progress (`done` of `total` units).
pub fn set_progress(
    conn: &mut Conn,
    lease: &Lease,
    done: i64,
    total: i64,
    now_ms: i64,
) -> Result<()> {
    let n = diesel::update(leased!(lease))
        .set((
            j::progress_done.eq(done),
            j::progress_total.eq(total),
            j::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

/// Marks the job `succeeded` with its result.
pub fn complete(
    conn: &mut Conn,
    lease: &Lease,
    result: &serde_json::Value,
    now_ms: i64,
) -> Result<Job> {
    let n = diesel::update(leased!(lease))
        .set((
            j::state.eq(JobState::Succeeded.as_str()),
            j::result.eq(Some(serde_json::to_string(result)?)),
            j::error.eq(None::<String>),
            j::lease_owner.eq(None::<String>),
            j::lease_token.eq(None::<String>),
            j::lease_expires_ms.eq(None::<i64>),
            j::updated_ms.eq(now_ms),
            j::finished_ms.eq(Some(now_ms)),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    get(conn, lease.org_id, lease.job_id)
}

/// Records a failed attempt: queued again after the policy's backoff while
/// attempts remain, `failed` otherwise.
pub fn fail(
    conn: &mut Conn,
    lease: &Lease,
    error: &str,
    retry: &RetryPolicy,
    now_ms: i64,
) -> Result<FailOutcome> {
    let row = load(conn, &lease.org_id.to_string(), &lease.job_id.to_string())?;
    if row.attempts >= row.max_attempts {
        return fail_permanently(conn, lease, error, now_ms).map(|()| FailOutcome::Failed);
    }
    let next_run_ms = now_ms + retry.delay_ms(row.attempts);
    let n = diesel::update(leased!(lease))
        .set((
            j::state.eq(JobState::Queued.as_str()),
            j::error.eq(Some(error)),
            j::run_after_ms.eq(next_run_ms),
            j::lease_owner.eq(None::<String>),
            j::lease_token.eq(None::<String>),
            j::lease_expires_ms.eq(None::<i64>),
            j::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(FailOutcome::Retrying { next_run_ms })
}

/// Puts a running job back in the queue until `run_after_ms` without
/// spending an attempt: it is waiting on something outside itself (IAM
/// propagation, a link being verified, a rate budget), not failing. `note`
/// says what, for whoever reads the job meanwhile.
pub fn defer(
    conn: &mut Conn,
    lease: &Lease,
    run_after_ms: i64,
    note: &str,
    now_ms: i64,
) -> Result<()> {
    let n = diesel::update(leased!(lease))
        .set((
            j::state.eq(JobState::Queued.as_str()),
            j::attempts.eq(j::attempts - 1),
            j::error.eq(Some(note)),
            j::run_after_ms.eq(run_after_ms),
            j::lease_owner.eq(None::<String>),
            j::lease_token.eq(None::<String>),
            j::lease_expires_ms.eq(None::<i64>),
            j::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

/// Marks the job `failed` whatever attempts remain (a permanent error:
/// bad input, a trust policy that does not allow xrole).
pub fn fail_permanently(conn: &mut Conn, lease: &Lease, error: &str, now_ms: i64) -> Result<()> {
    let n = diesel::update(leased!(lease))
        .set((
            j::state.eq(JobState::Failed.as_str()),
            j::error.eq(Some(error)),
            j::lease_owner.eq(None::<String>),
            j::lease_token.eq(None::<String>),
            j::lease_expires_ms.eq(None::<i64>),
            j::updated_ms.eq(now_ms),
            j::finished_ms.eq(Some(now_ms)),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

fn check_lease(conn: &mut Conn, lease: &Lease) -> Result<()> {
    let n: i64 = leased!(lease).count().get_result(conn)?;
    if n == 0 {
        return Err(Error::LeaseLost);
    }
    Ok(())
}

fn load_step(conn: &mut Conn, org: &str, job: &str, key: &str) -> Result<Option<StepRow>> {
    Ok(s::job_steps
        .filter(s::org_id.eq(org))
        .filter(s::job_id.eq(job))
        .filter(s::step_key.eq(key))
        .select(StepRow::as_select())
        .first(conn)
        .optional()?)
}

/// Records the intent of step `step_key` before its AWS call. If the step
/// was recorded by an earlier attempt, that record is returned unchanged
/// (its intent and any `aws_id` tell the resumed run what happened).
pub fn record_intent(
    conn: &mut Conn,
    lease: &Lease,
    step_key: &str,
    intent: &serde_json::Value,
    now_ms: i64,
) -> Result<JobStep> {
    write_transaction(conn, |conn| {
        check_lease(conn, lease)?;
        let (org, job) = (lease.org_id.to_string(), lease.job_id.to_string());
        let row = StepRow {
            id: JobStepId::new().to_string(),
            org_id: org.clone(),
            job_id: job.clone(),
            step_key: step_key.to_owned(),
            intent: serde_json::to_string(intent)?,
            aws_id: None,
            created_ms: now_ms,
            completed_ms: None,
        };
        insert_or_ignore!(&mut *conn, s::job_steps, &row)?;
        load_step(conn, &org, &job, step_key)?
            .ok_or(Error::NotFound)?
            .try_into()
    })
}

/// Records the AWS resource id step `step_key` produced.
pub fn record_step_result(
    conn: &mut Conn,
    lease: &Lease,
    step_key: &str,
    aws_id: &str,
    now_ms: i64,
) -> Result<JobStep> {
    write_transaction(conn, |conn| {
        check_lease(conn, lease)?;
        let (org, job) = (lease.org_id.to_string(), lease.job_id.to_string());
        let n = diesel::update(
            s::job_steps
                .filter(s::org_id.eq(&org))
                .filter(s::job_id.eq(&job))
                .filter(s::step_key.eq(step_key)),
        )
        .set((s::aws_id.eq(Some(aws_id)), s::completed_ms.eq(Some(now_ms))))
        .execute(conn)?;
        if n == 0 {
            return Err(Error::NotFound);
        }
        load_step(conn, &org, &job, step_key)?
            .ok_or(Error::NotFound)?
            .try_into()
    })
}

/// One step of a job of `org`, if recorded.
pub fn step(conn: &mut Conn, org: OrgId, job: JobId, step_key: &str) -> Result<Option<JobStep>> {
    load_step(conn, &org.to_string(), &job.to_string(), step_key)?
        .map(JobStep::try_from)
        .transpose()
}

/// The steps of a job of `org`, in the order their intents were recorded.
pub fn steps(conn: &mut Conn, org: OrgId, job: JobId) -> Result<Vec<JobStep>> {
    let (org, job) = (org.to_string(), job.to_string());
    load(conn, &org, &job)?;
    let rows: Vec<StepRow> = s::job_steps
        .filter(s::org_id.eq(&org))
        .filter(s::job_id.eq(&job))
        .select(StepRow::as_select())
        .order((s::created_ms.asc(), s::id.asc()))
        .load(conn)?;
    rows.into_iter().map(JobStep::try_from).collect()
}
