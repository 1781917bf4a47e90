//! What IAM authorizes for each request: the action (`ec2:CreateVpc`), every
//! resource it touches, and the condition keys that hold for each, as AWS's
//! Service Authorization Reference lists them for the calls xrole makes
//! (EC2 and RDS query APIs, STS, IAM, SSM, Secrets Manager). A request the
//! gate cannot map is [`Mapping::Unknown`] and is denied, never let through.

use std::collections::HashMap;

use crate::policy::Context;
use crate::wire::RequestInfo;

/// A resource an authorization is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resource {
    /// An action without resource-level permissions: the resource is `*`.
    Any,
    /// A resource the request creates, as AWS names it before it exists
    /// (`arn:aws:ec2:us-east-1:111122223333:vpc/*`). Its tags are the
    /// request's (`aws:RequestTag/…`), never `aws:ResourceTag/…`.
    New(String),
    /// An existing resource; conditions may read its tags.
    Existing { arn: String, tags: TagSource },
}

impl Resource {
    /// The ARN policies match (`*` for [`Resource::Any`]).
    pub(crate) fn arn(&self) -> &str {
        match self {
            Resource::Any => "*",
            Resource::New(arn) | Resource::Existing { arn, .. } => arn,
        }
    }
}

/// Where an existing resource's tags come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TagSource {
    /// EC2 `DescribeTags` for this resource id.
    Ec2(String),
    /// RDS `ListTagsForResource` for the ARN.
    Rds,
    /// Already known (read with the resource, e.g. an IAM role's tags).
    Known(Vec<(String, String)>),
    /// The resource has no tags the gate reads.
    None,
    /// The request names a resource that does not exist.
    Absent,
}

/// One authorization IAM makes for a request: every one must be allowed.
#[derive(Debug, Clone)]
pub(crate) struct Authorization {
    /// `service:Action`.
    pub action: String,
    pub resource: Resource,
    /// Keys that hold for this authorization only: request tags, `ec2:CreateAction`,
    /// `aws:CalledVia`, service keys.
    pub ctx: Context,
}

/// What the gate makes of a request.
#[derive(Debug)]
pub(crate) enum Mapping {
    /// Allowed only if every authorization is.
    Check(Vec<Authorization>),
    /// Always allowed, whatever the policies say (`sts:GetCallerIdentity`).
    Always(String),
    /// A request the gate cannot map: denied.
    Unknown { action: String, why: String },
}

/// Where the request acts: the session's account and the signed region.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub account: String,
    pub region: String,
}

/// The lookups some requests need before their resources are known.
pub(crate) trait Lookup {
    /// An IAM role's ARN (with its path) and tags, or `None` if there is no such role.
    async fn role(
        &self,
        account: &str,
        name: &str,
    ) -> anyhow::Result<Option<(String, Vec<(String, String)>)>>;
    /// The route table and subnet of a route table association.
    async fn route_table_association(
        &self,
        t: &Target,
        association_id: &str,
    ) -> anyhow::Result<Option<(String, Option<String>)>>;
    /// The id of the security group with this name (in the default VPC, or any).
    async fn security_group_id(&self, t: &Target, name: &str) -> anyhow::Result<Option<String>>;
    /// A secret's full ARN from its name or ARN.
    async fn secret_arn(&self, t: &Target, id: &str) -> anyhow::Result<Option<String>>;
    /// The tags an RDS database copies to its snapshots: its tags when it
    /// has `CopyTagsToSnapshot` on, else none (also when it does not exist).
    async fn rds_snapshot_tags(
        &self,
        t: &Target,
        db_instance: &str,
    ) -> anyhow::Result<Vec<(String, String)>>;
}

/// Maps a request signed for `service` to its authorizations.
pub(crate) async fn map<L: Lookup>(
    lookup: &L,
    info: &RequestInfo,
    action: &str,
    t: &Target,
) -> anyhow::Result<Mapping> {
    let service = info.service.as_deref().unwrap_or("");
    let q = Params(&info.params);
    let unknown = |why: &str| Mapping::Unknown {
        action: format!("{service}:{action}"),
        why: why.to_owned(),
    };
    let m = match service {
        "ec2" => ec2(lookup, action, &q, t).await?,
        "rds" => rds(lookup, action, &q, t).await?,
        "sts" => sts(lookup, action, &q).await?,
        "iam" => iam(lookup, action, &q, t).await?,
        "ssm" => ssm(action, info.json_body.as_ref(), t),
        "secretsmanager" => secrets(lookup, action, info.json_body.as_ref(), t).await?,
        // Reading the organization names no resource.
        "organizations" if action == "DescribeOrganization" => Some(Mapping::Check(vec![])),
        _ => None,
    };
    Ok(match m {
        // A request that names none of the resources its action needs is
        // still authorized, on `*`, never waved through.
        Some(Mapping::Check(a)) if a.is_empty() => Mapping::Check(vec![auth(
            format!("{service}:{action}"),
            Resource::Any,
            Context::default(),
        )]),
        Some(m) => m,
        None => unknown("the gate does not know this action's resources"),
    })
}

/// Query-protocol parameters.
struct Params<'a>(&'a HashMap<String, String>);

impl Params<'_> {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// `Prefix.1`, `Prefix.2`, … until one is missing.
    fn list(&self, prefix: &str) -> Vec<String> {
        (1..)
            .map_while(|i| self.0.get(&format!("{prefix}.{i}")).cloned())
            .collect()
    }

    /// `Prefix.N.Key` / `Prefix.N.Value` pairs.
    fn tags(&self, prefix: &str) -> Vec<(String, String)> {
        (1..)
            .map_while(|i| {
                let k = self.0.get(&format!("{prefix}.{i}.Key"))?;
                let v = self
                    .0
                    .get(&format!("{prefix}.{i}.Value"))
                    .cloned()
                    .unwrap_or_default();
                Some((k.clone(), v))
            })
            .collect()
    }
}

/// `aws:RequestTag/K` for each tag and `aws:TagKeys` (plus `extra/K`, e.g.
/// RDS's `rds:req-tag/K`).
fn request_tags(ctx: &mut Context, tags: &[(String, String)], extra: Option<&str>) {
    for (k, v) in tags {
        ctx.set(&format!("aws:RequestTag/{k}"), v.clone());
        if let Some(prefix) = extra {
            ctx.set(&format!("{prefix}/{k}"), v.clone());
        }
    }
    ctx.set_many("aws:TagKeys", tags.iter().map(|(k, _)| k.clone()).collect());
}

fn auth(action: String, resource: Resource, ctx: Context) -> Authorization {
    Authorization {
        action,
        resource,
        ctx,
    }
}

// ---------------------------------------------------------------------------
// EC2

/// The ARN resource type of an EC2 id, from its prefix.
fn ec2_type(id: &str) -> Option<&'static str> {
    let prefix = id.split_once('-')?.0;
    Some(match prefix {
        "vpc" => "vpc",
        "subnet" => "subnet",
        "igw" => "internet-gateway",
        "rtb" => "route-table",
        "sg" => "security-group",
        "sgr" => "security-group-rule",
        "i" => "instance",
        "vol" => "volume",
        "eni" => "network-interface",
        "ami" => "image",
        "snap" => "snapshot",
        "acl" => "network-acl",
        "eipalloc" => "elastic-ip",
        "nat" => "natgateway",
        "dopt" => "dhcp-options",
        "lt" => "launch-template",
        "key" => "key-pair",
        _ => return None,
    })
}

fn ec2_arn(t: &Target, rtype: &str, id: &str) -> String {
    // Images and snapshots are named without an account: they may be shared.
    let account = if matches!(rtype, "image" | "snapshot") {
        ""
    } else {
        &t.account
    };
    format!("arn:aws:ec2:{}:{account}:{rtype}/{id}", t.region)
}

fn ec2_existing(t: &Target, id: &str) -> Option<Resource> {
    let rtype = ec2_type(id)?;
    Some(Resource::Existing {
        arn: ec2_arn(t, rtype, id),
        tags: TagSource::Ec2(id.to_owned()),
    })
}

/// `TagSpecification.N.ResourceType` with its `TagSpecification.N.Tag.M` tags.
fn tag_specifications(q: &Params<'_>) -> Vec<(String, Vec<(String, String)>)> {
    (1..)
        .map_while(|i| {
            let rtype = q.0.get(&format!("TagSpecification.{i}.ResourceType"))?;
            Some((rtype.clone(), q.tags(&format!("TagSpecification.{i}.Tag"))))
        })
        .collect()
}

async fn ec2<L: Lookup>(
    lookup: &L,
    action: &str,
    q: &Params<'_>,
    t: &Target,
) -> anyhow::Result<Option<Mapping>> {
    let iam_action = format!("ec2:{action}");
    // Describe calls support no resource-level permissions.
    if action.starts_with("Describe") {
        return Ok(Some(Mapping::Check(vec![auth(
            iam_action,
            Resource::Any,
            Context::default(),
        )])));
    }
    let specs = tag_specifications(q);
    // Resources the call creates: request tags are those of the
    // TagSpecification for that resource type.
    let mut created: Vec<&str> = Vec::new();
    // Existing resources by id.
    let mut ids: Vec<String> = Vec::new();
    // Existing resources the gate reads no tags of.
    let mut others: Vec<Resource> = Vec::new();
    let mut ctx = Context::default();
    let one = |k: &str| q.get(k).map(str::to_owned);
    match action {
        "CreateVpc" => created.push("vpc"),
        "CreateInternetGateway" => created.push("internet-gateway"),
        "CreateSubnet" => {
            created.push("subnet");
            ids.extend(one("VpcId"));
        }
        "CreateRouteTable" => {
            created.push("route-table");
            ids.extend(one("VpcId"));
        }
        "CreateSecurityGroup" => {
            created.push("security-group");
            ids.extend(one("VpcId"));
        }
        "AuthorizeSecurityGroupIngress" | "AuthorizeSecurityGroupEgress" => {
            created.push("security-group-rule");
            ids.extend(security_group(lookup, q, t).await?);
        }
        "RevokeSecurityGroupIngress" | "RevokeSecurityGroupEgress" | "DeleteSecurityGroup" => {
            ids.extend(security_group(lookup, q, t).await?);
        }
        "RunInstances" => {
            created.extend(["instance", "volume", "network-interface"]);
            ids.extend(one("ImageId"));
            ids.extend(one("SubnetId"));
            ids.extend(q.list("SecurityGroupId"));
            for name in q.list("SecurityGroup") {
                ids.extend(lookup.security_group_id(t, &name).await?);
            }
            if let Some(key) = q.get("KeyName") {
                // Requests name key pairs, ARNs use their ids; the gate does
                // not resolve one: a policy scoping key pairs sees the name.
                others.push(Resource::Existing {
                    arn: ec2_arn(t, "key-pair", key),
                    tags: TagSource::None,
                });
            }
        }
        "AttachInternetGateway" | "DetachInternetGateway" => {
            ids.extend(one("InternetGatewayId"));
            ids.extend(one("VpcId"));
        }
        "CreateRoute" | "DeleteRoute" | "ReplaceRoute" => ids.extend(one("RouteTableId")),
        "AssociateRouteTable" => {
            ids.extend(one("RouteTableId"));
            ids.extend(one("SubnetId"));
            ids.extend(one("GatewayId"));
        }
        "DisassociateRouteTable" => {
            let Some(assoc) = q.get("AssociationId") else {
                return Ok(None);
            };
            match lookup.route_table_association(t, assoc).await? {
                Some((rtb, subnet)) => {
                    ids.push(rtb);
                    ids.extend(subnet);
                }
                // No such association: moto answers NotFound, as AWS would.
                None => others.push(Resource::Existing {
                    arn: ec2_arn(t, "route-table", "*"),
                    tags: TagSource::Absent,
                }),
            }
        }
        "ModifyVpcAttribute" | "DeleteVpc" => ids.extend(one("VpcId")),
        "ModifySubnetAttribute" | "DeleteSubnet" => ids.extend(one("SubnetId")),
        "DeleteRouteTable" => ids.extend(one("RouteTableId")),
        "DeleteInternetGateway" => ids.extend(one("InternetGatewayId")),
        "StartInstances" | "StopInstances" | "TerminateInstances" | "RebootInstances" => {
            ids.extend(q.list("InstanceId"));
        }
        "CreateTags" => {
            request_tags(&mut ctx, &q.tags("Tag"), None);
            ids.extend(q.list("ResourceId"));
        }
        "DeleteTags" => {
            let keys = (1..)
                .map_while(|i| q.0.get(&format!("Tag.{i}.Key")).cloned())
                .collect();
            ctx.set_many("aws:TagKeys", keys);
            ids.extend(q.list("ResourceId"));
        }
        _ => return Ok(None),
    }
    let mut out = Vec::new();
    for rtype in &created {
        let mut c = ctx.clone();
        if let Some((_, tags)) = specs.iter().find(|(r, _)| r == rtype) {
            request_tags(&mut c, tags, None);
        }
        out.push(auth(
            iam_action.clone(),
            Resource::New(ec2_arn(t, rtype, "*")),
            c,
        ));
    }
    for id in &ids {
        let Some(resource) = ec2_existing(t, id) else {
            return Ok(Some(Mapping::Unknown {
                action: iam_action,
                why: format!("the gate does not know the resource type of {id}"),
            }));
        };
        out.push(auth(iam_action.clone(), resource, ctx.clone()));
    }
    for resource in others {
        out.push(auth(iam_action.clone(), resource, ctx.clone()));
    }
    out.extend(create_tags_on_create(action, t, &specs));
    Ok(Some(Mapping::Check(out)))
}

/// Tags given in a create call are authorized as `ec2:CreateTags` on each
/// new resource, with `ec2:CreateAction` naming the call (EC2 User Guide,
/// "Grant permission to tag resources during creation").
fn create_tags_on_create(
    action: &str,
    t: &Target,
    specs: &[(String, Vec<(String, String)>)],
) -> Vec<Authorization> {
    specs
        .iter()
        .filter(|(_, tags)| !tags.is_empty())
        .map(|(rtype, tags)| {
            let mut c = Context::default();
            request_tags(&mut c, tags, None);
            c.set("ec2:CreateAction", action);
            auth(
                "ec2:CreateTags".to_owned(),
                Resource::New(ec2_arn(t, rtype, "*")),
                c,
            )
        })
        .collect()
}

/// The security group of a call, by `GroupId` or (in the default VPC) `GroupName`.
async fn security_group<L: Lookup>(
    lookup: &L,
    q: &Params<'_>,
    t: &Target,
) -> anyhow::Result<Option<String>> {
    if let Some(id) = q.get("GroupId") {
        return Ok(Some(id.to_owned()));
    }
    match q.get("GroupName") {
        Some(name) => lookup.security_group_id(t, name).await,
        None => Ok(None),
    }
}

// ---------------------------------------------------------------------------
// RDS

fn rds_arn(t: &Target, kind: &str, name: &str) -> String {
    format!("arn:aws:rds:{}:{}:{kind}:{name}", t.region, t.account)
}

/// "If tags are specified in the create action, RDS performs additional
/// authorization on the rds:AddTagsToResource action" (RDS User Guide).
fn create_time_tagging(extra: &mut Vec<Authorization>, tags: &[(String, String)], arn: String) {
    if tags.is_empty() {
        return;
    }
    let mut c = Context::default();
    request_tags(&mut c, tags, Some("rds:req-tag"));
    extra.push(auth(
        "rds:AddTagsToResource".to_owned(),
        Resource::New(arn),
        c,
    ));
}

fn rds_existing(arn: String) -> Resource {
    Resource::Existing {
        arn,
        tags: TagSource::Rds,
    }
}

/// The default parameter and option groups RDS gives a database created
/// without them: `default.postgres16` and `default:postgres-16`.
fn rds_default_groups(engine: &str, version: &str) -> (String, String) {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("");
    // MySQL-style engines name groups after major.minor (8.0).
    let major = if engine.contains("mysql") || engine.contains("maria") || major == "5" {
        match parts.next() {
            Some(minor) => format!("{major}.{minor}"),
            None => major.to_owned(),
        }
    } else {
        major.to_owned()
    };
    (
        format!("default.{engine}{major}"),
        format!("default:{engine}-{}", major.replace('.', "-")),
    )
}

async fn rds<L: Lookup>(
    lookup: &L,
    action: &str,
    q: &Params<'_>,
    t: &Target,
) -> anyhow::Result<Option<Mapping>> {
    let iam_action = format!("rds:{action}");
    if action.starts_with("Describe") {
        return Ok(Some(Mapping::Check(vec![auth(
            iam_action,
            Resource::Any,
            Context::default(),
        )])));
    }
    // RDS lists its tag keys for the action, not per resource: the request
    // tags hold for every resource of the call.
    let mut ctx = Context::default();
    let tags = {
        let t = q.tags("Tags.Tag");
        if t.is_empty() {
            q.tags("Tags.member")
        } else {
            t
        }
    };
    let mut resources = Vec::new();
    let mut extra = Vec::new();
    match action {
        "ListTagsForResource" => {
            resources.extend(q.get("ResourceName").map(|a| rds_existing(a.to_owned())));
        }
        "AddTagsToResource" => {
            request_tags(&mut ctx, &tags, Some("rds:req-tag"));
            resources.extend(q.get("ResourceName").map(|a| rds_existing(a.to_owned())));
        }
        "RemoveTagsFromResource" => {
            let keys = {
                let k = q.list("TagKeys.member");
                if k.is_empty() {
                    q.list("TagKeys.TagKey")
                } else {
                    k
                }
            };
            ctx.set_many("aws:TagKeys", keys);
            resources.extend(q.get("ResourceName").map(|a| rds_existing(a.to_owned())));
        }
        "CreateDBSubnetGroup" => {
            request_tags(&mut ctx, &tags, Some("rds:req-tag"));
            let Some(name) = q.get("DBSubnetGroupName") else {
                return Ok(None);
            };
            let arn = rds_arn(t, "subgrp", &name.to_ascii_lowercase());
            resources.push(Resource::New(arn.clone()));
            create_time_tagging(&mut extra, &tags, arn);
        }
        "CreateDBInstance" => {
            request_tags(&mut ctx, &tags, Some("rds:req-tag"));
            let Some(id) = q.get("DBInstanceIdentifier") else {
                return Ok(None);
            };
            let arn = rds_arn(t, "db", &id.to_ascii_lowercase());
            resources.push(Resource::New(arn.clone()));
            create_time_tagging(&mut extra, &tags, arn);
            if let Some(group) = q.get("DBSubnetGroupName") {
                resources.push(rds_existing(rds_arn(
                    t,
                    "subgrp",
                    &group.to_ascii_lowercase(),
                )));
            }
            let (pg, og) = rds_default_groups(
                q.get("Engine").unwrap_or(""),
                q.get("EngineVersion").unwrap_or(""),
            );
            let pg = q.get("DBParameterGroupName").map_or(pg, str::to_owned);
            let og = q.get("OptionGroupName").map_or(og, str::to_owned);
            resources.push(rds_existing(rds_arn(t, "pg", &pg)));
            resources.push(rds_existing(rds_arn(t, "og", &og)));
            // With ManageMasterUserPassword, RDS creates the password's
            // secret with the caller's permissions (a forward access session:
            // aws:CalledVia names RDS).
            if q.get("ManageMasterUserPassword") == Some("true") {
                let secret = format!(
                    "arn:aws:secretsmanager:{}:{}:secret:rds!db-{}-{}",
                    t.region,
                    t.account,
                    uuid::Uuid::new_v4(),
                    &uuid::Uuid::new_v4().simple().to_string()[..6]
                );
                for a in ["secretsmanager:CreateSecret", "secretsmanager:TagResource"] {
                    let mut c = Context::default();
                    c.set_many("aws:CalledVia", vec!["rds.amazonaws.com".to_owned()]);
                    c.set("aws:CalledViaFirst", "rds.amazonaws.com");
                    c.set("aws:CalledViaLast", "rds.amazonaws.com");
                    c.set("aws:ViaAWSService", "true");
                    extra.push(auth(a.to_owned(), Resource::New(secret.clone()), c));
                }
            }
            // The first database of an account makes RDS's service-linked
            // role, with the caller's permissions.
            if lookup
                .role(&t.account, "AWSServiceRoleForRDS")
                .await?
                .is_none()
            {
                let mut c = Context::default();
                c.set("iam:AWSServiceName", "rds.amazonaws.com");
                extra.push(auth(
                    "iam:CreateServiceLinkedRole".to_owned(),
                    Resource::New(format!(
                        "arn:aws:iam::{}:role/aws-service-role/rds.amazonaws.com/AWSServiceRoleForRDS",
                        t.account
                    )),
                    c,
                ));
            }
        }
        "DeleteDBInstance" | "ModifyDBInstance" | "RebootDBInstance" | "StartDBInstance"
        | "StopDBInstance" => {
            let Some(id) = q.get("DBInstanceIdentifier") else {
                return Ok(None);
            };
            let db = rds_arn(t, "db", &id.to_ascii_lowercase());
            resources.push(rds_existing(db.clone()));
            if action == "ModifyDBInstance"
                && let Some(v) = q.get("ManageMasterUserPassword")
            {
                ctx.set("rds:ManageMasterUserPassword", v.to_ascii_lowercase());
            }
            // A final snapshot is a snapshot the caller creates: RDS
            // authorizes rds:CreateDBSnapshot on the database and the new
            // snapshot as well.
            if action == "DeleteDBInstance"
                && q.get("SkipFinalSnapshot") != Some("true")
                && let Some(snapshot) = q.get("FinalDBSnapshotIdentifier")
            {
                let snapshot = rds_arn(t, "snapshot", &snapshot.to_ascii_lowercase());
                for r in [rds_existing(db), Resource::New(snapshot.clone())] {
                    extra.push(auth(
                        "rds:CreateDBSnapshot".to_owned(),
                        r,
                        Context::default(),
                    ));
                }
                // Tags copied to the snapshot are tags the caller adds.
                let copied = lookup.rds_snapshot_tags(t, id).await?;
                if !copied.is_empty() {
                    let mut c = Context::default();
                    request_tags(&mut c, &copied, Some("rds:req-tag"));
                    extra.push(auth(
                        "rds:AddTagsToResource".to_owned(),
                        Resource::New(snapshot),
                        c,
                    ));
                }
            }
        }
        "DeleteDBSubnetGroup" | "ModifyDBSubnetGroup" => {
            let Some(name) = q.get("DBSubnetGroupName") else {
                return Ok(None);
            };
            resources.push(rds_existing(rds_arn(
                t,
                "subgrp",
                &name.to_ascii_lowercase(),
            )));
        }
        _ => return Ok(None),
    }
    let mut out: Vec<Authorization> = resources
        .into_iter()
        .map(|r| auth(iam_action.clone(), r, ctx.clone()))
        .collect();
    out.extend(extra);
    Ok(Some(Mapping::Check(out)))
}

// ---------------------------------------------------------------------------
// STS and IAM

async fn sts<L: Lookup>(
    lookup: &L,
    action: &str,
    q: &Params<'_>,
) -> anyhow::Result<Option<Mapping>> {
    Ok(Some(match action {
        // "No permissions are required to perform this operation" (STS API reference).
        "GetCallerIdentity" => Mapping::Always("sts:GetCallerIdentity".to_owned()),
        "DecodeAuthorizationMessage" => Mapping::Check(vec![auth(
            "sts:DecodeAuthorizationMessage".to_owned(),
            Resource::Any,
            Context::default(),
        )]),
        "AssumeRole" => {
            let Some(arn) = q.get("RoleArn") else {
                return Ok(None);
            };
            let mut ctx = Context::default();
            let tags = q.tags("Tags.member");
            if !tags.is_empty() {
                request_tags(&mut ctx, &tags, None);
            }
            let transitive = q.list("TransitiveTagKeys.member");
            if !transitive.is_empty() {
                ctx.set_many("sts:TransitiveTagKeys", transitive);
            }
            for (key, param) in [
                ("sts:RoleSessionName", "RoleSessionName"),
                ("sts:ExternalId", "ExternalId"),
                ("sts:SourceIdentity", "SourceIdentity"),
            ] {
                if let Some(v) = q.get(param) {
                    ctx.set(key, v);
                }
            }
            // The role's tags, if it is a role the gate can read.
            let role = match crate::sts::role_ref(arn) {
                Some(r) => lookup.role(&r.account, &r.name).await?,
                None => None,
            };
            let tags = role.map_or(TagSource::None, |(_, tags)| TagSource::Known(tags));
            let mut actions = vec!["sts:AssumeRole"];
            if q.get("SourceIdentity").is_some() {
                actions.push("sts:SetSourceIdentity");
            }
            if ctx.get("aws:TagKeys").is_some() || ctx.get("sts:TransitiveTagKeys").is_some() {
                actions.push("sts:TagSession");
            }
            Mapping::Check(
                actions
                    .into_iter()
                    .map(|a| {
                        auth(
                            a.to_owned(),
                            Resource::Existing {
                                arn: arn.to_owned(),
                                tags: tags.clone(),
                            },
                            ctx.clone(),
                        )
                    })
                    .collect(),
            )
        }
        _ => return Ok(None),
    }))
}

async fn iam<L: Lookup>(
    lookup: &L,
    action: &str,
    q: &Params<'_>,
    t: &Target,
) -> anyhow::Result<Option<Mapping>> {
    let iam_action = format!("iam:{action}");
    let resource = match action {
        "GetRole"
        | "GetRolePolicy"
        | "ListRolePolicies"
        | "ListAttachedRolePolicies"
        | "ListRoleTags"
        | "ListInstanceProfilesForRole" => {
            let Some(name) = q.get("RoleName") else {
                return Ok(None);
            };
            match lookup.role(&t.account, name).await? {
                Some((arn, tags)) => Resource::Existing {
                    arn,
                    tags: TagSource::Known(tags),
                },
                // No such role: the ARN without a path; IAM then answers NoSuchEntity.
                None => Resource::Existing {
                    arn: format!("arn:aws:iam::{}:role/{name}", t.account),
                    tags: TagSource::None,
                },
            }
        }
        "GetPolicy" | "GetPolicyVersion" | "ListPolicyVersions" | "ListEntitiesForPolicy" => {
            let Some(arn) = q.get("PolicyArn") else {
                return Ok(None);
            };
            Resource::Existing {
                arn: arn.to_owned(),
                tags: TagSource::None,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Mapping::Check(vec![auth(
        iam_action,
        resource,
        Context::default(),
    )])))
}

// ---------------------------------------------------------------------------
// SSM and Secrets Manager (JSON protocols)

fn ssm_parameter_arn(t: &Target, name: &str) -> String {
    if name.starts_with("arn:") {
        return name.to_owned();
    }
    let path = name.trim_start_matches('/');
    // AWS's public parameters belong to no account.
    let account = if path.starts_with("aws/") {
        ""
    } else {
        &t.account
    };
    format!("arn:aws:ssm:{}:{account}:parameter/{path}", t.region)
}

fn ssm(action: &str, body: Option<&serde_json::Value>, t: &Target) -> Option<Mapping> {
    let iam_action = format!("ssm:{action}");
    let field = |k: &str| body.and_then(|b| b.get(k));
    let names: Vec<String> = match action {
        "GetParameter" | "GetParameterHistory" => {
            vec![field("Name")?.as_str()?.to_owned()]
        }
        "GetParametersByPath" => vec![field("Path")?.as_str()?.to_owned()],
        "GetParameters" => field("Names")?
            .as_array()?
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        "DescribeParameters" => {
            return Some(Mapping::Check(vec![auth(
                iam_action,
                Resource::Any,
                Context::default(),
            )]));
        }
        _ => return None,
    };
    Some(Mapping::Check(
        names
            .iter()
            .map(|n| {
                auth(
                    iam_action.clone(),
                    Resource::Existing {
                        arn: ssm_parameter_arn(t, n),
                        tags: TagSource::None,
                    },
                    Context::default(),
                )
            })
            .collect(),
    ))
}

async fn secrets<L: Lookup>(
    lookup: &L,
    action: &str,
    body: Option<&serde_json::Value>,
    t: &Target,
) -> anyhow::Result<Option<Mapping>> {
    let iam_action = format!("secretsmanager:{action}");
    let field = |k: &str| body.and_then(|b| b.get(k)).and_then(|v| v.as_str());
    let resource = match action {
        "ListSecrets" | "GetRandomPassword" => Resource::Any,
        "GetSecretValue" | "DescribeSecret" | "DeleteSecret" | "PutSecretValue"
        | "UpdateSecret" | "TagResource" | "UntagResource" => {
            let Some(id) = field("SecretId") else {
                return Ok(None);
            };
            let arn = match lookup.secret_arn(t, id).await? {
                Some(arn) => arn,
                // No such secret: named as AWS would, so policies still match by name.
                None => format!(
                    "arn:aws:secretsmanager:{}:{}:secret:{id}",
                    t.region, t.account
                ),
            };
            Resource::Existing {
                arn,
                tags: TagSource::None,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(Mapping::Check(vec![auth(
        iam_action,
        resource,
        Context::default(),
    )])))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lookups answered from fixed data.
    #[derive(Default)]
    struct Fake {
        roles: HashMap<String, (String, Vec<(String, String)>)>,
    }

    impl Lookup for Fake {
        async fn role(
            &self,
            _account: &str,
            name: &str,
        ) -> anyhow::Result<Option<(String, Vec<(String, String)>)>> {
            Ok(self.roles.get(name).cloned())
        }
        async fn route_table_association(
            &self,
            _t: &Target,
            id: &str,
        ) -> anyhow::Result<Option<(String, Option<String>)>> {
            Ok((id == "rtbassoc-1").then(|| ("rtb-1".to_owned(), Some("subnet-1".to_owned()))))
        }
        async fn security_group_id(
            &self,
            _t: &Target,
            name: &str,
        ) -> anyhow::Result<Option<String>> {
            Ok((name == "web").then(|| "sg-9".to_owned()))
        }
        async fn secret_arn(&self, _t: &Target, _id: &str) -> anyhow::Result<Option<String>> {
            Ok(None)
        }
        async fn rds_snapshot_tags(
            &self,
            _t: &Target,
            db_instance: &str,
        ) -> anyhow::Result<Vec<(String, String)>> {
            Ok(if db_instance == "xrole-db" {
                vec![("xrole:managed-by".to_owned(), "xrole".to_owned())]
            } else {
                Vec::new()
            })
        }
    }

    const T: fn() -> Target = || Target {
        account: "111122223333".into(),
        region: "us-east-1".into(),
    };

    async fn mapped(service: &str, pairs: &[(&str, &str)]) -> Mapping {
        let info = RequestInfo {
            service: Some(service.to_owned()),
            params: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..RequestInfo::default()
        };
        let action = info.params.get("Action").cloned().unwrap_or_default();
        map(&Fake::default(), &info, &action, &T()).await.unwrap()
    }

    /// (action, resource ARN, condition keys of the authorization).
    type Check = (String, String, Vec<(String, Vec<String>)>);

    fn checks(m: Mapping) -> Vec<Check> {
        let Mapping::Check(a) = m else {
            panic!("{m:?}")
        };
        a.into_iter()
            .map(|a| {
                let keys = a
                    .ctx
                    .entries()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_vec()))
                    .collect();
                (a.action, a.resource.arn().to_owned(), keys)
            })
            .collect()
    }

    #[tokio::test]
    async fn create_subnet_new_subnet_existing_vpc_and_tags_on_create() {
        let c = checks(
            mapped(
                "ec2",
                &[
                    ("Action", "CreateSubnet"),
                    ("VpcId", "vpc-1"),
                    ("TagSpecification.1.ResourceType", "subnet"),
                    ("TagSpecification.1.Tag.1.Key", "xrole:managed-by"),
                    ("TagSpecification.1.Tag.1.Value", "xrole"),
                ],
            )
            .await,
        );
        let tags = vec![
            (
                "aws:RequestTag/xrole:managed-by".to_owned(),
                vec!["xrole".to_owned()],
            ),
            (
                "aws:TagKeys".to_owned(),
                vec!["xrole:managed-by".to_owned()],
            ),
        ];
        assert_eq!(
            c,
            vec![
                (
                    "ec2:CreateSubnet".to_owned(),
                    "arn:aws:ec2:us-east-1:111122223333:subnet/*".to_owned(),
                    tags.clone()
                ),
                (
                    "ec2:CreateSubnet".to_owned(),
                    "arn:aws:ec2:us-east-1:111122223333:vpc/vpc-1".to_owned(),
                    vec![]
                ),
                (
                    "ec2:CreateTags".to_owned(),
                    "arn:aws:ec2:us-east-1:111122223333:subnet/*".to_owned(),
                    [
                        tags.clone(),
                        vec![(
                            "ec2:CreateAction".to_owned(),
                            vec!["CreateSubnet".to_owned()]
                        )]
                    ]
                    .concat()
                    .into_iter()
                    .collect::<std::collections::BTreeMap<_, _>>()
                    .into_iter()
                    .collect()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn run_instances_touches_every_resource() {
        let c = checks(
            mapped(
                "ec2",
                &[
                    ("Action", "RunInstances"),
                    ("ImageId", "ami-1"),
                    ("SubnetId", "subnet-1"),
                    ("SecurityGroupId.1", "sg-1"),
                    ("SecurityGroupId.2", "sg-2"),
                ],
            )
            .await,
        );
        let arns: Vec<&str> = c.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(
            arns,
            [
                "arn:aws:ec2:us-east-1:111122223333:instance/*",
                "arn:aws:ec2:us-east-1:111122223333:volume/*",
                "arn:aws:ec2:us-east-1:111122223333:network-interface/*",
                "arn:aws:ec2:us-east-1::image/ami-1",
                "arn:aws:ec2:us-east-1:111122223333:subnet/subnet-1",
                "arn:aws:ec2:us-east-1:111122223333:security-group/sg-1",
                "arn:aws:ec2:us-east-1:111122223333:security-group/sg-2",
            ]
        );
        // Without tags, no CreateTags and no request tags.
        assert!(
            c.iter()
                .all(|(a, _, k)| a == "ec2:RunInstances" && k.is_empty())
        );
    }

    #[tokio::test]
    async fn lookups_and_unknowns() {
        let c = checks(
            mapped(
                "ec2",
                &[
                    ("Action", "DisassociateRouteTable"),
                    ("AssociationId", "rtbassoc-1"),
                ],
            )
            .await,
        );
        assert_eq!(c.len(), 2);
        assert!(c[0].1.ends_with(":route-table/rtb-1") && c[1].1.ends_with(":subnet/subnet-1"));
        let gone = checks(
            mapped(
                "ec2",
                &[
                    ("Action", "DisassociateRouteTable"),
                    ("AssociationId", "rtbassoc-9"),
                ],
            )
            .await,
        );
        assert_eq!(gone.len(), 1);
        assert!(gone[0].1.ends_with(":route-table/*"));
        let c = checks(
            mapped(
                "ec2",
                &[("Action", "DeleteSecurityGroup"), ("GroupName", "web")],
            )
            .await,
        );
        assert!(c[0].1.ends_with(":security-group/sg-9"));
        // Without the resource it needs, the action is still authorized, on `*`.
        let c = checks(mapped("ec2", &[("Action", "DeleteVpc")]).await);
        assert_eq!(
            c,
            vec![("ec2:DeleteVpc".to_owned(), "*".to_owned(), vec![])]
        );
        assert!(matches!(
            mapped("ec2", &[("Action", "CreateVpcPeeringConnection")]).await,
            Mapping::Unknown { .. }
        ));
        assert!(matches!(
            mapped("ec2", &[("Action", "DeleteVpc"), ("VpcId", "weird-1")]).await,
            Mapping::Unknown { .. }
        ));
        assert!(matches!(
            mapped("cloudformation", &[("Action", "CreateStack")]).await,
            Mapping::Unknown { .. }
        ));
        assert!(matches!(
            mapped("sts", &[("Action", "GetCallerIdentity")]).await,
            Mapping::Always(_)
        ));
        let d = checks(mapped("ec2", &[("Action", "DescribeVpcs")]).await);
        assert_eq!(d[0].1, "*");
    }

    #[tokio::test]
    async fn rds_create_db_instance() {
        let c = checks(
            mapped(
                "rds",
                &[
                    ("Action", "CreateDBInstance"),
                    ("DBInstanceIdentifier", "xrole-app-db"),
                    ("DBSubnetGroupName", "xrole-app-subnets"),
                    ("Engine", "postgres"),
                    ("EngineVersion", "16.3"),
                    ("ManageMasterUserPassword", "true"),
                    ("Tags.Tag.1.Key", "xrole:managed-by"),
                    ("Tags.Tag.1.Value", "xrole"),
                ],
            )
            .await,
        );
        let arns: Vec<&str> = c.iter().map(|(_, r, _)| r.as_str()).collect();
        assert_eq!(
            arns[..4],
            [
                "arn:aws:rds:us-east-1:111122223333:db:xrole-app-db",
                "arn:aws:rds:us-east-1:111122223333:subgrp:xrole-app-subnets",
                "arn:aws:rds:us-east-1:111122223333:pg:default.postgres16",
                "arn:aws:rds:us-east-1:111122223333:og:default:postgres-16",
            ]
        );
        // The request tags hold for every RDS resource of the call.
        assert!(c[..4].iter().all(|(_, _, k)| {
            k.iter()
                .any(|(k, v)| k == "aws:RequestTag/xrole:managed-by" && v == &["xrole"])
        }));
        // Tags given at create: RDS also checks rds:AddTagsToResource.
        assert_eq!(c[4].0, "rds:AddTagsToResource");
        assert_eq!(c[4].1, "arn:aws:rds:us-east-1:111122223333:db:xrole-app-db");
        assert!(
            c[4].2
                .iter()
                .any(|(k, v)| k == "aws:RequestTag/xrole:managed-by" && v == &["xrole"])
        );
        assert_eq!(c[5].0, "secretsmanager:CreateSecret");
        assert!(c[5].1.contains(":secret:rds!db-"));
        assert!(c[5].2.contains(&(
            "aws:CalledVia".to_owned(),
            vec!["rds.amazonaws.com".to_owned()]
        )));
        assert_eq!(c[6].0, "secretsmanager:TagResource");
        // The fake account has no RDS service-linked role yet.
        assert_eq!(c[7].0, "iam:CreateServiceLinkedRole");
        assert_eq!(rds_default_groups("mysql", "8.0.35").0, "default.mysql8.0");
        assert_eq!(rds_default_groups("mysql", "8.0.35").1, "default:mysql-8-0");
    }

    #[tokio::test]
    async fn rds_delete_with_a_final_snapshot_creates_one() {
        let c = checks(
            mapped(
                "rds",
                &[
                    ("Action", "DeleteDBInstance"),
                    ("DBInstanceIdentifier", "xrole-db"),
                    ("SkipFinalSnapshot", "false"),
                    ("FinalDBSnapshotIdentifier", "xrole-db-final"),
                ],
            )
            .await,
        );
        let got: Vec<(&str, &str)> = c.iter().map(|(a, r, _)| (a.as_str(), r.as_str())).collect();
        assert_eq!(
            got,
            [
                (
                    "rds:DeleteDBInstance",
                    "arn:aws:rds:us-east-1:111122223333:db:xrole-db"
                ),
                (
                    "rds:CreateDBSnapshot",
                    "arn:aws:rds:us-east-1:111122223333:db:xrole-db"
                ),
                (
                    "rds:CreateDBSnapshot",
                    "arn:aws:rds:us-east-1:111122223333:snapshot:xrole-db-final"
                ),
                (
                    "rds:AddTagsToResource",
                    "arn:aws:rds:us-east-1:111122223333:snapshot:xrole-db-final"
                ),
            ]
        );
        assert!(
            c[3].2
                .iter()
                .any(|(k, v)| k == "aws:RequestTag/xrole:managed-by" && v == &["xrole"])
        );
        // Without one: the delete alone.
        let c = checks(
            mapped(
                "rds",
                &[
                    ("Action", "DeleteDBInstance"),
                    ("DBInstanceIdentifier", "xrole-db"),
                    ("SkipFinalSnapshot", "true"),
                ],
            )
            .await,
        );
        assert_eq!(c.len(), 1);
        let c = checks(
            mapped(
                "rds",
                &[
                    ("Action", "ModifyDBInstance"),
                    ("DBInstanceIdentifier", "xrole-db"),
                    ("ManageMasterUserPassword", "false"),
                ],
            )
            .await,
        );
        assert!(c[0].2.contains(&(
            "rds:ManageMasterUserPassword".to_owned(),
            vec!["false".to_owned()]
        )));
    }

    #[test]
    fn ssm_parameters() {
        let t = T();
        assert_eq!(
            ssm_parameter_arn(
                &t,
                "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
            ),
            "arn:aws:ssm:us-east-1::parameter/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
        );
        assert_eq!(
            ssm_parameter_arn(&t, "app/db"),
            "arn:aws:ssm:us-east-1:111122223333:parameter/app/db"
        );
        let body = serde_json::json!({"Names": ["/a", "b"]});
        let Some(Mapping::Check(a)) = ssm("GetParameters", Some(&body), &t) else {
            panic!()
        };
        assert_eq!(a.len(), 2);
        assert!(ssm("PutParameter", Some(&body), &t).is_none());
    }
}
