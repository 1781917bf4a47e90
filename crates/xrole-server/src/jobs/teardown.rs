//! `teardown`: a resource and, with cascade, its dependents, children first.

use std::sync::atomic::Ordering;

use xrole_provision::{Executor, ExecutorOptions, JobScope};
use xrole_store::resources::Resource;
use xrole_store::{Conn, OrgId, ResourceId};

use super::context::*;
use super::error::JobError;
use crate::jobs::{KIND_TEARDOWN, ProvisionPayload, RES_DATABASE, RES_INSTANCE, TeardownPayload};
use crate::journal::{SourceView, StepFilter, StoreJournal};

/// The resource and everything under it, children first.
fn subtree(conn: &mut Conn, org: OrgId, root: Resource) -> Result<Vec<Resource>, JobError> {
    let mut out = Vec::new();
    for child in xrole_store::resources::children(conn, org, root.id)? {
        out.extend(subtree(conn, org, child)?);
    }
    out.push(root);
    Ok(out)
}

/// Runs one claimed job of this kind; the worker records the outcome.
pub(crate) async fn run(run: Run<'_>, p: TeardownPayload) -> Result<(), JobError> {
    let Run {
        state,
        aws,
        job,
        lease,
        counter,
        ..
    } = run;
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
