use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_testkit::TestDb;

use crate::each_db;
use crate::helpers::{
    OPERATOR_TOKEN, Options, assert_invalid_field, assert_problem, spawn_app_with,
};

#[tokio::test]
async fn operator_creates_org_with_admin_and_working_key() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = app.get("/v1/organization", &org.admin_key).await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["id"], org.id.as_str());
        assert_eq!(v["name"], "Acme");
        let me: Value = app
            .get(&format!("/v1/users/{}", org.admin_id), &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(me["role"], "admin");
        assert_eq!(me["email"], "admin@acme.example.com");
        assert_eq!(app.audit_actions(&org).await, vec!["organization.created"]);
    });
}

#[tokio::test]
async fn creating_an_org_needs_the_operator_token_unless_signup_is_open() {
    each_db!(|app| {
        let body = json!({"name": "Acme", "admin_email": "a@acme.example.com"});
        let res = app
            .request(Method::POST, "/v1/organizations", None, Some(&body))
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        let res = app
            .post("/v1/organizations", "not-the-operator-token", &body)
            .await;
        assert_problem(res, 401, "unauthenticated").await;
        // An org admin's key is not the operator token either.
        let org = app.create_org("Other").await;
        let res = app.post("/v1/organizations", &org.admin_key, &body).await;
        assert_problem(res, 401, "unauthenticated").await;
    });
    for db in TestDb::all().unwrap() {
        let app = spawn_app_with(
            db,
            Options {
                signup_open: true,
                ..Options::default()
            },
        )
        .await;
        let body = json!({"name": "Open", "admin_email": "a@open.example.com", "admin_password": "a long enough password"});
        app.secret("a long enough password");
        let res = app
            .request(Method::POST, "/v1/organizations", None, Some(&body))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        app.secret(v["api_key"]["token"].as_str().unwrap());
        // The admin can log in with the password.
        let key = app
            .login(
                v["organization"]["id"].as_str().unwrap(),
                "a@open.example.com",
                "a long enough password",
            )
            .await;
        assert_eq!(
            app.get("/v1/organization", &key).await.status(),
            StatusCode::OK
        );
        // A wrong operator token is still refused.
        let res = app.post("/v1/organizations", "wrong", &body).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn org_creation_rejects_each_bad_field() {
    each_db!(|app| {
        let ok = json!({"name": "Acme", "admin_email": "a@acme.example.com"});
        for (field, value) in [
            ("name", json!("")),
            ("name", json!("x".repeat(101))),
            ("name", json!("bad\u{0007}name")),
            ("admin_email", json!("not-an-email")),
            ("admin_password", json!("short")),
        ] {
            let mut body = ok.clone();
            body[field] = value;
            let res = app.post("/v1/organizations", OPERATOR_TOKEN, &body).await;
            assert_invalid_field(res, field).await;
        }
        for body in [
            json!({"name": 5, "admin_email": "a@acme.example.com"}),
            json!({"name": "Acme"}),
            json!({"name": "Acme", "admin_email": "a@acme.example.com", "plan": "gold"}),
            json!([1, 2]),
        ] {
            let res = app.post("/v1/organizations", OPERATOR_TOKEN, &body).await;
            assert_problem(res, 400, "invalid_body").await;
        }
    });
}

#[tokio::test]
async fn get_own_org_requires_a_key() {
    each_db!(|app| {
        let res = app
            .request(Method::GET, "/v1/organization", None, None)
            .await;
        assert_problem(res, 401, "unauthenticated").await;
    });
}
