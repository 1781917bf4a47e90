//! What the job kinds share: the database from async code, the audit
//! trail, the link's access, customer sessions, tags and progress.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use xrole_assume::{AssumeSpec, AwsAccountId, RoleArn, SessionName, SourceIdentity};
use xrole_provision::ExecutorOptions;
use xrole_store::jobs::{Job, Lease};
use xrole_store::{AccessLevel, Conn, JobId, LinkId, LinkState, OrgId};

use super::error::JobError;
use crate::link_flow::AwsRuntime;
use crate::state::AppState;

/// Tag holding the step that created a resource.
pub(crate) const STEP_TAG: &str = xrole_provision::tags::STEP;

/// Runs `f` with a pooled connection on the blocking pool.
pub(crate) async fn db<T: Send + 'static>(
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

/// Progress shared between the executor's callback and the lease renewer.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    pub(crate) done: AtomicI64,
    pub(crate) total: AtomicI64,
}

pub(crate) fn link_of(job: &Job) -> Result<LinkId, JobError> {
    job.link_id
        .ok_or_else(|| JobError::permanent("the job has no AWS account link"))
}

/// Appends an audit event outside a request (the worker's own transaction).
pub(crate) fn audit(
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
pub(crate) struct Access {
    pub(crate) link: xrole_store::links::Link,
    pub(crate) role: RoleArn,
    pub(crate) external_id: xrole_crypto::ExternalId,
    pub(crate) account: AwsAccountId,
}

pub(crate) async fn access(state: &AppState, org: OrgId, link: LinkId) -> Result<Access, JobError> {
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

/// The `SourceIdentity` of a session acting for `actor` (`user:<id>` →
/// `xrole-user-<id>`), so the customer's CloudTrail names who asked.
pub(crate) fn source_identity_of(actor: &str) -> Option<String> {
    let (kind, id) = actor.split_once(':')?;
    matches!(kind, "user" | "api_key").then(|| format!("xrole-{kind}-{id}").replace('_', "-"))
}

/// Records the AssumeRole about to happen: who, which link, why, and the
/// session name the customer sees in CloudTrail.
#[expect(
    clippy::too_many_arguments,
    reason = "every audit field is named at the call"
)]
pub(crate) async fn audit_assume(
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

pub(crate) fn tags_for(
    org: OrgId,
    link: LinkId,
    job: JobId,
    step: &str,
) -> BTreeMap<String, String> {
    use xrole_provision::tags;
    BTreeMap::from([
        (tags::MANAGED_BY.to_owned(), "xrole".to_owned()),
        (tags::ORG.to_owned(), org.to_string()),
        (tags::LINK.to_owned(), link.to_string()),
        (tags::JOB.to_owned(), job.to_string()),
        (tags::STEP.to_owned(), step.to_owned()),
    ])
}

pub(crate) fn executor_options(aws: &AwsRuntime) -> ExecutorOptions {
    ExecutorOptions {
        poll_interval: aws.settings.executor_poll,
        ..ExecutorOptions::default()
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the session's scope, named at the call"
)]
pub(crate) async fn customer_session(
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

/// What every job kind's `run` gets from the worker: the server, its AWS
/// side, the claimed job with its lease, and the progress the lease
/// renewer reports.
pub(crate) struct Run<'a> {
    pub(crate) state: &'a AppState,
    pub(crate) aws: &'a Arc<AwsRuntime>,
    pub(crate) job: &'a Job,
    pub(crate) lease: &'a Lease,
    pub(crate) counter: Arc<Counter>,
    /// Whether another worker held the job before (its journal resumes).
    pub(crate) took_over: bool,
}
