//! Benchmark: the full environment (VPC, 2 public + 2 private subnets, IGW,
//! route table, security group, 1 EC2, 1 RDS), created then torn down with
//! xrole against an AWS endpoint (moto, usually behind the testkit gate).
//!
//! `bench_env --endpoint http://127.0.0.1:PORT [--iterations N]` prints one
//! JSON line: median wall times and AWS calls per environment.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::Credentials;
use xrole_provision::{
    EnvironmentPlan, Executor, ExecutorOptions, InMemoryJournal, JobId, JobScope,
};

/// The same plan as `scripts/bench-provision.py`.
const PLAN: &str = r#"{
  "name": "bench",
  "vpc": {
    "cidr": "10.42.0.0/16",
    "availability_zones": ["us-east-1a", "us-east-1b"],
    "security_groups": [{"name": "app", "description": "web and database traffic", "ingress": [
      {"protocol": "tcp", "from_port": 443, "to_port": 443, "source": {"cidr": "0.0.0.0/0"}},
      {"protocol": "tcp", "from_port": 5432, "to_port": 5432, "source": {"security_group": "app"}}]}]
  },
  "instances": [{"name": "web", "ami": {"ssm_parameter": "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"},
                 "instance_type": "t3.micro", "subnet_tier": "public", "security_groups": ["app"]}],
  "databases": [{"name": "main", "engine": "postgres", "engine_version": "16.4", "instance_class": "db.t3.micro",
                 "allocated_storage_gib": 20, "security_groups": ["app"], "master_username": "xrole"}]
}"#;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let endpoint = arg("--endpoint").context("--endpoint http://127.0.0.1:PORT is required")?;
    let iterations: usize = arg("--iterations").map_or(Ok(5), |s| s.parse())?;
    let base = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(&endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIAIOSFODNN7EXAMPLE",
            "bench-secret",
            None,
            None,
            "bench",
        ))
        .load()
        .await;
    let config = base;
    let plan = serde_json::from_str::<EnvironmentPlan>(PLAN)?.validate()?;
    let options = ExecutorOptions {
        poll_interval: Duration::from_millis(100),
        ..ExecutorOptions::default()
    };

    let (mut create, mut teardown) = (vec![], vec![]);
    let (mut create_calls, mut teardown_calls) = (0, 0);
    // One warm-up round (connections, moto's lazy set-up), then the measured ones.
    for round in 0..=iterations {
        let scope =
            JobScope::new("org_bench", "link_bench", JobId::new()).map_err(anyhow::Error::msg)?;
        let exec =
            Executor::new(&config, InMemoryJournal::new(), scope)?.with_options(options.clone());
        let t = Instant::now();
        exec.apply(&plan).await?;
        let created = t.elapsed();
        let mid = exec.aws_calls();
        let t = Instant::now();
        exec.teardown(&plan).await?;
        let removed = t.elapsed();
        if round > 0 {
            create.push(created);
            teardown.push(removed);
            create_calls = mid;
            teardown_calls = exec.aws_calls() - mid;
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "tool": "xrole",
            "create_s": median(create),
            "teardown_s": median(teardown),
            "create_calls": create_calls,
            "teardown_calls": teardown_calls,
        })
    );
    Ok(())
}
