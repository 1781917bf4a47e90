//! Enforcement of identity-based policies on requests signed with a session
//! the gate saw issued: the request becomes authorizations
//! ([`crate::actions`]), each is decided against the role's policies, the
//! permissions boundary and the session policies ([`crate::iam`]) read fresh
//! from moto, and a denial answers in the protocol's AccessDenied shape.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Value, json};

use crate::actions::{self, Authorization, Lookup, Mapping, Resource, TagSource, Target};
use crate::gate::State;
use crate::iam::{Denial, Kind, Named, PolicySet};
use crate::policy::{Context, MalformedPolicy, decode_document, format_date};
use crate::wire::{AwsError, RequestInfo, xml_blocks, xml_text, xml_texts};

/// A session STS issued for an `AssumeRole` the gate let through: what IAM
/// knows about it when it evaluates the session's requests.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    /// `arn:aws:sts::A:assumed-role/NAME/SESSION`.
    pub arn: String,
    /// The role's ARN, path included.
    pub role_arn: String,
    pub role_name: String,
    pub account: String,
    pub session_name: String,
    pub source_identity: Option<String>,
    /// Session tags, transitive ones inherited from a chaining session first.
    pub tags: Vec<(String, String)>,
    pub transitive_tag_keys: Vec<String>,
    /// The inline session policy.
    pub policy: Option<String>,
    /// Managed session policies.
    pub policy_arns: Vec<String>,
    /// `aws:TokenIssueTime`.
    pub issued: SystemTime,
}

/// One authorization the gate decided for a session: kept for denials, for
/// every decision while recording.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Decision {
    /// The session (`arn:aws:sts::A:assumed-role/NAME/SESSION`).
    pub principal: String,
    /// `service:Action`, e.g. `ec2:CreateVpc`.
    pub action: String,
    /// The resource ARN (`*` for actions without resource-level permissions).
    pub resource: String,
    /// Whether the request may go on; also true, with a reason saying so,
    /// when the policies would refuse a resource that does not exist (moto
    /// then answers NotFound).
    pub allowed: bool,
    /// Whether enforcement was on (a denial while off let the request through).
    pub enforced: bool,
    /// Which policy and statement allowed it, or why it was denied.
    pub reason: String,
}

/// What the role says about itself (read fresh for every request).
#[derive(Debug, Default)]
struct RoleFacts {
    role_id: String,
    tags: Vec<(String, String)>,
}

/// Tags of existing resources, by ARN; `None` for a resource the gate found
/// does not exist.
type TagMap = HashMap<String, Option<Vec<(String, String)>>>;

/// The request context keys a session brings to every request.
fn session_context(s: &Session, facts: &RoleFacts, region: &str, now: SystemTime) -> Context {
    let mut c = Context::default();
    c.set("aws:PrincipalArn", s.role_arn.clone());
    c.set("aws:PrincipalAccount", s.account.clone());
    c.set("aws:PrincipalType", "AssumedRole");
    c.set("aws:PrincipalIsAWSService", "false");
    c.set(
        "aws:userid",
        format!("{}:{}", facts.role_id, s.session_name),
    );
    // Role tags first: a session tag with the same key wins.
    for (k, v) in facts.tags.iter().chain(&s.tags) {
        c.set(&format!("aws:PrincipalTag/{k}"), v.clone());
    }
    c.set("aws:TokenIssueTime", format_date(s.issued));
    if let Some(si) = &s.source_identity {
        c.set("aws:SourceIdentity", si.clone());
    }
    c.set("aws:RequestedRegion", region);
    c.set("aws:CurrentTime", format_date(now));
    c.set(
        "aws:EpochTime",
        now.duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs()
            .to_string(),
    );
    // Every AWS endpoint is HTTPS; the gate speaks HTTP on loopback only.
    c.set("aws:SecureTransport", "true");
    c.set("aws:ViaAWSService", "false");
    c
}

/// The condition keys of an existing resource's tags.
fn resource_tag_context(c: &mut Context, arn: &str, tags: &[(String, String)]) {
    let service = arn.split(':').nth(2).unwrap_or("");
    // RDS names its tag key after the resource type: rds:db-tag/K, rds:subgrp-tag/K.
    let rds_kind = arn.split(':').nth(5).unwrap_or("");
    for (k, v) in tags {
        c.set(&format!("aws:ResourceTag/{k}"), v.clone());
        match service {
            "ec2" => c.set(&format!("ec2:ResourceTag/{k}"), v.clone()),
            "iam" => c.set(&format!("iam:ResourceTag/{k}"), v.clone()),
            "rds" if !rds_kind.is_empty() => {
                c.set(&format!("rds:{rds_kind}-tag/{k}"), v.clone());
            }
            _ => {}
        }
    }
}

/// The opaque message EC2 appends to `UnauthorizedOperation`, which
/// `sts:DecodeAuthorizationMessage` turns back into its JSON. AWS encrypts
/// it; the gate only encodes it.
fn encode_message(decoded: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(decoded.to_string())
}

/// The JSON of an encoded message, if it is one the gate wrote.
pub(crate) fn decode_message(encoded: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    serde_json::from_str::<Value>(&text).ok()?;
    Some(text)
}

/// The decoded authorization message, in the shape AWS documents.
fn decoded_message(
    s: &Session,
    facts: &RoleFacts,
    a: &str,
    r: &str,
    d: &Denial,
    ctx: &Context,
) -> Value {
    let items: Vec<Value> = ctx
        .entries()
        .into_iter()
        .map(|(k, vals)| {
            json!({"key": k, "values": {"items":
                vals.iter().map(|v| json!({"value": v})).collect::<Vec<_>>()}})
        })
        .collect();
    json!({
        "allowed": false,
        "explicitDeny": d.is_explicit(),
        "matchedStatements": {"items": []},
        "failures": {"items": []},
        "context": {
            "principal": {"id": format!("{}:{}", facts.role_id, s.session_name), "arn": s.arn},
            "action": a,
            "resource": r,
            "conditions": {"items": items},
        },
        "xroleGate": {"reason": d.detail()},
    })
}

impl State {
    /// Decides a request signed by `session`. `Ok` lets it through; `Err` is
    /// the answer to give instead (when enforcement is on).
    pub(crate) async fn authorize(
        &self,
        info: &RequestInfo,
        action: &str,
        session: &Session,
        enforced: bool,
    ) -> Result<(), AwsError> {
        let region = info
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".to_owned());
        let t = Target {
            account: session.account.clone(),
            region: region.clone(),
        };
        let mapping = actions::map(self, info, action, &t)
            .await
            .map_err(|e| lookup_failed(&e))?;
        let record = |action: &str, resource: &str, allowed: bool, reason: String| {
            self.control.record_decision(Decision {
                principal: session.arn.clone(),
                action: action.to_owned(),
                resource: resource.to_owned(),
                allowed,
                enforced,
                reason,
            });
        };
        let authorizations = match mapping {
            Mapping::Always(a) => {
                record(&a, "*", true, "allowed for every principal".to_owned());
                return Ok(());
            }
            Mapping::Unknown { action: a, why } => {
                let reason = format!("unknown to the gate ({why}): denied, never let through");
                tracing::warn!(target: "xrole_gate", principal = %session.arn, action = %a,
                    enforced, %reason, "access denied");
                record(&a, "*", false, reason);
                return Err(denied_response(
                    info,
                    &format!(
                        "User: {} is not authorized to perform: {a} on resource: * \
                         because the xrole gate does not know this action",
                        session.arn
                    ),
                    None,
                ));
            }
            Mapping::Check(a) => a,
        };
        let (set, facts) = self
            .policy_set(session)
            .await
            .map_err(|e| lookup_failed(&e))?;
        let tags = self
            .resource_tags(&t, &authorizations)
            .await
            .map_err(|e| lookup_failed(&e))?;
        let base = session_context(session, &facts, &region, SystemTime::now());
        let mut first_denial: Option<(usize, Denial, Context)> = None;
        for (i, a) in authorizations.iter().enumerate() {
            let mut ctx = base.clone();
            ctx.extend(&a.ctx);
            let arn = a.resource.arn();
            let resource_account = arn.split(':').nth(4).filter(|a| !a.is_empty());
            ctx.set(
                "aws:ResourceAccount",
                resource_account.unwrap_or(&session.account),
            );
            let mut absent = false;
            match &a.resource {
                Resource::Existing {
                    tags: TagSource::Absent,
                    ..
                } => absent = true,
                Resource::Existing {
                    tags: TagSource::Known(known),
                    ..
                } => {
                    resource_tag_context(&mut ctx, arn, known);
                }
                Resource::Existing { .. } => match tags.get(arn) {
                    Some(Some(found)) => resource_tag_context(&mut ctx, arn, found),
                    Some(None) => absent = true,
                    None => {}
                },
                Resource::Any | Resource::New(_) => {}
            }
            match set.decide(&a.action, arn, &ctx) {
                Ok(by) => record(&a.action, arn, true, format!("allowed by {by}")),
                // A resource that does not exist has no tags to satisfy a tag
                // condition; the request goes on to moto, which answers
                // NotFound, as AWS does for a missing resource.
                Err(d) if absent => record(
                    &a.action,
                    arn,
                    true,
                    format!(
                        "not decided: the resource does not exist, moto answers NotFound ({})",
                        d.detail()
                    ),
                ),
                Err(d) => {
                    record(&a.action, arn, false, d.detail());
                    if first_denial.is_none() {
                        first_denial = Some((i, d, ctx));
                    }
                }
            }
        }
        let Some((i, denial, ctx)) = first_denial else {
            return Ok(());
        };
        let a = &authorizations[i];
        let arn = a.resource.arn();
        let message = format!(
            "User: {} is not authorized to perform: {} on resource: {arn} {}",
            session.arn,
            a.action,
            denial.aws_reason(&a.action)
        );
        tracing::warn!(target: "xrole_gate", principal = %session.arn, action = %a.action,
            resource = %arn, reason = %denial.detail(), enforced, "access denied");
        let decoded = decoded_message(session, &facts, &a.action, arn, &denial, &ctx);
        Err(denied_response(info, &message, Some(&decoded)))
    }

    /// A request of `session` whose action the gate cannot read (REST
    /// protocols): recorded and answered as an unknown action.
    pub(crate) fn refuse_unmapped(
        &self,
        info: &RequestInfo,
        method: &str,
        path: &str,
        session: &Session,
        enforced: bool,
    ) -> AwsError {
        let action = format!("{}:{method} {path}", info.service.as_deref().unwrap_or("?"));
        self.control.record_decision(Decision {
            principal: session.arn.clone(),
            action: action.clone(),
            resource: "*".to_owned(),
            allowed: false,
            enforced,
            reason: "unknown to the gate (a protocol without an Action): denied, never let through"
                .to_owned(),
        });
        tracing::warn!(target: "xrole_gate", principal = %session.arn, %action, enforced,
            "access denied: the gate cannot read this request's action");
        denied_response(
            info,
            &format!(
                "User: {} is not authorized to perform: {action} on resource: * \
                 because the xrole gate does not know this action",
                session.arn
            ),
            None,
        )
    }

    /// The role's inline, managed and boundary policies and the session's
    /// policies, read from moto now: customers edit roles behind the gate's
    /// back, and a change must hold from the next request on.
    async fn policy_set(&self, s: &Session) -> anyhow::Result<(PolicySet, RoleFacts)> {
        let mut set = PolicySet::default();
        let mut facts = RoleFacts::default();
        let get_role = self
            .iam(
                &s.account,
                &[("Action", "GetRole"), ("RoleName", &s.role_name)],
            )
            .await?;
        if let Some(xml) = get_role {
            facts.role_id = xml_text(&xml, "RoleId").unwrap_or_default();
            facts.tags = tag_members(xml_blocks(&xml, "Tags").first().copied().unwrap_or(""));
            let names = self
                .iam_list(&s.account, "ListRolePolicies", &s.role_name, "PolicyNames")
                .await?;
            for name in names {
                let doc = self
                    .iam(
                        &s.account,
                        &[
                            ("Action", "GetRolePolicy"),
                            ("RoleName", &s.role_name),
                            ("PolicyName", &name),
                        ],
                    )
                    .await?
                    .and_then(|x| xml_text(&x, "PolicyDocument"))
                    .map(|d| decode_document(&d));
                if let Some(doc) = doc {
                    set.identity.push(Named {
                        name: format!("inline policy {name}"),
                        kind: Kind::Identity,
                        doc,
                    });
                }
            }
            let attached = self
                .iam_list(
                    &s.account,
                    "ListAttachedRolePolicies",
                    &s.role_name,
                    "AttachedPolicies",
                )
                .await?;
            for arn in attached {
                let doc = self.managed_policy(&s.account, &arn).await?;
                set.identity.push(Named {
                    name: format!("managed policy {arn}"),
                    kind: Kind::Identity,
                    doc,
                });
            }
            if let Some(arn) = xml_text(&xml, "PermissionsBoundaryArn") {
                let doc = self.managed_policy(&s.account, &arn).await?;
                set.boundary = Some(Named {
                    name: format!("permissions boundary {arn}"),
                    kind: Kind::Boundary,
                    doc,
                });
            }
        }
        if let Some(p) = &s.policy {
            set.session.push(Named {
                name: "the inline session policy".to_owned(),
                kind: Kind::Session,
                doc: decode_document(p),
            });
        }
        for arn in &s.policy_arns {
            let doc = self.managed_policy(&s.account, arn).await?;
            set.session.push(Named {
                name: format!("session policy {arn}"),
                kind: Kind::Session,
                doc,
            });
        }
        Ok((set, facts))
    }

    /// A managed policy's default version. Versions never change once
    /// written, so each is read from moto once.
    async fn managed_policy(
        &self,
        account: &str,
        arn: &str,
    ) -> anyhow::Result<Result<Value, MalformedPolicy>> {
        let Some(policy) = self
            .iam(account, &[("Action", "GetPolicy"), ("PolicyArn", arn)])
            .await?
        else {
            return Ok(Err(MalformedPolicy(format!("{arn} does not exist"))));
        };
        let version = xml_text(&policy, "DefaultVersionId").unwrap_or_else(|| "v1".to_owned());
        let key = (arn.to_owned(), version.clone());
        if let Some(doc) = self
            .policy_versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(doc.clone());
        }
        let doc = self
            .iam(
                account,
                &[
                    ("Action", "GetPolicyVersion"),
                    ("PolicyArn", arn),
                    ("VersionId", &version),
                ],
            )
            .await?
            .and_then(|x| xml_text(&x, "Document"))
            .map_or_else(
                || Err(MalformedPolicy(format!("{arn} has no version {version}"))),
                |d| decode_document(&d),
            );
        self.policy_versions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, doc.clone());
        Ok(doc)
    }

    /// An IAM query in `account`: `Ok(None)` for `NoSuchEntity`.
    async fn iam(&self, account: &str, params: &[(&str, &str)]) -> anyhow::Result<Option<String>> {
        let mut all = vec![("Version", "2010-05-08")];
        all.extend_from_slice(params);
        let (status, xml) = self
            .moto_query("iam", "us-east-1", GATE_KEY, Some(account), &all)
            .await?;
        if status == StatusCode::NOT_FOUND || xml.contains("<Code>NoSuchEntity</Code>") {
            return Ok(None);
        }
        anyhow::ensure!(
            status.is_success(),
            "IAM {params:?} answered {status}: {xml}"
        );
        Ok(Some(xml))
    }

    /// Every page of a role listing: the `member` texts (or their
    /// `PolicyArn`s for attached policies) inside `<list>`.
    async fn iam_list(
        &self,
        account: &str,
        action: &str,
        role: &str,
        list: &str,
    ) -> anyhow::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let mut params = vec![("Action", action), ("RoleName", role)];
            if let Some(m) = &marker {
                params.push(("Marker", m));
            }
            let Some(xml) = self.iam(account, &params).await? else {
                return Ok(out);
            };
            let block = xml_blocks(&xml, list).first().copied().unwrap_or("");
            if action == "ListAttachedRolePolicies" {
                out.extend(xml_texts(block, "PolicyArn"));
            } else {
                out.extend(xml_texts(block, "member"));
            }
            marker = (xml_text(&xml, "IsTruncated").as_deref() == Some("true"))
                .then(|| xml_text(&xml, "Marker"))
                .flatten();
            if marker.is_none() {
                return Ok(out);
            }
        }
    }

    /// The tags of every existing EC2 and RDS resource of the request.
    async fn resource_tags(
        &self,
        t: &Target,
        authorizations: &[Authorization],
    ) -> anyhow::Result<TagMap> {
        let mut out = TagMap::new();
        let mut ec2_ids: Vec<(&str, &str)> = Vec::new();
        for a in authorizations {
            match &a.resource {
                Resource::Existing {
                    arn,
                    tags: TagSource::Ec2(id),
                } if !ec2_ids.iter().any(|(i, _)| i == id) => {
                    ec2_ids.push((id, arn));
                }
                Resource::Existing {
                    arn,
                    tags: TagSource::Rds,
                } if !out.contains_key(arn) => {
                    let tags = self.rds_tags(t, arn).await?;
                    out.insert(arn.clone(), tags);
                }
                _ => {}
            }
        }
        if ec2_ids.is_empty() {
            return Ok(out);
        }
        let mut params: Vec<(String, String)> = vec![
            ("Action".into(), "DescribeTags".into()),
            ("Version".into(), "2016-11-15".into()),
            ("Filter.1.Name".into(), "resource-id".into()),
        ];
        for (i, (id, _)) in ec2_ids.iter().enumerate() {
            params.push((format!("Filter.1.Value.{}", i + 1), (*id).to_owned()));
        }
        let params: Vec<(&str, &str)> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let (status, xml) = self
            .moto_query("ec2", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        anyhow::ensure!(status.is_success(), "DescribeTags answered {status}: {xml}");
        let mut by_id: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for item in xml_blocks(&xml, "item") {
            if let (Some(id), Some(k)) = (xml_text(item, "resourceId"), xml_text(item, "key")) {
                let v = xml_text(item, "value").unwrap_or_default();
                by_id.entry(id).or_default().push((k, v));
            }
        }
        for (id, arn) in ec2_ids {
            let tags = match by_id.remove(id) {
                Some(tags) => Some(tags),
                // DescribeTags cannot tell an untagged resource from a missing one.
                None => self.ec2_exists(t, id).await?.then(Vec::new),
            };
            out.insert(arn.to_owned(), tags);
        }
        Ok(out)
    }

    /// RDS `ListTagsForResource`; `None` when the resource does not exist.
    async fn rds_tags(
        &self,
        t: &Target,
        arn: &str,
    ) -> anyhow::Result<Option<Vec<(String, String)>>> {
        let params = [
            ("Action", "ListTagsForResource"),
            ("Version", "2014-10-31"),
            ("ResourceName", arn),
        ];
        let (status, xml) = self
            .moto_query("rds", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        if !status.is_success() {
            if xml.contains("NotFound") {
                return Ok(None);
            }
            anyhow::bail!("ListTagsForResource {arn} answered {status}: {xml}");
        }
        let list = xml_blocks(&xml, "TagList").first().copied().unwrap_or("");
        Ok(Some(
            xml_blocks(list, "Tag")
                .into_iter()
                .filter_map(|t| {
                    Some((
                        xml_text(t, "Key")?,
                        xml_text(t, "Value").unwrap_or_default(),
                    ))
                })
                .collect(),
        ))
    }

    /// Whether an EC2 resource exists (for the types xrole uses; others are
    /// taken to exist).
    async fn ec2_exists(&self, t: &Target, id: &str) -> anyhow::Result<bool> {
        let (action, param) = match id.split_once('-').map(|(p, _)| p) {
            Some("vpc") => ("DescribeVpcs", "VpcId.1"),
            Some("subnet") => ("DescribeSubnets", "SubnetId.1"),
            Some("igw") => ("DescribeInternetGateways", "InternetGatewayId.1"),
            Some("rtb") => ("DescribeRouteTables", "RouteTableId.1"),
            Some("sg") => ("DescribeSecurityGroups", "GroupId.1"),
            Some("i") => ("DescribeInstances", "InstanceId.1"),
            _ => return Ok(true),
        };
        let params = [("Action", action), ("Version", "2016-11-15"), (param, id)];
        let (status, xml) = self
            .moto_query("ec2", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        if status.is_success() {
            return Ok(true);
        }
        anyhow::ensure!(
            xml.contains("NotFound"),
            "{action} {id} answered {status}: {xml}"
        );
        Ok(false)
    }

    /// The session of `access_key_id`, if the gate saw it issued.
    pub(crate) fn session(&self, access_key_id: &str) -> Option<Arc<Session>> {
        self.control.session(access_key_id)
    }
}

/// The access key the gate signs its own reads with (moto does not check
/// signatures; `x-moto-account-id` picks the account).
pub(crate) const GATE_KEY: &str = "AKIAXROLEGATE0000000";

/// `<member><Key>k</Key><Value>v</Value></member>` pairs.
fn tag_members(block: &str) -> Vec<(String, String)> {
    xml_blocks(block, "member")
        .into_iter()
        .filter_map(|m| {
            Some((
                xml_text(m, "Key")?,
                xml_text(m, "Value").unwrap_or_default(),
            ))
        })
        .collect()
}

fn lookup_failed(e: &anyhow::Error) -> AwsError {
    tracing::error!(target: "xrole_gate", error = %format!("{e:#}"), "cannot evaluate a request");
    AwsError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        format!("xrole gate: cannot evaluate the request: {e:#}"),
    )
}

/// AccessDenied in the request's protocol: EC2's `UnauthorizedOperation`
/// with an encoded message, JSON protocols' `AccessDeniedException`, and
/// the query protocols' `AccessDenied`.
fn denied_response(info: &RequestInfo, message: &str, decoded: Option<&Value>) -> AwsError {
    if info.service.as_deref() == Some("ec2") {
        let mut m = format!("You are not authorized to perform this operation. {message}.");
        if let Some(d) = decoded {
            m.push_str(&format!(
                " Encoded authorization failure message: {}",
                encode_message(d)
            ));
        }
        AwsError::new(StatusCode::FORBIDDEN, "UnauthorizedOperation", m)
    } else if info.json {
        AwsError::new(StatusCode::BAD_REQUEST, "AccessDeniedException", message)
    } else {
        AwsError::access_denied(message)
    }
}

impl Lookup for State {
    async fn role(
        &self,
        account: &str,
        name: &str,
    ) -> anyhow::Result<Option<(String, Vec<(String, String)>)>> {
        let Some(xml) = self
            .iam(account, &[("Action", "GetRole"), ("RoleName", name)])
            .await?
        else {
            return Ok(None);
        };
        let arn = xml_text(&xml, "Arn").context("GetRole without Arn")?;
        let tags = tag_members(xml_blocks(&xml, "Tags").first().copied().unwrap_or(""));
        Ok(Some((arn, tags)))
    }

    async fn route_table_association(
        &self,
        t: &Target,
        association_id: &str,
    ) -> anyhow::Result<Option<(String, Option<String>)>> {
        let params = [
            ("Action", "DescribeRouteTables"),
            ("Version", "2016-11-15"),
            ("Filter.1.Name", "association.route-table-association-id"),
            ("Filter.1.Value.1", association_id),
        ];
        let (status, xml) = self
            .moto_query("ec2", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "DescribeRouteTables answered {status}: {xml}"
        );
        for assoc in xml_blocks(&xml, "item") {
            if xml_text(assoc, "routeTableAssociationId").as_deref() == Some(association_id) {
                let rtb = xml_text(assoc, "routeTableId").context("association without table")?;
                return Ok(Some((rtb, xml_text(assoc, "subnetId"))));
            }
        }
        Ok(None)
    }

    async fn security_group_id(&self, t: &Target, name: &str) -> anyhow::Result<Option<String>> {
        let params = [
            ("Action", "DescribeSecurityGroups"),
            ("Version", "2016-11-15"),
            ("Filter.1.Name", "group-name"),
            ("Filter.1.Value.1", name),
        ];
        let (status, xml) = self
            .moto_query("ec2", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "DescribeSecurityGroups answered {status}: {xml}"
        );
        Ok(xml_text(&xml, "groupId"))
    }

    async fn rds_snapshot_tags(
        &self,
        t: &Target,
        db_instance: &str,
    ) -> anyhow::Result<Vec<(String, String)>> {
        let params = [
            ("Action", "DescribeDBInstances"),
            ("Version", "2014-10-31"),
            ("DBInstanceIdentifier", db_instance),
        ];
        let (status, xml) = self
            .moto_query("rds", &t.region, GATE_KEY, Some(&t.account), &params)
            .await?;
        if !status.is_success() {
            anyhow::ensure!(
                xml.contains("NotFound"),
                "DescribeDBInstances {db_instance} answered {status}: {xml}"
            );
            return Ok(Vec::new());
        }
        if xml_text(&xml, "CopyTagsToSnapshot").as_deref() != Some("true") {
            return Ok(Vec::new());
        }
        let arn = xml_text(&xml, "DBInstanceArn").context("DescribeDBInstances without an ARN")?;
        Ok(self.rds_tags(t, &arn).await?.unwrap_or_default())
    }

    async fn secret_arn(&self, t: &Target, id: &str) -> anyhow::Result<Option<String>> {
        let (status, body) = self
            .moto_json(
                "secretsmanager",
                "secretsmanager.DescribeSecret",
                &t.region,
                &t.account,
                &json!({"SecretId": id}),
            )
            .await?;
        if !status.is_success() {
            return Ok(None);
        }
        Ok(body.get("ARN").and_then(Value::as_str).map(str::to_owned))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> Session {
        Session {
            arn: "arn:aws:sts::111122223333:assumed-role/xrole/s1".into(),
            role_arn: "arn:aws:iam::111122223333:role/team/xrole".into(),
            role_name: "xrole".into(),
            account: "111122223333".into(),
            session_name: "s1".into(),
            source_identity: Some("alice".into()),
            tags: vec![("team".into(), "session".into())],
            transitive_tag_keys: vec![],
            policy: None,
            policy_arns: vec![],
            issued: UNIX_EPOCH + std::time::Duration::from_secs(86_400),
        }
    }

    #[test]
    fn session_tags_win_over_role_tags() {
        let facts = RoleFacts {
            role_id: "AROAX".into(),
            tags: vec![("team".into(), "role".into()), ("cost".into(), "42".into())],
        };
        let c = session_context(&session(), &facts, "eu-west-3", UNIX_EPOCH);
        let one = |k: &str| c.get(k).map(<[String]>::to_vec);
        assert_eq!(
            one("aws:PrincipalTag/team"),
            Some(vec!["session".to_owned()])
        );
        assert_eq!(one("aws:principaltag/COST"), Some(vec!["42".to_owned()]));
        assert_eq!(
            one("aws:PrincipalArn"),
            Some(vec!["arn:aws:iam::111122223333:role/team/xrole".to_owned()])
        );
        assert_eq!(
            one("aws:TokenIssueTime"),
            Some(vec!["1970-01-02T00:00:00Z".to_owned()])
        );
        assert_eq!(one("aws:SourceIdentity"), Some(vec!["alice".to_owned()]));
        assert_eq!(
            one("aws:RequestedRegion"),
            Some(vec!["eu-west-3".to_owned()])
        );
        assert_eq!(one("aws:userid"), Some(vec!["AROAX:s1".to_owned()]));
    }

    #[test]
    fn resource_tag_keys_per_service() {
        let mut c = Context::default();
        let tags = vec![("xrole:managed-by".to_owned(), "xrole".to_owned())];
        resource_tag_context(&mut c, "arn:aws:rds:us-east-1:1:db:xrole-a", &tags);
        resource_tag_context(&mut c, "arn:aws:ec2:us-east-1:1:vpc/vpc-1", &tags);
        assert!(c.get("rds:db-tag/xrole:managed-by").is_some());
        assert!(c.get("ec2:ResourceTag/xrole:managed-by").is_some());
        assert!(c.get("aws:ResourceTag/xrole:managed-by").is_some());
    }

    #[test]
    fn encoded_messages_round_trip() {
        let v = json!({"allowed": false});
        let e = encode_message(&v);
        assert_eq!(decode_message(&e).as_deref(), Some(r#"{"allowed":false}"#));
        assert_eq!(decode_message("not-ours"), None);
    }
}
