//! `GET /v1/cloudformation/xrole-role.yaml`: the customer role template, for
//! operators to host (or for CloudFormation to read from this server).

use actix_web::HttpResponse;
use actix_web::http::header;

/// The template, as shipped in `cloudformation/xrole-role.yaml`.
pub const TEMPLATE: &str = include_str!("../../../../cloudformation/xrole-role.yaml");

/// The customer role template (YAML).
#[utoipa::path(get, path = "/v1/cloudformation/xrole-role.yaml", tag = "aws-accounts",
    responses((status = 200, description = "The CloudFormation template", content_type = "application/yaml", body = String)))]
pub async fn template() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "application/yaml; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .body(TEMPLATE)
}
