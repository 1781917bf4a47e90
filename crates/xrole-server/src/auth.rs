//! Authentication and authorization.
//!
//! `Authorization: Bearer xrk_…` is parsed and its checksum checked before
//! any database access (a malformed key is 401 at no cost); then the key row
//! is loaded by its public `key_id`, the secret verified against the stored
//! HMAC in constant time, and revocation, expiry and the owner's `disabled`
//! flag checked against the injected clock. The key's rate limit comes last.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{FromRequest, HttpRequest, dev::Payload, web};
use xrole_crypto::{ApiKey, constant_time_eq};
use xrole_store::{ApiKeyId, OrgId, UserId, UserRole};

use crate::error::ApiError;
use crate::state::AppState;

/// An authenticated caller: one API key of one organization.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The caller's organization; every query is scoped to it.
    pub org_id: OrgId,
    /// The API key row used.
    pub api_key_id: ApiKeyId,
    /// The user owning the key, when it has one.
    pub user_id: Option<UserId>,
    /// The owner's role (a key without an owner acts as a member).
    pub role: UserRole,
}

impl Principal {
    /// The actor recorded in audit events.
    pub fn actor(&self) -> crate::audit::Actor {
        crate::audit::Actor::ApiKey {
            key: self.api_key_id,
            user: self.user_id,
        }
    }

    /// The idempotency scope's principal: the user when there is one (so a
    /// fresh session key keeps the same keys), otherwise the API key.
    pub fn scope_id(&self) -> String {
        match self.user_id {
            Some(u) => format!("user:{u}"),
            None => format!("api_key:{}", self.api_key_id),
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        self.role == UserRole::Admin
    }
}

/// A [`Principal`] whose role is `admin`; others get 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// The bearer token from the `Authorization` header, if well-formed.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates `req`.
pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthenticated)?;
    // Shape and checksum: no database access for garbage.
    let key = ApiKey::parse(token).map_err(|_| ApiError::Unauthenticated)?;
    let now = state.now_ms();
    let hasher = state.hasher.clone();
    let key_id = key.key_id().to_owned();
    let principal = state
        .db(move |conn| {
            let Some((record, hash)) = xrole_store::api_keys::find_for_auth(conn, &key_id)? else {
                return Err(ApiError::Unauthenticated);
            };
            if !hasher.verify(&key, &hash) || !record.is_usable(now) {
                return Err(ApiError::Unauthenticated);
            }
            let role = match record.owner {
                Some(owner) => {
                    let user = match xrole_store::users::get(conn, record.org_id, owner) {
                        Ok(u) => u,
                        // An owner deleted underneath its key: the key is dead.
                        Err(xrole_store::Error::NotFound) => return Err(ApiError::Unauthenticated),
                        Err(e) => return Err(e.into()),
                    };
                    if user.disabled {
                        return Err(ApiError::Unauthenticated);
                    }
                    user.role
                }
                None => UserRole::Member,
            };
            Ok(Principal {
                org_id: record.org_id,
                api_key_id: record.id,
                user_id: record.owner,
                role,
            })
        })
        .await?;
    state
        .limiter
        .check(&principal.api_key_id.to_string())
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    Ok(principal)
}

/// Whether the request carries the configured operator token.
pub fn is_operator(state: &AppState, req: &HttpRequest) -> Result<bool, ApiError> {
    let Some(token) = bearer(req) else {
        return Ok(false);
    };
    match &state.config.operator_token {
        Some(op) if constant_time_eq(op.expose_secret().as_bytes(), token.as_bytes()) => Ok(true),
        // A credential was offered and it is not the operator's.
        _ => Err(ApiError::Unauthenticated),
    }
}

fn app_state(req: &HttpRequest) -> Result<AppState, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .map(|d| d.get_ref().clone())
        .ok_or_else(|| ApiError::internal("AppState missing from the app"))
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            authenticate(&state, &req).await
        })
    }
}

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let p = authenticate(&state, &req).await?;
            if p.is_admin() {
                Ok(Admin(p))
            } else {
                Err(ApiError::Forbidden)
            }
        })
    }
}
