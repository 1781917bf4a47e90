//! `provision_vpc`, `provision_instances`, `provision_database`: a plan
//! run by `xrole-provision` with the customer's session, journaled.

use std::sync::atomic::Ordering;

use xrole_provision::{EnvironmentPlan, Executor, ExecutorOptions, JobScope, Progress};
use xrole_store::resources::{NewResource, Resource};
use xrole_store::{Conn, JobId, ResourceId, ResourceState};

use super::context::*;
use super::error::JobError;
use crate::jobs::{
    KIND_DATABASE, KIND_INSTANCES, KIND_VPC, ProvisionPayload, RES_DATABASE, RES_INSTANCE, RES_VPC,
};
use crate::journal::{SourceView, StepFilter, StoreJournal};

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

/// Runs one claimed job of this kind; the worker records the outcome.
pub(crate) async fn run(run: Run<'_>, p: ProvisionPayload) -> Result<(), JobError> {
    let Run {
        state,
        aws,
        job,
        lease,
        counter,
        took_over,
    } = run;
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
