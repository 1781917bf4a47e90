//! Hardening: `xrole serve`, with its in-process workers, is killed with
//! SIGKILL at several points of provisioning jobs and restarted on the same
//! database and keyring. Each job then succeeds, each AWS resource exists
//! exactly once in the customer's account, and no record is lost.
//!
//! Kill points, each on its own process:
//! 1. idle, right after the organization and its link were set up;
//! 2. a VPC job accepted (202) that no worker has claimed yet;
//! 3. that job's `CreateVpc` in flight: the gate holds the request, so it
//!    never reaches AWS, and the journal has the intent without an id;
//! 4. a second VPC job's `CreateVpc` answered late: the gate passes the
//!    request to AWS, which makes the VPC, and holds the answer, so the
//!    journal again has the intent without an id;
//! 5. an instances job and a database job running at once: one instance
//!    launched and one `RunInstances` held before AWS, the database created
//!    and its waiter polling.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "jobs/cluster.rs"]
mod cluster;

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use xrole_store::jobs::{Job, JobStep};
use xrole_store::{JobId, JobState, OrgId};
use xrole_testkit::{Aws, Fault, TestDb};

use crate::cluster::{Cluster, OPERATOR_TOKEN, org_and_active_link, tagged_by_job};

/// Longer than the test: a request held this long never reaches moto, and
/// an answer held this long never reaches the server.
const HOLD: Duration = Duration::from_secs(600);

/// The job's row and journal, read from the database (the server is down).
async fn job_row(url: &str, org: &str, job: &str) -> (Job, Vec<JobStep>) {
    let (url, org, job) = (url.to_owned(), org.to_owned(), job.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut conn = xrole_store::connect(&url).unwrap();
        let (org, job): (OrgId, JobId) = (org.parse().unwrap(), job.parse().unwrap());
        (
            xrole_store::jobs::get(&mut conn, org, job).unwrap(),
            xrole_store::jobs::steps(&mut conn, org, job).unwrap(),
        )
    })
    .await
    .unwrap()
}

/// The killed VPC job is running its first attempt, and its `vpc` step has
/// the intent journaled without an AWS id.
async fn vpc_step_is_intent_only(url: &str, org: &str, job: &str, backend: &str, log: &str) {
    let (row, steps) = job_row(url, org, job).await;
    assert_eq!(
        (row.state, row.attempts),
        (JobState::Running, 1),
        "{backend}\n{log}"
    );
    let vpc_step: Vec<_> = steps.iter().filter(|s| s.step_key == "vpc").collect();
    assert_eq!(vpc_step.len(), 1, "{steps:?}");
    assert_eq!(vpc_step[0].aws_id, None, "{backend}: intent only");
}

/// Polls `f` every 50 ms for up to two minutes.
async fn until<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..2400 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

fn count(
    inventory: &std::collections::BTreeMap<&'static str, Vec<String>>,
) -> Vec<(&'static str, usize)> {
    inventory
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.len()))
        .collect()
}

async fn serve_killed_mid_job_restarts_and_finishes_each_job_once(db: TestDb) {
    let backend = format!("{:?}", db.backend());
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let admin = customer.admin_config();
    let gate = aws.gate();
    let cluster = Cluster::new(&aws, &db).await;

    // 1. Set-up, then a kill while idle.
    let s = cluster.serve("serve-1", 2).await;
    let (client, link_id) = org_and_active_link(&aws, &customer, &s).await;
    let org = client.get(format!("{}/v1/organization", s.base)).await;
    let org_id = org["id"].as_str().unwrap().to_owned();
    s.kill().await;

    // 2. A VPC job accepted, then a kill before any worker claims it: this
    // process's worker looked for jobs once at start and then sleeps.
    let s = cluster
        .serve_with("serve-2", 2, &[("XROLE_JOB_POLL_MILLISECONDS", "600000")])
        .await;
    let vpc_body = json!({"name": "prod", "cidr_block": "10.60.0.0/16",
                          "availability_zones": ["us-east-1a", "us-east-1b"]});
    let vpcs_url = |base: &str| format!("{base}/v1/aws-accounts/{link_id}/vpcs");
    let (status, accepted) = client
        .call_text(
            Method::POST,
            vpcs_url(&s.base),
            Some("crash-vpc"),
            Some(&vpc_body),
        )
        .await;
    assert_eq!(status, 202, "{accepted}");
    let vpc_job = serde_json::from_str::<Value>(&accepted).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = s.kill().await;
    let (row, steps) = job_row(&cluster.db_url, &org_id, &vpc_job).await;
    assert_eq!(
        (row.state, row.attempts),
        (JobState::Queued, 0),
        "{backend}: killed before a claim\n{log}"
    );
    assert!(steps.is_empty());

    // 3. The job claimed, its CreateVpc held by the gate; the kill drops it
    // before it reaches AWS. The journal has the intent and no id.
    gate.fail_next("CreateVpc", 1, Fault::Delay(HOLD));
    let s = cluster.serve("serve-3", 2).await;
    // The internet gateway needs no VPC and is made alongside it: wait until
    // it is in the account, or the kill could cut its CreateInternetGateway
    // off between the gate (which counts it) and AWS.
    until("CreateVpc to be sent and the gateway made", || async {
        gate.count("CreateVpc") == 1 && tagged_by_job(&admin, &vpc_job).await["igw"].len() == 1
    })
    .await;
    let log = s.kill().await;
    vpc_step_is_intent_only(&cluster.db_url, &org_id, &vpc_job, &backend, &log).await;
    assert!(
        tagged_by_job(&admin, &vpc_job).await["vpc"].is_empty(),
        "the held CreateVpc never reached AWS"
    );

    // A new process takes the job over once the lease runs out and builds
    // the VPC; the same Idempotency-Key still answers the original 202.
    let s = cluster.serve("serve-4", 2).await;
    let done = client.finished(&s.base, &vpc_job).await;
    assert_eq!(done["state"], "succeeded", "{backend}: {done}\n{}", s.log());
    assert_eq!(done["attempts"], 2, "{done}");
    assert!(
        s.log().contains("taken over after a crash"),
        "the VPC step was created again, not adopted: {}",
        s.log()
    );
    let (status, replayed) = client
        .call_text(
            Method::POST,
            vpcs_url(&s.base),
            Some("crash-vpc"),
            Some(&vpc_body),
        )
        .await;
    assert_eq!((status, &replayed), (202, &accepted), "replayed as sent");
    let vpc_resource = done["resources"][0]["id"].as_str().unwrap().to_owned();

    // 4. A second VPC job. Its CreateVpc reaches AWS, which makes the VPC,
    // and the gate holds the answer; the kill comes before the server
    // learns the id. The journal has the intent and no id, the account the
    // VPC under the job's tags. The internet gateway, the only other step
    // that needs no VPC, is made too before the kill, so that nothing the
    // dead worker began is missing from the account.
    let account = customer.account_id();
    let create_vpc_before = gate.count_for_account("CreateVpc", account);
    gate.fail_next("CreateVpc", 1, Fault::HoldResponse(HOLD));
    let vpc2_body = json!({"name": "prod-2", "cidr_block": "10.61.0.0/16",
                           "availability_zones": ["us-east-1a", "us-east-1b"]});
    let (status, vpc2_job) = client
        .call(
            Method::POST,
            vpcs_url(&s.base),
            Some("crash-vpc-2"),
            Some(&vpc2_body),
        )
        .await;
    assert_eq!(status, 202, "{vpc2_job}");
    let vpc2_job = vpc2_job["id"].as_str().unwrap().to_owned();
    until("CreateVpc to reach AWS, its answer held", || async {
        let made = tagged_by_job(&admin, &vpc2_job).await;
        gate.count_for_account("CreateVpc", account) == create_vpc_before + 1
            && made["vpc"].len() == 1
            && made["igw"].len() == 1
    })
    .await;
    let log = s.kill().await;
    vpc_step_is_intent_only(&cluster.db_url, &org_id, &vpc2_job, &backend, &log).await;
    let made = tagged_by_job(&admin, &vpc2_job).await;
    assert_eq!(
        count(&made),
        [("igw", 1), ("vpc", 1)],
        "{backend}: the held CreateVpc reached AWS, nothing that needs the VPC ran: {made:?}"
    );

    // A new process takes the job over and finds the VPC by its job and
    // step tags: it adopts it, creates no second one, and builds the rest.
    let s = cluster.serve("serve-5", 2).await;
    let done = client.finished(&s.base, &vpc2_job).await;
    assert_eq!(done["state"], "succeeded", "{backend}: {done}\n{}", s.log());
    assert_eq!(done["attempts"], 2, "{done}");
    assert_eq!(done["resources"][0]["kind"], "vpc", "{done}");
    assert_eq!(
        done["resources"][0]["aws_id"], made["vpc"][0],
        "{backend}: the VPC AWS made before the kill is the job's: {done}"
    );
    assert!(
        !s.log().contains("taken over after a crash"),
        "{backend}: the VPC step was found missing, not adopted: {}",
        s.log()
    );
    let vpc_id = format!("aws_id={}", made["vpc"][0]);
    assert!(
        s.log()
            .lines()
            .any(|l| l.contains("adopted: an earlier attempt had created it")
                && l.contains(&vpc2_job)
                && l.contains("step=vpc")
                && l.contains(&vpc_id)),
        "{backend}: the adoption of {vpc_id} is logged: {}",
        s.log()
    );
    assert_eq!(
        gate.count_for_account("CreateVpc", account),
        create_vpc_before + 1,
        "{backend}: no second CreateVpc for the adopted VPC"
    );
    let vpc2 = tagged_by_job(&admin, &vpc2_job).await;
    assert_eq!(
        count(&vpc2),
        [("igw", 1), ("rtb", 1), ("sg", 2), ("subnet", 4), ("vpc", 1)],
        "{backend}: {vpc2:?}"
    );
    assert_eq!(vpc2["vpc"], made["vpc"], "{backend}: adopted, not replaced");
    assert_eq!(vpc2["igw"], made["igw"], "{backend}: kept, not replaced");

    // 5. Instances and a database at once (two workers): one RunInstances
    // held before AWS while the other instance is launched, the database
    // created and its waiter polling (held too). Then the kill.
    gate.fail_next("RunInstances", 1, Fault::Delay(HOLD));
    gate.delay(Some("DescribeDBInstances"), HOLD);
    let (status, ijob) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts/{link_id}/instances", s.base),
            Some("crash-web"),
            Some(
                &json!({"name": "web", "vpc_id": vpc_resource, "instance_type": "t3.micro",
                         "count": 2}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{ijob}");
    let ijob = ijob["id"].as_str().unwrap().to_owned();
    let (status, djob) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts/{link_id}/databases", s.base),
            Some("crash-db"),
            Some(
                &json!({"name": "main", "vpc_id": vpc_resource, "engine": "postgres",
                         "instance_class": "db.t3.micro", "allocated_storage_gb": 20}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{djob}");
    let djob = djob["id"].as_str().unwrap().to_owned();
    until("one instance launched, one held", || async {
        gate.count("RunInstances") == 2 && tagged_by_job(&admin, &ijob).await["instance"].len() == 1
    })
    .await;
    until("the database created and awaited", || async {
        gate.count("CreateDBInstance") == 1 && gate.count("DescribeDBInstances") >= 1
    })
    .await;
    let log = s.kill().await;
    gate.delay(Some("DescribeDBInstances"), Duration::ZERO);
    for job in [&ijob, &djob] {
        let (row, _) = job_row(&cluster.db_url, &org_id, job).await;
        assert_eq!(
            (row.state, row.attempts),
            (JobState::Running, 1),
            "{backend}\n{log}"
        );
    }
    assert_eq!(tagged_by_job(&admin, &djob).await["db"].len(), 1);

    // A new process resumes both: the launched instance and the database
    // are adopted, the held instance is launched.
    let s = cluster.serve("serve-6", 2).await;
    for job in [&ijob, &djob] {
        let done = client.finished(&s.base, job).await;
        assert_eq!(done["state"], "succeeded", "{backend}: {done}\n{}", s.log());
        assert_eq!(done["attempts"], 2, "{done}");
    }

    // Each resource exists once in the account, tagged with its job.
    let vpc = tagged_by_job(&admin, &vpc_job).await;
    assert_eq!(
        count(&vpc),
        [("igw", 1), ("rtb", 1), ("sg", 2), ("subnet", 4), ("vpc", 1)],
        "{backend}: {vpc:?}"
    );
    let web = tagged_by_job(&admin, &ijob).await;
    assert_eq!(count(&web), [("instance", 2)], "{backend}: {web:?}");
    let main = tagged_by_job(&admin, &djob).await;
    assert_eq!(
        count(&main),
        [("db", 1), ("db_subnet_group", 1)],
        "{backend}: {main:?}"
    );
    // Each create reached AWS once per resource. The gate counts the
    // requests held before AWS too (they never reached it): one CreateVpc,
    // one RunInstances. The second VPC job's one CreateVpc made its VPC.
    for (action, n) in [
        ("CreateVpc", 1 + 1 + 1),
        ("CreateSubnet", 4 + 4),
        ("CreateInternetGateway", 1 + 1),
        ("CreateRouteTable", 1 + 1),
        ("CreateSecurityGroup", 2 + 2),
        ("RunInstances", 2 + 1),
        ("CreateDBSubnetGroup", 1),
        ("CreateDBInstance", 1),
    ] {
        assert_eq!(
            gate.count_for_account(action, account),
            n,
            "{backend}: {action}"
        );
    }

    // Nothing lost: the organization, its key, the link, the five jobs and
    // the five resources, as the API shows them.
    let base = &s.base;
    assert_eq!(
        client.get(format!("{base}/v1/organization")).await["name"],
        "Acme"
    );
    let keys = client.get(format!("{base}/v1/api-keys")).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
    let link = client
        .get(format!("{base}/v1/aws-accounts/{link_id}"))
        .await;
    assert_eq!(link["state"], "active", "{link}");
    let jobs = client.get(format!("{base}/v1/jobs?limit=100")).await;
    let mut kinds: Vec<(&str, &str)> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| (j["kind"].as_str().unwrap(), j["state"].as_str().unwrap()))
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            ("provision_database", "succeeded"),
            ("provision_instances", "succeeded"),
            ("provision_vpc", "succeeded"),
            ("provision_vpc", "succeeded"),
            ("verify_link", "succeeded"),
        ],
        "{jobs}"
    );
    let listed = client
        .get(format!(
            "{base}/v1/aws-accounts/{link_id}/resources?limit=100"
        ))
        .await;
    let mut resources: Vec<(String, String)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().to_owned(),
                r["aws_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    resources.sort_unstable();
    let mut expected: Vec<(String, String)> = vec![
        ("rds_instance".into(), main["db"][0].clone()),
        ("vpc".into(), vpc["vpc"][0].clone()),
        ("vpc".into(), vpc2["vpc"][0].clone()),
    ];
    expected.extend(
        web["instance"]
            .iter()
            .map(|i| ("ec2_instance".into(), i.clone())),
    );
    expected.sort_unstable();
    assert_eq!(resources, expected, "{backend}: {listed}");
    // The operator token still creates organizations.
    let res = client
        .http
        .post(format!("{base}/v1/organizations"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "Beta", "admin_email": "admin@beta.example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let log = s.log();
    assert!(
        !log.lines().any(|l| l.contains(" ERROR ")),
        "{backend}: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_mid_job_restarts_and_finishes_each_job_once_sqlite() {
    serve_killed_mid_job_restarts_and_finishes_each_job_once(TestDb::sqlite().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_mid_job_restarts_and_finishes_each_job_once_postgres() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    serve_killed_mid_job_restarts_and_finishes_each_job_once(db).await;
}
