//! Verification against a hostile tenant and a changing customer role: a
//! role that accepts foreign External IDs never becomes `active`, a result
//! applies only to the role it tested, and no customer session is handed
//! out while a changed role is being verified.

use std::collections::HashSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

async fn set_role(app: &FlowApp, org: &Org, link_id: &str, role: &str) -> Value {
    let res = put_role(app, org, link_id, role).await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    res.json().await.unwrap()
}

/// Polls until every job of `org` has ended and the link is not
/// `verifying`, calling `check` on each reading; returns the last one.
async fn settled_checking(
    app: &FlowApp,
    org: &Org,
    link_id: &str,
    check: impl Fn(&Value),
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let l = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        check(&l);
        let jobs = app.get_json("/v1/jobs?limit=200", &org.key).await;
        let done = jobs["data"].as_array().unwrap().iter().all(|j| {
            matches!(
                j["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        });
        if done && l["state"] != "verifying" {
            return l;
        }
        assert!(std::time::Instant::now() < deadline, "never settled: {l}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_settled(app: &FlowApp, org: &Org, link_id: &str) -> Value {
    settled_checking(app, org, link_id, |_| {}).await
}

fn external_id(link: &Value) -> String {
    link["external_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_accepting_foreign_external_ids_never_becomes_active_for_any_tenant() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 2).await;
        // Two SaaS tenants point a link at the same customer account.
        let (a, b) = (app.create_org("Alpha").await, app.create_org("Beta").await);
        let n = 6;
        let mut links_a = Vec::new();
        let mut links_b = Vec::new();
        for _ in 0..n {
            links_a.push(
                app.create_link(&a, Some(customer.account_id()), "provisioning")
                    .await,
            );
            links_b.push(
                app.create_link(&b, Some(customer.account_id()), "provisioning")
                    .await,
            );
        }
        let id = |l: &Value| l["id"].as_str().unwrap().to_owned();
        // (name, condition, readable, expected state for A, for B)
        let cases: Vec<(&str, Value, bool, &str, &str)> = vec![
            ("open", Value::Null, true, "insecure", "insecure"),
            (
                "like-any",
                json!({"StringLike": {"sts:ExternalId": "*"}}),
                true,
                "insecure",
                "insecure",
            ),
            // Not readable: the probes alone must catch the glob.
            (
                "like-xrx",
                json!({"StringLike": {"sts:ExternalId": "xrx-*"}}),
                false,
                "insecure",
                "insecure",
            ),
            (
                "null-false",
                json!({"Null": {"sts:ExternalId": "false"}}),
                true,
                "insecure",
                "insecure",
            ),
            // Both tenants' own IDs, each exactly: legitimate for both.
            (
                "both-ids",
                json!({"StringEquals": {"sts:ExternalId": [external_id(&links_a[4]), external_id(&links_b[4])]}}),
                true,
                "active",
                "active",
            ),
            // Exactly A's: A is active, B can never assume it.
            (
                "exact",
                json!({"StringEquals": {"sts:ExternalId": external_id(&links_a[5])}}),
                true,
                "active",
                "failed",
            ),
        ];
        assert_eq!(cases.len(), n);
        for (i, (name, condition, readable, _, _)) in cases.iter().enumerate() {
            let arn = customer_role(
                &aws,
                &customer,
                &format!("xrole-{name}"),
                condition.clone(),
                *readable,
            )
            .await;
            set_role(&app, &a, &id(&links_a[i]), &arn).await;
            set_role(&app, &b, &id(&links_b[i]), &arn).await;
        }
        for (i, (name, _, readable, want_a, want_b)) in cases.iter().enumerate() {
            for (org, link, want) in [(&a, &links_a[i], want_a), (&b, &links_b[i], want_b)] {
                let l = app.settled_link(org, &id(link)).await;
                assert_eq!(l["state"], *want, "{name}: {l}");
                if *want == "insecure" {
                    let why = l["last_error"].as_str().unwrap();
                    assert!(
                        why.contains("External ID") && why.contains("StringEquals"),
                        "{name}: the reason names the fix: {why}"
                    );
                }
                // The gate enforces the role's identity policies: a role
                // without iam:GetRole on itself cannot be read.
                if *want != "failed" {
                    let audit = if *readable { "audited" } else { "not_readable" };
                    assert_eq!(l["trust_policy_audit"], audit, "{name}: {l}");
                }
            }
        }
        // No insecure link can provision, and nothing was provisioned.
        let vpc = json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]});
        for l in &links_b[..4] {
            let res = app
                .post(&format!("/v1/aws-accounts/{}/vpcs", id(l)), &b.key, &vpc)
                .await;
            assert_eq!(res.status(), StatusCode::CONFLICT);
        }
        // The probes ran under their own session name, each once per
        // verification; no session was taken for anything else.
        let issued = aws.gate().issued_credentials();
        assert!(
            issued
                .iter()
                .all(|c| c.session_name.starts_with("xrole-verify")),
            "{issued:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_role_change_during_a_slow_verification_never_leaves_an_unverified_role_active() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 2).await;
        let org = app.create_org("Acme").await;
        let link = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = link["id"].as_str().unwrap().to_owned();
        let good = customer_role(
            &aws,
            &customer,
            "xrole-good",
            json!({"StringEquals": {"sts:ExternalId": external_id(&link)}}),
            true,
        )
        .await;
        let bad = customer_role(
            &aws,
            &customer,
            "xrole-bad",
            json!({"StringLike": {"sts:ExternalId": "*"}}),
            true,
        )
        .await;
        // Every STS call is slow: the good role's verification is still
        // running when the role changes to the bad one.
        aws.gate()
            .delay(Some("AssumeRole"), Duration::from_millis(400));
        set_role(&app, &org, &link_id, &good).await;
        tokio::time::sleep(Duration::from_millis(600)).await;
        set_role(&app, &org, &link_id, &bad).await;
        let never_bad_active = |l: &Value| {
            assert!(
                !(l["state"] == "active" && l["role_arn"] == bad.as_str()),
                "the unverified role became active: {l}"
            );
        };
        let last = settled_checking(&app, &org, &link_id, never_bad_active).await;
        aws.gate().delay(Some("AssumeRole"), Duration::ZERO);
        assert_eq!(last["state"], "insecure", "{last}");
        assert_eq!(last["role_arn"], bad.as_str());
        // The good role's result was kept in the audit trail and applied nowhere.
        let events = audit_events(&app, &org).await;
        let discarded: Vec<_> = events
            .iter()
            .filter(|e| e["action"] == "aws_account.verification_discarded")
            .collect();
        assert_eq!(discarded.len(), 1, "{events:#?}");
        assert_eq!(discarded[0]["details"]["role_arn"], good.as_str());
        assert_eq!(discarded[0]["details"]["state"], "active");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_role_changes_verifications_and_callbacks_keep_active_verified() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 2).await;
        let org = app.create_org("Acme").await;
        let link = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = link["id"].as_str().unwrap().to_owned();
        let secret = link["onboarding"]["parameters"]["CallbackSecret"]
            .as_str()
            .unwrap()
            .to_owned();
        let ext = external_id(&link);
        let exact = json!({"StringEquals": {"sts:ExternalId": ext}});
        let good = [
            customer_role(&aws, &customer, "xrole-good-1", exact.clone(), true).await,
            customer_role(&aws, &customer, "xrole-good-2", exact, false).await,
        ];
        let bad = [
            customer_role(
                &aws,
                &customer,
                "xrole-bad-1",
                json!({"StringLike": {"sts:ExternalId": "*"}}),
                true,
            )
            .await,
            customer_role(
                &aws,
                &customer,
                "xrole-bad-2",
                json!({"StringLike": {"sts:ExternalId": "xrx-*"}}),
                false,
            )
            .await,
            customer_role(&aws, &customer, "xrole-bad-3", Value::Null, true).await,
        ];
        let good_set: HashSet<&str> = good.iter().map(String::as_str).collect();
        let all: Vec<&String> = good.iter().chain(bad.iter()).collect();
        // The stack reports Create once (binding the link), then Updates.
        let stack = format!(
            "arn:aws:cloudformation:us-east-1:{}:stack/xrole/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f",
            customer.account_id()
        );
        let send = |event: &'static str, role: &str, n: usize| Callback {
            id: format!("msg_{event}_{n}"),
            timestamp: now_secs(),
            body: json!({"link_id": link_id, "event": event, "role_arn": role,
                "account_id": customer.account_id(), "stack_id": stack, "region": "us-east-1"})
            .to_string()
            .into_bytes(),
        };
        let res = app
            .send_callback(&secret, &send("Create", &good[0], 0))
            .await;
        assert_eq!(res.status(), StatusCode::OK);

        // A small deterministic generator: the same interleavings every run.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut current = good[0].clone();
        let check = |l: &Value| {
            if l["state"] == "active" {
                let r = l["role_arn"].as_str().unwrap();
                assert!(good_set.contains(r), "active on an unverified role: {l}");
            }
        };
        for step in 0..200 {
            aws.gate()
                .delay(Some("AssumeRole"), Duration::from_millis(next(30)));
            match next(4) {
                0 => {
                    current = all[usize::try_from(next(all.len() as u64)).unwrap()].clone();
                    set_role(&app, &org, &link_id, &current).await;
                }
                1 => {
                    current = all[usize::try_from(next(all.len() as u64)).unwrap()].clone();
                    let res = app
                        .send_callback(&secret, &send("Update", &current, step))
                        .await;
                    assert_eq!(res.status(), StatusCode::OK, "step {step}");
                }
                2 => {
                    let res = app
                        .request(
                            Method::POST,
                            &format!("/v1/aws-accounts/{link_id}/verify"),
                            Some(&org.key),
                            None,
                            None,
                        )
                        .await;
                    assert_eq!(res.status(), StatusCode::ACCEPTED, "step {step}");
                }
                _ => tokio::time::sleep(Duration::from_millis(next(40))).await,
            }
            let l = app
                .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
                .await;
            check(&l);
        }
        aws.gate().delay(Some("AssumeRole"), Duration::ZERO);
        let last = all_settled(&app, &org, &link_id).await;
        check(&last);
        assert_eq!(last["role_arn"], current.as_str());
        let want = if good_set.contains(current.as_str()) {
            "active"
        } else {
            "insecure"
        };
        assert_eq!(last["state"], want, "{last}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_customer_session_while_a_changed_role_is_verifying() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let mut app = spawn_flow_app(db, &aws, 1).await;
        let org = app.create_org("Acme").await;
        let link = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = link["id"].as_str().unwrap().to_owned();
        let exact = json!({"StringEquals": {"sts:ExternalId": external_id(&link)}});
        let first = customer_role(&aws, &customer, "xrole-first", exact.clone(), true).await;
        set_role(&app, &org, &link_id, &first).await;
        assert_eq!(app.settled_link(&org, &link_id).await["state"], "active");

        // Workers stop; a VPC job is accepted while the link is active, then
        // the role changes to a new one that IAM takes 2 s to propagate.
        app.workers.take().unwrap().shutdown().await;
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/vpcs"),
                &org.key,
                &json!({"name": "prod", "cidr_block": "10.0.0.0/16", "availability_zones": ["us-east-1a"]}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        let job: Value = res.json().await.unwrap();
        aws.gate().propagation_delay(Duration::from_secs(2));
        let second = customer_role(&aws, &customer, "xrole-second", exact, true).await;
        set_role(&app, &org, &link_id, &second).await;
        app.workers = Some(xrole_server::worker::WorkerPool::spawn(
            app.state.clone(),
            app.aws_runtime.clone(),
            1,
        ));
        let done = app.finished_job(&org, job["id"].as_str().unwrap()).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        // The job waited: its session is the second role's, taken only
        // after that role was verified.
        let events = audit_events(&app, &org).await;
        let mut chronological: Vec<&Value> = events.iter().collect();
        chronological.reverse();
        let verified_at = chronological
            .iter()
            .position(|e| {
                e["action"] == "aws_account.verified" && e["details"]["role_arn"] == second.as_str()
            })
            .expect("the second role was verified");
        let provision_sessions: Vec<(usize, &Value)> = chronological
            .iter()
            .enumerate()
            .filter(|(_, e)| {
                e["action"] == "aws.assume_role" && e["details"]["purpose"] == "provision"
            })
            .map(|(i, e)| (i, *e))
            .collect();
        assert!(!provision_sessions.is_empty());
        for (i, e) in provision_sessions {
            assert!(
                i > verified_at,
                "a session before the role was verified: {e}"
            );
            assert_eq!(e["details"]["role_arn"], second.as_str());
        }
        aws.gate().propagation_delay(Duration::ZERO);
    }
}
