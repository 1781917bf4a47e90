//! `/v1/aws-accounts`: links to customers' AWS accounts, their verification,
//! and the provisioning requests made through them.

use std::sync::Arc;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xrole_assume::RoleArn;
use xrole_crypto::{ExternalId, WebhookSecret};
use xrole_provision::{
    AMAZON_LINUX_2023_X86_64, AmiSource, CidrBlock, DatabasePlan, Engine, EnvironmentPlan,
    Error as PlanError, IngressRule, IngressSource, InstancePlan, Protocol, SecurityGroupPlan,
    SubnetTier, VpcPlan,
};
use xrole_store::links::VerifyTrigger;
use xrole_store::{AccessLevel, Conn, LinkId, LinkState, OrgId, ResourceId, ResourceState};

use crate::audit::{self, RequestInfo};
use crate::auth::{Operator, Principal};
use crate::body::{path_id, query, read_json};
use crate::error::{ApiError, Problem};
use crate::idempotency;
use crate::jobs::{self, JobSpec, ProvisionPayload, VerifyPayload};
use crate::link_flow::{self, AwsRuntime};
use crate::pagination::PageQuery;
use crate::routes::jobs::JobOut;
use crate::routes::models::Page;
use crate::routes::organizations::parse_name;
use crate::routes::resources::ResourceOut;
use crate::state::AppState;
use crate::timefmt::format_ms;

/// The AWS side of the server, or 503 when it was started without one.
pub fn aws_runtime(state: &AppState) -> Result<Arc<AwsRuntime>, ApiError> {
    state.aws.get().cloned().ok_or(ApiError::Unavailable)
}

/// The server's externally reachable base URL, without a trailing slash.
pub fn public_base(state: &AppState) -> String {
    match &state.config.public_url {
        Some(u) => u.as_str().trim_end_matches('/').to_owned(),
        None => format!("http://{}", state.config.listen),
    }
}

/// An AWS account link (never a secret but the External ID, which AWS does
/// not treat as one).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkOut {
    /// Its id.
    #[schema(format = Uuid)]
    pub id: String,
    /// A label.
    pub name: String,
    /// `pending`, `verifying`, `active`, `insecure`, `failed` or `disconnected`.
    pub state: String,
    /// The customer's 12-digit account id (learned from the stack when not given).
    pub aws_account_id: Option<String>,
    /// The customer's role.
    pub role_arn: Option<String>,
    /// `read_only` or `provisioning`.
    pub access_level: String,
    /// The region the stack reported (or the one asked for).
    pub region: Option<String>,
    /// The External ID the role's trust policy must require (`null` when
    /// this server's keyring cannot open it: see `keyring_error`).
    pub external_id: Option<String>,
    /// Set when the link's sealed values cannot be opened with this
    /// server's keyring (a key retired while still in use): the link is
    /// listed, its secrets are not.
    pub keyring_error: Option<String>,
    /// The CloudFormation stack that reported.
    pub stack_id: Option<String>,
    /// The last callback (RFC 3339).
    pub last_callback_at: Option<String>,
    /// The last verification (RFC 3339).
    pub last_verified_at: Option<String>,
    /// Its result: `verified`, `insecure`, `wrong_account`, `outside_organization`
    /// (an organization connection's account outside its organization), `not_assumable`.
    pub last_verification_result: Option<String>,
    /// What to do about a failed verification (or, for a role verified
    /// by probes only, what was not checked).
    pub last_error: Option<String>,
    /// Whether the last verification read the role's trust policy and
    /// audited it (`audited`), or could not (`not_readable`: a role made
    /// without the template may not read itself; the probes alone decided).
    pub trust_policy_audit: Option<String>,
    /// The AWS Organization connection this account belongs to (its stack
    /// came from the connection's StackSet), if any.
    #[schema(format = Uuid)]
    pub organization_id: Option<String>,
    /// Until when the stack may first report (RFC 3339).
    pub expires_at: String,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change (RFC 3339).
    pub updated_at: String,
}

impl LinkOut {
    /// From a store link and its External ID (`None`: not openable).
    pub fn new(l: &xrole_store::links::Link, external_id: Option<&ExternalId>) -> Self {
        LinkOut {
            id: l.id.to_string(),
            name: l.name.clone(),
            state: l.state.as_str().to_owned(),
            aws_account_id: Some(l.aws_account_id.clone()).filter(|a| !a.is_empty()),
            role_arn: l.role_arn.clone(),
            access_level: l.access_level.as_str().to_owned(),
            region: l.region.clone(),
            external_id: external_id.map(|e| e.as_str().to_owned()),
            keyring_error: external_id.is_none().then(|| {
                "this link's sealed values cannot be opened with the server's keyring: \
                 was a key retired while still in use? Restore it to read them"
                    .to_owned()
            }),
            stack_id: l.stack_id.clone(),
            last_callback_at: l.last_callback_ms.map(format_ms),
            last_verified_at: l.last_verified_ms.map(format_ms),
            last_verification_result: l.last_verification_result.clone(),
            last_error: l.last_error.clone(),
            trust_policy_audit: l.trust_policy_audit.clone(),
            organization_id: l.connection_id.map(|c| c.to_string()),
            expires_at: format_ms(l.callback_secret_expires_ms),
            created_at: format_ms(l.created_ms),
            updated_at: format_ms(l.updated_ms),
        }
    }
}

/// What the customer needs to deploy the role.
#[derive(Debug, Serialize, ToSchema)]
pub struct OnboardingOut {
    /// The CloudFormation console's quick-create link, every parameter filled in.
    pub quick_create_url: String,
    /// Where CloudFormation reads the template.
    pub template_url: String,
    /// The suggested stack name.
    pub stack_name: String,
    /// Every template parameter (for Terraform or the CLI). `CallbackSecret`
    /// is shown here once and never again.
    pub parameters: std::collections::BTreeMap<String, String>,
    /// When the link expires unless a stack reports (RFC 3339, 48 h).
    pub expires_at: String,
}

impl OnboardingOut {
    /// The API's form of `o`, expiring at `expires_ms`.
    pub fn new(o: link_flow::Onboarding, expires_ms: i64) -> Self {
        OnboardingOut {
            quick_create_url: o.quick_create_url,
            template_url: o.template_url,
            stack_name: o.stack_name,
            parameters: o
                .parameters
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            expires_at: format_ms(expires_ms),
        }
    }
}

/// A newly created link with its onboarding parameters.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedLink {
    /// The link.
    #[serde(flatten)]
    pub link: LinkOut,
    /// How to deploy the role.
    pub onboarding: OnboardingOut,
}

/// `POST /v1/aws-accounts` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// A label: 1 to 100 characters, not only whitespace, no control
    /// characters; leading and trailing whitespace is removed.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    /// The customer's account, if known (12 digits); otherwise learned from the stack.
    #[schema(pattern = r"^[0-9]{12}$", example = "123456789012")]
    pub aws_account_id: Option<String>,
    /// What xrole may do in the account.
    #[schema(value_type = AccessLevelIn)]
    pub access_level: String,
    /// Where the stack goes and resources are made by default (`us-east-1` if absent).
    #[schema(
        max_length = 32,
        pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$",
        example = "eu-west-3"
    )]
    pub region: Option<String>,
}

/// The access a link grants (the template's policies).
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum AccessLevelIn {
    /// Describe and list only.
    ReadOnly,
    /// Build VPCs, instances and databases, and tear down what xrole built.
    Provisioning,
}

/// `PUT /v1/aws-accounts/{id}/role` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetRole {
    /// A role made without the template (Terraform…), trusting the SaaS
    /// principal with this link's External ID. Its path is at most 512
    /// characters. A role in another account than the link's answers 409
    /// `account_mismatch`.
    #[schema(
        max_length = 613,
        pattern = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role(?=.{0,511}/[0-9A-Za-z_+=,.@-]{1,64}$)/([!-.0-~]+/)*[0-9A-Za-z_+=,.@-]{1,64}$",
        example = "arn:aws:iam::123456789012:role/xrole"
    )]
    pub role_arn: String,
}

/// Checks a region name such as `eu-west-3` or `us-gov-west-1`.
pub fn parse_region(raw: &str, field: &'static str) -> Result<String, ApiError> {
    let parts: Vec<&str> = raw.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok && raw.len() <= 32 {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::invalid(
            field,
            "not an AWS region name such as us-east-1",
        ))
    }
}

pub fn parse_access_level(raw: &str) -> Result<AccessLevel, ApiError> {
    match raw {
        "read_only" => Ok(AccessLevel::ReadOnly),
        "provisioning" => Ok(AccessLevel::Provisioning),
        _ => Err(ApiError::invalid(
            "access_level",
            "must be read_only or provisioning",
        )),
    }
}

pub fn parse_account(raw: &str) -> Result<String, ApiError> {
    xrole_assume::AwsAccountId::parse(raw)
        .map(|a| a.as_str().to_owned())
        .map_err(|_| ApiError::invalid("aws_account_id", "must be 12 digits"))
}

/// Starts a verification of `link`: with [`VerifyTrigger::Changed`] (a new
/// role, a stack's report) the link is `verifying` and no earlier result
/// applies any more; with [`VerifyTrigger::Recheck`] the same role is
/// checked again. One verification waits per link: a queued one for the
/// same generation is returned instead of a new one, and queued ones for an
/// older generation are cancelled (their result could only be stale).
pub fn start_verification(
    conn: &mut Conn,
    org: OrgId,
    link: LinkId,
    actor: &str,
    trigger: VerifyTrigger,
    now: i64,
) -> Result<xrole_store::jobs::Job, ApiError> {
    let l = xrole_store::links::begin_verification(conn, org, link, trigger, now)?;
    let role_arn = l.role_arn.clone();
    for queued in xrole_store::jobs::queued_for_link(conn, org, link, jobs::KIND_VERIFY)? {
        let p: VerifyPayload = serde_json::from_value(queued.payload.clone()).unwrap_or_default();
        if p.generation == Some(l.generation) && p.role_arn == role_arn {
            return Ok(queued);
        }
        xrole_store::jobs::cancel(conn, org, queued.id, now)?;
    }
    let spec = JobSpec::VerifyLink(VerifyPayload {
        actor: actor.to_owned(),
        generation: Some(l.generation),
        role_arn,
    });
    Ok(jobs::enqueue(conn, org, link, &spec, now)?)
}

/// Create a link: a `pending` link, its External ID, and the stack's
/// parameters with a one-time callback secret.
#[utoipa::path(post, path = "/v1/aws-accounts", tag = "aws-accounts", request_body = CreateLink,
    security(("api_key" = [])),
    params(("Idempotency-Key" = String, Header, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Required: 1 to 255 visible ASCII characters, optionally in double quotes")),
    responses((status = 201, body = CreatedLink), (status = 400, body = Problem),
        (status = 401, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<CreateLink>(&req, payload).await?;
    let lock = match idempotency::begin(&state, &req, &principal, &body.raw, true).await? {
        idempotency::Begun::Replay(res) => return Ok(res),
        idempotency::Begun::Proceed(lock) => lock,
    };
    let input = body.value;
    let result = async {
        let aws = aws_runtime(&state)?;
        let name = parse_name(&input.name, "name")?;
        let access_level = parse_access_level(&input.access_level)?;
        let account = input
            .aws_account_id
            .as_deref()
            .map(parse_account)
            .transpose()?;
        let region = input
            .region
            .as_deref()
            .map(|r| parse_region(r, "region"))
            .transpose()?;
        let external_id = ExternalId::try_generate().map_err(ApiError::internal)?;
        let secret = WebhookSecret::try_generate().map_err(ApiError::internal)?;
        let now = state.now_ms();
        let expires = now + link_flow::LINK_TTL_MS;
        let base = public_base(&state);
        let template_url = aws
            .settings
            .template_url
            .clone()
            .unwrap_or_else(|| format!("{base}{}", link_flow::TEMPLATE_PATH));
        let callback_url = format!("{base}{}", link_flow::CALLBACK_PATH);
        let info = RequestInfo::from_request(&req);
        let st = state.get_ref().clone();
        let lock2 = lock.clone();
        state
            .tx(move |conn| {
                let org = principal.org_id;
                let new = xrole_store::links::NewLink {
                    name: &name,
                    aws_account_id: account.as_deref().unwrap_or(""),
                    access_level,
                    external_id: &external_id,
                    callback_secret: &secret,
                    callback_secret_expires_ms: expires,
                };
                let link = xrole_store::links::create(conn, &st.keyring(), org, &new, now)?;
                let link = xrole_store::links::update(
                    conn,
                    org,
                    link.id,
                    &xrole_store::links::LinkChanges {
                        region: region.as_deref(),
                        ..Default::default()
                    },
                    now,
                )?;
                audit::record(
                    conn,
                    org,
                    &principal.actor(),
                    "aws_account.created",
                    Some(format!("aws_account:{}", link.id)),
                    serde_json::json!({"name": link.name, "access_level": access_level.as_str(),
                        "aws_account_id": account}),
                    Some(&info),
                    now,
                )?;
                let o = link_flow::onboarding(
                    &template_url,
                    region.as_deref().unwrap_or("us-east-1"),
                    &link.id.to_string(),
                    &aws.saas_principal_arn,
                    &external_id,
                    access_level,
                    &callback_url,
                    secret.expose_secret(),
                );
                let out = CreatedLink {
                    link: LinkOut::new(&link, Some(&external_id)),
                    onboarding: OnboardingOut::new(o, expires),
                };
                idempotency::respond(&st, conn, lock2.as_ref(), StatusCode::CREATED, &out)
            })
            .await
    }
    .await;
    idempotency::finish(&state, lock, result).await
}

/// `GET /v1/aws-accounts` query: a page, optionally of one AWS
/// Organization connection's accounts.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LinkQuery {
    /// Page size, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    #[param(
        pattern = r"^[0-9]{1,18}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    pub cursor: Option<String>,
    /// Only the accounts of this AWS Organization connection.
    #[param(format = Uuid)]
    pub organization_id: Option<String>,
}

/// List the organization's links, newest first (with `organization_id`,
/// only that AWS Organization connection's accounts).
#[utoipa::path(get, path = "/v1/aws-accounts", tag = "aws-accounts", params(LinkQuery),
    security(("api_key" = [])),
    responses((status = 200, body = Page<LinkOut>), (status = 401, body = Problem),
        (status = 404, description = "`organization_id` names no connection of this organization", body = Problem),
        (status = 422, body = Problem)))]
pub async fn list(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let q = query::<LinkQuery>(&req)?;
    let page = PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    }
    .to_request()?;
    let connection = q
        .organization_id
        .as_deref()
        .map(crate::routes::aws_organizations::parse_connection_id)
        .transpose()?;
    let st = state.get_ref().clone();
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            if let Some(c) = connection {
                // Another tenant's connection id lists nothing: 404 as for
                // any id of another organization.
                xrole_store::connections::get(conn, org, c)?;
            }
            let p = xrole_store::links::list_revealed(conn, &st.keyring(), org, connection, &page)?;
            Ok(Page::from_store(&p, |(l, ext)| {
                LinkOut::new(l, ext.as_ref())
            }))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// One link.
#[utoipa::path(get, path = "/v1/aws-accounts/{id}", tag = "aws-accounts",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 200, body = LinkOut), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn get(
    state: web::Data<AppState>,
    principal: Principal,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let st = state.get_ref().clone();
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            let (l, ext) = xrole_store::links::get_revealed(conn, &st.keyring(), org, id)?;
            Ok(LinkOut::new(&l, ext.as_ref()))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}

/// Remove a link: 409 while xrole-managed resources remain in the account,
/// or while one of its jobs runs. The link goes with its finished and
/// queued jobs, and answers 404 afterwards; the audit trail keeps what
/// happened.
#[utoipa::path(delete, path = "/v1/aws-accounts/{id}", tag = "aws-accounts",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "Resources remain (`resources_remain`) or a job runs (`job_running`)",
            body = Problem)))]
pub async fn delete(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let role = state
        .tx(move |conn| {
            let org = principal.org_id;
            let now = st.now_ms();
            let link = xrole_store::links::get(conn, org, id)?;
            principal.check_destroy(xrole_store::orgs::get(conn, org)?.operators_may_destroy)?;
            let left = xrole_store::resources::list(
                conn,
                org,
                Some(id),
                &xrole_store::PageRequest::first(1),
            )?;
            if !left.items.is_empty() {
                return Err(ApiError::Conflict {
                    code: "resources_remain",
                    detail: "xrole-managed resources remain in this account; delete them first"
                        .into(),
                });
            }
            let running = || ApiError::Conflict {
                code: "job_running",
                detail: "a job is running through this link; retry when it has ended".into(),
            };
            // A running job keeps its link; the others go with it (their
            // steps too). A job that starts meanwhile keeps its row, and
            // the link's deletion then fails on it: 409 as well.
            let jobs = xrole_store::jobs::delete_idle_of_link(conn, org, id)?;
            match xrole_store::links::delete(conn, org, id) {
                Ok(()) => {}
                Err(xrole_store::Error::InUse(_)) => return Err(running()),
                Err(e) => return Err(e.into()),
            }
            audit::record(
                conn,
                org,
                &principal.actor(),
                "aws_account.deleted",
                Some(format!("aws_account:{id}")),
                serde_json::json!({"name": link.name, "deleted_jobs": jobs}),
                Some(&info),
                now,
            )?;
            Ok(link.role_arn)
        })
        .await?;
    if let (Some(role), Ok(aws)) = (role, aws_runtime(&state))
        && let Ok(role) = RoleArn::parse(&role)
    {
        aws.broker.invalidate_role(&role);
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Link a role made without the template (Terraform, the CLI); starts
/// verification.
#[utoipa::path(put, path = "/v1/aws-accounts/{id}/role", tag = "aws-accounts", request_body = SetRole,
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, description = "The role is in another account than the link's (`account_mismatch`)", body = Problem),
        (status = 422, body = Problem)))]
pub async fn set_role(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let body = read_json::<SetRole>(&req, payload).await?;
    let role = RoleArn::parse(&body.value.role_arn).map_err(|_| {
        ApiError::invalid(
            "role_arn",
            "not an IAM role ARN such as arn:aws:iam::123456789012:role/xrole",
        )
    })?;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let out = state
        .tx(move |conn| {
            let org = principal.org_id;
            let now = st.now_ms();
            let link = xrole_store::links::get(conn, org, id)?;
            // Replacing a role already linked re-points xrole at another
            // identity in the customer's account: a destructive change.
            if link.role_arn.is_some() {
                principal
                    .check_destroy(xrole_store::orgs::get(conn, org)?.operators_may_destroy)?;
            }
            // Checked after the role: a refusal does not depend on AWS.
            aws_runtime(&st)?;
            // The body is well-formed; the link's state is what it conflicts with.
            link_flow::check_account(&role, &link.aws_account_id).map_err(|m| {
                ApiError::Conflict {
                    code: "account_mismatch",
                    detail: m,
                }
            })?;
            let account = role.account_id();
            xrole_store::links::update(
                conn,
                org,
                id,
                &xrole_store::links::LinkChanges {
                    aws_account_id: Some(account.as_str()),
                    role_arn: Some(role.as_str()),
                    ..Default::default()
                },
                now,
            )?;
            let actor = principal.actor().as_string();
            let job = start_verification(conn, org, id, &actor, VerifyTrigger::Changed, now)?;
            audit::record(
                conn,
                org,
                &principal.actor(),
                "aws_account.role_set",
                Some(format!("aws_account:{id}")),
                serde_json::json!({"role_arn": role.as_str(), "job_id": job.id.to_string()}),
                Some(&info),
                now,
            )?;
            Ok(JobOut::new(&job, &[]))
        })
        .await?;
    Ok(HttpResponse::Accepted().json(out))
}

/// Verify the link's role again (AssumeRole with and without the External ID).
#[utoipa::path(post, path = "/v1/aws-accounts/{id}/verify", tag = "aws-accounts",
    params(("id" = String, Path, format = Uuid)), security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 401, body = Problem), (status = 404, body = Problem),
        (status = 409, body = Problem)))]
pub async fn verify(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    aws_runtime(&state)?;
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let out = state
        .tx(move |conn| {
            let org = principal.org_id;
            let now = st.now_ms();
            let link = xrole_store::links::get(conn, org, id)?;
            if link.role_arn.is_none() {
                return Err(ApiError::Conflict {
                    code: "no_role",
                    detail: "no role is linked yet: deploy the stack or PUT the role ARN".into(),
                });
            }
            if link.state == LinkState::Disconnected {
                return Err(ApiError::Conflict {
                    code: "link_disconnected",
                    detail: "the link is disconnected".into(),
                });
            }
            let job = start_verification(
                conn,
                org,
                id,
                &principal.actor().as_string(),
                VerifyTrigger::Recheck,
                now,
            )?;
            audit::record(
                conn,
                org,
                &principal.actor(),
                "aws_account.verify_requested",
                Some(format!("aws_account:{id}")),
                serde_json::json!({"job_id": job.id.to_string()}),
                Some(&info),
                now,
            )?;
            Ok(JobOut::new(&job, &[]))
        })
        .await?;
    Ok(HttpResponse::Accepted().json(out))
}

// ---------------------------------------------------------------------------
// Provisioning requests.

/// `POST /v1/aws-accounts/{id}/vpcs` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVpc {
    /// 1-24 characters of `[a-z0-9-]`, starting with a letter, with no `--`
    /// or trailing `-`.
    #[schema(max_length = 24, pattern = r"^[a-z](-?[a-z0-9])*$", example = "prod")]
    pub name: String,
    /// A private (RFC 1918) IPv4 block, /16 to /28, with no host bits set,
    /// such as `10.20.0.0/16`.
    #[schema(
        pattern = r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}/(1[6-9]|2[0-8])$",
        example = "10.20.0.0/16"
    )]
    pub cidr_block: String,
    /// 1 to 6 distinct zones of the region, such as `us-east-1a` (one
    /// public and one private subnet each).
    pub availability_zones: Vec<String>,
    /// The region (default: the link's).
    #[schema(
        max_length = 32,
        pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$",
        example = "us-east-1"
    )]
    pub region: Option<String>,
}

/// `POST /v1/aws-accounts/{id}/instances` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInstances {
    /// 1-24 characters of `[a-z0-9-]`, starting with a letter, with no `--`
    /// or trailing `-`.
    #[schema(max_length = 24, pattern = r"^[a-z](-?[a-z0-9])*$", example = "web")]
    pub name: String,
    /// The VPC resource (its xrole id, or its `vpc-…` id).
    pub vpc_id: String,
    /// Such as `t3.micro`.
    #[schema(pattern = r"^[a-z0-9-]+\.[a-z0-9-]+$", example = "t3.micro")]
    pub instance_type: String,
    /// An AMI id; the latest Amazon Linux 2023 when absent.
    #[schema(pattern = r"^ami-[0-9A-Fa-f]{8,17}$")]
    pub image_id: Option<String>,
    /// How many, 1-10 (default 1).
    #[serde(default, deserialize_with = "crate::body::optional_whole_number")]
    #[schema(minimum = 1, maximum = 10)]
    pub count: Option<u32>,
}

/// `POST /v1/aws-accounts/{id}/databases` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDatabase {
    /// 1-20 characters of `[a-z0-9-]`, starting with a letter, with no `--`
    /// or trailing `-`.
    #[schema(max_length = 20, pattern = r"^[a-z](-?[a-z0-9])*$", example = "main")]
    pub name: String,
    /// The VPC resource (its xrole id, or its `vpc-…` id).
    pub vpc_id: String,
    /// The engine.
    #[schema(value_type = EngineIn)]
    pub engine: String,
    /// Such as `16.4` (default: a current version of the engine).
    #[schema(max_length = 32, pattern = r"^[0-9]+(\.[0-9]+)*$", example = "16.4")]
    pub engine_version: Option<String>,
    /// Such as `db.t3.micro`.
    #[schema(pattern = r"^db\.[a-z0-9-]+\.[a-z0-9-]+$", example = "db.t3.micro")]
    pub instance_class: String,
    /// Storage in GB (20-65536).
    #[serde(deserialize_with = "crate::body::whole_number")]
    #[schema(minimum = 20, maximum = 65536)]
    pub allocated_storage_gb: i32,
    /// A standby in a second zone.
    pub multi_az: Option<bool>,
}

/// A database engine.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum EngineIn {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
}

/// The API field a plan problem is about.
fn api_field(plan_field: &str) -> &'static str {
    let last = plan_field.rsplit('.').next().unwrap_or(plan_field);
    let last = last.split('[').next().unwrap_or(last);
    match last {
        "cidr" => "cidr_block",
        "availability_zones" | "subnet_prefix" => "availability_zones",
        "name" => "name",
        "instance_type" => "instance_type",
        "count" => "count",
        "ami" => "image_id",
        "engine" => "engine",
        "engine_version" => "engine_version",
        "instance_class" => "instance_class",
        "allocated_storage_gib" => "allocated_storage_gb",
        "multi_az" => "multi_az",
        _ => "body",
    }
}

/// Validates the plan, answering 422 with the first problem's API field.
fn validate(plan: &EnvironmentPlan) -> Result<(), ApiError> {
    match plan.clone().validate() {
        Ok(_) => Ok(()),
        Err(PlanError::InvalidPlan { problems }) => {
            let first = problems.first();
            Err(ApiError::invalid(
                first.map_or("body", |p| api_field(&p.field)),
                problems
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
            ))
        }
        Err(e) => Err(ApiError::invalid("body", e.to_string())),
    }
}

/// The link, if it may be provisioned through.
fn provisionable(
    conn: &mut Conn,
    org: OrgId,
    id: LinkId,
) -> Result<xrole_store::links::Link, ApiError> {
    let link = xrole_store::links::get(conn, org, id)?;
    if link.state != LinkState::Active {
        return Err(ApiError::Conflict {
            code: "link_not_active",
            detail: format!(
                "the AWS account link is {}; only active links can provision",
                link.state
            ),
        });
    }
    if link.access_level != AccessLevel::Provisioning {
        return Err(ApiError::Conflict {
            code: "link_read_only",
            detail: "the AWS account link has read-only access; create a provisioning link".into(),
        });
    }
    Ok(link)
}

/// The VPC resource named by `vpc_id` and the plan of the job that built it.
fn vpc_of(
    conn: &mut Conn,
    org: OrgId,
    link: &xrole_store::links::Link,
    vpc_id: &str,
) -> Result<(xrole_store::resources::Resource, ProvisionPayload), ApiError> {
    let bad = || {
        ApiError::invalid(
            "vpc_id",
            "no available VPC with this id in this AWS account",
        )
    };
    let res = if let Ok(rid) = vpc_id.parse::<ResourceId>() {
        match xrole_store::resources::get(conn, org, rid) {
            Ok(r) => r,
            Err(xrole_store::Error::NotFound) => return Err(bad()),
            Err(e) => return Err(e.into()),
        }
    } else {
        let region = link.region.clone().unwrap_or_default();
        xrole_store::resources::find_by_aws_id(conn, org, link.id, &region, vpc_id)?
            .ok_or_else(bad)?
    };
    if res.link_id != link.id || res.kind != jobs::RES_VPC || res.state != ResourceState::Available
    {
        return Err(bad());
    }
    let job = res.job_id.ok_or_else(bad)?;
    let job = xrole_store::jobs::get(conn, org, job)?;
    let p: ProvisionPayload = serde_json::from_value(job.payload).map_err(ApiError::internal)?;
    Ok((res, p))
}

enum Request {
    Vpc(CreateVpc),
    Instances(CreateInstances),
    Database(CreateDatabase),
}

/// Builds the job's payload (validated) inside the request's transaction.
fn build_payload(
    conn: &mut Conn,
    org: OrgId,
    link: &xrole_store::links::Link,
    req: &Request,
    actor: &str,
) -> Result<JobSpec, ApiError> {
    match req {
        Request::Vpc(v) => {
            let region = match &v.region {
                Some(r) => parse_region(r, "region")?,
                None => link.region.clone().ok_or_else(|| {
                    ApiError::invalid("region", "the link has no region; give one")
                })?,
            };
            let cidr: CidrBlock = v
                .cidr_block
                .parse()
                .map_err(|e: String| ApiError::invalid("cidr_block", e))?;
            for az in &v.availability_zones {
                if !(az.starts_with(&region) && az.len() == region.len() + 1) {
                    return Err(ApiError::invalid(
                        "availability_zones",
                        format!("`{az}` is not a zone of {region}"),
                    ));
                }
            }
            let tcp = |port: u16, source: IngressSource| IngressRule {
                protocol: Protocol::Tcp,
                from_port: port,
                to_port: port,
                source,
            };
            let plan = EnvironmentPlan {
                name: v.name.clone(),
                vpc: VpcPlan {
                    cidr,
                    availability_zones: v.availability_zones.clone(),
                    subnet_prefix: None,
                    security_groups: vec![
                        SecurityGroupPlan {
                            name: "app".into(),
                            description: "xrole application instances".into(),
                            ingress: vec![tcp(443, IngressSource::Cidr(cidr.as_ipv4()))],
                        },
                        SecurityGroupPlan {
                            name: "db".into(),
                            description: "xrole databases".into(),
                            ingress: vec![
                                tcp(5432, IngressSource::SecurityGroup("app".into())),
                                tcp(3306, IngressSource::SecurityGroup("app".into())),
                            ],
                        },
                    ],
                },
                instances: Vec::new(),
                databases: Vec::new(),
            };
            validate(&plan)?;
            Ok(JobSpec::ProvisionVpc(ProvisionPayload {
                actor: actor.to_owned(),
                region,
                plan,
                vpc_job: None,
                vpc_resource: None,
            }))
        }
        Request::Instances(i) => {
            let (vpc, base) = vpc_of(conn, org, link, &i.vpc_id)?;
            let count = i.count.unwrap_or(1);
            if !(1..=10).contains(&count) {
                return Err(ApiError::invalid("count", "must be 1 to 10"));
            }
            let ami = match &i.image_id {
                Some(id) => AmiSource::Id(id.clone()),
                None => AmiSource::SsmParameter(AMAZON_LINUX_2023_X86_64.to_owned()),
            };
            let mut plan = base.plan.clone();
            plan.instances = vec![InstancePlan {
                name: i.name.clone(),
                ami,
                instance_type: i.instance_type.clone(),
                subnet_tier: SubnetTier::Public,
                security_groups: vec!["app".into()],
                count,
                root_volume_gib: None,
                user_data: None,
            }];
            plan.databases = Vec::new();
            validate(&plan)?;
            Ok(JobSpec::ProvisionInstances(ProvisionPayload {
                actor: actor.to_owned(),
                region: base.region,
                plan,
                vpc_job: vpc.job_id.map(|j| j.to_string()),
                vpc_resource: Some(vpc.id.to_string()),
            }))
        }
        Request::Database(d) => {
            let (vpc, base) = vpc_of(conn, org, link, &d.vpc_id)?;
            let (engine, default_version) = match d.engine.as_str() {
                "postgres" => (Engine::Postgres, "16.4"),
                "mysql" => (Engine::Mysql, "8.0.39"),
                _ => return Err(ApiError::invalid("engine", "must be postgres or mysql")),
            };
            let mut plan = base.plan.clone();
            plan.instances = Vec::new();
            plan.databases = vec![DatabasePlan {
                name: d.name.clone(),
                engine,
                engine_version: d
                    .engine_version
                    .clone()
                    .unwrap_or_else(|| default_version.to_owned()),
                instance_class: d.instance_class.clone(),
                allocated_storage_gib: d.allocated_storage_gb,
                multi_az: d.multi_az.unwrap_or(false),
                security_groups: vec!["db".into()],
                master_username: "xroleadmin".into(),
                deletion_protection: true,
            }];
            validate(&plan)?;
            Ok(JobSpec::ProvisionDatabase(ProvisionPayload {
                actor: actor.to_owned(),
                region: base.region,
                plan,
                vpc_job: vpc.job_id.map(|j| j.to_string()),
                vpc_resource: Some(vpc.id.to_string()),
            }))
        }
    }
}

async fn provision(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    raw: web::Bytes,
    id: LinkId,
    request: Request,
) -> Result<HttpResponse, ApiError> {
    let lock = match idempotency::begin(&state, &req, &principal, &raw, true).await? {
        idempotency::Begun::Replay(res) => return Ok(res),
        idempotency::Begun::Proceed(lock) => lock,
    };
    let info = RequestInfo::from_request(&req);
    let st = state.get_ref().clone();
    let lock2 = lock.clone();
    let result = async {
        aws_runtime(&state)?;
        state
            .tx(move |conn| {
                let org = principal.org_id;
                let now = st.now_ms();
                let link = provisionable(conn, org, id)?;
                let actor = principal.actor().as_string();
                let spec = build_payload(conn, org, &link, &request, &actor)?;
                let kind = spec.kind();
                let job = jobs::enqueue(conn, org, id, &spec, now)?;
                audit::record(
                    conn,
                    org,
                    &principal.actor(),
                    "job.created",
                    Some(format!("job:{}", job.id)),
                    serde_json::json!({"kind": kind, "aws_account_id": id.to_string(), "region": spec.region()}),
                    Some(&info),
                    now,
                )?;
                idempotency::respond(&st, conn, lock2.as_ref(), StatusCode::ACCEPTED, &JobOut::new(&job, &[]))
            })
            .await
    }
    .await;
    idempotency::finish(&state, lock, result).await
}

/// Build a VPC (subnets in each zone, internet gateway, routes, security
/// groups `app` and `db`) in the linked account.
#[utoipa::path(post, path = "/v1/aws-accounts/{id}/vpcs", tag = "aws-accounts", request_body = CreateVpc,
    params(("id" = String, Path, format = Uuid), ("Idempotency-Key" = String, Header, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Required: 1 to 255 visible ASCII characters, optionally in double quotes")),
    security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_vpc(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let body = read_json::<CreateVpc>(&req, payload).await?;
    provision(
        state,
        principal,
        req,
        body.raw,
        id,
        Request::Vpc(body.value),
    )
    .await
}

/// Launch EC2 instances in a VPC xrole built.
#[utoipa::path(post, path = "/v1/aws-accounts/{id}/instances", tag = "aws-accounts", request_body = CreateInstances,
    params(("id" = String, Path, format = Uuid), ("Idempotency-Key" = String, Header, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Required: 1 to 255 visible ASCII characters, optionally in double quotes")),
    security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_instances(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let body = read_json::<CreateInstances>(&req, payload).await?;
    provision(
        state,
        principal,
        req,
        body.raw,
        id,
        Request::Instances(body.value),
    )
    .await
}

/// Create an RDS database (password managed by RDS in the customer's
/// Secrets Manager) in a VPC xrole built.
#[utoipa::path(post, path = "/v1/aws-accounts/{id}/databases", tag = "aws-accounts", request_body = CreateDatabase,
    params(("id" = String, Path, format = Uuid), ("Idempotency-Key" = String, Header, pattern = r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#,
        description = "Required: 1 to 255 visible ASCII characters, optionally in double quotes")),
    security(("api_key" = [])),
    responses((status = 202, body = JobOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 404, body = Problem), (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn create_database(
    state: web::Data<AppState>,
    Operator(principal): Operator,
    req: HttpRequest,
    payload: web::Payload,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let body = read_json::<CreateDatabase>(&req, payload).await?;
    provision(
        state,
        principal,
        req,
        body.raw,
        id,
        Request::Database(body.value),
    )
    .await
}

/// The xrole-managed resources in a linked account, newest first.
#[utoipa::path(get, path = "/v1/aws-accounts/{id}/resources", tag = "aws-accounts",
    params(("id" = String, Path, format = Uuid), PageQuery), security(("api_key" = [])),
    responses((status = 200, body = Page<ResourceOut>), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn list_resources(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: LinkId = path_id(&id)?;
    let page = query::<PageQuery>(&req)?.to_request()?;
    let org = principal.org_id;
    let out = state
        .read(move |conn| {
            xrole_store::links::get(conn, org, id)?;
            let p = xrole_store::resources::list(conn, org, Some(id), &page)?;
            Ok(Page::from_store(&p, |r| ResourceOut::from(r)))
        })
        .await?;
    Ok(HttpResponse::Ok().json(out))
}
