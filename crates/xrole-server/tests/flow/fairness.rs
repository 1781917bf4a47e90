//! Many tenants on one server: a hostile tenant's flood of jobs and
//! verifications cannot starve another tenant, the STS budget holds for
//! everyone, and an Idempotency-Key never crosses from one link to another.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

const VPC: &str =
    r#"{"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]}"#;

async fn active_link(app: &FlowApp, aws: &Aws, org: &Org, role_name: &str) -> String {
    let customer = aws.customer().await.unwrap();
    let link = app
        .create_link(org, Some(customer.account_id()), "provisioning")
        .await;
    let id = link["id"].as_str().unwrap().to_owned();
    let role = exact_role(aws, &customer, role_name, &link).await;
    assert_eq!(
        put_role(app, org, &id, &role).await.status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(app.settled_link(org, &id).await["state"], "active");
    id
}

async fn post_vpc(app: &FlowApp, org: &Org, link: &str) -> Value {
    let res = app
        .post(
            &format!("/v1/aws-accounts/{link}/vpcs"),
            &org.key,
            &serde_json::from_str(VPC).unwrap(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_jobs_and_verifications_does_not_starve_another_tenant() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let mut app = spawn_flow_app_with(db, &aws, 4, test_settings(), |c| {
            c.jobs_per_org = 2;
        })
        .await;
        let hostile = app.create_org("Hostile").await;
        let honest = app.create_org("Honest").await;
        let hostile_link = active_link(&app, &aws, &hostile, "xrole-hostile").await;
        let honest_link = active_link(&app, &aws, &honest, "xrole-honest").await;

        // A link pointed at a role that does not exist, verified over and
        // over: one verification waits for it, not thirty.
        let customer = aws.customer().await.unwrap();
        let bogus = app
            .create_link(&hostile, Some(customer.account_id()), "provisioning")
            .await;
        let bogus_id = bogus["id"].as_str().unwrap().to_owned();
        let missing = format!("arn:aws:iam::{}:role/does-not-exist", customer.account_id());
        assert_eq!(
            put_role(&app, &hostile, &bogus_id, &missing).await.status(),
            StatusCode::ACCEPTED
        );
        // Everything is queued while no worker runs, so the claim order
        // alone decides who waits.
        app.workers.take().unwrap().shutdown().await;
        let mut verify_jobs = HashSet::new();
        for _ in 0..30 {
            let res = app
                .request(
                    Method::POST,
                    &format!("/v1/aws-accounts/{bogus_id}/verify"),
                    Some(&hostile.key),
                    None,
                    None,
                )
                .await;
            assert_eq!(res.status(), StatusCode::ACCEPTED);
            verify_jobs.insert(
                res.json::<Value>().await.unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        assert_eq!(verify_jobs.len(), 1, "one pending verification per link");
        let mut flood = Vec::new();
        for _ in 0..12 {
            flood.push(
                post_vpc(&app, &hostile, &hostile_link).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let honest_job = post_vpc(&app, &honest, &honest_link).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        // Every VPC takes a while to make.
        aws.gate()
            .delay(Some("CreateVpc"), Duration::from_millis(300));
        app.workers = Some(xrole_server::worker::WorkerPool::spawn(
            app.state.clone(),
            app.aws_runtime.clone(),
            4,
        ));
        let done = app.finished_job(&honest, &honest_job).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        let honest_started = done["started_at"].as_str().unwrap().to_owned();
        // In FIFO order the honest job would have waited for all twelve;
        // with turns and a cap of two it waits for at most the two
        // hostile jobs claimed before it.
        let mut before = 0;
        for id in &flood {
            let j = app.get_json(&format!("/v1/jobs/{id}"), &hostile.key).await;
            if let Some(s) = j["started_at"].as_str()
                && s < honest_started.as_str()
            {
                before += 1;
            }
        }
        assert!(
            before <= 2,
            "{before} hostile jobs started before the honest one"
        );
        // The flood still progresses, never more than two at once.
        for id in &flood {
            let j = app.finished_job(&hostile, id).await;
            assert_eq!(j["state"], "succeeded", "{j}");
        }
        aws.gate().delay(Some("CreateVpc"), Duration::ZERO);
        // The verification of the missing role waited for IAM propagation
        // without holding a worker, then failed with a reason.
        let bogus = app.settled_link(&hostile, &bogus_id).await;
        assert_eq!(bogus["state"], "failed", "{bogus}");
        assert_eq!(bogus["last_verification_result"], "not_assumable");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verifications_stay_within_the_sts_budget() {
    let aws = Aws::start().await.unwrap();
    let db = TestDb::sqlite().unwrap();
    let settings = xrole_server::link_flow::AwsSettings {
        sts_budget_per_second: 4.0,
        sts_budget_burst: 4,
        ..test_settings()
    };
    let app = spawn_flow_app_with(db, &aws, 8, settings, |_| {}).await;
    let org = app.create_org("Acme").await;
    let customer = aws.customer().await.unwrap();
    let mut links = Vec::new();
    for i in 0..6 {
        let link = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let id = link["id"].as_str().unwrap().to_owned();
        let role = exact_role(&aws, &customer, &format!("xrole-{i}"), &link).await;
        links.push((id, role));
    }
    aws.gate().reset_counters();
    let start = Instant::now();
    for (id, role) in &links {
        assert_eq!(
            put_role(&app, &org, id, role).await.status(),
            StatusCode::ACCEPTED
        );
    }
    // Each verification needs five STS calls: thirty in all, at four a
    // second, and every link still ends active.
    for (id, _) in &links {
        assert_eq!(app.settled_link(&org, id).await["state"], "active");
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sts = aws.gate().count("AssumeRole") + aws.gate().count("GetCallerIdentity");
    assert!(sts >= 30, "{sts}");
    let allowed = 4.0 + 4.0 * elapsed;
    assert!(
        (sts as f64) <= allowed + 1.0,
        "{sts} STS calls in {elapsed:.1} s exceed the budget ({allowed:.0})"
    );
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refusals: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("xrole_broker_sts_budget_refusals_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refusals > 0, "the budget was never reached:\n{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_on_two_links_makes_two_jobs() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;
        let a = active_link(&app, &aws, &org, "xrole-a").await;
        let b = active_link(&app, &aws, &org, "xrole-b").await;
        let body: Value = serde_json::from_str(VPC).unwrap();
        let send = |link: String| {
            let app = &app;
            let org = &org;
            let body = body.clone();
            async move {
                app.request(
                    Method::POST,
                    &format!("/v1/aws-accounts/{link}/vpcs"),
                    Some(&org.key),
                    Some("same-key-for-both"),
                    Some(&body),
                )
                .await
            }
        };
        let ja: Value = send(a.clone()).await.json().await.unwrap();
        let res = send(b.clone()).await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let jb: Value = res.json().await.unwrap();
        assert_ne!(ja["id"], jb["id"], "link B's request replayed link A's job");
        assert_eq!(jb["aws_account_id"], b.as_str(), "{jb}");
        // A true retry on A still replays A's job.
        let again: Value = send(a.clone()).await.json().await.unwrap();
        assert_eq!(again["id"], ja["id"]);
        for j in [&ja, &jb] {
            let done = app.finished_job(&org, j["id"].as_str().unwrap()).await;
            assert_eq!(done["state"], "succeeded", "{done}");
        }
    }
}
