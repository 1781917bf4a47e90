//! `/v1/users`: people in the caller's organization.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::Deserialize;
use utoipa::ToSchema;
use xrole_crypto::SecretString;
use xrole_store::users::UserChanges;
use xrole_store::{Email, UserId, UserRole};

use crate::audit::{self, RequestInfo};
use crate::auth::{Admin, Principal};
use crate::body::{path_id, query, read_json};
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::pagination::PageQuery;
use crate::routes::models::{Page, UserOut};
use crate::state::AppState;

/// Shortest accepted password, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// Longest accepted password, in characters (at most 4 KiB of UTF-8; the
/// bound keeps hashing cheap).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `POST /v1/users` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    /// Email address, unique within the organization (compared in lower
    /// case; at most 254 characters, no whitespace, a dot in the domain).
    #[schema(format = Email, max_length = 254, example = "bob@acme.example.com")]
    pub email: String,
    /// The user's role.
    pub role: RoleIn,
    /// Password for `POST /v1/sessions` (10 to 1024 characters).
    #[schema(value_type = Option<String>, format = Password, min_length = 10, max_length = 1024)]
    pub password: Option<String>,
}

/// `PATCH /v1/users/{id}` body: at least one field; neither may be null.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    /// New role.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = RoleIn, required = false)]
    pub role: Option<RoleIn>,
    /// Disable (true) or re-enable (false).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = bool, required = false)]
    pub disabled: Option<bool>,
}

/// A field that may be left out but not sent as `null`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    match Option::<T>::deserialize(d)? {
        Some(v) => Ok(Some(v)),
        None => Err(serde::de::Error::custom(
            "null is not a value here; leave the field out",
        )),
    }
}

/// A role in a request body: `admin` > `operator` > `viewer`.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RoleIn {
    /// Everything: users, every key, the organization's settings,
    /// destructive changes.
    Admin,
    /// Links, verification, provisioning, teardown of what xrole built.
    Operator,
    /// Reads only.
    Viewer,
}

impl From<RoleIn> for UserRole {
    fn from(r: RoleIn) -> Self {
        match r {
            RoleIn::Admin => UserRole::Admin,
            RoleIn::Operator => UserRole::Operator,
            RoleIn::Viewer => UserRole::Viewer,
        }
    }
}

/// Checks a password's length; the value moves into a zeroizing secret.
pub fn check_password(p: String, field: &'static str) -> Result<SecretString, ApiError> {
    let p = SecretString::new(p);
    let chars = p.expose_secret().chars().count();
    if !(MIN_PASSWORD_CHARS..=MAX_PASSWORD_CHARS).contains(&chars) {
        return Err(ApiError::invalid(
            field,
            format!("must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters"),
        ));
    }
    Ok(p)
}

/// Hashes a password with argon2id on the blocking pool.
pub async fn hash_password(p: &SecretString) -> Result<String, ApiError> {
    let p = SecretString::new(p.expose_secret().to_owned());
    web::block(move || xrole_crypto::password::hash(p.expose_secret()))
        .await?
        .map_err(ApiError::internal)
}

/// The display name given to a new user: the email's local part.
pub fn display_name(email: &Email) -> &str {
    email.as_str().split('@').next().unwrap_or_default()
}

fn parse_email(raw: &str) -> Result<Email, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid("email", "not an email address"))
}

/// Add a user to the caller's organization (admin).
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = CreateUser,
    security(("api_key" = [])),
    params(("Idempotency-Key" = Option<String>, Header, nullable = false, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Makes retries safe: 1 to 255 visible ASCII characters, optionally in double quotes")),
    responses((status = 201, body = UserOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem),
        (status = 429, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    Admin(principal): Admin,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<CreateUser>(&req, payload).await?;
    let begun = idempotency::begin(&state, &req, &principal, &body.raw, false).await?;
    let lock = match begun {
        idempotency::Begun::Replay(res) => return Ok(res),
        idempotency::Begun::Proceed(lock) => lock,
    };
    let input = body.value;
    let result = async {
        let email = parse_email(&input.email)?;
        let password = input
            .password
            .map(|p| check_password(p, "password"))
            .transpose()?;
        let hash = match &password {
            Some(p) => Some(hash_password(p).await?),
            None => None,
        };
        let role = UserRole::from(input.role);
        let info = RequestInfo::from_request(&req);
        let st = state.get_ref().clone();
        let p = principal.clone();
        let lock2 = lock.clone();
        state
            .tx(move |conn| {
                let now = st.now_ms();
                let new = xrole_store::users::NewUser {
                    email: &email,
                    display_name: display_name(&email),
                    role,
                    password_hash: hash.as_deref(),
                };
                let user = xrole_store::users::create(conn, p.org_id, &new, now)?;
                audit::record(
                    conn,
                    p.org_id,
                    &p.actor(),
                    "user.created",
                    Some(format!("user:{}", user.id)),
                    serde_json::json!({"email": user.email.as_str(), "role": role.as_str()}),
                    Some(&info),
                    now,
                )?;
                idempotency::respond(
                    &st,
                    conn,
                    lock2.as_ref(),
                    StatusCode::CREATED,
                    &UserOut::from(&user),
                )
            })
            .await
    }
    .await;
    idempotency::finish(&state, lock, result).await
}

/// List the organization's users, newest first.
#[utoipa::path(get, path = "/v1/users", tag = "users", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Page<UserOut>), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = query::<PageQuery>(&req)?.to_request()?;
    let users = state
        .read(move |conn| Ok(xrole_store::users::list(conn, principal.org_id, &page)?))
        .await?;
    Ok(HttpResponse::Ok().json(Page::from_store(&users, |u| UserOut::from(u))))
}

/// Read one user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 200, body = UserOut), (status = 401, body = Problem),
        (status = 404, body = Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: UserId = path_id(&id)?;
    let user = state
        .read(move |conn| Ok(xrole_store::users::get(conn, principal.org_id, id)?))
        .await?;
    Ok(HttpResponse::Ok().json(UserOut::from(&user)))
}

/// Change a user's role or disable them (admin). Admins cannot change
/// themselves, so an organization always keeps an admin.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "users", request_body = UpdateUser,
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 200, body = UserOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem),
        (status = 422, body = Problem)))]
pub async fn update(
    state: web::Data<AppState>,
    Admin(principal): Admin,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let id: UserId = path_id(&id)?;
    let body = read_json::<UpdateUser>(&req, payload).await?.value;
    if body.role.is_none() && body.disabled.is_none() {
        return Err(ApiError::invalid("role", "give role, disabled or both"));
    }
    if principal.user_id == Some(id) {
        return Err(ApiError::Conflict {
            code: "cannot_modify_self",
            detail: "admins cannot change their own role or status".into(),
        });
    }
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let user = state
        .tx(move |conn| {
            let now = st.now_ms();
            let role = body.role.map(UserRole::from);
            let changes = UserChanges {
                role,
                disabled: body.disabled,
                ..UserChanges::default()
            };
            let user = xrole_store::users::update(conn, principal.org_id, id, &changes, now)?;
            audit::record(
                conn,
                principal.org_id,
                &principal.actor(),
                "user.updated",
                Some(format!("user:{id}")),
                serde_json::json!({"role": role.map(|r| r.as_str()), "disabled": body.disabled}),
                Some(&info),
                now,
            )?;
            Ok(user)
        })
        .await?;
    state.credentials_changed();
    Ok(HttpResponse::Ok().json(UserOut::from(&user)))
}

/// Remove a user (admin): the user and their API keys are deleted at once,
/// so the keys stop working and the user's id answers 404 afterwards; the
/// email may be used again. The audit trail keeps the user's creation,
/// changes and removal.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "users",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    Admin(principal): Admin,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: UserId = path_id(&id)?;
    if principal.user_id == Some(id) {
        return Err(ApiError::Conflict {
            code: "cannot_modify_self",
            detail: "admins cannot remove themselves".into(),
        });
    }
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    state
        .tx(move |conn| {
            let now = st.now_ms();
            let user = xrole_store::users::get(conn, principal.org_id, id)?;
            let revoked =
                xrole_store::api_keys::revoke_all_of_user(conn, principal.org_id, id, now)?;
            // The user's keys go with the row (ON DELETE CASCADE).
            xrole_store::users::delete(conn, principal.org_id, id)?;
            audit::record(
                conn,
                principal.org_id,
                &principal.actor(),
                "user.deleted",
                Some(format!("user:{id}")),
                serde_json::json!({"email": user.email.as_str(), "role": user.role.as_str(),
                    "revoked_api_keys": revoked}),
                Some(&info),
                now,
            )?;
            Ok(())
        })
        .await?;
    state.credentials_changed();
    Ok(HttpResponse::NoContent().finish())
}
