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
