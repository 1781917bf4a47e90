use reqwest::{Method, StatusCode};
use serde_json::json;
use xrole_server::config::RateLimit;
use xrole_testkit::TestDb;

use crate::each_db;
use crate::helpers::{Options, assert_problem, spawn_app_with};

async fn db_checkouts(app: &crate::helpers::TestApp) -> u64 {
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("xrole_db_checkouts_total "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn malformed_keys_are_401_without_touching_the_database() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        // Flip one character of the secret: the checksum no longer matches.
        let mut flipped = org.admin_key.clone().into_bytes();
        let i = flipped.len() - 10;
        flipped[i] = if flipped[i] == b'a' { b'b' } else { b'a' };
        let flipped = String::from_utf8(flipped).unwrap();
        let before = db_checkouts(&app).await;
        for header in [
            "Bearer".to_owned(),
            "Bearer ".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            "Bearer xrk_".to_owned(),
            "Bearer xrk_short_key".to_owned(),
            format!("Bearer {flipped}"),
            format!("Bearer {}x", org.admin_key),
            format!("Token {}", org.admin_key),
        ] {
            let res = app
                .client
                .get(app.url("/v1/organization"))
                .header("authorization", header)
                .send()
                .await
                .unwrap();
            assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
            assert_problem(res, 401, "unauthenticated").await;
        }
        let res = app
            .request(Method::GET, "/v1/organization", None, None)
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        // /metrics itself does not use the database.
        assert_eq!(db_checkouts(&app).await, before);
    });
}

#[tokio::test]
async fn well_formed_but_unknown_key_is_401() {
    each_db!(|app| {
        let key = xrole_crypto::ApiKey::generate();
        app.secret(key.expose_secret());
        assert_problem(
            app.get("/v1/organization", key.expose_secret()).await,
            401,
            "unauthenticated",
        )
        .await;
        // Right key_id, wrong secret: same answer.
        let org = app.create_org("Acme").await;
        let other = xrole_crypto::ApiKey::generate();
        let forged = format!(
            "xrk_{}_{}",
            org.admin_key.split('_').nth(1).unwrap(),
            other.expose_secret().split('_').nth(2).unwrap()
        );
        app.secret(&forged);
        assert_problem(
            app.get("/v1/organization", &forged).await,
            401,
            "unauthenticated",
        )
        .await;
    });
}

#[tokio::test]
async fn rate_limit_per_key_answers_429_with_retry_after() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app_with(
            db,
            Options {
                rate_limit: RateLimit {
                    per_second: 1.0,
                    burst: 3,
                },
                ..Options::default()
            },
        )
        .await;
        let a = app.create_org("Acme").await;
        let b = app.create_org("Beta").await;
        for _ in 0..3 {
            assert_eq!(
                app.get("/v1/organization", &a.admin_key).await.status(),
                StatusCode::OK
            );
        }
        let res = app.get("/v1/organization", &a.admin_key).await;
        assert_eq!(res.headers().get("retry-after").unwrap(), "1");
        assert_problem(res, 429, "rate_limited").await;
        // Another key has its own bucket.
        assert_eq!(
            app.get("/v1/organization", &b.admin_key).await.status(),
            StatusCode::OK
        );
        app.clock.advance_ms(1_000);
        assert_eq!(
            app.get("/v1/organization", &a.admin_key).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.get("/v1/organization", &a.admin_key).await.status(),
            429
        );
        let _ = json!({});
    }
}

#[tokio::test]
async fn audit_trail_is_admin_only() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        assert_problem(app.get("/v1/audit-events", &m.key).await, 403, "forbidden").await;
        let res = app
            .request(Method::GET, "/v1/audit-events", None, None)
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        let v: serde_json::Value = app
            .get("/v1/audit-events?limit=1", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["action"], "session.created");
        assert_eq!(v["data"][0]["actor"], format!("user:{}", m.id));
        assert!(v["next_cursor"].is_string());
    });
}
