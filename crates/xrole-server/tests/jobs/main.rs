//! Several `xrole` processes on one PostgreSQL: idempotent job creation
//! across replicas, and a killed worker's job resumed by another process
//! without duplicate resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cluster;
#[path = "../flow/support.rs"]
mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb, free_port};

use crate::cluster::{Client, Cluster, OPERATOR_TOKEN, org_and_active_link};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_processes_make_one_job_from_twenty_duplicate_posts() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let cluster = Cluster::new(&aws, &db).await;
    let a = cluster.serve("a", 1).await;
    let b = cluster.serve("b", 1).await;
    let (client, link_id) = org_and_active_link(&aws, &customer, &a).await;

    let body = json!({"name": "prod", "cidr_block": "10.30.0.0/16", "availability_zones": ["us-east-1a", "us-east-1b"]});
    let calls = (0..20).map(|i| {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        client.call(
            Method::POST,
            format!("{base}/v1/aws-accounts/{link_id}/vpcs"),
            Some("vpc-prod-1"),
            Some(&body),
        )
    });
    let answers = futures::future::join_all(calls).await;
    let mut job_ids: Vec<String> = Vec::new();
    for (status, v) in &answers {
        match status {
            202 => job_ids.push(v["id"].as_str().unwrap().to_owned()),
            409 => assert_eq!(v["code"], "idempotency_key_in_use", "{v}"),
            other => panic!("unexpected {other}: {v}"),
        }
    }
    assert!(!job_ids.is_empty());
    job_ids.dedup();
    assert_eq!(
        job_ids.len(),
        1,
        "every 202 names the same job: {answers:?}"
    );
    let (_, jobs) = client
        .call(
            Method::GET,
            format!("{}/v1/jobs?limit=200", b.base),
            None,
            None,
        )
        .await;
    let vpc_jobs: Vec<&Value> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "provision_vpc")
        .collect();
    assert_eq!(vpc_jobs.len(), 1, "{jobs}");

    // One of the two processes runs it; one VPC exists.
    let job = client
        .wait(format!("{}/v1/jobs/{}", b.base, job_ids[0]), |v| {
            v["state"] == "succeeded" || v["state"] == "failed"
        })
        .await;
    assert_eq!(job["state"], "succeeded", "{job}\n{}\n{}", a.log(), b.log());
    let live = support::tagged_resources(&customer.admin_config(), &link_id).await;
    assert_eq!(
        live.iter().filter(|r| r.starts_with("vpc-")).count(),
        1,
        "{live:?}"
    );
    assert_eq!(aws.gate().count("CreateVpc"), 1);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_worker_process_job_completes_elsewhere_without_duplicates() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let cluster = Cluster::new(&aws, &db).await;
    // The API without workers; workers in their own processes.
    let api = cluster.serve("api", 0).await;
    let w1 = cluster.spawn("worker-1", &["worker"], None, 1);
    let (client, link_id) = org_and_active_link(&aws, &customer, &api).await;

    let (status, vpc_job) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts/{link_id}/vpcs", api.base),
            Some("vpc-1"),
            Some(&json!({"name": "prod", "cidr_block": "10.40.0.0/16", "availability_zones": ["us-east-1a", "us-east-1b"]})),
        )
        .await;
    assert_eq!(status, 202, "{vpc_job}");
    let vpc_job = client
        .wait(
            format!("{}/v1/jobs/{}", api.base, vpc_job["id"].as_str().unwrap()),
            |v| v["state"] == "succeeded" || v["state"] == "failed",
        )
        .await;
    assert_eq!(vpc_job["state"], "succeeded", "{vpc_job}");
    let vpc_id = vpc_job["resources"][0]["id"].as_str().unwrap().to_owned();

    // Slow RunInstances down, and kill the worker while it is in flight.
    aws.gate()
        .delay(Some("RunInstances"), Duration::from_secs(2));
    let (status, job) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts/{link_id}/instances", api.base),
            Some("web-1"),
            Some(
                &json!({"name": "web", "vpc_id": vpc_id, "instance_type": "t3.micro", "count": 3}),
            ),
        )
        .await;
    assert_eq!(status, 202, "{job}");
    let job_id = job["id"].as_str().unwrap().to_owned();
    let running = client
        .wait(format!("{}/v1/jobs/{job_id}", api.base), |v| {
            v["progress"]["current_step"]
                .as_str()
                .is_some_and(|s| s.starts_with("instance/"))
        })
        .await;
    assert_eq!(running["state"], "running");
    let mut w1 = w1;
    w1.child.start_kill().unwrap();
    let _ = w1.child.wait().await;
    aws.gate().delay(Some("RunInstances"), Duration::ZERO);

    // Another worker process takes the job over once the lease expires.
    let w2 = cluster.spawn("worker-2", &["worker"], None, 1);
    let done = client
        .wait(format!("{}/v1/jobs/{job_id}", api.base), |v| {
            v["state"] == "succeeded" || v["state"] == "failed"
        })
        .await;
    assert_eq!(
        done["state"],
        "succeeded",
        "{done}\n{}\n{}",
        w1.log(),
        w2.log()
    );
    assert_eq!(
        done["attempts"], 2,
        "claimed by the killed worker, then by the second"
    );
    assert_eq!(done["resources"].as_array().unwrap().len(), 3, "{done}");

    // Exactly three instances exist in the account (created once each, or
    // adopted by their tags after the takeover), all tagged with the job.
    let ec2 = aws_sdk_ec2::Client::new(&customer.admin_config());
    let out = ec2.describe_instances().send().await.unwrap();
    let live: Vec<&aws_sdk_ec2::types::Instance> = out
        .reservations()
        .iter()
        .flat_map(|r| r.instances())
        .filter(|i| {
            i.state().and_then(|s| s.name())
                != Some(&aws_sdk_ec2::types::InstanceStateName::Terminated)
        })
        .collect();
    assert_eq!(live.len(), 3, "no duplicates: {live:?}");
    for i in &live {
        assert!(
            i.tags()
                .iter()
                .any(|t| t.key() == Some("xrole:job") && t.value() == Some(job_id.as_str())),
            "{i:?}"
        );
    }
    // The gate saw the calls of both workers; none had to be undone.
    assert!(aws.gate().count("RunInstances") >= 3);
    assert_eq!(aws.gate().count("TerminateInstances"), 0);
    drop((api, w2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_without_an_aws_identity_answers_503_on_aws_routes_only() {
    let aws = Aws::start().await.unwrap();
    let db = TestDb::sqlite().unwrap();
    let mut cluster = Cluster::new(&aws, &db).await;
    // Nothing listens there: GetCallerIdentity fails at start-up.
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    for (k, v) in &mut cluster.env {
        if k == "AWS_ENDPOINT_URL" {
            *v = dead.clone();
        }
    }
    let p = cluster.serve("no-aws", 1).await;
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/organizations", p.base))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "Acme", "admin_email": "admin@acme.example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED, "tenants still work");
    let v: Value = res.json().await.unwrap();
    let client = Client {
        http,
        key: v["api_key"]["token"].as_str().unwrap().to_owned(),
    };
    let (status, v) = client
        .call(
            Method::POST,
            format!("{}/v1/aws-accounts", p.base),
            Some("k1"),
            Some(&json!({"name": "prod", "access_level": "read_only"})),
        )
        .await;
    assert_eq!(status, 503, "{v}");
    assert!(p.log().contains("AWS side disabled"), "{}", p.log());
}
