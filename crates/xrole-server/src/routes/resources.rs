//! `/v1/resources`: AWS resources xrole made in customers' accounts, and
//! their teardown.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use xrole_store::{Conn, OrgId, ResourceId, ResourceState};

use crate::audit::{self, RequestInfo};
use crate::auth::Principal;
use crate::body::{path_id, query};
use crate::error::{ApiError, Problem};
use crate::jobs::{self, JobSpec, TeardownPayload};
use crate::routes::aws_accounts::aws_runtime;
use crate::routes::jobs::JobOut;
use crate::state::AppState;
use crate::timefmt::format_ms;

/// An AWS resource xrole made.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResourceOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// The AWS account link it lives in.
    pub aws_account_id: String,
    /// The job that made it.
    pub job_id: Option<String>,
    /// `vpc`, `ec2_instance` or `rds_instance`.
    pub kind: String,
    /// Its AWS id (`vpc-…`, `i-…`, a DB identifier).
    pub aws_id: String,
    /// The region.
    pub region: String,
    /// The resource it belongs to (an instance's VPC).
    pub parent_id: Option<String>,
    /// `available`, `deleting`, …
    pub state: String,
    /// The tags xrole set on it.
    pub tags: std::collections::BTreeMap<String, String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl From<&xrole_store::resources::Resource> for ResourceOut {
    fn from(r: &xrole_store::resources::Resource) -> Self {
        ResourceOut {
            id: r.id.to_string(),
            aws_account_id: r.link_id.to_string(),
            job_id: r.job_id.map(|j| j.to_string()),
            kind: r.kind.clone(),
            aws_id: r.aws_id.clone(),
            region: r.region.clone(),
            parent_id: r.parent_id.map(|p| p.to_string()),
            state: r.state.as_str().to_owned(),
            tags: r.tags.clone(),
            created_at: format_ms(r.created_ms),
            updated_at: format_ms(r.updated_ms),
        }
    }
}

/// `DELETE /v1/resources/{id}` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Delete the resources inside it too (children first).
    pub cascade: Option<bool>,
    /// Keep a final snapshot of each database deleted (default `true`);
    /// `false` deletes its data for good, and the audit log records who chose.
    pub final_snapshot: Option<bool>,
}

/// One resource.
#[utoipa::path(get, path = "/v1/resources/{id}", tag = "resources", params(("id" = String, Path, format = Uuid)),
    security(("api_key" = [])),
    responses((status = 200, body = ResourceOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ResourceId = path_id(&id)?;
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            Ok(ResourceOut::from(&xrole_store::resources::get(
                conn, org, id,
            )?))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

fn subtree_has_database(
    conn: &mut Conn,
    org: OrgId,
    r: &xrole_store::resources::Resource,
) -> Result<bool, ApiError> {
    if r.kind == jobs::RES_DATABASE {
        return Ok(true);
    }
    for c in xrole_store::resources::children(conn, org, r.id)? {
        if subtree_has_database(conn, org, &c)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn mark_deleting(conn: &mut Conn, org: OrgId, id: ResourceId, now: i64) -> Result<(), ApiError> {
    for c in xrole_store::resources::children(conn, org, id)? {
        mark_deleting(conn, org, c.id, now)?;
    }
    xrole_store::resources::set_state(conn, org, id, ResourceState::Deleting, now)?;
    Ok(())
}

/// Delete a resource from the customer's account: 202 with a teardown job.
/// 409 while resources inside it remain, unless `?cascade=true` (then they
/// go first).
#[utoipa::path(delete, path = "/v1/resources/{id}", tag = "resources",
    params(("id" = String, Path, format = Uuid), DeleteQuery), security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    crate::auth::Operator(principal): crate::auth::Operator,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ResourceId = path_id(&id)?;
    let q = query::<DeleteQuery>(&req)?;
    let cascade = q.cascade.unwrap_or(false);
    let final_snapshot = q.final_snapshot.unwrap_or(true);
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let out = state
        .tx(move |conn| {
            let org = principal.org_id;
            let now = st.now_ms();
            let r = xrole_store::resources::get(conn, org, id)?;
            let children = xrole_store::resources::children(conn, org, id)?;
            if !children.is_empty() && !cascade {
                return Err(ApiError::Conflict {
                    code: "has_dependents",
                    detail: format!(
                        "{} resource(s) inside it remain; delete them first or use ?cascade=true",
                        children.len()
                    ),
                });
            }
            // Tearing down a database (alone or inside a VPC) destroys data:
            // a destructive change.
            let has_database = subtree_has_database(conn, org, &r)?;
            if has_database {
                principal
                    .check_destroy(xrole_store::orgs::get(conn, org)?.operators_may_destroy)?;
            }
            // Checked after the role: a refusal does not depend on AWS.
            aws_runtime(&st)?;
            let link = xrole_store::links::get(conn, org, r.link_id)?;
            if link.state != xrole_store::LinkState::Active {
                return Err(ApiError::Conflict {
                    code: "link_not_active",
                    detail: format!(
                        "the AWS account link is {}; xrole cannot act in the account",
                        link.state
                    ),
                });
            }
            let spec = JobSpec::Teardown(TeardownPayload {
                actor: principal.actor().as_string(),
                resource: id.to_string(),
                cascade,
                final_snapshot,
            });
            let job = jobs::enqueue(conn, org, r.link_id, &spec, now)?;
            mark_deleting(conn, org, id, now)?;
            audit::record(
                conn,
                org,
                &principal.actor(),
                "resource.delete_requested",
                Some(format!("resource:{id}")),
                serde_json::json!({
                    "kind": r.kind,
                    "aws_id": r.aws_id,
                    "cascade": cascade,
                    "job_id": job.id.to_string(),
                    // Who chose is this event's actor.
                    "final_snapshot": has_database.then_some(final_snapshot),
                }),
                Some(&info),
                now,
            )?;
            Ok(JobOut::new(&job, &[]))
        })
        .await?;
    Ok(HttpResponse::Accepted().json(out))
}
