//! `GET /v1/whoami`: who the presented API key acts as.
//!
//! A client checks its key with it (a 200 means the key works; 401 that it
//! does not), and the benchmarks use it to measure authentication alone: it
//! reads nothing beyond what authentication already did.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

use xrole_store::{ApiKeyId, OrgId, UserId};

use crate::auth::Principal;

/// The caller, as authentication established it.
// The ids serialize straight from their UUIDs: no string per request.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The organization the key belongs to.
    #[schema(value_type = String, format = Uuid)]
    pub organization_id: OrgId,
    /// The API key's id (as in `GET /v1/api-keys`).
    #[schema(value_type = String, format = Uuid)]
    pub api_key_id: ApiKeyId,
    /// The user the key acts as, if any.
    #[schema(value_type = Option<String>, format = Uuid)]
    pub user_id: Option<UserId>,
    /// `admin` or `member`.
    #[schema(value_type = String, pattern = "^(admin|member)$")]
    pub role: &'static str,
}

/// Who the presented API key acts as.
#[utoipa::path(get, path = "/v1/whoami", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = Whoami), (status = 401, body = crate::error::Problem)))]
pub async fn whoami(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(Whoami {
        organization_id: principal.org_id,
        api_key_id: principal.api_key_id,
        user_id: principal.user_id,
        role: principal.role.as_str(),
    })
}
