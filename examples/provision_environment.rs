//! Build a whole environment in a customer's account, then tear it down.
//!
//! A `VpcPlan` (two zones, public and private subnets, internet gateway, a
//! security group), an `InstancePlan` (Amazon Linux from the public SSM
//! parameter, IMDSv2, encrypted root volume) and a `DatabasePlan` (PostgreSQL,
//! `ManageMasterUserPassword`, encrypted, private) run on a customer session
//! from the broker, journaled in memory; every step is printed as it happens.
//!
//! ```sh
//! XROLE_ROLE_ARN=arn:aws:iam::111122223333:role/xrole-access \
//! XROLE_EXTERNAL_ID=xrx-... AWS_REGION=eu-west-1 \
//! cargo run -p xrole-examples --example provision_environment
//! ```
//!
//! Against real AWS this creates billable resources for a few minutes.

use anyhow::Context;
use aws_types::region::Region;
use xrole_assume::{AssumeSpec, Broker, ExternalId, RoleArn, SessionName};
use xrole_provision::{
    AMAZON_LINUX_2023_X86_64, Environment, EnvironmentPlan, Executor, ExecutorOptions,
    InMemoryJournal, JobId, JobScope,
};

/// The plan, as a server would receive it in JSON.
pub fn plan(region: &str) -> anyhow::Result<xrole_provision::ValidPlan> {
    let plan: EnvironmentPlan = serde_json::from_value(serde_json::json!({
        "name": "example",
        "vpc": {
            "cidr": "10.42.0.0/16",
            "availability_zones": [format!("{region}a"), format!("{region}b")],
            "security_groups": [{
                "name": "app",
                "description": "HTTPS from anywhere, PostgreSQL from the group",
                "ingress": [
                    {"protocol": "tcp", "from_port": 443, "to_port": 443, "source": {"cidr": "0.0.0.0/0"}},
                    {"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source": {"security_group": "app"}}
                ]
            }]
        },
        "instances": [{
            "name": "web",
            "ami": {"ssm_parameter": AMAZON_LINUX_2023_X86_64},
            "instance_type": "t3.micro",
            "subnet_tier": "public",
            "security_groups": ["app"]
        }],
        "databases": [{
            "name": "main",
            "engine": "postgres",
            "engine_version": "16.4",
            "instance_class": "db.t3.micro",
            "allocated_storage_gib": 20,
            "security_groups": ["app"],
            "master_username": "app"
        }]
    }))?;
    Ok(plan.validate()?)
}

/// Apply the plan on the customer session, then tear it down.
pub async fn run(
    customer_session: &aws_types::SdkConfig,
    region: &str,
    options: ExecutorOptions,
) -> anyhow::Result<Environment> {
    let plan = plan(region)?;
    let scope =
        JobScope::new("org_example", "link_example", JobId::new()).map_err(anyhow::Error::msg)?;
    let executor = Executor::new(customer_session, InMemoryJournal::new(), scope)?
        .with_options(options)
        .on_progress(|p| println!("  {p:?}"));
    println!("apply:");
    let env = executor.apply(&plan).await?;
    println!(
        "built VPC {} with {} instance(s)",
        env.vpc_id,
        env.instance_ids.len()
    );
    println!("teardown:");
    executor.teardown(&plan).await?;
    Ok(env)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role: RoleArn = std::env::var("XROLE_ROLE_ARN")
        .context("set XROLE_ROLE_ARN")?
        .parse()?;
    let external_id =
        ExternalId::parse(&std::env::var("XROLE_EXTERNAL_ID").context("set XROLE_EXTERNAL_ID")?)?;
    let region = std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned());
    let base = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let broker = Broker::new(&base);
    let spec = AssumeSpec::builder(
        role,
        external_id,
        SessionName::for_tenant("example", "provision")?,
    )
    .build()?;
    let session = broker.sdk_config(&spec, Region::new(region.clone()));
    run(&session, &region, ExecutorOptions::default()).await?;
    println!("done: nothing left behind");
    Ok(())
}
