//! Hardening: after a realistic flow (organization, users with passwords,
//! sessions, API keys with idempotent replays, an AWS account link whose
//! customer deploys the template and whose Lambda calls back, verified
//! through STS on moto, then a VPC provisioned on a session of the
//! customer's role), neither the database's bytes nor any captured log line
//! contains an API key, password, session token, callback secret, keyring key,
//! the SaaS identity's secret key or the AWS session credentials STS issued
//! — raw, hex or base64.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The flow tests' support module (it allows its own dead code).
#[path = "flow/support.rs"]
mod support;

use std::sync::Arc;

use aws_credential_types::provider::ProvideCredentials;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use support::*;
use xrole_testkit::{Aws, TestDb};

/// Every encoding a careless write could leave a secret in.
fn encodings(raw: &[u8]) -> Vec<Vec<u8>> {
    let mut v = vec![
        raw.to_vec(),
        hex(raw).into_bytes(),
        hex(raw).to_uppercase().into_bytes(),
    ];
    for e in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
        v.push(e.encode(raw).into_bytes());
    }
    v
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The raw pepper and data keys of a keyring, read from its text form
/// (`;pepper=<b64>;…;key.<id>=<b64>`).
fn keyring_material(text: &str) -> Vec<Vec<u8>> {
    let out: Vec<Vec<u8>> = text
        .split(';')
        .filter_map(|f| f.split_once('='))
        .filter(|(k, _)| *k == "pepper" || k.starts_with("key."))
        .map(|(_, v)| STANDARD.decode(v).unwrap())
        .collect();
    assert!(out.len() >= 3, "pepper and two keys expected");
    assert!(out.iter().all(|k| k.len() >= 32));
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// The stored bytes: SQLite's file with its WAL, or a PostgreSQL data dump.
fn database_bytes(db: &TestDb) -> Vec<u8> {
    if let Some(path) = db.sqlite_path() {
        let mut bytes = Vec::new();
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let p = format!("{}{suffix}", path.display());
            if let Ok(b) = std::fs::read(&p) {
                bytes.extend(b);
            }
        }
        bytes
    } else {
        let out = std::process::Command::new("pg_dump")
            .args(["--data-only", "--no-owner", db.url()])
            .output()
            .expect("pg_dump (postgresql-client) is needed for the PostgreSQL scan");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_secret_reaches_the_database_or_the_logs() {
    let aws = Aws::start().await.unwrap();
    for db in TestDb::all().unwrap() {
        let backend = format!("{:?}", db.backend());
        let mut keyring = xrole_crypto::Keyring::generate().unwrap();
        keyring.add_key().unwrap();
        let keyring_text = keyring.to_text().expose_secret().to_owned();
        let customer = aws.customer().await.unwrap();
        let app = spawn_on(db.url(), Arc::new(keyring), &aws, test_settings(), 1).await;

        let mut secrets: Vec<(String, Vec<u8>)> =
            vec![("operator token".into(), OPERATOR_TOKEN.into())];
        let org = app.create_org("Acme").await;
        secrets.push(("admin key".into(), org.key.clone().into()));

        // A member with a password, logged in.
        let password = "correct horse battery staple 7f3a";
        secrets.push(("password".into(), password.into()));
        let res = app
            .post(
                "/v1/users",
                &org.key,
                &json!({"email": "mia@acme.example.com", "role": "operator", "password": password}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        let res = app
            .request(
                Method::POST,
                "/v1/sessions",
                None,
                None,
                Some(&json!({"organization_id": org.id, "email": "mia@acme.example.com", "password": password})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let session: Value = res.json().await.unwrap();
        let session_key = session["token"].as_str().unwrap().to_owned();
        secrets.push(("session token".into(), session_key.clone().into()));
        assert_eq!(
            app.request(
                Method::GET,
                "/v1/organization",
                Some(&session_key),
                None,
                None
            )
            .await
            .status(),
            StatusCode::OK
        );

        // An API key created idempotently: the stored replay holds the token.
        let body = json!({"name": "ci"});
        let first = app
            .request(
                Method::POST,
                "/v1/api-keys",
                Some(&org.key),
                Some("key-create-1"),
                Some(&body),
            )
            .await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let first: Value = first.json().await.unwrap();
        let replay: Value = app
            .request(
                Method::POST,
                "/v1/api-keys",
                Some(&org.key),
                Some("key-create-1"),
                Some(&body),
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(replay, first, "the replay answers the same token");
        let api_key = first["token"].as_str().unwrap().to_owned();
        secrets.push(("api key".into(), api_key.clone().into()));

        // The link: callback secret, template, Lambda callback, STS verification.
        let created = app
            .create_link(&org, Some(customer.account_id()), "provisioning")
            .await;
        let link_id = created["id"].as_str().unwrap().to_owned();
        let onboarding = &created["onboarding"];
        let callback_secret = onboarding["parameters"]["CallbackSecret"]
            .as_str()
            .unwrap()
            .to_owned();
        let callback_raw = STANDARD
            .decode(callback_secret.trim_start_matches("whsec_"))
            .unwrap();
        secrets.push(("callback secret".into(), callback_secret.clone().into()));
        let stack = deploy_stack(&customer, onboarding).await;
        let bucket = ResponseBucket::start().await;
        run_lambda("Create", &stack, onboarding, &bucket).await;
        let link = app.settled_link(&org, &link_id).await;
        assert_eq!(link["state"], "active", "{backend}: {link}");

        // A provisioning job: the worker assumes the customer's role and
        // builds a VPC with that session.
        let res = app
            .post(
                &format!("/v1/aws-accounts/{link_id}/vpcs"),
                &org.key,
                &json!({"name": "prod", "cidr_block": "10.40.0.0/16", "availability_zones": ["us-east-1a"]}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::ACCEPTED,
            "{}",
            res.text().await.unwrap()
        );
        let job: Value = res.json().await.unwrap();
        let job = app.finished_job(&org, job["id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{backend}: {job}");
        assert!(
            aws.gate()
                .count_for_account("CreateVpc", customer.account_id())
                >= 1,
            "{backend}: the VPC was made with a session in the customer's account"
        );

        drop(app);

        // The temporary credentials STS issued for the customer's role (the
        // gate records every AssumeRole it let through): verification's and
        // the job's sessions.
        let issued: Vec<_> = aws
            .gate()
            .issued_credentials()
            .into_iter()
            .filter(|c| c.role_arn == stack.role_arn)
            .collect();
        assert!(
            !issued.is_empty(),
            "{backend}: no session was issued for {}",
            stack.role_arn
        );
        let saas = aws
            .saas_config()
            .credentials_provider()
            .unwrap()
            .provide_credentials()
            .await
            .unwrap();
        let mut session_secrets: Vec<(String, Vec<u8>)> = vec![(
            "SaaS secret access key".into(),
            saas.secret_access_key().into(),
        )];
        for (i, c) in issued.iter().enumerate() {
            session_secrets.push((
                format!("session {i} ({}) secret access key", c.session_name),
                c.secret_access_key.clone().into(),
            ));
            session_secrets.push((
                format!("session {i} ({}) session token", c.session_name),
                c.session_token.clone().into(),
            ));
        }

        let mut raw: Vec<(String, Vec<u8>)> = vec![("callback secret (raw)".into(), callback_raw)];
        for (i, k) in keyring_material(&keyring_text).into_iter().enumerate() {
            raw.push((format!("keyring key {i}"), k));
        }
        // The AWS secrets are text: searched as is, and hex or base64 of that text.
        raw.extend(session_secrets);
        for (what, bytes) in raw {
            for (j, enc) in encodings(&bytes).into_iter().enumerate() {
                secrets.push((format!("{what} encoding {j}"), enc));
            }
        }
        secrets.push(("keyring text".into(), keyring_text.into()));

        let stored = database_bytes(&db);
        let logs = captured_logs();
        // The scan reads real data: plain columns are there.
        assert!(
            contains(&stored, b"mia@acme.example.com"),
            "{backend}: scan sees no data"
        );
        assert!(contains(&stored, link_id.as_bytes()), "{backend}");
        assert!(
            contains(&stored, job["id"].as_str().unwrap().as_bytes()),
            "{backend}"
        );
        assert!(logs.contains(&org.id), "the logs were captured");
        for (what, s) in &secrets {
            assert!(
                !contains(&stored, s),
                "{backend}: {what} is in the database"
            );
            assert!(
                !contains(logs.as_bytes(), s),
                "{backend}: {what} is in the logs"
            );
        }
    }
}
