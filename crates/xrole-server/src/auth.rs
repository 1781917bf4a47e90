//! Authentication and authorization.
//!
//! `Authorization: Bearer xrk_…` is parsed and its checksum checked before
//! any database access (a malformed key is 401 at no cost); then the key row
//! is loaded by its public `key_id`, the secret verified against the stored
//! HMAC in constant time, and revocation, expiry and the owner's `disabled`
//! flag checked against the injected clock. The key's rate limit comes last,
//! then its organization's.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// What the caller may do: the key's role, never above its owner's
    /// current role (a key without an owner: its own role, or operator).
    pub role: UserRole,
    /// When the key stops working (a session key's end): keys it mints
    /// expire no later.
    pub key_expires_ms: Option<i64>,
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

    /// 403 unless the caller may make destructive changes (delete a link,
    /// change its role, tear down a database): admins, and operators where
    /// the organization allows it (`operators_may_destroy`).
    pub fn check_destroy(&self, operators_may_destroy: bool) -> Result<(), ApiError> {
        let ok = self.role == UserRole::Admin
            || (self.role == UserRole::Operator && operators_may_destroy);
        if ok {
            Ok(())
        } else {
            Err(ApiError::NotPermitted {
                detail: "this destructive change needs an admin (or an operator, where the \
                         organization allows operators to make destructive changes)"
                    .into(),
            })
        }
    }
}

/// A [`Principal`] whose role is `admin`; others get 403.
#[derive(Debug, Clone)]
pub struct Admin(pub Principal);

/// A [`Principal`] whose role is `operator` or `admin` (not a viewer);
/// others get 403.
#[derive(Debug, Clone)]
pub struct Operator(pub Principal);

/// The bearer token from the `Authorization` header, if well-formed.
pub fn bearer(req: &HttpRequest) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Recently verified API keys, so that a read does not pay a second database
/// round trip for its key row.
///
/// An entry keeps the key's stored hash, so every request still verifies its
/// secret (constant time) and the key's expiry; what it skips for up to
/// `ttl` is re-reading revocation and the owner's role and `disabled` flag.
/// A write on this replica that revokes a key or changes a user clears the
/// cache ([`AppState::credentials_changed`](crate::AppState::credentials_changed)),
/// and a lookup that raced with a clear is not stored, so a change made here
/// takes effect at once and one made on another replica within `ttl`.
/// Nothing else clears it: unauthenticated requests cannot force every
/// authenticated one back to the database.
#[derive(Debug)]
pub struct AuthCache {
    ttl: Duration,
    generation: AtomicU64,
    // Shared entries: a hit clones a pointer, not the stored hash.
    entries: Mutex<HashMap<String, Arc<Cached>>>,
}

#[derive(Debug, Clone)]
struct Cached {
    at: Instant,
    hash: Vec<u8>,
    expires_ms: Option<i64>,
    principal: Principal,
}

/// More keys than this in the cache and it starts over (a bound, not an LRU).
const AUTH_CACHE_MAX: usize = 10_000;

impl AuthCache {
    /// A cache trusting entries for `ttl` (zero: disabled).
    pub fn new(ttl: Duration) -> Self {
        AuthCache {
            ttl,
            generation: AtomicU64::new(0),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets every entry (after a write that changes credentials).
    pub fn clear(&self) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    fn get(&self, key_id: &str) -> Option<Arc<Cached>> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key_id)
            .filter(|c| c.at.elapsed() < self.ttl)
            .cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    fn put(&self, generation: u64, key_id: String, entry: Cached) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        // A write finished while the row was being read: it may be stale.
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if entries.len() >= AUTH_CACHE_MAX {
            entries.clear();
        }
        entries.insert(key_id, Arc::new(entry));
    }
}

/// Authenticates `req`.
pub async fn authenticate(state: &AppState, req: &HttpRequest) -> Result<Principal, ApiError> {
    let token = bearer(req).ok_or(ApiError::Unauthenticated)?;
    authenticate_token(state, token).await
}

/// Authenticates an API key however it arrived (the status page keeps it
/// in a cookie).
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<Principal, ApiError> {
    // Shape and checksum: no database access for garbage.
    let key = ApiKey::parse(token).map_err(|_| ApiError::Unauthenticated)?;
    let now = state.now_ms();
    let principal = match state.auth_cache.get(key.key_id()) {
        Some(c) => {
            if !state.hasher.verify(&key, &c.hash) || c.expires_ms.is_some_and(|e| now >= e) {
                return Err(ApiError::Unauthenticated);
            }
            c.principal.clone()
        }
        None => lookup(state, key, now).await?,
    };
    // The key's own budget, then its organization's: a tenant minting
    // more keys or sessions gets no more requests.
    state
        .limiter
        .check(&principal.api_key_id.to_string())
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    state
        .org_limiter
        .check(&principal.org_id.to_string())
        .map_err(|retry_after_secs| ApiError::RateLimited { retry_after_secs })?;
    Ok(principal)
}

/// The database half of [`authenticate`]; fills the cache on success.
async fn lookup(state: &AppState, key: ApiKey, now: i64) -> Result<Principal, ApiError> {
    let hasher = state.hasher.clone();
    let key_id = key.key_id().to_owned();
    let cache_key = key_id.clone();
    let generation = state.auth_cache.generation();
    let (principal, hash, expires_ms) = state
        .read(move |conn| {
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
                    // A demoted owner takes their keys down with them.
                    record.role.map_or(user.role, |r| r.min(user.role))
                }
                None => record.role.unwrap_or(UserRole::Operator),
            };
            let principal = Principal {
                org_id: record.org_id,
                api_key_id: record.id,
                user_id: record.owner,
                role,
                key_expires_ms: record.expires_ms,
            };
            Ok((principal, hash, record.expires_ms))
        })
        .await?;
    state.auth_cache.put(
        generation,
        cache_key,
        Cached {
            at: Instant::now(),
            hash,
            expires_ms,
            principal: principal.clone(),
        },
    );
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

impl FromRequest for Operator {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = app_state(&req)?;
            let p = authenticate(&state, &req).await?;
            if p.role.at_least(UserRole::Operator) {
                Ok(Operator(p))
            } else {
                Err(ApiError::NotPermitted {
                    detail: "viewers may only read: this needs an operator or an admin".into(),
                })
            }
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
                Err(ApiError::NotPermitted {
                    detail: "this needs an admin".into(),
                })
            }
        })
    }
}
