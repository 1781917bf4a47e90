//! `POST /v1/organizations`, `GET /v1/organization`.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xrole_crypto::{ApiKey, SecretString};
use xrole_store::{Conn, Email, UserRole};

use crate::audit::{self, Actor, RequestInfo};
use crate::auth::{Principal, is_operator};
use crate::body::read_json;
use crate::error::{ApiError, Problem};
use crate::routes::models::{ApiKeyOut, CreatedApiKey, OrganizationOut, UserOut};
use crate::routes::{api_keys, users};
use crate::state::AppState;

/// `POST /v1/organizations` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    /// 1 to 100 characters, not only whitespace, no control characters;
    /// leading and trailing whitespace is removed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// The first admin's email (at most 254 characters, no whitespace, a dot
    /// in the domain).
    #[schema(format = Email, max_length = 254, example = "admin@acme.example.com")]
    pub admin_email: String,
    /// The first admin's password (10 to 1024 characters); without one the
    /// admin uses API keys only.
    #[schema(value_type = Option<String>, format = Password, min_length = 10, max_length = 1024)]
    pub admin_password: Option<String>,
}

/// The new organization, its admin and the admin's first API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrganizationCreated {
    /// The organization.
    pub organization: OrganizationOut,
    /// Its first admin.
    pub admin: UserOut,
    /// The admin's first API key; the token is shown only here.
    pub api_key: CreatedApiKey,
}

/// Validated input for creating an organization.
#[derive(Debug)]
pub struct NewOrg {
    name: String,
    email: Email,
    password: Option<SecretString>,
}

impl NewOrg {
    /// Checks every field (422 naming the first bad one).
    pub fn parse(name: &str, email: &str, password: Option<String>) -> Result<NewOrg, ApiError> {
        let name = parse_name(name, "name")?;
        let email: Email = email
            .parse()
            .map_err(|_| ApiError::invalid("admin_email", "not an email address"))?;
        let password = password
            .map(|p| users::check_password(p, "admin_password"))
            .transpose()?;
        Ok(NewOrg {
            name,
            email,
            password,
        })
    }
}

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// A display name: 1 to 100 characters as sent, not only whitespace, no
/// control characters; stored trimmed. The OpenAPI document states the
/// same rule as `minLength`, `maxLength` and a `pattern`.
pub fn parse_name(raw: &str, field: &'static str) -> Result<String, ApiError> {
    let s = raw.trim();
    if s.is_empty() || raw.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::invalid(field, "must be 1 to 100 characters"));
    }
    if raw.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(s.to_owned())
}

/// What [`create_org_tx`] made.
#[derive(Debug)]
pub struct CreatedOrg {
    /// The organization.
    pub org: xrole_store::orgs::Org,
    /// Its first admin.
    pub admin: xrole_store::users::User,
    /// The admin's key record.
    pub key: xrole_store::api_keys::ApiKeyRecord,
    /// The token, to show once.
    pub api_key: ApiKey,
}

/// Creates the organization, its admin and the admin's key, with the audit
/// event, on `conn` (call inside a write transaction). `password_hash` is
/// the admin's PHC string, hashed beforehand off the async threads.
pub fn create_org_tx(
    state: &AppState,
    conn: &mut Conn,
    input: NewOrg,
    password_hash: Option<String>,
    actor: Actor,
    info: Option<&RequestInfo>,
) -> Result<CreatedOrg, ApiError> {
    let now = state.now_ms();
    let org = xrole_store::orgs::create(conn, &input.name, now)?;
    let admin = xrole_store::users::create(
        conn,
        org.id,
        &xrole_store::users::NewUser {
            email: &input.email,
            display_name: users::display_name(&input.email),
            role: UserRole::Admin,
            password_hash: password_hash.as_deref(),
        },
        now,
    )?;
    let (key, api_key) = api_keys::issue(
        state,
        conn,
        org.id,
        admin.id,
        &api_keys::KeySpec {
            name: "initial admin key",
            expires_ms: None,
            role: None,
        },
        now,
    )?;
    audit::record(
        conn,
        org.id,
        &actor,
        "organization.created",
        Some(format!("organization:{}", org.id)),
        serde_json::json!({
            "name": org.name,
            "admin_user_id": admin.id.to_string(),
            "api_key_id": key.id.to_string(),
        }),
        info,
        now,
    )?;
    Ok(CreatedOrg {
        org,
        admin,
        key,
        api_key,
    })
}

/// Create an organization, its first admin and that admin's first API key.
///
/// Requires the operator token (`Authorization: Bearer <XROLE_OPERATOR_TOKEN>`)
/// unless sign-up is open. `Idempotency-Key` is not honoured here: the
/// response carries a fresh secret, and no organization exists yet to scope
/// the key to.
#[utoipa::path(post, path = "/v1/organizations", tag = "organizations",
    request_body = CreateOrganization,
    security((), ("operator_token" = [])),
    responses(
        (status = 201, body = OrganizationCreated),
        (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 413, body = Problem),
        (status = 422, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let actor = if is_operator(&state, &req)? {
        Actor::Operator
    } else if state.config.signup_open {
        Actor::Anonymous
    } else {
        return Err(ApiError::Unauthenticated);
    };
    let body = read_json::<CreateOrganization>(&req, payload).await?.value;
    let input = NewOrg::parse(&body.name, &body.admin_email, body.admin_password)?;
    let hash = match &input.password {
        Some(p) => Some(users::hash_password(p).await?),
        None => None,
    };
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let created = state
        .tx(move |conn| create_org_tx(&st, conn, input, hash, actor, Some(&info)))
        .await?;
    tracing::info!(org = %created.org.id, "organization created");
    Ok(HttpResponse::Created().json(OrganizationCreated {
        organization: (&created.org).into(),
        admin: (&created.admin).into(),
        api_key: CreatedApiKey {
            key: ApiKeyOut::from(&created.key),
            token: created.api_key.expose_secret().to_owned(),
        },
    }))
}

/// The caller's organization.
#[utoipa::path(get, path = "/v1/organization", tag = "organizations",
    security(("api_key" = [])),
    responses((status = 200, body = OrganizationOut), (status = 401, body = Problem)))]
pub async fn get_own(
    state: web::Data<AppState>,
    principal: Principal,
) -> Result<HttpResponse, ApiError> {
    let org = state
        .read(move |conn| Ok(xrole_store::orgs::get(conn, principal.org_id)?))
        .await?;
    Ok(HttpResponse::Ok().json(OrganizationOut::from(&org)))
}

/// `PATCH /v1/organization` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganization {
    /// Let operators make destructive changes (delete a link, change its
    /// role, tear down a database), or keep them for admins.
    pub operators_may_destroy: bool,
}

/// Change the caller's organization's settings (admin).
#[utoipa::path(patch, path = "/v1/organization", tag = "organizations",
    request_body = UpdateOrganization, security(("api_key" = [])),
    responses((status = 200, body = OrganizationOut), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 403, body = Problem),
        (status = 422, body = Problem), (status = 429, body = Problem)))]
pub async fn update_own(
    state: web::Data<AppState>,
    crate::auth::Admin(principal): crate::auth::Admin,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = crate::body::read_json::<UpdateOrganization>(&req, payload)
        .await?
        .value;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let org = state
        .tx(move |conn| {
            let now = st.now_ms();
            let org = xrole_store::orgs::set_operators_may_destroy(
                conn,
                principal.org_id,
                body.operators_may_destroy,
                now,
            )?;
            audit::record(
                conn,
                principal.org_id,
                &principal.actor(),
                "organization.updated",
                Some(format!("organization:{}", principal.org_id)),
                serde_json::json!({"operators_may_destroy": body.operators_may_destroy}),
                Some(&info),
                now,
            )?;
            Ok(org)
        })
        .await?;
    Ok(HttpResponse::Ok().json(OrganizationOut::from(&org)))
}
