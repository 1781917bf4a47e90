//! An organization's accounts all reporting at once: every account one
//! verified link, no duplicates, and the verifications' STS calls within
//! the broker's budget.
//!
//! `XROLE_ORG_SCALE_ACCOUNTS` (default 40) sets the number of accounts and
//! `XROLE_ORG_SCALE_STS_PER_SECOND` (default 25) and
//! `XROLE_ORG_SCALE_STS_BURST` (default a fifth of the rate) the budget; `docs/benchmarks.md` records the 1,000-account run.

use std::time::Instant;

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use xrole_server::link_flow::AwsSettings;
use xrole_testkit::{Aws, CustomerAccount, TestDb};

use crate::organizations::acme_connection;
use crate::support::*;

fn env_number(name: &str, default: u32) -> u32 {
    std::env::var(name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be a number"))
    })
}

/// A member account with the role the StackSet would have created in it.
async fn member(aws: &Aws, external_id: &str) -> (CustomerAccount, String) {
    let account = aws.customer().await.unwrap();
    let role = account
        .create_xrole_role("xrole-org", &aws.saas_principal_arn(), external_id)
        .await
        .unwrap();
    (account, role)
}

/// Every account of the connection, page by page.
async fn all_links(app: &FlowApp, org: &Org, connection: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/aws-accounts?organization_id={connection}&limit=200");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = app.get_json(&path, &org.key).await;
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_organization_reporting_at_once_gets_one_verified_link_per_account() {
    let accounts = env_number("XROLE_ORG_SCALE_ACCOUNTS", 40) as usize;
    let per_second = env_number("XROLE_ORG_SCALE_STS_PER_SECOND", 25);
    let burst = env_number("XROLE_ORG_SCALE_STS_BURST", (per_second / 5).max(1));
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let backend = format!("{:?}", db.backend());
        let settings = AwsSettings {
            sts_budget_per_second: f64::from(per_second),
            sts_budget_burst: burst,
            ..test_settings()
        };
        let app = spawn_flow_app_with(db, &aws, 4, settings, |_| {}).await;
        let org = app.create_org("Acme").await;
        let created = acme_connection(&app, &org, None).await;
        let cid = created["id"].as_str().unwrap().to_owned();
        let external_id = created["external_id"].as_str().unwrap().to_owned();
        let secret = created["onboarding"]["parameters"]["CallbackSecret"]
            .as_str()
            .unwrap()
            .to_owned();

        // The StackSet has created every account's role.
        let members: Vec<(CustomerAccount, String)> = futures::stream::iter(0..accounts)
            .map(|_| member(&aws, &external_id))
            .buffer_unordered(16)
            .collect()
            .await;

        // Every stack reports at once, and CloudFormation delivers each
        // report twice (two messages, as a retried custom resource does).
        aws.gate().reset_counters();
        let start = Instant::now();
        let connection = cid.as_str();
        let reports = members.iter().flat_map(|(account, role)| {
            let stack = format!(
                "arn:aws:cloudformation:us-east-1:{}:stack/StackSet-xrole-{}/{}",
                account.account_id(),
                account.account_id(),
                uuid::Uuid::new_v4()
            );
            (0..2).map(move |copy| {
                let body = json!({"connection_id": connection, "event": "Create", "role_arn": role,
                    "account_id": account.account_id(), "stack_id": stack,
                    "region": "us-east-1"});
                Callback {
                    id: format!("msg_{}_{copy}", account.account_id()),
                    timestamp: now_secs(),
                    body: body.to_string().into_bytes(),
                }
            })
        });
        let statuses: Vec<StatusCode> = futures::stream::iter(reports)
            .map(|cb| {
                let app = &app;
                let secret = &secret;
                async move { app.send_callback(secret, &cb).await.status() }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        assert!(
            statuses.iter().all(|s| *s == StatusCode::OK),
            "{backend}: {statuses:?}"
        );
        let reported = start.elapsed().as_secs_f64();

        // Wait until no account is pending or being verified.
        let summary = loop {
            let s = app
                .get_json(&format!("/v1/aws-organizations/{cid}"), &org.key)
                .await;
            let a = &s["accounts"];
            if a["pending"] == 0 && a["verifying"] == 0 && a["total"] == accounts {
                break s;
            }
            assert!(
                start.elapsed().as_secs() < 600 + 2 * accounts as u64,
                "{backend}: never settled: {s}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        };
        let elapsed = start.elapsed().as_secs_f64();
        assert_eq!(
            summary["accounts"]["active"], accounts,
            "{backend}: {summary}"
        );
        assert_eq!(summary["state"], "active");

        // One link per account, each verified on its own.
        let links = all_links(&app, &org, &cid).await;
        assert_eq!(links.len(), accounts, "{backend}");
        let mut seen = std::collections::HashSet::new();
        for l in &links {
            assert!(
                seen.insert(l["aws_account_id"].as_str().unwrap().to_owned()),
                "{backend}: two links for one account: {l}"
            );
            assert_eq!(l["state"], "active", "{backend}: {l}");
            assert_eq!(l["organization_id"], cid.as_str());
        }
        for (account, _) in &members {
            assert!(seen.contains(account.account_id()), "{backend}");
        }

        // Five STS calls per verification at least, and never more than
        // the budget allowed over the run.
        let assume = aws.gate().count("AssumeRole");
        let identity = aws.gate().count("GetCallerIdentity");
        let sts = assume + identity;
        assert!(sts >= 5 * accounts as u64, "{backend}: {sts}");
        let allowed = f64::from(burst) + f64::from(per_second) * elapsed;
        assert!(
            sts as f64 <= allowed + 1.0,
            "{backend}: {sts} STS calls in {elapsed:.1} s exceed the budget ({allowed:.0})"
        );
        eprintln!(
            "{backend}: {accounts} accounts, {} callbacks answered in {reported:.1} s, \
             all active after {elapsed:.1} s; STS calls {sts} ({assume} AssumeRole, \
             {identity} GetCallerIdentity; budget {per_second}/s, burst {burst}, \
             allowed {allowed:.0}); {:.1} STS calls per account",
            2 * accounts,
            sts as f64 / accounts as f64,
        );
    }
}
