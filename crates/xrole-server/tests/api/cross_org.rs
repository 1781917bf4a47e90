//! Org B's key on every route taking org A's ids → 404, and A is unchanged.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::each_db;
use crate::helpers::assert_problem;

#[tokio::test]
async fn another_orgs_ids_are_404_on_every_route() {
    each_db!(|app| {
        let a = app.create_org("Alpha").await;
        let b = app.create_org("Beta").await;
        let a_member = app.create_user(&a, "m@alpha.example.com", "operator").await;
        let cases = [
            (Method::GET, format!("/v1/users/{}", a_member.id), None),
            (
                Method::PATCH,
                format!("/v1/users/{}", a_member.id),
                Some(json!({"role": "admin"})),
            ),
            (Method::DELETE, format!("/v1/users/{}", a_member.id), None),
            (Method::GET, format!("/v1/users/{}", a.admin_id), None),
            (
                Method::PATCH,
                format!("/v1/users/{}", a.admin_id),
                Some(json!({"disabled": true})),
            ),
            (Method::DELETE, format!("/v1/users/{}", a.admin_id), None),
            (
                Method::DELETE,
                format!("/v1/api-keys/{}", a.admin_key_id),
                None,
            ),
        ];
        for (method, path, body) in &cases {
            let res = app
                .request(method.clone(), path, Some(&b.admin_key), body.as_ref())
                .await;
            assert_problem(res, 404, "not_found").await;
        }
        // Nothing changed in A.
        assert_eq!(
            app.get("/v1/organization", &a.admin_key).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.get("/v1/organization", &a_member.key).await.status(),
            StatusCode::OK
        );
        let m: Value = app
            .get(&format!("/v1/users/{}", a_member.id), &a.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(m["role"], "operator");
        assert_eq!(m["disabled"], false);
        // Lists show only the caller's organization.
        let users: Value = app
            .get("/v1/users", &b.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(users["data"].as_array().unwrap().len(), 1);
        let keys: Value = app
            .get("/v1/api-keys", &b.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(keys["data"].as_array().unwrap().len(), 1);
        let org: Value = app
            .get("/v1/organization", &b.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(org["id"], b.id.as_str());
        let audit: Value = app
            .get("/v1/audit-events", &b.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            audit["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|e| e["action"] == "organization.created")
        );
        // A's audit trail has no trace of B's attempts.
        assert!(
            !app.audit_actions(&a)
                .await
                .iter()
                .any(|x| x == "user.updated" || x == "api_key.revoked")
        );
    });
}

#[tokio::test]
async fn a_link_whose_secrets_cannot_be_opened_is_listed_with_an_error_not_a_500() {
    crate::each_db!(|app| {
        let org = app.create_org("Acme").await;
        let org_id = org.id.parse().unwrap();
        // One link sealed with the server's keyring, one with a keyring the
        // server does not have (a key retired while still in use).
        let mut conn = app.state.pool.get().unwrap();
        let mk = |conn: &mut xrole_store::Conn, keyring: &xrole_crypto::Keyring, name: &str| {
            let ext = xrole_crypto::ExternalId::generate();
            let secret = xrole_crypto::WebhookSecret::generate();
            xrole_store::links::create(
                conn,
                keyring,
                org_id,
                &xrole_store::links::NewLink {
                    name,
                    aws_account_id: "",
                    access_level: xrole_store::AccessLevel::ReadOnly,
                    external_id: &ext,
                    callback_secret: &secret,
                    callback_secret_expires_ms: crate::helpers::T0 + 1000,
                },
                crate::helpers::T0,
            )
            .unwrap()
            .id
        };
        let good = mk(&mut conn, &app.state.keyring(), "good");
        let lost = mk(
            &mut conn,
            &xrole_crypto::Keyring::generate().unwrap(),
            "lost",
        );
        drop(conn);
        let res = app.get("/v1/aws-accounts", &org.admin_key).await;
        assert_eq!(res.status(), 200);
        let v: serde_json::Value = res.json().await.unwrap();
        let data = v["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        for l in data {
            if l["id"] == good.to_string() {
                assert!(
                    l["external_id"].is_string() && l["keyring_error"].is_null(),
                    "{l}"
                );
            } else {
                assert!(l["external_id"].is_null(), "{l}");
                assert!(
                    l["keyring_error"].as_str().unwrap().contains("keyring"),
                    "{l}"
                );
            }
        }
        let one = app
            .get(&format!("/v1/aws-accounts/{lost}"), &org.admin_key)
            .await;
        assert_eq!(one.status(), 200);
        let one: serde_json::Value = one.json().await.unwrap();
        assert!(one["keyring_error"].is_string(), "{one}");
    });
}
