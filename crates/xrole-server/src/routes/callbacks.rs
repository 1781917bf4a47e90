//! `POST /v1/callbacks/cloudformation`: the customer stack's signed report
//! (Standard Webhooks v1 with the link's callback secret, or with an
//! organization connection's for the stacks of its StackSet). It is a hint,
//! never proof: a Create or Update starts a verification through the broker.
//!
//! A body naming `connection_id` comes from one member account of an AWS
//! Organization: its Create makes (or finds) that account's own link, its
//! Delete disconnects only that link.
//!
//! Anything wrong (signature, timestamp outside ±300 s, an expired secret, a
//! role in another account than the link's, an event from another stack
//! than the one the first Create bound) answers 4xx and changes nothing; a
//! `webhook-id` seen before answers 200 and changes nothing.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use xrole_assume::RoleArn;
use xrole_store::{LinkId, LinkState};

use crate::body::read_json;
use crate::error::{ApiError, Problem};
use crate::link_flow;
use crate::routes::aws_accounts::{aws_runtime, start_verification};
use crate::state::AppState;
use xrole_store::links::VerifyTrigger;

/// The callback's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StackCallback {
    /// The link the stack was made for (one account).
    #[schema(format = Uuid)]
    #[serde(default)]
    pub link_id: Option<String>,
    /// The organization connection whose StackSet made the stack (instead
    /// of `link_id`): the account's link is found or made from
    /// `account_id`.
    #[schema(format = Uuid)]
    #[serde(default)]
    pub connection_id: Option<String>,
    /// What happened to the stack.
    #[schema(value_type = StackEvent)]
    pub event: String,
    /// The role the stack made.
    #[schema(
        max_length = 613,
        pattern = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role(?=.{0,511}/[0-9A-Za-z_+=,.@-]{1,64}$)/([!-.0-~]+/)*[0-9A-Za-z_+=,.@-]{1,64}$"
    )]
    pub role_arn: String,
    /// The account the stack runs in (12 digits, the role's).
    #[schema(pattern = r"^[0-9]{12}$")]
    pub account_id: String,
    /// The stack.
    pub stack_id: String,
    /// The stack's region.
    #[schema(max_length = 32, pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$")]
    pub region: String,
}

/// A CloudFormation stack event.
#[derive(Debug, ToSchema)]
pub enum StackEvent {
    /// The stack was created.
    Create,
    /// The stack was updated.
    Update,
    /// The stack was deleted.
    Delete,
}

/// What the server did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallbackOut {
    /// The link's state now.
    pub state: String,
    /// False when this `webhook-id` was seen before (nothing changed).
    pub applied: bool,
    /// The account's link (for an organization connection's stack).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link_id: Option<String>,
}

/// Audit actor of callbacks.
const ACTOR: &str = "cloudformation";

fn header<'a>(req: &'a HttpRequest, name: &str) -> Result<&'a str, ApiError> {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::bad_request("invalid_signature", format!("missing {name} header")))
}

/// The signed parts of a callback, checked before anything in the body is
/// trusted.
struct Signed {
    msg_id: String,
    timestamp: String,
    signatures: String,
    raw: actix_web::web::Bytes,
}

fn unauthorized() -> ApiError {
    // One answer for unknown links and bad signatures: nothing to probe.
    ApiError::Unauthenticated
}

/// Receive a CloudFormation stack's signed callback.
#[utoipa::path(post, path = "/v1/callbacks/cloudformation", tag = "aws-accounts", request_body = StackCallback,
    params(("webhook-id" = String, Header, max_length = 256, description = "The message id (at most 256 bytes)"),
        ("webhook-timestamp" = String, Header, description = "Unix seconds"),
        ("webhook-signature" = String, Header, description = "`v1,<base64 HMAC-SHA256>`, space-separated")),
    responses((status = 200, body = CallbackOut), (status = 400, body = Problem), (status = 401, body = Problem),
        (status = 409, body = Problem), (status = 422, body = Problem)))]
pub async fn cloudformation(
    state: web::Data<AppState>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = read_json::<StackCallback>(&req, payload).await?;
    let msg_id = header(&req, "webhook-id")?.to_owned();
    let timestamp = header(&req, "webhook-timestamp")?.to_owned();
    let signatures = header(&req, "webhook-signature")?.to_owned();
    if msg_id.len() > 256 {
        return Err(ApiError::bad_request(
            "invalid_signature",
            "webhook-id too long",
        ));
    }
    let aws = aws_runtime(&state)?;
    let input = body.value;
    let raw = body.raw;
    let signed = Signed {
        msg_id,
        timestamp,
        signatures,
        raw,
    };
    let link_id = match (&input.link_id, &input.connection_id) {
        (Some(link), None) => link.parse::<LinkId>().map_err(|_| unauthorized())?,
        (None, Some(connection)) => {
            let connection = connection.parse().map_err(|_| unauthorized())?;
            let out = organization::callback(&state, &aws, connection, input, signed).await?;
            return Ok(HttpResponse::Ok().json(out));
        }
        _ => return Err(unauthorized()),
    };
    let Signed {
        msg_id,
        timestamp,
        signatures,
        raw,
    } = signed;
    let st = state.get_ref().clone();
    let now = state.now_ms();
    let now_time =
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(now).unwrap_or(0));

    // Signature first, outside the write transaction: nothing in the body is
    // trusted before it verifies.
    let (org, link) = state
        .db({
            let st = st.clone();
            move |conn| {
                let org =
                    xrole_store::links::org_of_link(conn, link_id)?.ok_or_else(unauthorized)?;
                let secret =
                    xrole_store::links::reveal_callback_secret(conn, &st.keyring(), org, link_id)?;
                secret
                    .verify(&msg_id, &timestamp, &signatures, &raw, now_time)
                    .map_err(|e| {
                        tracing::info!(link = %link_id, error = %e, "callback signature rejected");
                        unauthorized()
                    })?;
                let link = xrole_store::links::get(conn, org, link_id)?;
                if link.connection_id.is_some() {
                    // An organization's account link: its stack reports
                    // through the connection.
                    return Err(unauthorized());
                }
                Ok((org, link))
            }
        })
        .await?;
    let msg_id = header(&req, "webhook-id")?.to_owned();

    let event = input.event.clone();
    let event = event.as_str();
    if !matches!(event, "Create" | "Update" | "Delete") {
        return Err(ApiError::invalid(
            "event",
            "must be Create, Update or Delete",
        ));
    }
    // The first Create binds the link to its stack; from then on every
    // event must come from that stack, and the secret serves it for a
    // bounded time (it is not rotated: see docs/security.md).
    match &link.stack_id {
        None if now > link.callback_secret_expires_ms => {
            return Err(ApiError::Conflict {
                code: "link_expired",
                detail: "this link expired; create a new one in xrole".into(),
            });
        }
        None if event != "Create" => {
            return Err(ApiError::Conflict {
                code: "stack_not_bound",
                detail: "no stack has reported Create for this link yet; an Update or Delete \
                         must come from the stack that did"
                    .into(),
            });
        }
        None => {}
        Some(_) if now > link.callback_secret_expires_ms => {
            return Err(ApiError::Conflict {
                code: "callback_secret_expired",
                detail: "this link's callback secret has expired, so its stack's events are no \
                         longer accepted; verify the link from the API (POST \
                         /v1/aws-accounts/{id}/verify), or set its role with PUT …/role"
                    .into(),
            });
        }
        Some(bound) if *bound != input.stack_id => {
            return Err(ApiError::Conflict {
                code: "stack_mismatch",
                detail: if event == "Create" {
                    "this link is already bound to another CloudFormation stack; a second stack \
                     cannot take it over: create a new link in xrole for it"
                        .into()
                } else {
                    "this link belongs to another CloudFormation stack".into()
                },
            });
        }
        Some(_) => {}
    }
    let role = RoleArn::parse(&input.role_arn)
        .map_err(|_| ApiError::invalid("role_arn", "not an IAM role ARN"))?;
    if role.account_id().as_str() != input.account_id {
        return Err(ApiError::invalid(
            "account_id",
            "the role ARN is in another account",
        ));
    }
    link_flow::check_account(&role, &link.aws_account_id).map_err(|m| ApiError::Conflict {
        code: "account_mismatch",
        detail: m,
    })?;
    let secret_ttl_ms =
        i64::try_from(aws.settings.callback_secret_ttl.as_millis()).unwrap_or(i64::MAX / 2);
    let binds = link.stack_id.is_none();
    let region = crate::routes::aws_accounts::parse_region(&input.region, "region")?;
    let is_delete = event == "Delete";

    let out = state
        .tx(move |conn| {
            if !xrole_store::webhooks::record_webhook_id(conn, &msg_id, now)? {
                let l = xrole_store::links::get(conn, org, link_id)?;
                return Ok(CallbackOut {
                    state: l.state.as_str().to_owned(),
                    applied: false,
                    link_id: None,
                });
            }
            let report = xrole_store::links::StackReport {
                role_arn: role.as_str(),
                stack_id: &input.stack_id,
                region: &region,
                callback_secret_expires_ms: binds.then(|| now.saturating_add(secret_ttl_ms)),
            };
            let mut details = serde_json::json!({
                "event": input.event, "role_arn": role.as_str(), "account_id": input.account_id,
                "stack_id": input.stack_id, "region": region, "webhook_id": msg_id,
            });
            let new_state = if is_delete {
                xrole_store::links::disconnect(conn, org, link_id, now)?;
                LinkState::Disconnected
            } else {
                xrole_store::links::record_stack(conn, org, link_id, &report, now)?;
                xrole_store::links::update(
                    conn,
                    org,
                    link_id,
                    &xrole_store::links::LinkChanges {
                        aws_account_id: Some(role.account_id().as_str()),
                        ..Default::default()
                    },
                    now,
                )?;
                let job =
                    start_verification(conn, org, link_id, ACTOR, VerifyTrigger::Changed, now)?;
                details["job_id"] = serde_json::json!(job.id.to_string());
                LinkState::Verifying
            };
            let target = format!("aws_account:{link_id}");
            let e = xrole_store::audit::NewAuditEvent {
                actor: ACTOR,
                action: "aws_account.callback",
                target: Some(&target),
                request_id: None,
                source_ip: None,
                details,
            };
            xrole_store::audit::append(conn, org, &e, now)?;
            Ok(CallbackOut {
                state: new_state.as_str().to_owned(),
                applied: true,
                link_id: None,
            })
        })
        .await?;
    let _ = st;
    Ok(HttpResponse::Ok().json(out))
}

mod organization {
    //! The callback of a member account's stack (an organization's StackSet).

    use xrole_assume::RoleArn;
    use xrole_store::links::{NewAccountLink, VerifyTrigger};
    use xrole_store::{ConnectionId, LinkState};

    use super::{ACTOR, CallbackOut, Signed, StackCallback, unauthorized};
    use crate::error::ApiError;
    use crate::link_flow::{AwsRuntime, LINK_TTL_MS};
    use crate::routes::aws_accounts::{parse_region, start_verification};
    use crate::state::AppState;

    /// `(region, account)` of a CloudFormation stack ARN.
    fn stack_arn_parts(stack_id: &str) -> Option<(&str, &str)> {
        let mut parts = stack_id.splitn(6, ':');
        let (arn, _partition, service) = (parts.next()?, parts.next()?, parts.next()?);
        let (region, account, resource) = (parts.next()?, parts.next()?, parts.next()?);
        (arn == "arn" && service == "cloudformation" && resource.starts_with("stack/"))
            .then_some((region, account))
    }

    fn record(
        conn: &mut xrole_store::Conn,
        org: xrole_store::OrgId,
        action: &str,
        target: &str,
        details: serde_json::Value,
        now: i64,
    ) -> Result<(), ApiError> {
        let e = xrole_store::audit::NewAuditEvent {
            actor: ACTOR,
            action,
            target: Some(target),
            request_id: None,
            source_ip: None,
            details,
        };
        xrole_store::audit::append(conn, org, &e, now)?;
        Ok(())
    }

    pub(super) async fn callback(
        state: &AppState,
        _aws: &AwsRuntime,
        connection: ConnectionId,
        input: StackCallback,
        signed: Signed,
    ) -> Result<CallbackOut, ApiError> {
        let now = state.now_ms();
        let now_time = std::time::UNIX_EPOCH
            + std::time::Duration::from_millis(u64::try_from(now).unwrap_or(0));
        let st = state.clone();
        let msg_id = signed.msg_id.clone();
        let (org, c) = state
            .db(move |conn| {
                let org = xrole_store::connections::org_of_connection(conn, connection)?
                    .ok_or_else(unauthorized)?;
                let secret = xrole_store::connections::reveal_callback_secret(
                    conn,
                    &st.keyring(),
                    org,
                    connection,
                )?;
                secret
                    .verify(
                        &signed.msg_id,
                        &signed.timestamp,
                        &signed.signatures,
                        &signed.raw,
                        now_time,
                    )
                    .map_err(|e| {
                        tracing::info!(%connection, error = %e, "callback signature rejected");
                        unauthorized()
                    })?;
                Ok((org, xrole_store::connections::get(conn, org, connection)?))
            })
            .await?;
        let event = input.event.clone();
        if !matches!(event.as_str(), "Create" | "Update" | "Delete") {
            return Err(ApiError::invalid(
                "event",
                "must be Create, Update or Delete",
            ));
        }
        let role = RoleArn::parse(&input.role_arn)
            .map_err(|_| ApiError::invalid("role_arn", "not an IAM role ARN"))?;
        let account = role.account_id().as_str().to_owned();
        if account != input.account_id {
            return Err(ApiError::invalid(
                "account_id",
                "the role ARN is in another account",
            ));
        }
        let region = parse_region(&input.region, "region")?;
        // The stack, the role and the account must all be the same account:
        // one account's stack cannot report another account's role.
        match stack_arn_parts(&input.stack_id) {
            Some((r, a)) if a == account && r == region => {}
            _ => {
                return Err(ApiError::invalid(
                    "stack_id",
                    "not a CloudFormation stack ARN of the reporting account and region",
                ));
            }
        }
        let stack_id = input.stack_id.clone();
        let is_delete = event == "Delete";
        let st = state.clone();
        state
            .tx(move |conn| {
                let existing =
                    xrole_store::links::of_connection_account(conn, org, connection, &account)?;
                if !xrole_store::webhooks::record_webhook_id(conn, &msg_id, now)? {
                    return Ok(CallbackOut {
                        state: existing
                            .as_ref()
                            .map_or(LinkState::Pending, |l| l.state)
                            .as_str()
                            .to_owned(),
                        applied: false,
                        link_id: existing.map(|l| l.id.to_string()),
                    });
                }
                let bound_elsewhere = |l: &xrole_store::links::Link| {
                    l.stack_id.as_deref().is_some_and(|b| b != stack_id)
                };
                let mismatch = || ApiError::Conflict {
                    code: "stack_mismatch",
                    detail: "this account's link belongs to another CloudFormation stack".into(),
                };
                let mut details = serde_json::json!({
                    "event": event, "role_arn": role.as_str(), "account_id": account,
                    "stack_id": stack_id, "region": region, "webhook_id": msg_id,
                    "aws_organization": connection.to_string(),
                });
                if is_delete {
                    let Some(l) = existing else {
                        return Err(ApiError::Conflict {
                            code: "stack_not_bound",
                            detail: "no stack of this account has reported Create".into(),
                        });
                    };
                    if bound_elsewhere(&l) {
                        return Err(mismatch());
                    }
                    xrole_store::links::disconnect(conn, org, l.id, now)?;
                    let target = format!("aws_account:{}", l.id);
                    record(
                        conn,
                        org,
                        "aws_organization.account_left",
                        &target,
                        details,
                        now,
                    )?;
                    return Ok(CallbackOut {
                        state: LinkState::Disconnected.as_str().to_owned(),
                        applied: true,
                        link_id: Some(l.id.to_string()),
                    });
                }
                let joins = match &existing {
                    None if event != "Create" => {
                        return Err(ApiError::Conflict {
                            code: "stack_not_bound",
                            detail: "no stack of this account has reported Create; an Update \
                                     must come from the stack that did"
                                .into(),
                        });
                    }
                    None => true,
                    // A new stack for an account that left (its stack was
                    // deleted) rejoins; any other stack is refused.
                    Some(l) if bound_elsewhere(l) => {
                        if l.state == LinkState::Disconnected && event == "Create" {
                            true
                        } else {
                            return Err(mismatch());
                        }
                    }
                    Some(_) => false,
                };
                if existing.is_none()
                    && now > c.created_ms + LINK_TTL_MS
                    && xrole_store::connections::account_links(conn, org, connection)?.is_empty()
                {
                    return Err(ApiError::Conflict {
                        code: "link_expired",
                        detail: "no account reported within 48 hours of this connection's \
                                 creation; create a new connection in xrole"
                            .into(),
                    });
                }
                let link = match existing {
                    Some(l) => l,
                    None => {
                        let name = format!("{} {account}", c.name);
                        let keyring = st.keyring();
                        let ext = xrole_store::connections::reveal_external_id(
                            conn, &keyring, org, connection,
                        )?;
                        let new = NewAccountLink {
                            connection,
                            aws_account_id: &account,
                            name: &name,
                            access_level: c.access_level,
                            external_id: &ext,
                        };
                        xrole_store::links::join_connection(conn, &keyring, org, &new, now)?.0
                    }
                };
                if joins && link.stack_id.is_some() && bound_elsewhere(&link) {
                    // Raced with another stack's Create for the same account.
                    if link.state != LinkState::Disconnected {
                        return Err(mismatch());
                    }
                }
                let report = xrole_store::links::StackReport {
                    role_arn: role.as_str(),
                    stack_id: &stack_id,
                    region: &region,
                    callback_secret_expires_ms: None,
                };
                xrole_store::links::record_stack(conn, org, link.id, &report, now)?;
                let job =
                    start_verification(conn, org, link.id, ACTOR, VerifyTrigger::Changed, now)?;
                details["job_id"] = serde_json::json!(job.id.to_string());
                let action = if joins {
                    "aws_organization.account_joined"
                } else {
                    "aws_account.callback"
                };
                record(
                    conn,
                    org,
                    action,
                    &format!("aws_account:{}", link.id),
                    details,
                    now,
                )?;
                Ok(CallbackOut {
                    state: LinkState::Verifying.as_str().to_owned(),
                    applied: true,
                    link_id: Some(link.id.to_string()),
                })
            })
            .await
    }
}
