//! Shared set-up: moto behind the testkit gate, a customer account with the
//! xrole role, a broker session into it, and helpers to inspect the account.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use aws_types::SdkConfig;
use aws_types::region::Region;
use xrole_assume::{AssumeSpec, Broker, ExternalId, RoleArn, SessionName};
use xrole_provision::{
    EnvironmentPlan, Error, Executor, ExecutorOptions, InMemoryJournal, JobId, JobScope,
    JournalEntry, StepJournal, StepKey, ValidPlan,
};
use xrole_testkit::{AccessLevel, Aws, CustomerAccount};

pub struct World {
    pub aws: Aws,
    pub customer: CustomerAccount,
    /// The customer session from the broker (AssumeRole with External ID, via the gate).
    pub session: SdkConfig,
    pub broker: Broker,
    /// The customer's role and its External ID.
    pub role: RoleArn,
    pub external_id: ExternalId,
}

pub async fn world() -> World {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let external_id = ExternalId::generate();
    let role = customer
        .create_xrole_role("xrole", &aws.saas_principal_arn(), external_id.as_str())
        .await
        .unwrap();
    world_with_role(aws, customer, &role, external_id)
}

/// The same, with the role the customer deploys from the project's
/// template (`cloudformation/xrole-role.yaml`) at `level`.
pub async fn template_world(level: AccessLevel) -> World {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let external_id = ExternalId::generate();
    let role = customer
        .deploy_role_template(&aws.saas_principal_arn(), external_id.as_str(), level)
        .await
        .unwrap();
    world_with_role(aws, customer, &role, external_id)
}

fn world_with_role(
    aws: Aws,
    customer: CustomerAccount,
    role: &str,
    external_id: ExternalId,
) -> World {
    let broker = Broker::new(&aws.saas_config());
    let role = RoleArn::parse(role).unwrap();
    let spec = AssumeSpec::builder(
        role.clone(),
        external_id.clone(),
        SessionName::for_tenant("acme", "provision").unwrap(),
    )
    .build()
    .unwrap();
    let session = broker.sdk_config(&spec, Region::new("us-east-1"));
    World {
        aws,
        customer,
        session,
        broker,
        role,
        external_id,
    }
}

/// The full environment: VPC, 2 public + 2 private subnets, IGW,
/// route table, one security group, one EC2 instance, one RDS instance.
pub fn full_plan() -> ValidPlan {
    let plan: EnvironmentPlan = serde_json::from_value(serde_json::json!({
        "name": "demo",
        "vpc": {
            "cidr": "10.42.0.0/16",
            "availability_zones": ["us-east-1a", "us-east-1b"],
            "security_groups": [{
                "name": "app",
                "description": "web and database traffic",
                "ingress": [
                    {"protocol": "tcp", "from_port": 443, "to_port": 443, "source": {"cidr": "0.0.0.0/0"}},
                    {"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source": {"security_group": "app"}}
                ]
            }]
        },
        "instances": [{
            "name": "web",
            "ami": {"ssm_parameter": xrole_provision::AMAZON_LINUX_2023_X86_64},
            "instance_type": "t3.micro",
            "subnet_tier": "public",
            "security_groups": ["app"],
            "user_data": "#!/bin/sh\necho hello\n"
        }],
        "databases": [{
            "name": "main",
            "engine": "postgres",
            "engine_version": "16.4",
            "instance_class": "db.t3.micro",
            "allocated_storage_gib": 20,
            "security_groups": ["app"],
            "master_username": "xrole"
        }]
    }))
    .unwrap();
    plan.validate().unwrap()
}

/// Options for moto: everything is immediate, so poll and back off quickly.
pub fn fast_options() -> ExecutorOptions {
    ExecutorOptions {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        instance_running_timeout: Duration::from_secs(30),
        db_available_timeout: Duration::from_secs(30),
        instance_terminated_timeout: Duration::from_secs(30),
        db_deleted_timeout: Duration::from_secs(30),
        dependency_timeout: Duration::from_secs(30),
        ..ExecutorOptions::default()
    }
}

pub fn scope(job: JobId) -> JobScope {
    JobScope::new("org_acme", "link_1", job).unwrap()
}

pub fn executor<J: StepJournal>(w: &World, journal: J, job: JobId) -> Executor<J> {
    Executor::new(&w.session, journal, scope(job))
        .unwrap()
        .with_options(fast_options())
}

/// The create actions of the full environment and how many of each it needs.
pub const CREATES: &[(&str, u64)] = &[
    ("CreateVpc", 1),
    ("CreateSubnet", 4),
    ("CreateInternetGateway", 1),
    ("CreateRouteTable", 1),
    ("CreateSecurityGroup", 1),
    ("RunInstances", 1),
    ("CreateDBSubnetGroup", 1),
    ("CreateDBInstance", 1),
];

/// Resources carrying `xrole:job = job` in an account, by kind (instances
/// that are terminated or shutting down do not count).
pub async fn tagged(config: &SdkConfig, job: JobId) -> BTreeMap<&'static str, Vec<String>> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let rds = aws_sdk_rds::Client::new(config);
    let f = || {
        Filter::builder()
            .name("tag:xrole:job")
            .values(job.to_string())
            .build()
    };
    let mut m = BTreeMap::new();
    let vpcs = ec2.describe_vpcs().filters(f()).send().await.unwrap();
    m.insert(
        "vpc",
        vpcs.vpcs()
            .iter()
            .map(|v| v.vpc_id().unwrap().to_owned())
            .collect(),
    );
    let subnets = ec2.describe_subnets().filters(f()).send().await.unwrap();
    m.insert(
        "subnet",
        subnets
            .subnets()
            .iter()
            .map(|v| v.subnet_id().unwrap().to_owned())
            .collect(),
    );
    let igws = ec2
        .describe_internet_gateways()
        .filters(f())
        .send()
        .await
        .unwrap();
    m.insert(
        "igw",
        igws.internet_gateways()
            .iter()
            .map(|v| v.internet_gateway_id().unwrap().to_owned())
            .collect(),
    );
    let rtbs = ec2
        .describe_route_tables()
        .filters(f())
        .send()
        .await
        .unwrap();
    m.insert(
        "rtb",
        rtbs.route_tables()
            .iter()
            .map(|v| v.route_table_id().unwrap().to_owned())
            .collect(),
    );
    let sgs = ec2
        .describe_security_groups()
        .filters(f())
        .send()
        .await
        .unwrap();
    m.insert(
        "sg",
        sgs.security_groups()
            .iter()
            .map(|v| v.group_id().unwrap().to_owned())
            .collect(),
    );
    let inst = ec2
        .describe_instances()
        .filters(f())
        .filters(
            Filter::builder()
                .name("instance-state-name")
                .values("pending")
                .values("running")
                .build(),
        )
        .send()
        .await
        .unwrap();
    m.insert(
        "instance",
        inst.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .map(|i| i.instance_id().unwrap().to_owned())
            .collect(),
    );
    let job_s = job.to_string();
    let dbs = rds.describe_db_instances().send().await.unwrap();
    m.insert(
        "db",
        dbs.db_instances()
            .iter()
            .filter(|d| {
                d.tag_list()
                    .iter()
                    .any(|t| t.key() == Some("xrole:job") && t.value() == Some(&job_s))
            })
            .map(|d| d.db_instance_identifier().unwrap().to_owned())
            .collect(),
    );
    let groups = rds.describe_db_subnet_groups().send().await.unwrap();
    let mut names = vec![];
    for g in groups.db_subnet_groups() {
        let tags = rds
            .list_tags_for_resource()
            .resource_name(g.db_subnet_group_arn().unwrap())
            .send()
            .await
            .unwrap();
        if tags
            .tag_list()
            .iter()
            .any(|t| t.key() == Some("xrole:job") && t.value() == Some(&job_s))
        {
            names.push(g.db_subnet_group_name().unwrap().to_owned());
        }
    }
    m.insert("db-subnet-group", names);
    m
}

pub fn counts(m: &BTreeMap<&'static str, Vec<String>>) -> BTreeMap<&'static str, usize> {
    m.iter().map(|(k, v)| (*k, v.len())).collect()
}

pub fn expected_full() -> BTreeMap<&'static str, usize> {
    [
        ("vpc", 1),
        ("subnet", 4),
        ("igw", 1),
        ("rtb", 1),
        ("sg", 1),
        ("instance", 1),
        ("db", 1),
        ("db-subnet-group", 1),
    ]
    .into_iter()
    .collect()
}

pub fn expected_none() -> BTreeMap<&'static str, usize> {
    expected_full().into_keys().map(|k| (k, 0)).collect()
}

/// Where a simulated crash happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashAt {
    /// The intent is durable, the AWS call never happens.
    AfterIntent,
    /// The AWS call happened, its result never reaches the journal.
    BeforeResult,
}

/// A journal that dies at one step, as a process would, and leaves the shared
/// in-memory journal as the crash left it.
pub struct CrashingJournal {
    pub inner: Arc<InMemoryJournal>,
    pub step: StepKey,
    pub at: CrashAt,
    pub crashed: Mutex<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("simulated crash at {0}")]
pub struct Crash(String);

impl StepJournal for CrashingJournal {
    async fn record_intent(&self, job: JobId, step: &StepKey) -> Result<(), Error> {
        self.inner.record_intent(job, step).await?;
        if self.at == CrashAt::AfterIntent && step == &self.step {
            *self.crashed.lock().unwrap() = true;
            return Err(Error::journal(Crash(step.to_string())));
        }
        Ok(())
    }

    async fn record_result(&self, job: JobId, step: &StepKey, aws_id: &str) -> Result<(), Error> {
        if self.at == CrashAt::BeforeResult && step == &self.step {
            *self.crashed.lock().unwrap() = true;
            return Err(Error::journal(Crash(step.to_string())));
        }
        self.inner.record_result(job, step, aws_id).await
    }

    async fn load(&self, job: JobId) -> Result<Vec<JournalEntry>, Error> {
        self.inner.load(job).await
    }
}
