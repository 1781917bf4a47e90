//! `/v1/api-keys`: bearer credentials of the caller's organization.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;
use utoipa::ToSchema;
use xrole_crypto::ApiKey;
use xrole_store::{ApiKeyId, Conn, OrgId, PageRequest, UserId};

use crate::audit::{self, RequestInfo};
use crate::auth::Principal;
use crate::body::{path_id, query, read_json};
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::pagination::PageQuery;
use crate::routes::models::{ApiKeyOut, CreatedApiKey, Page};
use crate::routes::organizations::parse_name;
use crate::state::AppState;
use crate::timefmt::parse_rfc3339;

/// `POST /v1/api-keys` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A label: 1 to 100 characters, not only whitespace, no control
    /// characters; leading and trailing whitespace is removed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// When the key stops working (RFC 3339); never if absent or null. It
    /// must be in the future: a time already past answers 422. A key made
    /// with a key that expires (a session's) expires no later than it.
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    /// The most the key may do (`admin`, `operator` or `viewer`), never
    /// more than the caller's own role (422 otherwise); absent: the
    /// caller's own role. The key follows its owner down if they are
    /// demoted, never up.
    #[schema(value_type = Option<crate::routes::users::RoleIn>)]
    pub role: Option<crate::routes::users::RoleIn>,
}

/// What a new key is: its name, when it expires (never with `None`) and its
/// role (the owner's own with `None`).
#[derive(Debug, Clone, Copy)]
pub struct KeySpec<'a> {
    pub name: &'a str,
    pub expires_ms: Option<i64>,
    pub role: Option<xrole_store::UserRole>,
}

/// Generates a key for `owner`, stores its HMAC and returns the record and
/// the token (to show once). Call inside the caller's transaction.
pub fn issue(
    state: &AppState,
    conn: &mut Conn,
    org: OrgId,
    owner: UserId,
    spec: &KeySpec<'_>,
    now: i64,
) -> Result<(xrole_store::api_keys::ApiKeyRecord, ApiKey), ApiError> {
    let key = ApiKey::try_generate().map_err(ApiError::internal)?;
    let hash = state.hasher.hash(&key);
    let record = xrole_store::api_keys::create(
        conn,
        org,
        &xrole_store::api_keys::NewApiKey {
            key_id: key.key_id(),
            key_hash: &hash,
            name: spec.name,
            owner: Some(owner),
            expires_ms: spec.expires_ms,
            role: spec.role,
        },
        now,
    )?;
    Ok((record, key))
}

/// One page of the keys `owner` owns: walks the organization's key list
/// (keyset order, newest first) keeping only the owner's keys, so cursors
/// keep their meaning.
fn list_owned(
    conn: &mut Conn,
    org: OrgId,
    owner: Option<UserId>,
    page: PageRequest,
) -> Result<Page<ApiKeyOut>, ApiError> {
    let want = page.limit as usize;
    let mut data = Vec::new();
    let mut last_cursor = None;
    let mut req = PageRequest {
        limit: xrole_store::MAX_PAGE_SIZE,
        cursor: page.cursor,
    };
    loop {
        let p = xrole_store::api_keys::list(conn, org, &req)?;
        for k in &p.items {
            if owner.is_some() && k.owner == owner {
                if data.len() == want {
                    // One more exists: the page is full and has a successor.
                    return Ok(Page {
                        data,
                        next_cursor: last_cursor,
                    });
                }
                data.push(ApiKeyOut::from(k));
                last_cursor = Some(format!("{}_{}", k.created_ms, k.id));
            }
        }
        match p.next_cursor {
            Some(c) => req.cursor = Some(c),
            None => {
                return Ok(Page {
                    data,
                    next_cursor: None,
                });
            }
        }
    }
}

/// Create an API key acting as the caller's user, with the caller's role.
/// The token is in this response only.
#[utoipa::path(post, path = "/v1/api-keys", tag = "api-keys", request_body = CreateApiKey,
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Makes retries safe: 1 to 255 visible ASCII characters, optionally in double quotes")),
    responses((status = 201, body = CreatedApiKey), (status = 400, body = Problem),
        (status = 401, body = Problem),
        (status = 403, description = "The caller's key acts as no user", body = Problem),
        (status = 409, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<CreateApiKey>(&req, payload).await?;
    let lock = match idempotency::begin(&state, &req, &principal, &body.raw, false).await? {
        idempotency::Begun::Replay(res) => return Ok(res),
        idempotency::Begun::Proceed(lock) => lock,
    };
    let input = body.value;
    let result = async {
        let name = parse_name(&input.name, "name")?;
        let now = state.now_ms();
        let expires_ms = match &input.expires_at {
            None => None,
            Some(s) => {
                let ms = parse_rfc3339(s)
                    .ok_or_else(|| ApiError::invalid("expires_at", "not an RFC 3339 timestamp"))?;
                if ms <= now {
                    return Err(ApiError::invalid("expires_at", "must be in the future"));
                }
                Some(ms)
            }
        };
        // Never outlives the key that made it: a one-hour session key
        // cannot mint a key for ever.
        let expires_ms = match (expires_ms, principal.key_expires_ms) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (None, cap) => cap,
            (asked, None) => asked,
        };
        // Without a role the key gets the caller's own (a key limited to
        // viewer mints viewers, not keys with its admin owner's role).
        let role = input
            .role
            .map_or(principal.role, xrole_store::UserRole::from);
        if !principal.role.at_least(role) {
            return Err(ApiError::invalid(
                "role",
                format!("cannot exceed your own role ({})", principal.role.as_str()),
            ));
        }
        let role = Some(role);
        let Some(owner) = principal.user_id else {
            return Err(ApiError::Forbidden);
        };
        let info = RequestInfo::from_request(&req);
        let st = state.get_ref().clone();
        let p = principal.clone();
        let lock2 = lock.clone();
        state
            .tx(move |conn| {
                let (record, key) = issue(
                    &st,
                    conn,
                    p.org_id,
                    owner,
                    &KeySpec {
                        name: &name,
                        expires_ms,
                        role,
                    },
                    now,
                )?;
                audit::record(
                    conn,
                    p.org_id,
                    &p.actor(),
                    "api_key.created",
                    Some(format!("api_key:{}", record.id)),
                    serde_json::json!({"name": record.name, "key_id": record.key_id,
                        "role": role.map(|r| r.as_str()), "expires_ms": record.expires_ms}),
                    Some(&info),
                    now,
                )?;
                let out = CreatedApiKey {
                    key: ApiKeyOut::from(&record),
                    token: key.expose_secret().to_owned(),
                };
                idempotency::respond(&st, conn, lock2.as_ref(), StatusCode::CREATED, &out)
            })
            .await
    }
    .await;
    idempotency::finish(&state, lock, result).await
}

/// List API keys, newest first: every key of the organization for admins,
/// the caller's own keys for operators and viewers.
#[utoipa::path(get, path = "/v1/api-keys", tag = "api-keys", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Page<ApiKeyOut>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = query::<PageQuery>(&req)?.to_request()?;
    let org = principal.org_id;
    let out = if principal.is_admin() {
        let keys = state
            .read(move |conn| Ok(xrole_store::api_keys::list(conn, org, &page)?))
            .await?;
        Page::from_store(&keys, |k| ApiKeyOut::from(k))
    } else {
        let owner = principal.user_id;
        state
            .read(move |conn| list_owned(conn, org, owner, page))
            .await?
    };
    Ok(HttpResponse::Ok().json(out))
}

/// Revoke an API key, effective immediately. Non-admins may revoke only their
/// own keys; another user's key answers 404 to them.
#[utoipa::path(delete, path = "/v1/api-keys/{id}", tag = "api-keys",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn revoke(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ApiKeyId = path_id(&id)?;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    state
        .tx(move |conn| {
            let now = st.now_ms();
            let key = xrole_store::api_keys::get(conn, principal.org_id, id)?;
            if !principal.is_admin() && key.owner != principal.user_id {
                return Err(ApiError::NotFound);
            }
            xrole_store::api_keys::revoke(conn, principal.org_id, id, now)?;
            audit::record(
                conn,
                principal.org_id,
                &principal.actor(),
                "api_key.revoked",
                Some(format!("api_key:{id}")),
                serde_json::json!({"key_id": key.key_id}),
                Some(&info),
                now,
            )?;
            Ok(())
        })
        .await?;
    state.credentials_changed();
    Ok(HttpResponse::NoContent().finish())
}
