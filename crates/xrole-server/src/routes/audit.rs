//! `GET /v1/audit-events`: the organization's audit trail.

use actix_web::{HttpRequest, HttpResponse, web};

use crate::auth::Admin;
use crate::body::query;
use crate::error::{ApiError, Problem};
use crate::pagination::PageQuery;
use crate::routes::models::{AuditEventOut, Page};
use crate::state::AppState;

/// The organization's audit trail, newest first (admin).
#[utoipa::path(get, path = "/v1/audit-events", tag = "audit", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Page<AuditEventOut>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    Admin(principal): Admin,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = query::<PageQuery>(&req)?.to_request()?;
    let events = state
        .read(move |conn| Ok(xrole_store::audit::list(conn, principal.org_id, &page)?))
        .await?;
    Ok(HttpResponse::Ok().json(Page::from_store(&events, |e| AuditEventOut::from(e))))
}
