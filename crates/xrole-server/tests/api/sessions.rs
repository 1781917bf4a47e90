use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::each_db;
use crate::helpers::{assert_invalid_field, assert_problem};

#[tokio::test]
async fn login_issues_a_short_lived_key() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let res = app
            .request(
                Method::POST,
                "/v1/sessions",
                None,
                Some(&json!({"organization_id": org.id, "email": "M@acme.example.com", "password": m.password})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        app.secret(&token);
        assert!(token.starts_with("xrk_"));
        assert_eq!(v["owner_user_id"], m.id.as_str());
        assert!(v["expires_at"].is_string());
        assert_eq!(app.get("/v1/organization", &token).await.status(), 200);
        // One hour later (the default session lifetime) it no longer works.
        app.clock.advance_ms(3_600_000);
        assert_problem(
            app.get("/v1/organization", &token).await,
            401,
            "unauthenticated",
        )
        .await;
        assert!(
            app.audit_actions(&org)
                .await
                .contains(&"session.created".to_owned())
        );
    });
}

#[tokio::test]
async fn failed_logins_all_look_the_same() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let other = app.create_org("Other").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        // A user without a password cannot log in with any password.
        let body = json!({"email": "nopw@acme.example.com", "role": "operator"});
        assert_eq!(
            app.post("/v1/users", &org.admin_key, &body).await.status(),
            201
        );
        let zero = "00000000-0000-0000-0000-000000000000";
        for (org_id, email, password) in [
            (org.id.as_str(), "m@acme.example.com", "wrong password!"),
            (
                org.id.as_str(),
                "nobody@acme.example.com",
                m.password.as_str(),
            ),
            (other.id.as_str(), "m@acme.example.com", m.password.as_str()),
            (zero, "m@acme.example.com", m.password.as_str()),
            (org.id.as_str(), "nopw@acme.example.com", "anything at all"),
        ] {
            let res = app
                .request(
                    Method::POST,
                    "/v1/sessions",
                    None,
                    Some(&json!({"organization_id": org_id, "email": email, "password": password})),
                )
                .await;
            let v = assert_problem(res, 401, "unauthenticated").await;
            assert_eq!(v["detail"], "authentication required");
        }
    });
}

#[tokio::test]
async fn login_rejects_each_bad_field() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let ok = json!({"organization_id": org.id, "email": "a@acme.example.com", "password": "whatever password"});
        for (field, value) in [
            ("organization_id", json!("acme")),
            ("email", json!("not an email")),
            ("password", json!("")),
        ] {
            let mut body = ok.clone();
            body[field] = value;
            let res = app
                .request(Method::POST, "/v1/sessions", None, Some(&body))
                .await;
            assert_invalid_field(res, field).await;
        }
        for body in [
            json!({"organization_id": org.id, "email": "a@acme.example.com"}),
            json!({"organization_id": org.id, "email": "a@acme.example.com", "password": 12345}),
            json!({"organization_id": org.id, "email": "a@acme.example.com", "password": "x", "remember": true}),
        ] {
            let res = app
                .request(Method::POST, "/v1/sessions", None, Some(&body))
                .await;
            assert_problem(res, 400, "invalid_body").await;
        }
    });
}
