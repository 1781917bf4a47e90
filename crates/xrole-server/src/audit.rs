//! Writing audit events. Every mutating handler calls [`record`] inside the
//! transaction that makes its change, so the trail and the data never
//! disagree.

use xrole_store::{ApiKeyId, Conn, OrgId, UserId};

use crate::error::ApiError;

/// Who did it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Actor {
    /// The operator token or the CLI.
    Operator,
    /// Open sign-up, before any credential exists.
    Anonymous,
    /// An API key, and the user owning it.
    ApiKey {
        /// The key row.
        key: ApiKeyId,
        /// Its owner.
        user: Option<UserId>,
    },
    /// A user logging in with a password.
    User(UserId),
}

impl Actor {
    /// The stored form: `operator`, `anonymous`, `user:<id>`, `api_key:<id>`.
    pub fn as_string(&self) -> String {
        match self {
            Actor::Operator => "operator".to_owned(),
            Actor::Anonymous => "anonymous".to_owned(),
            Actor::ApiKey { user: Some(u), .. } | Actor::User(u) => format!("user:{u}"),
            Actor::ApiKey { key, user: None } => format!("api_key:{key}"),
        }
    }
}

/// Request facts recorded with the event.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The caller's address.
    pub source_ip: Option<String>,
    /// The `X-Request-Id` header, when sent.
    pub request_id: Option<String>,
}

impl RequestInfo {
    /// From an HTTP request.
    pub fn from_request(req: &actix_web::HttpRequest) -> Self {
        RequestInfo {
            source_ip: req.peer_addr().map(|a| a.ip().to_string()),
            request_id: req
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| v.len() <= 128)
                .map(str::to_owned),
        }
    }
}

/// Appends an audit event (call inside the mutation's transaction).
/// `details` must never hold a secret.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site shape, all named at the call"
)]
pub fn record(
    conn: &mut Conn,
    org: OrgId,
    actor: &Actor,
    action: &str,
    target: Option<String>,
    details: serde_json::Value,
    info: Option<&RequestInfo>,
    now_ms: i64,
) -> Result<(), ApiError> {
    let actor = actor.as_string();
    let event = xrole_store::audit::NewAuditEvent {
        actor: &actor,
        action,
        target: target.as_deref(),
        request_id: info.and_then(|i| i.request_id.as_deref()),
        source_ip: info.and_then(|i| i.source_ip.as_deref()),
        details,
    };
    xrole_store::audit::append(conn, org, &event, now_ms)?;
    Ok(())
}
