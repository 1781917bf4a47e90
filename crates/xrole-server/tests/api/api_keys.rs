use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::each_db;
use crate::helpers::{T0, assert_invalid_field, assert_problem};

#[tokio::test]
async fn create_list_and_revoke_keys() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = app
            .post("/v1/api-keys", &org.admin_key, &json!({"name": "ci"}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        app.secret(&token);
        assert!(token.starts_with(&format!("xrk_{}_", v["key_id"].as_str().unwrap())));
        assert_eq!(v["name"], "ci");
        assert_eq!(v["owner_user_id"], org.admin_id.as_str());
        assert!(v["expires_at"].is_null());
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(app.get("/v1/organization", &token).await.status(), 200);

        let list: Value = app
            .get("/v1/api-keys", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        let data = list["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(data[0]["id"], id.as_str());
        assert!(
            data.iter()
                .all(|k| k.get("token").is_none() && k.get("key_hash").is_none())
        );

        assert_eq!(
            app.delete(&format!("/v1/api-keys/{id}"), &org.admin_key)
                .await
                .status(),
            204
        );
        assert_problem(
            app.get("/v1/organization", &token).await,
            401,
            "unauthenticated",
        )
        .await;
        let list: Value = app
            .get("/v1/api-keys", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert!(list["data"][0]["revoked_at"].is_string());
        let actions = app.audit_actions(&org).await;
        assert_eq!(&actions[..2], ["api_key.revoked", "api_key.created"]);
    });
}

#[tokio::test]
async fn expiring_keys_stop_working_at_their_expiry() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        // T0 + 1 minute.
        let res = app
            .post(
                "/v1/api-keys",
                &org.admin_key,
                &json!({"name": "short", "expires_at": "2027-01-15T08:01:00Z"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["expires_at"], "2027-01-15T08:01:00.000Z");
        let token = v["token"].as_str().unwrap().to_owned();
        app.secret(&token);
        app.clock.set_ms(T0 + 59_999);
        assert_eq!(app.get("/v1/organization", &token).await.status(), 200);
        app.clock.set_ms(T0 + 60_000);
        assert_problem(
            app.get("/v1/organization", &token).await,
            401,
            "unauthenticated",
        )
        .await;
    });
}

#[tokio::test]
async fn key_creation_rejects_bad_input() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        for (field, body) in [
            ("name", json!({"name": ""})),
            ("name", json!({"name": "n".repeat(101)})),
            ("expires_at", json!({"name": "k", "expires_at": "tomorrow"})),
            (
                "expires_at",
                json!({"name": "k", "expires_at": "2020-01-01T00:00:00Z"}),
            ),
        ] {
            assert_invalid_field(app.post("/v1/api-keys", &org.admin_key, &body).await, field)
                .await;
        }
        for body in [
            json!({}),
            json!({"name": 1}),
            json!({"name": "k", "scopes": []}),
            json!({"name": "k", "expires_at": 1}),
        ] {
            assert_problem(
                app.post("/v1/api-keys", &org.admin_key, &body).await,
                400,
                "invalid_body",
            )
            .await;
        }
        for path in [
            "/v1/api-keys/xyz",
            "/v1/api-keys/00000000-0000-0000-0000-000000000000",
        ] {
            assert_problem(app.delete(path, &org.admin_key).await, 404, "not_found").await;
        }
        for (method, path) in [
            (Method::POST, "/v1/api-keys"),
            (Method::GET, "/v1/api-keys"),
            (
                Method::DELETE,
                "/v1/api-keys/00000000-0000-0000-0000-000000000000",
            ),
        ] {
            let res = app
                .request(method, path, None, Some(&json!({"name": "k"})))
                .await;
            assert_problem(res, 401, "unauthenticated").await;
        }
    });
}

#[tokio::test]
async fn members_see_and_revoke_only_their_own_keys() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let res = app
            .post("/v1/api-keys", &m.key, &json!({"name": "mine"}))
            .await;
        assert_eq!(res.status(), 201);
        let mine: Value = res.json().await.unwrap();
        app.secret(mine["token"].as_str().unwrap());
        let list: Value = app.get("/v1/api-keys", &m.key).await.json().await.unwrap();
        let owners: Vec<&str> = list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["owner_user_id"].as_str().unwrap())
            .collect();
        assert_eq!(owners, vec![m.id.as_str(), m.id.as_str()]);
        // The admin's key is not the member's to revoke.
        let res = app
            .delete(&format!("/v1/api-keys/{}", org.admin_key_id), &m.key)
            .await;
        assert_problem(res, 404, "not_found").await;
        assert_eq!(
            app.get("/v1/organization", &org.admin_key).await.status(),
            200
        );
        // A member-made key acts as the member: no admin routes.
        let token = mine["token"].as_str().unwrap();
        assert_problem(app.get("/v1/audit-events", token).await, 403, "forbidden").await;
        let res = app
            .delete(
                &format!("/v1/api-keys/{}", mine["id"].as_str().unwrap()),
                &m.key,
            )
            .await;
        assert_eq!(res.status(), 204);
        assert_eq!(app.get("/v1/organization", token).await.status(), 401);
    });
}

#[tokio::test]
async fn whoami_names_the_key_its_user_and_role() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let v: Value = app
            .get("/v1/whoami", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            v,
            json!({"organization_id": org.id, "api_key_id": org.admin_key_id,
                   "user_id": org.admin_id, "role": "admin"})
        );
        let v: Value = app.get("/v1/whoami", &m.key).await.json().await.unwrap();
        assert_eq!(v["organization_id"], org.id.as_str());
        assert_eq!(v["user_id"], m.id.as_str());
        assert_eq!(v["role"], "operator");
        assert_ne!(v["api_key_id"], org.admin_key_id.as_str());

        assert_problem(
            app.get("/v1/whoami", "xrk_not-a-key").await,
            401,
            "unauthenticated",
        )
        .await;
        let res = app
            .delete(
                &format!("/v1/api-keys/{}", org.admin_key_id),
                &org.admin_key,
            )
            .await;
        assert_eq!(res.status(), 204);
        assert_problem(
            app.get("/v1/whoami", &org.admin_key).await,
            401,
            "unauthenticated",
        )
        .await;
    });
}
