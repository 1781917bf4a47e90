//! `verify_link`: the broker's trust check of a link's role, applied to
//! the link only if the link has not changed since the job was queued.

use std::time::Duration;

use xrole_assume::{AwsAccountId, RoleArn, VerifyOptions, VerifyOutcome};
use xrole_store::OrgId;
use xrole_store::jobs::{Job, Lease};

use super::context::*;
use super::error::JobError;
use crate::jobs::VerifyPayload;
use crate::link_flow::{AwsRuntime, interpret};
use crate::state::AppState;

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

/// Runs one claimed job of this kind; the worker records the outcome.
pub(crate) async fn run(run: Run<'_>, payload: VerifyPayload) -> Result<(), JobError> {
    let Run {
        state,
        aws,
        job,
        lease,
        ..
    } = run;
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
