//! Forged, stale, replayed, expired and mismatched callbacks change nothing.

use reqwest::StatusCode;
use serde_json::Value;
use xrole_testkit::{Aws, TestDb};

use crate::support::*;

async fn jobs_of(app: &FlowApp, org: &Org) -> Vec<Value> {
    app.get_json("/v1/jobs?limit=200", &org.key).await["data"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_callbacks_have_no_effect_and_a_replay_has_no_second_effect() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        // No workers: the link stays where the callback put it.
        let app = spawn_flow_app(db, &aws, 0).await;
        let org = app.create_org("Acme").await;
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        let secret = created["onboarding"]["parameters"]["CallbackSecret"]
            .as_str()
            .unwrap()
            .to_owned();
        let role = format!("arn:aws:iam::{}:role/xrole-abc", customer.account_id());
        let body = callback_body(&link_id, "Create", &role, customer.account_id());
        let pending = |v: &Value| assert_eq!(v["state"], "pending", "{v}");

        // Forged: signed with another secret.
        let other = xrole_crypto::WebhookSecret::generate();
        let forged = Callback {
            id: "msg_forged1".into(),
            timestamp: now_secs(),
            body: body.clone(),
        };
        let res = app.send_callback(other.expose_secret(), &forged).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // Signed correctly but the body was changed afterwards.
        let s = xrole_crypto::WebhookSecret::parse(&secret).unwrap();
        let sig = s.sign("msg_tampered", now_secs(), &body);
        let tampered = callback_body(
            &link_id,
            "Create",
            "arn:aws:iam::999999999999:role/evil",
            "999999999999",
        );
        let res = app
            .client
            .post(app.url("/v1/callbacks/cloudformation"))
            .header("content-type", "application/json")
            .header("webhook-id", "msg_tampered")
            .header("webhook-timestamp", now_secs().to_string())
            .header("webhook-signature", sig)
            .body(tampered)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        // Missing signature headers.
        let res = app
            .client
            .post(app.url("/v1/callbacks/cloudformation"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error());
        // Stale and future timestamps (outside ±300 s).
        for ts in [now_secs() - 301 - 60, now_secs() + 301 + 60] {
            let stale = Callback {
                id: format!("msg_stale{ts}"),
                timestamp: ts,
                body: body.clone(),
            };
            let res = app.send_callback(&secret, &stale).await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "timestamp {ts}");
        }
        // A role in another account than the link's.
        let elsewhere = "arn:aws:iam::999999999999:role/xrole-abc";
        let wrong = Callback {
            id: "msg_wrongaccount".into(),
            timestamp: now_secs(),
            body: callback_body(&link_id, "Create", elsewhere, "999999999999"),
        };
        let res = app.send_callback(&secret, &wrong).await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(
            res.json::<Value>().await.unwrap()["code"],
            "account_mismatch"
        );
        // An unknown link.
        let unknown = Callback {
            id: "msg_unknown".into(),
            timestamp: now_secs(),
            body: callback_body(
                &uuid::Uuid::now_v7().to_string(),
                "Create",
                &role,
                customer.account_id(),
            ),
        };
        assert_eq!(
            app.send_callback(&secret, &unknown).await.status(),
            StatusCode::UNAUTHORIZED
        );

        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        pending(&link);
        assert!(link["role_arn"].is_null());
        assert!(
            jobs_of(&app, &org).await.is_empty(),
            "no verification was queued"
        );

        // The genuine callback: verifying, one job. Its replay: 200, nothing more.
        let good = Callback {
            id: "msg_good".into(),
            timestamp: now_secs(),
            body: body.clone(),
        };
        let res = app.send_callback(&secret, &good).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["applied"], true);
        let res = app.send_callback(&secret, &good).await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.json::<Value>().await.unwrap()["applied"], false);
        let jobs = jobs_of(&app, &org).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        assert_eq!(jobs[0]["kind"], "verify_link");
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["state"], "verifying");
        assert_eq!(link["role_arn"], role.as_str());
        let callbacks = audit_events(&app, &org)
            .await
            .into_iter()
            .filter(|e| e["action"] == "aws_account.callback")
            .count();
        assert_eq!(callbacks, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_link_refuses_its_first_report() {
    let aws = Aws::start().await.unwrap();
    let db = TestDb::sqlite().unwrap();
    let customer = aws.customer().await.unwrap();
    let app = spawn_flow_app(db, &aws, 0).await;
    let org = app.create_org("Acme").await;
    let created = app.create_link(&org, None, "read_only").await;
    let link_id = created["id"].as_str().unwrap().to_owned();
    let secret = created["onboarding"]["parameters"]["CallbackSecret"]
        .as_str()
        .unwrap()
        .to_owned();
    // 48 h pass without a stack reporting.
    set_callback_secret_expiry(&app, &link_id, 1_000);
    let role = format!("arn:aws:iam::{}:role/xrole-abc", customer.account_id());
    let cb = Callback {
        id: "msg_late".into(),
        timestamp: now_secs(),
        body: callback_body(&link_id, "Create", &role, customer.account_id()),
    };
    let res = app.send_callback(&secret, &cb).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "link_expired");
    assert!(v["detail"].as_str().unwrap().contains("create a new one"));
    let link = app
        .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
        .await;
    assert_eq!(link["state"], "pending");
    assert!(
        link["aws_account_id"].is_null(),
        "learned nothing from a refused callback"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_create_binds_the_stack_and_the_secret_expires() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let customer = aws.customer().await.unwrap();
        let app = spawn_flow_app(db, &aws, 0).await;
        let org = app.create_org("Acme").await;
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        let secret = created["onboarding"]["parameters"]["CallbackSecret"]
            .as_str()
            .unwrap()
            .to_owned();
        let account = customer.account_id();
        let role = format!("arn:aws:iam::{account}:role/xrole-abc");
        let stack = |n: u32| {
            format!(
                "arn:aws:cloudformation:us-east-1:{account}:stack/xrole-{n}/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5{n}"
            )
        };
        let cb = |id: &str, event: &str, stack_id: &str| Callback {
            id: id.to_owned(),
            timestamp: now_secs(),
            body: serde_json::json!({"link_id": link_id, "event": event, "role_arn": role,
                "account_id": account, "stack_id": stack_id, "region": "us-east-1"})
            .to_string()
            .into_bytes(),
        };
        let code = |v: &Value| v["code"].as_str().unwrap_or_default().to_owned();

        // Before any Create, an Update or Delete has no stack to come from.
        for event in ["Update", "Delete"] {
            let res = app
                .send_callback(
                    &secret,
                    &cb(&format!("msg_early_{event}"), event, &stack(1)),
                )
                .await;
            assert_eq!(res.status(), StatusCode::CONFLICT);
            assert_eq!(code(&res.json().await.unwrap()), "stack_not_bound");
        }
        // The first Create binds stack 1 and starts the secret's bounded life.
        let res = app
            .send_callback(&secret, &cb("msg_create_1", "Create", &stack(1)))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["stack_id"], stack(1));
        assert_eq!(link["state"], "verifying");
        let expires = link["expires_at"].as_str().unwrap().to_owned();
        // A second stack's Create (a leaked secret, a copied quick-create
        // link) cannot take the link over; nor its Update or Delete.
        for (n, event) in ["Create", "Update", "Delete"].into_iter().enumerate() {
            let res = app
                .send_callback(&secret, &cb(&format!("msg_other_{n}"), event, &stack(2)))
                .await;
            assert_eq!(res.status(), StatusCode::CONFLICT, "{event}");
            let v: Value = res.json().await.unwrap();
            assert_eq!(code(&v), "stack_mismatch", "{event}: {v}");
            if event == "Create" {
                assert!(
                    v["detail"].as_str().unwrap().contains("create a new link"),
                    "{v}"
                );
            }
        }
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["stack_id"], stack(1));
        assert_eq!(link["state"], "verifying");
        // The bound stack's Update is accepted (and does not extend the secret).
        let res = app
            .send_callback(&secret, &cb("msg_update_1", "Update", &stack(1)))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["expires_at"], expires.as_str());

        // The secret's life runs out (a week by default): even the bound
        // stack's events are refused from then on.
        set_callback_secret_expiry(&app, &link_id, 1_000);
        let res = app
            .send_callback(&secret, &cb("msg_late_delete", "Delete", &stack(1)))
            .await;
        assert_eq!(res.status(), StatusCode::CONFLICT);
        assert_eq!(code(&res.json().await.unwrap()), "callback_secret_expired");
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["state"], "verifying");
        set_callback_secret_expiry(&app, &link_id, i64::MAX / 2);
        // Delete from the bound stack disconnects.
        let res = app
            .send_callback(&secret, &cb("msg_delete_1", "Delete", &stack(1)))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let link = app
            .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
            .await;
        assert_eq!(link["state"], "disconnected");
    }
}

/// Moves a link's callback secret expiry (as time passing would).
fn set_callback_secret_expiry(app: &FlowApp, link_id: &str, ms: i64) {
    use diesel::RunQueryDsl as _;
    let mut conn = app.state.pool.get().unwrap();
    let n = diesel::sql_query(format!(
        "UPDATE aws_account_links SET callback_secret_expires_ms = {ms} WHERE id = '{link_id}'"
    ))
    .execute(&mut conn)
    .unwrap();
    assert_eq!(n, 1);
}
