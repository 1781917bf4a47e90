//! The one place that turns errors into HTTP: RFC 9457
//! `application/problem+json` bodies with a stable snake_case `code`.
//!
//! Handlers return [`ApiError`]; extractor failures (JSON, path, query, body
//! size) and unmatched routes are routed here too, so no client mistake can
//! produce a 500 or a non-problem body.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error a handler answers with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// 400: the request is malformed; `code` names what.
    #[error("{detail}")]
    BadRequest {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable detail.
        detail: String,
    },
    /// 422: well-formed but a field's value is not acceptable.
    #[error("invalid {field}: {detail}")]
    InvalidField {
        /// The JSON field or query parameter.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// 401: no credentials, malformed, unknown, revoked or expired.
    #[error("authentication required")]
    Unauthenticated,
    /// 403: authenticated but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 403 with the reason: the caller's role does not allow this.
    #[error("{detail}")]
    NotPermitted {
        /// What role it takes.
        detail: String,
    },
    /// 404: no such resource in the caller's organization.
    #[error("not found")]
    NotFound,
    /// 409: conflicts with existing state.
    #[error("{detail}")]
    Conflict {
        /// Stable snake_case code.
        code: &'static str,
        /// Human-readable detail.
        detail: String,
    },
    /// 409: a request with this Idempotency-Key is still being processed.
    #[error("a request with this Idempotency-Key is in progress")]
    IdempotencyInFlight {
        /// Seconds after which a retry may succeed.
        retry_after_secs: u64,
    },
    /// 422: the Idempotency-Key was used with a different request body.
    #[error("the Idempotency-Key was used with a different request")]
    IdempotencyMismatch,
    /// 400: this route requires an Idempotency-Key.
    #[error("this request requires an Idempotency-Key header")]
    IdempotencyKeyRequired,
    /// 413: the body is larger than allowed.
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// 408: the request body did not arrive in time.
    #[error("the request body did not arrive within {secs} s")]
    BodyTimeout {
        /// The deadline in seconds.
        secs: u64,
    },
    /// 415: the body is not JSON.
    #[error("expected Content-Type: application/json")]
    UnsupportedMediaType,
    /// 429: the API key's rate limit is exhausted.
    #[error("rate limit exceeded")]
    RateLimited {
        /// Seconds until a token is available.
        retry_after_secs: u64,
    },
    /// 404 for an unknown path.
    #[error("no such route")]
    RouteNotFound,
    /// 405 for a known path with another method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 503: a dependency (the database) is unavailable.
    #[error("service unavailable")]
    Unavailable,
    /// 503 from `/readyz`: the part that is unavailable, and why.
    #[error("{0}")]
    NotReady(String),
    /// 500: a bug or an unexpected failure; logged once with its cause chain.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// An internal error from anything that can fail.
    pub fn internal(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(e.into())
    }

    /// A 400 with a code.
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            detail: detail.into(),
        }
    }

    /// A 422 naming a field.
    pub fn invalid(field: &'static str, detail: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field,
            detail: detail.into(),
        }
    }

    /// The stable snake_case code clients match on.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden | ApiError::NotPermitted { .. } => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::IdempotencyInFlight { .. } => "idempotency_key_in_use",
            ApiError::IdempotencyMismatch => "idempotency_key_reused",
            ApiError::IdempotencyKeyRequired => "idempotency_key_required",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::BodyTimeout { .. } => "body_timeout",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RouteNotFound => "route_not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unavailable => "unavailable",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } | ApiError::IdempotencyKeyRequired => "Bad request",
            ApiError::InvalidField { .. } => "Invalid field",
            ApiError::Unauthenticated => "Unauthenticated",
            ApiError::Forbidden | ApiError::NotPermitted { .. } => "Forbidden",
            ApiError::NotFound | ApiError::RouteNotFound => "Not found",
            ApiError::Conflict { .. } | ApiError::IdempotencyInFlight { .. } => "Conflict",
            ApiError::IdempotencyMismatch => "Idempotency key reused",
            ApiError::PayloadTooLarge { .. } => "Payload too large",
            ApiError::BodyTimeout { .. } => "Request timeout",
            ApiError::UnsupportedMediaType => "Unsupported media type",
            ApiError::RateLimited { .. } => "Too many requests",
            ApiError::MethodNotAllowed => "Method not allowed",
            ApiError::Unavailable | ApiError::NotReady(_) => "Service unavailable",
            ApiError::Internal(_) => "Internal server error",
        }
    }
}

/// The RFC 9457 body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:xrole:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the problem type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened in this occurrence.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable snake_case code to match on.
    pub code: String,
    /// The offending field, for `invalid_field`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::IdempotencyKeyRequired => {
                StatusCode::BAD_REQUEST
            }
            ApiError::InvalidField { .. } | ApiError::IdempotencyMismatch => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::NotPermitted { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::RouteNotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } | ApiError::IdempotencyInFlight { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unavailable | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let status = self.status_code();
        if let ApiError::Internal(e) = self {
            tracing::error!(error = %error_chain(e.as_ref()), "internal error");
        }
        let detail = match self {
            // An internal error's cause stays in the log.
            ApiError::Internal(_) => None,
            other => Some(other.to_string()),
        };
        let field = match self {
            ApiError::InvalidField { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        let problem = Problem {
            type_: format!("urn:xrole:problem:{}", self.code()),
            title: self.title().to_owned(),
            status: status.as_u16(),
            detail,
            code: self.code().to_owned(),
            field,
        };
        let mut res = HttpResponse::build(status);
        res.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self {
            ApiError::IdempotencyInFlight { retry_after_secs }
            | ApiError::RateLimited { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            ApiError::Unauthenticated => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        res.body(serde_json::to_vec(&problem).unwrap_or_default())
    }
}

/// `error: cause: cause…` for one log line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<xrole_store::Error> for ApiError {
    fn from(e: xrole_store::Error) -> Self {
        use xrole_store::Error as S;
        match e {
            S::NotFound => ApiError::NotFound,
            S::Duplicate(what) => ApiError::Conflict {
                code: "already_exists",
                detail: format!("{what} already exists"),
            },
            S::LockLost => ApiError::IdempotencyInFlight {
                retry_after_secs: 1,
            },
            S::LastAdmin => ApiError::Conflict {
                code: "last_admin",
                detail: "the organization must keep an enabled admin: promote another user first"
                    .into(),
            },
            other => ApiError::internal(other),
        }
    }
}

impl From<diesel::result::Error> for ApiError {
    fn from(e: diesel::result::Error) -> Self {
        xrole_store::Error::from(e).into()
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// Maps a JSON body's deserialization error to a problem.
pub fn json_error(e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::bad_request("invalid_body", e.to_string()),
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("malformed_json", e.to_string())
        }
    }
}

/// Extractor error handlers so `web::Path`/`web::Query`/`web::Json` failures
/// answer problems.
pub fn path_error(
    err: actix_web::error::PathError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_path_parameter", err.to_string()).into()
}

/// See [`path_error`].
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    ApiError::bad_request("invalid_query", err.to_string()).into()
}

/// See [`path_error`].
pub fn json_payload_error(
    err: actix_web::error::JsonPayloadError,
    _: &actix_web::HttpRequest,
) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    match err {
        J::OverflowKnownLength { limit, .. } | J::Overflow { limit } => {
            ApiError::PayloadTooLarge { limit }.into()
        }
        J::ContentType => ApiError::UnsupportedMediaType.into(),
        J::Deserialize(e) => json_error(&e).into(),
        other => ApiError::bad_request("malformed_json", other.to_string()).into(),
    }
}

/// Default service: unknown path.
pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// Default service of a known path: wrong method. `allow` lists the
/// path's methods (`GET, POST`) for the `Allow` header (RFC 9110).
pub async fn method_not_allowed(allow: String) -> HttpResponse {
    let mut res = ApiError::MethodNotAllowed.error_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        res.headers_mut().insert(header::ALLOW, v);
    }
    res
}

impl actix_web::Responder for ApiError {
    type Body = actix_web::body::BoxBody;
    fn respond_to(self, _: &actix_web::HttpRequest) -> HttpResponse {
        self.error_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_snake_case_and_statuses_are_4xx_for_client_errors() {
        let errs = [
            ApiError::bad_request("malformed_json", "x"),
            ApiError::invalid("email", "x"),
            ApiError::Unauthenticated,
            ApiError::Forbidden,
            ApiError::NotFound,
            ApiError::IdempotencyInFlight {
                retry_after_secs: 1,
            },
            ApiError::IdempotencyMismatch,
            ApiError::IdempotencyKeyRequired,
            ApiError::PayloadTooLarge { limit: 1 },
            ApiError::BodyTimeout { secs: 1 },
            ApiError::RateLimited {
                retry_after_secs: 1,
            },
            ApiError::RouteNotFound,
            ApiError::MethodNotAllowed,
        ];
        for e in errs {
            let c = e.code();
            assert!(
                c.chars().all(|ch| ch.is_ascii_lowercase() || ch == '_'),
                "{c}"
            );
            assert!(e.status_code().is_client_error(), "{c}");
            let res = e.error_response();
            assert_eq!(res.headers().get("content-type").unwrap(), PROBLEM_JSON);
        }
    }

    #[test]
    fn retry_after_is_set_on_429_and_409_in_flight() {
        let r = ApiError::RateLimited {
            retry_after_secs: 3,
        }
        .error_response();
        assert_eq!(r.headers().get("retry-after").unwrap(), "3");
        let r = ApiError::IdempotencyInFlight {
            retry_after_secs: 1,
        }
        .error_response();
        assert_eq!(r.status(), 409);
        assert_eq!(r.headers().get("retry-after").unwrap(), "1");
    }

    #[test]
    fn internal_error_hides_its_cause() {
        let e = ApiError::internal("database password is hunter2");
        let body = actix_web::body::to_bytes(e.error_response().into_body());
        let body = futures::executor::block_on(body).unwrap();
        assert!(!String::from_utf8_lossy(&body).contains("hunter2"));
    }
}
