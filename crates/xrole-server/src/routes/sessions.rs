//! `POST /v1/sessions`: exchange a password for a short-lived API key.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use utoipa::ToSchema;
use xrole_crypto::{SecretString, password};
use xrole_store::{Email, OrgId};

use crate::audit::{self, Actor, RequestInfo};
use crate::body::read_json;
use crate::error::{ApiError, Problem};
use crate::login::{LoginKeys, Refused};
use crate::routes::api_keys;
use crate::routes::models::{ApiKeyOut, CreatedApiKey};
use crate::routes::users::MAX_PASSWORD_CHARS;
use crate::state::AppState;

/// `POST /v1/sessions` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSession {
    /// The organization to log in to.
    #[schema(format = Uuid)]
    pub organization_id: String,
    /// The user's email.
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// The user's password (1 to 1024 characters).
    #[schema(value_type = String, format = Password, min_length = 1, max_length = 1024)]
    pub password: String,
}

/// Log in with a password; answers a short-lived API key
/// (`XROLE_SESSION_TTL_SECONDS`). A wrong password, an unknown user or a
/// disabled user all answer the same 401 after the same argon2 work.
/// Repeated failures of one account (or from one address) are slowed down
/// exponentially, and password checks run a few at a time: both answer 429
/// with `Retry-After` before any work.
/// `Idempotency-Key` is not honoured: a fresh secret is never replayed.
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions", request_body = CreateSession,
    security(()),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<CreateSession>(&req, payload).await?.value;
    let org: OrgId = body
        .organization_id
        .parse()
        .map_err(|_| ApiError::invalid("organization_id", "not an organization id"))?;
    let email: Email = body
        .email
        .parse()
        .map_err(|_| ApiError::invalid("email", "not an email address"))?;
    let pw = SecretString::new(body.password);
    let chars = pw.expose_secret().chars().count();
    if !(1..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::invalid(
            "password",
            format!("must be 1 to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    let info = RequestInfo::from_request(&req);
    let keys = LoginKeys::new(&org.to_string(), email.as_str(), info.source_ip.as_deref());
    // Before any database or argon2 work: a throttled account or address,
    // or no free password-check slot, answers 429 at once.
    let slot = state.login_guard.admit(&keys).map_err(|r| {
        let retry_after_secs = match r {
            Refused::Throttled { retry_after_secs } => retry_after_secs,
            Refused::Busy => 1,
        };
        tracing::info!(%org, refused = ?r, "login refused before checking the password");
        ApiError::RateLimited { retry_after_secs }
    })?;
    let found = state
        .db(
            move |conn| match xrole_store::users::find_by_email(conn, org, &email) {
                Ok(user) => {
                    let hash = xrole_store::users::password_hash(conn, org, user.id)?;
                    Ok(Some((user, hash)))
                }
                Err(xrole_store::Error::NotFound) => Ok(None),
                Err(e) => Err(e.into()),
            },
        )
        .await?;
    let (user, phc) = match found {
        Some((user, hash)) if !user.disabled => (Some(user), hash),
        _ => (None, None),
    };
    let (ok, rehash) = web::block(move || {
        // The slot is held while hashing and freed right after.
        let _slot = slot;
        match phc {
            Some(phc) => {
                let ok = password::verify(pw.expose_secret(), &phc).unwrap_or(false);
                let rehash = if ok && password::needs_rehash(&phc) {
                    password::hash(pw.expose_secret()).ok()
                } else {
                    None
                };
                (ok, rehash)
            }
            None => {
                // Same argon2 work as a real verification: no user-enumeration oracle.
                password::dummy_verify(pw.expose_secret());
                (false, None)
            }
        }
    })
    .await?;
    let Some(user) = user.filter(|_| ok) else {
        state.login_guard.failed(&keys);
        tracing::info!(%org, "login failed");
        return Err(ApiError::Unauthenticated);
    };
    state.login_guard.succeeded(&keys);
    let st = state.get_ref().clone();
    let ttl_ms = state.config.session_ttl_secs * 1000;
    let (record, key) = state
        .tx(move |conn| {
            let now = st.now_ms();
            if let Some(h) = rehash {
                let changes = xrole_store::users::UserChanges {
                    password_hash: Some(Some(&h)),
                    ..Default::default()
                };
                xrole_store::users::update(conn, org, user.id, &changes, now)?;
            }
            let (record, key) = api_keys::issue(
                &st,
                conn,
                org,
                user.id,
                &api_keys::KeySpec {
                    name: "session",
                    expires_ms: Some(now + ttl_ms),
                    role: None,
                },
                now,
            )?;
            audit::record(
                conn,
                org,
                &Actor::User(user.id),
                "session.created",
                Some(format!("api_key:{}", record.id)),
                serde_json::json!({"expires_ms": record.expires_ms}),
                Some(&info),
                now,
            )?;
            Ok((record, key))
        })
        .await?;
    Ok(HttpResponse::Created().json(CreatedApiKey {
        key: ApiKeyOut::from(&record),
        token: key.expose_secret().to_owned(),
    }))
}
