//! `/v1/jobs`: provisioning, teardown and verification jobs, with progress.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;
use xrole_store::JobId;

use crate::auth::Principal;
use crate::body::{path_id, query};
use crate::error::{ApiError, Problem};
use crate::pagination::PageQuery;
use crate::routes::models::Page;
use crate::state::AppState;
use crate::timefmt::format_ms;

/// A job's progress.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProgressOut {
    /// Steps done.
    pub done: i64,
    /// Steps in all (0 while unknown).
    pub total: i64,
    /// The step running now, if any.
    pub current_step: Option<String>,
}

/// A job.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// `verify_link`, `provision_vpc`, `provision_instances`, `provision_database` or `teardown`.
    pub kind: String,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub state: String,
    /// The AWS account link it acts through.
    pub aws_account_id: Option<String>,
    /// Claims so far.
    pub attempts: i32,
    /// Progress.
    pub progress: ProgressOut,
    /// The resources it made (or deleted), once it succeeded.
    #[schema(value_type = Vec<Object>)]
    pub resources: Vec<serde_json::Value>,
    /// The full result, once it succeeded.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The last error.
    pub error: Option<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
    /// When a worker first took it (RFC 3339): `started_at - created_at`
    /// is the time it waited in the queue.
    pub started_at: Option<String>,
    /// End (RFC 3339).
    pub finished_at: Option<String>,
}

impl JobOut {
    /// From a job and its steps (for the current step).
    pub fn new(j: &xrole_store::jobs::Job, steps: &[xrole_store::jobs::JobStep]) -> Self {
        let current_step = if j.state == xrole_store::JobState::Running {
            steps.iter().rev().find(|s| s.aws_id.is_none()).map(|s| {
                // Teardown steps are journaled per resource: `r/<id>/<step>`.
                match s.step_key.strip_prefix("r/") {
                    Some(rest) => rest.split_once('/').map_or(rest, |(_, k)| k).to_owned(),
                    None => s.step_key.clone(),
                }
            })
        } else {
            None
        };
        let resources = j
            .result
            .as_ref()
            .and_then(|r| r.get("resources").or_else(|| r.get("deleted")))
            .and_then(|r| r.as_array().cloned())
            .unwrap_or_default();
        let done = if j.progress_done == 0 {
            steps.iter().filter(|s| s.aws_id.is_some()).count() as i64
        } else {
            j.progress_done
        };
        JobOut {
            id: j.id.to_string(),
            kind: j.kind.clone(),
            state: j.state.as_str().to_owned(),
            aws_account_id: j.link_id.map(|l| l.to_string()),
            attempts: j.attempts,
            progress: ProgressOut {
                done: done.min(j.progress_total.max(done)),
                total: j.progress_total,
                current_step,
            },
            resources,
            result: j.result.clone(),
            error: j.error.clone(),
            created_at: format_ms(j.created_ms),
            updated_at: format_ms(j.updated_ms),
            started_at: j.started_ms.map(format_ms),
            finished_at: j.finished_ms.map(format_ms),
        }
    }
}

/// The organization's jobs, newest first.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(PageQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<JobOut>), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = query::<PageQuery>(&req)?.to_request()?;
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            let p = xrole_store::jobs::list(conn, org, &page)?;
            Ok(Page::from_store(&p, |j| JobOut::new(j, &[])))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// One job, with its progress and current step.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, format = Uuid)),
    security(("api_key" = [])),
    responses((status = 200, body = JobOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: JobId = path_id(&id)?;
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            let j = xrole_store::jobs::get(conn, org, id)?;
            let steps = xrole_store::jobs::steps(conn, org, id)?;
            Ok(JobOut::new(&j, &steps))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}
