//! `GET /v1/whoami`: who the presented API key acts as.
//!
//! A client checks its key with it (a 200 means the key works; 401 that it
//! does not), and the benchmarks use it to measure authentication alone: it
//! reads nothing beyond what authentication already did.

use actix_web::HttpResponse;
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Principal;

/// The caller, as authentication established it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Whoami {
    /// The organization the key belongs to.
    #[schema(format = Uuid)]
    pub organization_id: String,
    /// The API key's id (as in `GET /v1/api-keys`).
    #[schema(format = Uuid)]
    pub api_key_id: String,
    /// The user the key acts as, if any.
    #[schema(format = Uuid)]
    pub user_id: Option<String>,
    /// `admin` or `member`.
    #[schema(pattern = "^(admin|member)$")]
    pub role: String,
}

/// Who the presented API key acts as.
#[utoipa::path(get, path = "/v1/whoami", tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, body = Whoami), (status = 401, body = crate::error::Problem)))]
pub async fn whoami(principal: Principal) -> HttpResponse {
    HttpResponse::Ok().json(Whoami {
        organization_id: principal.org_id.to_string(),
        api_key_id: principal.api_key_id.to_string(),
        user_id: principal.user_id.map(|u| u.to_string()),
        role: principal.role.as_str().to_owned(),
    })
}
