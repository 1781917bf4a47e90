//! Liveness, readiness, metrics and the OpenAPI document.

use actix_web::{HttpResponse, web};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ApiError;
use crate::state::AppState;

/// A health answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health { status: "ok" })
}

/// What `/readyz` found.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    /// `ok`, or `degraded` when the AWS side is missing or limited: tenants,
    /// users and keys are served, AWS account routes may answer 503.
    #[schema(pattern = "^(ok|degraded)$")]
    pub status: &'static str,
    /// `ok` (when it is not, `/readyz` answers 503 saying so).
    #[schema(pattern = "^ok$")]
    pub database: &'static str,
    /// `ok`, `limited` (links can be created, nothing can act in AWS) or
    /// `unavailable`.
    #[schema(pattern = "^(ok|limited|unavailable)$")]
    pub aws: &'static str,
    /// Why the AWS side is not `ok`, and what to do.
    pub aws_detail: Option<String>,
}

/// Ready to serve: the database answers (else 503 naming it). The body also
/// says whether the AWS side is there; without it the server still serves
/// tenants and keys, so it stays ready.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Readiness),
        (status = 503, description = "The database is unavailable (`detail` says so)", body = crate::error::Problem)))]
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let not_ready = |_| ApiError::NotReady("the database is unavailable".into());
    state
        .db(|conn| {
            xrole_store::ping(conn).map_err(|e| {
                tracing::warn!(error = %e, "readiness check failed");
                ApiError::Unavailable
            })
        })
        .await
        .map_err(not_ready)?;
    let (aws, aws_detail) = match (state.aws.get(), state.aws_status.get()) {
        (Some(_), None) => ("ok", None),
        (Some(_), Some(why)) => ("limited", Some(why.clone())),
        (None, why) => (
            "unavailable",
            Some(why.cloned().unwrap_or_else(|| {
                "the server was started without an AWS side: AWS account routes answer 503".into()
            })),
        ),
    };
    Ok(HttpResponse::Ok().json(Readiness {
        status: if aws == "ok" { "ok" } else { "degraded" },
        database: "ok",
        aws,
        aws_detail,
    }))
}

/// Prometheus metrics in the text exposition format. With
/// `XROLE_METRICS_TOKEN` set, only for `Authorization: Bearer <that token>`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    security((), ("metrics_token" = [])),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"),
        (status = 401, description = "XROLE_METRICS_TOKEN is set and the request does not carry it",
            body = crate::error::Problem, content_type = "application/problem+json")))]
pub async fn metrics(
    state: web::Data<AppState>,
    req: actix_web::HttpRequest,
) -> Result<HttpResponse, crate::error::ApiError> {
    if let Some(token) = &state.config.metrics_token {
        let given = crate::auth::bearer(&req).unwrap_or_default();
        if !xrole_crypto::constant_time_eq(token.expose_secret().as_bytes(), given.as_bytes()) {
            return Err(crate::error::ApiError::Unauthenticated);
        }
    }
    Ok(HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render()))
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "OpenAPI 3.1 document", content_type = "application/json")))]
pub async fn openapi(state: web::Data<AppState>) -> HttpResponse {
    let base = crate::routes::aws_accounts::public_base(&state);
    HttpResponse::Ok().json(crate::openapi::document_for(&base))
}
