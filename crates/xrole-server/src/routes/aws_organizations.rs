//! `/v1/aws-organizations`: connections to AWS Organizations. A connection
//! hands the customer the StackSet template's parameters (one External ID,
//! one callback secret); every member account's stack then reports through
//! `POST /v1/callbacks/cloudformation` naming the connection, and each
//! account becomes its own link (`GET /v1/aws-accounts?organization_id=`),
//! verified alone and used for provisioning like any link.

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xrole_assume::RoleArn;
use xrole_crypto::{ExternalId, WebhookSecret};
use xrole_store::connections::Connection;
use xrole_store::{ConnectionId, LinkState};

use crate::audit::{self, RequestInfo};
use crate::auth::{Operator, Principal};
use crate::body::{path_id, query, read_json};
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::link_flow;
use crate::pagination::PageQuery;
use crate::routes::aws_accounts::{
    OnboardingOut, aws_runtime, parse_access_level, parse_region, public_base,
};
use crate::routes::models::Page;
use crate::routes::organizations::parse_name;
use crate::state::AppState;
use crate::timefmt::format_ms;

/// How many of a connection's accounts are in each link state.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct AccountCounts {
    /// Every account whose stack reported.
    pub total: i64,
    /// Reported, not verified yet.
    pub pending: i64,
    /// Being verified.
    pub verifying: i64,
    /// Verified: usable for provisioning.
    pub active: i64,
    /// The role accepts AssumeRole without the right External ID.
    pub insecure: i64,
    /// The role could not be verified (or is outside the organization).
    pub failed: i64,
    /// The account's stack was deleted (or the account left the OUs).
    pub disconnected: i64,
}

/// A connection to an AWS Organization.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectionOut {
    /// Its id: the StackSet's `ConnectionId` parameter.
    #[schema(format = Uuid)]
    pub id: String,
    /// A label.
    pub name: String,
    /// `pending` until a first account reports, then `active`.
    pub state: String,
    /// `read_only` or `provisioning`, for every account.
    pub access_level: String,
    /// The region every account's stack runs in.
    pub region: String,
    /// The organization's management account, as given. When set, every
    /// account's verification asks AWS Organizations from inside that
    /// account whether it belongs to this organization; one that does not
    /// (or cannot tell) fails with `outside_organization`.
    pub management_account_id: Option<String>,
    /// The External ID every account's role requires (`null` when this
    /// server's keyring cannot open it).
    pub external_id: Option<String>,
    /// Accounts per link state.
    pub accounts: AccountCounts,
    /// Until when a first account may report (RFC 3339); afterwards
    /// accounts keep joining for as long as the connection exists.
    pub expires_at: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl ConnectionOut {
    fn new(c: &Connection, external_id: Option<&ExternalId>, counts: AccountCounts) -> Self {
        ConnectionOut {
            id: c.id.to_string(),
            name: c.name.clone(),
            state: if counts.total == 0 {
                "pending"
            } else {
                "active"
            }
            .to_owned(),
            access_level: c.access_level.as_str().to_owned(),
            region: c.region.clone(),
            management_account_id: c.management_account_id.clone(),
            external_id: external_id.map(|e| e.as_str().to_owned()),
            accounts: counts,
            expires_at: format_ms(c.created_ms + link_flow::LINK_TTL_MS),
            created_at: format_ms(c.created_ms),
            updated_at: format_ms(c.updated_ms),
        }
    }
}

/// A new connection with the StackSet template's parameters.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedConnection {
    /// The connection.
    #[serde(flatten)]
    pub connection: ConnectionOut,
    /// How to deploy the StackSet (`OrganizationalUnitIds` is the
    /// customer's to fill in). `CallbackSecret` is shown here once.
    pub onboarding: OnboardingOut,
}

/// `POST /v1/aws-organizations` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateConnection {
    /// A label: 1 to 100 characters, not only whitespace, no control
    /// characters; leading and trailing whitespace is removed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// What xrole may do in every account.
    #[schema(value_type = crate::routes::aws_accounts::AccessLevelIn)]
    pub access_level: String,
    /// The region every account's stack runs in (`us-east-1` if absent).
    #[schema(
        max_length = 32,
        pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$",
        example = "eu-west-3"
    )]
    pub region: Option<String>,
    /// The organization's management account (12 digits), if known. Every
    /// account is then verified to belong to its organization
    /// (`organizations:DescribeOrganization` as the account's role).
    #[schema(pattern = r"^[0-9]{12}$", example = "123456789012")]
    pub management_account_id: Option<String>,
}

/// The `organization_id` filter of `GET /v1/aws-accounts`.
pub fn parse_connection_id(raw: &str) -> Result<ConnectionId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid("organization_id", "not a connection id"))
}

fn counts_of(rows: &[(LinkState, i64)]) -> AccountCounts {
    let mut c = AccountCounts::default();
    for (state, n) in rows {
        c.total += n;
        let slot = match state {
            LinkState::Pending => &mut c.pending,
            LinkState::Verifying => &mut c.verifying,
            LinkState::Active => &mut c.active,
            LinkState::Insecure => &mut c.insecure,
            LinkState::Failed => &mut c.failed,
            LinkState::Disconnected => &mut c.disconnected,
            _ => continue,
        };
        *slot += n;
    }
    c
}

/// One connection as the API shows it, read in `conn`.
fn connection_out(
    st: &AppState,
    conn: &mut xrole_store::Conn,
    c: &Connection,
) -> Result<ConnectionOut, ApiError> {
    let counts = xrole_store::connections::account_counts(conn, c.org_id, c.id)?;
    let ext =
        xrole_store::connections::reveal_external_id(conn, &st.keyring(), c.org_id, c.id).ok();
    Ok(ConnectionOut::new(c, ext.as_ref(), counts_of(&counts)))
}

/// Connect an AWS Organization: an External ID and a callback secret for
/// the StackSet, and its parameters.
#[utoipa::path(post, path = "/v1/aws-organizations", tag = "aws-organizations", request_body = CreateConnection,
    security(("api_key" = [])),
    params(("Idempotency-Key" = String, Header, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Required: 1 to 255 visible ASCII characters, optionally in double quotes")),
    responses((status = 201, body = CreatedConnection), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<CreateConnection>(&req, payload).await?;
    let lock = match idempotency::begin(&state, &req, &principal, &body.raw, true).await? {
        idempotency::Begun::Replay(res) => return Ok(res),
        idempotency::Begun::Proceed(lock) => lock,
    };
    let input = body.value;
    let result = async {
        let aws = aws_runtime(&state)?;
        let name = parse_name(&input.name, "name")?;
        let access_level = parse_access_level(&input.access_level)?;
        let region = match input.region.as_deref() {
            Some(r) => parse_region(r, "region")?,
            None => "us-east-1".to_owned(),
        };
        let management = input
            .management_account_id
            .as_deref()
            .map(|a| {
                xrole_assume::AwsAccountId::parse(a)
                    .map(|a| a.as_str().to_owned())
                    .map_err(|_| ApiError::invalid("management_account_id", "must be 12 digits"))
            })
            .transpose()?;
        let external_id = ExternalId::try_generate().map_err(ApiError::internal)?;
        let secret = WebhookSecret::try_generate().map_err(ApiError::internal)?;
        let now = state.now_ms();
        let base = public_base(&state);
        let role_template_url = aws
            .settings
            .template_url
            .clone()
            .unwrap_or_else(|| format!("{base}{}", link_flow::TEMPLATE_PATH));
        let stackset_template_url = aws
            .settings
            .stackset_template_url
            .clone()
            .unwrap_or_else(|| format!("{base}{}", link_flow::STACKSET_TEMPLATE_PATH));
        let callback_url = format!("{base}{}", link_flow::CALLBACK_PATH);
        let info = RequestInfo::from_request(&req);
        let st = state.get_ref().clone();
        let lock2 = lock.clone();
        state
            .tx(move |conn| {
                let org = principal.org_id;
                let new = xrole_store::connections::NewConnection {
                    name: &name,
                    access_level,
                    region: &region,
                    management_account_id: management.as_deref(),
                    external_id: &external_id,
                    callback_secret: &secret,
                };
                let c = xrole_store::connections::create(conn, &st.keyring(), org, &new, now)?;
                audit::record(
                    conn,
                    org,
                    &principal.actor(),
                    "aws_organization.created",
                    Some(format!("aws_organization:{}", c.id)),
                    serde_json::json!({"name": c.name, "access_level": access_level.as_str(),
                        "region": c.region, "management_account_id": c.management_account_id}),
                    Some(&info),
                    now,
                )?;
                let o = link_flow::organization_onboarding(
                    &link_flow::OrganizationTemplate {
                        stackset_template_url: &stackset_template_url,
                        role_template_url: &role_template_url,
                        region: &region,
                        connection_id: &c.id.to_string(),
                    },
                    &aws.saas_principal_arn,
                    &external_id,
                    access_level,
                    &callback_url,
                    secret.expose_secret(),
                );
                let out = CreatedConnection {
                    connection: ConnectionOut::new(
                        &c,
                        Some(&external_id),
                        AccountCounts::default(),
                    ),
                    onboarding: OnboardingOut::new(o, now + link_flow::LINK_TTL_MS),
                };
                idempotency::respond(&st, conn, lock2.as_ref(), StatusCode::CREATED, &out)
            })
            .await
    }
    .await;
    idempotency::finish(&state, lock, result).await
}

/// List the organization connections, newest first.
#[utoipa::path(get, path = "/v1/aws-organizations", tag = "aws-organizations", params(PageQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Page<ConnectionOut>), (status = 401, body = Problem), (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let page = query::<PageQuery>(&req)?.to_request()?;
    let st = state.get_ref().clone();
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            let p = xrole_store::connections::list(conn, org, &page)?;
            let data = p
                .items
                .iter()
                .map(|c| connection_out(&st, conn, c))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                data,
                next_cursor: p.next_cursor.as_ref().map(ToString::to_string),
            })
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// One connection, with its accounts counted by state.
#[utoipa::path(get, path = "/v1/aws-organizations/{id}", tag = "aws-organizations",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 200, body = ConnectionOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ConnectionId = path_id(&id)?;
    let st = state.get_ref().clone();
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            let c = xrole_store::connections::get(conn, org, id)?;
            connection_out(&st, conn, &c)
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Remove a connection with its account links: 409 while xrole-managed
/// resources remain in one of its accounts, or while a job runs through
/// one. Its stacks' callbacks are refused afterwards; the customer removes
/// the StackSet.
#[utoipa::path(delete, path = "/v1/aws-organizations/{id}", tag = "aws-organizations",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Resources remain in an account (`resources_remain`) or a job runs (`job_running`)",
            body = Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: ConnectionId = path_id(&id)?;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let roles = state
        .tx(move |conn| {
            let org = principal.org_id;
            let now = st.now_ms();
            let c = xrole_store::connections::get(conn, org, id)?;
            principal.check_destroy(xrole_store::orgs::get(conn, org)?.operators_may_destroy)?;
            let mut roles = Vec::new();
            for link in xrole_store::connections::account_links(conn, org, id)? {
                roles.extend(xrole_store::links::get(conn, org, link)?.role_arn);
            }
            let links = match xrole_store::connections::delete(conn, org, id) {
                Ok(links) => links,
                Err(xrole_store::Error::InUse("resources")) => {
                    return Err(ApiError::Conflict {
                        code: "resources_remain",
                        detail: "xrole-managed resources remain in an account of this \
                                 organization; delete them first"
                            .into(),
                    });
                }
                Err(xrole_store::Error::InUse(_)) => {
                    return Err(ApiError::Conflict {
                        code: "job_running",
                        detail: "a job is running through an account of this organization; \
                                 retry when it has ended"
                            .into(),
                    });
                }
                Err(e) => return Err(e.into()),
            };
            audit::record(
                conn,
                org,
                &principal.actor(),
                "aws_organization.deleted",
                Some(format!("aws_organization:{id}")),
                serde_json::json!({"name": c.name, "deleted_links": links.len()}),
                Some(&info),
                now,
            )?;
            Ok(roles)
        })
        .await?;
    if let Ok(aws) = aws_runtime(&state) {
        for role in roles {
            if let Ok(role) = RoleArn::parse(&role) {
                aws.broker.invalidate_role(&role);
            }
        }
    }
    Ok(HttpResponse::NoContent().finish())
}
