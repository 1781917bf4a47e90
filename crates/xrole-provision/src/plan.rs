//! What to build: plans as users write them, and [`ValidPlan`], the only
//! thing the executor accepts.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::cidr::{CidrBlock, Ipv4Cidr, MAX_PREFIX};
use crate::error::{Error, PlanProblem};

/// The SSM parameter holding the latest Amazon Linux 2023 AMI for x86_64.
pub const AMAZON_LINUX_2023_X86_64: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64";
/// The SSM parameter holding the latest Amazon Linux 2023 AMI for arm64.
pub const AMAZON_LINUX_2023_ARM64: &str =
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64";

/// A whole environment: one VPC, and instances and databases inside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentPlan {
    /// A short name (1-24 characters of `[a-z0-9-]`, starting with a letter)
    /// used in `Name` tags and resource names.
    pub name: String,
    /// The network.
    pub vpc: VpcPlan,
    /// EC2 instances.
    #[serde(default)]
    pub instances: Vec<InstancePlan>,
    /// RDS instances.
    #[serde(default)]
    pub databases: Vec<DatabasePlan>,
}

/// A VPC with DNS support and hostnames on, one public and one private subnet
/// per availability zone, an internet gateway and a public route table with a
/// default route to it, and security groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VpcPlan {
    /// The VPC's block (private, /16 to /28).
    pub cidr: CidrBlock,
    /// Availability zones, such as `eu-west-1a`, all in the session's region.
    pub availability_zones: Vec<String>,
    /// The subnets' prefix length. By default the VPC block is split evenly
    /// into the smallest power of two that holds all subnets.
    #[serde(default)]
    pub subnet_prefix: Option<u8>,
    /// Security groups; instances and databases refer to them by name.
    #[serde(default)]
    pub security_groups: Vec<SecurityGroupPlan>,
}

/// A security group with explicit ingress rules (egress stays AWS's default,
/// all outbound).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupPlan {
    /// The name other plans refer to (1-32 characters of `[a-z0-9-]`).
    pub name: String,
    /// A description (ASCII, at most 255 characters).
    pub description: String,
    /// Inbound rules.
    #[serde(default)]
    pub ingress: Vec<IngressRule>,
}

/// One inbound rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngressRule {
    /// The protocol.
    pub protocol: Protocol,
    /// First port (TCP/UDP only).
    #[serde(default)]
    pub from_port: u16,
    /// Last port (TCP/UDP only).
    #[serde(default)]
    pub to_port: u16,
    /// Where traffic may come from.
    pub source: IngressSource,
}

/// A rule's protocol. `Icmp` and `All` cover every type and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP, every type.
    Icmp,
    /// Every protocol.
    All,
}

/// A rule's source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IngressSource {
    /// An IPv4 range, such as `0.0.0.0/0`.
    Cidr(Ipv4Cidr),
    /// Another security group of the same plan, by name.
    SecurityGroup(String),
}

/// Which subnets an instance goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetTier {
    /// Subnets routed to the internet gateway.
    Public,
    /// Subnets without a route to the internet.
    Private,
}

impl SubnetTier {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SubnetTier::Public => "public",
            SubnetTier::Private => "private",
        }
    }
}

/// Where an instance's image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmiSource {
    /// An AMI id, such as `ami-0abcdef1234567890`.
    Id(String),
    /// A public SSM parameter holding an AMI id, such as
    /// [`AMAZON_LINUX_2023_X86_64`]; read once per job and journaled.
    SsmParameter(String),
}

/// EC2 instances, always with IMDSv2 required and an encrypted root volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancePlan {
    /// A name (1-24 characters of `[a-z0-9-]`).
    pub name: String,
    /// The image.
    pub ami: AmiSource,
    /// Such as `t3.micro`.
    pub instance_type: String,
    /// Public or private subnets; instance `i` goes to availability zone
    /// `i mod n`.
    pub subnet_tier: SubnetTier,
    /// Security groups of the plan, by name (at least one).
    pub security_groups: Vec<String>,
    /// How many (1-10).
    #[serde(default = "one")]
    pub count: u32,
    /// Root volume size in GiB; by default the image's.
    #[serde(default)]
    pub root_volume_gib: Option<i32>,
    /// User data (at most 12 KiB before base64).
    #[serde(default)]
    pub user_data: Option<String>,
}

fn one() -> u32 {
    1
}

/// A database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// MySQL.
    Mysql,
}

impl Engine {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Mysql => "mysql",
        }
    }
}

/// An RDS instance in the VPC's private subnets, with its master password
/// managed by RDS in the customer's Secrets Manager
/// (`ManageMasterUserPassword`), storage encrypted, never publicly accessible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabasePlan {
    /// A name (1-20 characters of `[a-z0-9-]`).
    pub name: String,
    /// The engine.
    pub engine: Engine,
    /// Such as `16.4`.
    pub engine_version: String,
    /// Such as `db.t3.micro`.
    pub instance_class: String,
    /// Storage in GiB (20-65536).
    pub allocated_storage_gib: i32,
    /// Standby in a second zone.
    #[serde(default)]
    pub multi_az: bool,
    /// Security groups of the plan, by name (at least one).
    pub security_groups: Vec<String>,
    /// The master user name (letters, digits, `_`; starts with a letter; at most 16).
    pub master_username: String,
    /// Deletion protection (on unless the plan says `false`): nothing but
    /// [`Executor::teardown`](crate::Executor::teardown), which lifts it
    /// first, deletes the database.
    #[serde(default = "protected")]
    pub deletion_protection: bool,
}

fn protected() -> bool {
    true
}

/// A plan that passed [`EnvironmentPlan::validate`]; the only input the
/// executor takes, so nothing unchecked reaches AWS.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPlan {
    plan: EnvironmentPlan,
    public_subnets: Vec<CidrBlock>,
    private_subnets: Vec<CidrBlock>,
}

impl ValidPlan {
    /// The plan.
    pub fn plan(&self) -> &EnvironmentPlan {
        &self.plan
    }

    /// The public subnets' blocks, one per availability zone.
    pub fn public_subnets(&self) -> &[CidrBlock] {
        &self.public_subnets
    }

    /// The private subnets' blocks, one per availability zone.
    pub fn private_subnets(&self) -> &[CidrBlock] {
        &self.private_subnets
    }
}

#[derive(Default)]
struct Problems(Vec<PlanProblem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(PlanProblem {
            field: field.into(),
            reason: reason.into(),
        });
    }
}

fn is_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn name_rule(max: usize) -> String {
    format!(
        "must be 1-{max} characters of [a-z0-9-], start with a letter, and have no `--` or trailing `-`"
    )
}

fn is_az(s: &str) -> bool {
    // Such as us-east-1a, eu-central-2b, us-gov-west-1a.
    let mut chars = s.chars();
    let Some(last) = chars.next_back() else {
        return false;
    };
    let body = chars.as_str();
    let parts: Vec<&str> = body.split('-').collect();
    last.is_ascii_lowercase()
        && parts.len() >= 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric()))
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

fn is_instance_type(s: &str, prefix: &str) -> bool {
    let Some(rest) = s.strip_prefix(prefix) else {
        return false;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

impl EnvironmentPlan {
    /// Checks every field and computes the subnets; reports all problems at
    /// once, each naming its field.
    ///
    /// ```
    /// use xrole_provision::{EnvironmentPlan, Error};
    /// let plan: EnvironmentPlan = serde_json::from_str(r#"{
    ///   "name": "demo",
    ///   "vpc": { "cidr": "10.0.0.0/16", "availability_zones": ["us-east-1a"] },
    ///   "instances": [{ "name": "web", "ami": {"id": "ami-1"}, "instance_type": "t3.micro",
    ///                   "subnet_tier": "public", "security_groups": ["missing"] }]
    /// }"#).unwrap();
    /// let Err(Error::InvalidPlan { problems }) = plan.validate() else { panic!() };
    /// let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    /// assert_eq!(fields, ["instances[0].ami", "instances[0].security_groups[0]"]);
    /// ```
    pub fn validate(self) -> Result<ValidPlan, Error> {
        let mut p = Problems::default();
        if !is_name(&self.name, 24) {
            p.add("name", name_rule(24));
        }

        // Network.
        let vpc = &self.vpc;
        let zones = vpc.availability_zones.len();
        if zones == 0 || zones > 6 {
            p.add(
                "vpc.availability_zones",
                "must list 1 to 6 availability zones",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, az) in vpc.availability_zones.iter().enumerate() {
            if !is_az(az) {
                p.add(
                    format!("vpc.availability_zones[{i}]"),
                    format!("`{az}` is not an availability zone name such as us-east-1a"),
                );
            } else if !seen.insert(az) {
                p.add(
                    format!("vpc.availability_zones[{i}]"),
                    format!("`{az}` is listed twice"),
                );
            }
        }
        let needed_bits = (2 * zones.max(1)).next_power_of_two().trailing_zeros() as u8;
        let min_prefix = vpc.cidr.prefix() + needed_bits;
        let prefix = vpc.subnet_prefix.unwrap_or(min_prefix);
        let (mut public_subnets, mut private_subnets) = (vec![], vec![]);
        if prefix < min_prefix || prefix > MAX_PREFIX {
            p.add(
                if vpc.subnet_prefix.is_some() { "vpc.subnet_prefix" } else { "vpc.cidr" },
                format!(
                    "{} subnets of /{prefix} do not fit in {} (subnets must be /{min_prefix} to /{MAX_PREFIX})",
                    2 * zones,
                    vpc.cidr
                ),
            );
        } else if zones > 0 && zones <= 6 {
            for i in 0..zones as u32 {
                public_subnets.extend(vpc.cidr.subnet(prefix, i));
                private_subnets.extend(vpc.cidr.subnet(prefix, zones as u32 + i));
            }
        }

        let mut groups = BTreeSet::new();
        for (i, sg) in vpc.security_groups.iter().enumerate() {
            let f = format!("vpc.security_groups[{i}]");
            if !is_name(&sg.name, 32) {
                p.add(format!("{f}.name"), name_rule(32));
            } else if !groups.insert(sg.name.as_str()) {
                p.add(format!("{f}.name"), format!("`{}` is used twice", sg.name));
            }
            if sg.description.is_empty() || sg.description.len() > 255 || !sg.description.is_ascii()
            {
                p.add(format!("{f}.description"), "must be 1-255 ASCII characters");
            }
        }
        let mut refs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (i, sg) in vpc.security_groups.iter().enumerate() {
            for (j, rule) in sg.ingress.iter().enumerate() {
                let f = format!("vpc.security_groups[{i}].ingress[{j}]");
                match rule.protocol {
                    Protocol::Tcp | Protocol::Udp => {
                        if rule.from_port > rule.to_port {
                            p.add(format!("{f}.from_port"), "must not be greater than to_port");
                        }
                    }
                    Protocol::Icmp | Protocol::All => {
                        if rule.from_port != 0 || rule.to_port != 0 {
                            p.add(
                                format!("{f}.from_port"),
                                "ports apply to tcp and udp only; leave them out",
                            );
                        }
                    }
                }
                if let IngressSource::SecurityGroup(other) = &rule.source {
                    if !groups.contains(other.as_str()) {
                        p.add(
                            format!("{f}.source"),
                            format!("no security group named `{other}` in this plan"),
                        );
                    } else if other != &sg.name {
                        refs.entry(sg.name.as_str())
                            .or_default()
                            .insert(other.as_str());
                    }
                }
            }
        }
        if let Some(cycle) = find_cycle(&refs) {
            p.add(
                "vpc.security_groups",
                format!("rules reference each other in a cycle ({cycle}), which could never be torn down"),
            );
        }

        // Instances.
        let mut names = BTreeSet::new();
        for (i, inst) in self.instances.iter().enumerate() {
            let f = format!("instances[{i}]");
            if !is_name(&inst.name, 24) {
                p.add(format!("{f}.name"), name_rule(24));
            } else if !names.insert(inst.name.as_str()) {
                p.add(
                    format!("{f}.name"),
                    format!("`{}` is used twice", inst.name),
                );
            }
            match &inst.ami {
                AmiSource::Id(id) => {
                    let hex = id.strip_prefix("ami-").unwrap_or("");
                    if !(8..=17).contains(&hex.len()) || !hex.chars().all(|c| c.is_ascii_hexdigit())
                    {
                        p.add(
                            format!("{f}.ami"),
                            format!("`{id}` is not an AMI id (ami- and 8-17 hex digits)"),
                        );
                    }
                }
                AmiSource::SsmParameter(name) => {
                    if !name.starts_with("/aws/service/") || name.len() > 2048 {
                        p.add(
                            format!("{f}.ami"),
                            "must be a public AWS parameter under /aws/service/",
                        );
                    }
                }
            }
            if !is_instance_type(&inst.instance_type, "") {
                p.add(
                    format!("{f}.instance_type"),
                    format!(
                        "`{}` is not an instance type such as t3.micro",
                        inst.instance_type
                    ),
                );
            }
            if inst.count == 0 || inst.count > 10 {
                p.add(format!("{f}.count"), "must be 1 to 10");
            }
            check_groups(&mut p, &f, &inst.security_groups, &groups);
            if inst
                .root_volume_gib
                .is_some_and(|g| !(1..=16384).contains(&g))
            {
                p.add(format!("{f}.root_volume_gib"), "must be 1 to 16384");
            }
            if inst.user_data.as_ref().is_some_and(|u| u.len() > 12 * 1024) {
                p.add(
                    format!("{f}.user_data"),
                    "must be at most 12 KiB (16 KiB once base64-encoded)",
                );
            }
        }

        // Databases.
        let mut names = BTreeSet::new();
        for (i, db) in self.databases.iter().enumerate() {
            let f = format!("databases[{i}]");
            if !is_name(&db.name, 20) {
                p.add(format!("{f}.name"), name_rule(20));
            } else if !names.insert(db.name.as_str()) {
                p.add(format!("{f}.name"), format!("`{}` is used twice", db.name));
            }
            let v = &db.engine_version;
            if v.is_empty()
                || v.len() > 32
                || !v
                    .split('.')
                    .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
            {
                p.add(
                    format!("{f}.engine_version"),
                    format!("`{v}` is not a version such as 16.4"),
                );
            }
            if !is_instance_type(&db.instance_class, "db.") {
                p.add(
                    format!("{f}.instance_class"),
                    format!("`{}` is not a class such as db.t3.micro", db.instance_class),
                );
            }
            if !(20..=65536).contains(&db.allocated_storage_gib) {
                p.add(format!("{f}.allocated_storage_gib"), "must be 20 to 65536");
            }
            let u = &db.master_username;
            if u.is_empty()
                || u.len() > 16
                || !u.starts_with(|c: char| c.is_ascii_alphabetic())
                || !u.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || ["rdsadmin", "admin", "root", "postgres"]
                    .contains(&u.to_ascii_lowercase().as_str())
            {
                p.add(format!("{f}.master_username"), "must be 1-16 letters, digits or _, start with a letter, and not be a reserved name");
            }
            check_groups(&mut p, &f, &db.security_groups, &groups);
            if zones < 2 {
                p.add("vpc.availability_zones", format!("{f} needs private subnets in at least 2 availability zones (an RDS subnet group requirement)"));
            }
        }

        if p.0.is_empty() {
            Ok(ValidPlan {
                plan: self,
                public_subnets,
                private_subnets,
            })
        } else {
            Err(Error::InvalidPlan { problems: p.0 })
        }
    }
}

fn check_groups(p: &mut Problems, f: &str, wanted: &[String], groups: &BTreeSet<&str>) {
    if wanted.is_empty() {
        p.add(
            format!("{f}.security_groups"),
            "must name at least one security group of the plan",
        );
    }
    for (j, g) in wanted.iter().enumerate() {
        if !groups.contains(g.as_str()) {
            p.add(
                format!("{f}.security_groups[{j}]"),
                format!("no security group named `{g}` in this plan"),
            );
        }
    }
}

/// A cycle in "group A has a rule whose source is group B", as `a -> b -> a`.
fn find_cycle<'a>(refs: &BTreeMap<&'a str, BTreeSet<&'a str>>) -> Option<String> {
    fn visit<'a>(
        n: &'a str,
        refs: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<String> {
        if let Some(pos) = path.iter().position(|x| *x == n) {
            let mut c: Vec<&str> = path[pos..].to_vec();
            c.push(n);
            return Some(c.join(" -> "));
        }
        if done.contains(n) {
            return None;
        }
        path.push(n);
        for m in refs.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, refs, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n);
        None
    }
    let mut done = BTreeSet::new();
    for n in refs.keys() {
        if let Some(c) = visit(n, refs, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> EnvironmentPlan {
        serde_json::from_value(serde_json::json!({
            "name": "demo",
            "vpc": {
                "cidr": "10.0.0.0/16",
                "availability_zones": ["us-east-1a", "us-east-1b"],
                "security_groups": [
                    {"name": "app", "description": "app", "ingress": [
                        {"protocol": "tcp", "from_port": 443, "to_port": 443, "source": {"cidr": "0.0.0.0/0"}}]},
                    {"name": "db", "description": "db", "ingress": [
                        {"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source": {"security_group": "app"}}]}
                ]
            },
            "instances": [{"name": "web", "ami": {"ssm_parameter": AMAZON_LINUX_2023_X86_64},
                "instance_type": "t3.micro", "subnet_tier": "public", "security_groups": ["app"]}],
            "databases": [{"name": "main", "engine": "postgres", "engine_version": "16.4",
                "instance_class": "db.t3.micro", "allocated_storage_gib": 20,
                "security_groups": ["db"], "master_username": "xrole"}]
        }))
        .unwrap()
    }

    fn fields(plan: EnvironmentPlan) -> Vec<String> {
        match plan.validate() {
            Err(Error::InvalidPlan { problems }) => problems.into_iter().map(|p| p.field).collect(),
            other => panic!("expected InvalidPlan, got {other:?}"),
        }
    }

    #[test]
    fn a_good_plan_gets_its_subnets_carved() {
        let v = plan().validate().unwrap();
        let s = |v: &[CidrBlock]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(s(v.public_subnets()), ["10.0.0.0/18", "10.0.64.0/18"]);
        assert_eq!(s(v.private_subnets()), ["10.0.128.0/18", "10.0.192.0/18"]);
    }

    #[test]
    fn explicit_subnet_prefix_is_used_and_checked() {
        let mut p = plan();
        p.vpc.subnet_prefix = Some(24);
        let v = p.clone().validate().unwrap();
        assert_eq!(v.private_subnets()[1].to_string(), "10.0.3.0/24");
        p.vpc.subnet_prefix = Some(17);
        assert_eq!(fields(p.clone()), ["vpc.subnet_prefix"]);
        p.vpc.subnet_prefix = Some(29);
        assert_eq!(fields(p), ["vpc.subnet_prefix"]);
    }

    #[test]
    fn a_tiny_vpc_cannot_hold_the_subnets() {
        let mut p = plan();
        p.vpc.cidr = "10.0.0.0/27".parse().unwrap();
        assert_eq!(fields(p), ["vpc.cidr"]);
    }

    #[test]
    fn every_bad_field_is_named() {
        let mut p = plan();
        p.name = "Demo".into();
        p.vpc.availability_zones.push("us-east-1a".into());
        p.vpc.security_groups[1].ingress[0].source = IngressSource::SecurityGroup("nope".into());
        p.instances[0].instance_type = "big".into();
        p.instances[0].count = 0;
        p.databases[0].engine_version = "latest".into();
        p.databases[0].allocated_storage_gib = 5;
        p.databases[0].master_username = "admin".into();
        p.databases[0].security_groups.clear();
        assert_eq!(
            fields(p),
            [
                "name",
                "vpc.availability_zones[2]",
                "vpc.security_groups[1].ingress[0].source",
                "instances[0].instance_type",
                "instances[0].count",
                "databases[0].engine_version",
                "databases[0].allocated_storage_gib",
                "databases[0].master_username",
                "databases[0].security_groups",
            ]
        );
    }

    #[test]
    fn zones_ending_in_any_character_are_judged_not_panicked_on() {
        for zone in ["us-east-1é", "us-east-1\u{1F600}", "é", "us-east-\u{e9}a"] {
            let mut p = plan();
            p.vpc.availability_zones[1] = zone.into();
            assert_eq!(fields(p), ["vpc.availability_zones[1]"], "{zone}");
        }
        assert!(is_az("us-gov-west-1a") && !is_az("") && !is_az("a"));
    }

    #[test]
    fn a_database_needs_two_zones() {
        let mut p = plan();
        p.vpc.availability_zones.truncate(1);
        assert_eq!(fields(p), ["vpc.availability_zones"]);
    }

    #[test]
    fn security_group_cycles_are_rejected_but_self_references_are_fine() {
        let mut p = plan();
        p.vpc.security_groups[0].ingress.push(IngressRule {
            protocol: Protocol::All,
            from_port: 0,
            to_port: 0,
            source: IngressSource::SecurityGroup("app".into()),
        });
        assert!(p.clone().validate().is_ok());
        p.vpc.security_groups[0].ingress.push(IngressRule {
            protocol: Protocol::Tcp,
            from_port: 1,
            to_port: 2,
            source: IngressSource::SecurityGroup("db".into()),
        });
        assert_eq!(fields(p), ["vpc.security_groups"]);
    }

    #[test]
    fn a_public_vpc_block_is_rejected_when_parsing() {
        let mut v = serde_json::to_value(plan()).unwrap();
        v["vpc"]["cidr"] = "8.8.0.0/16".into();
        let e = serde_json::from_value::<EnvironmentPlan>(v).unwrap_err();
        assert!(e.to_string().contains("RFC 1918"), "{e}");
    }
}
