use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::each_db;
use crate::helpers::{assert_invalid_field, assert_problem};

#[tokio::test]
async fn admin_manages_users() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = app
            .post(
                "/v1/users",
                &org.admin_key,
                &json!({"email": "Bob@Acme.example.com", "role": "operator"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let bob: Value = res.json().await.unwrap();
        assert_eq!(bob["email"], "bob@acme.example.com");
        assert_eq!(bob["role"], "operator");
        assert_eq!(bob["disabled"], false);
        assert_eq!(bob["has_password"], false);
        let id = bob["id"].as_str().unwrap();

        let got: Value = app
            .get(&format!("/v1/users/{id}"), &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(got, bob);

        let res = app
            .patch(
                &format!("/v1/users/{id}"),
                &org.admin_key,
                &json!({"role": "admin"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["role"], "admin");
        let res = app
            .patch(
                &format!("/v1/users/{id}"),
                &org.admin_key,
                &json!({"disabled": true}),
            )
            .await;
        assert_eq!(res.json::<Value>().await.unwrap()["disabled"], true);

        let res = app.delete(&format!("/v1/users/{id}"), &org.admin_key).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
        // Gone: a deleted resource is no longer available (RFC 9110 DELETE).
        let path = format!("/v1/users/{id}");
        assert_problem(app.get(&path, &org.admin_key).await, 404, "not_found").await;
        assert_problem(
            app.patch(&path, &org.admin_key, &json!({"disabled": false}))
                .await,
            404,
            "not_found",
        )
        .await;
        assert_problem(app.delete(&path, &org.admin_key).await, 404, "not_found").await;
        let list: Value = app
            .get("/v1/users", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            list["data"]
                .as_array()
                .unwrap()
                .iter()
                .all(|u| u["id"] != id),
            "{list}"
        );
        // The email may be used again.
        let res = app
            .post(
                "/v1/users",
                &org.admin_key,
                &json!({"email": "bob@acme.example.com", "role": "operator"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);

        let actions = app.audit_actions(&org).await;
        assert_eq!(
            actions,
            vec![
                "user.created",
                "user.deleted",
                "user.updated",
                "user.updated",
                "user.created",
                "organization.created"
            ]
        );
    });
}

#[tokio::test]
async fn deleting_a_user_revokes_their_keys_at_once() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        assert_eq!(
            app.get("/v1/organization", &m.key).await.status(),
            StatusCode::OK
        );
        assert_eq!(
            app.delete(&format!("/v1/users/{}", m.id), &org.admin_key)
                .await
                .status(),
            204
        );
        assert_problem(
            app.get("/v1/organization", &m.key).await,
            401,
            "unauthenticated",
        )
        .await;
        // Nor can they log in again.
        let res = app
            .request(
                Method::POST,
                "/v1/sessions",
                None,
                Some(&json!({"organization_id": org.id, "email": m.email, "password": m.password})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    });
}

#[tokio::test]
async fn disabled_user_keys_stop_working_and_come_back() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let path = format!("/v1/users/{}", m.id);
        app.patch(&path, &org.admin_key, &json!({"disabled": true}))
            .await;
        assert_eq!(app.get("/v1/organization", &m.key).await.status(), 401);
        app.patch(&path, &org.admin_key, &json!({"disabled": false}))
            .await;
        assert_eq!(app.get("/v1/organization", &m.key).await.status(), 200);
    });
}

#[tokio::test]
async fn user_routes_reject_bad_input() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        for (field, body) in [
            ("email", json!({"email": "nope", "role": "operator"})),
            ("email", json!({"email": "", "role": "operator"})),
            (
                "password",
                json!({"email": "p@acme.example.com", "role": "operator", "password": "short"}),
            ),
        ] {
            assert_invalid_field(app.post("/v1/users", &org.admin_key, &body).await, field).await;
        }
        for body in [
            json!({"email": "r@acme.example.com", "role": "owner"}),
            json!({"email": "r@acme.example.com"}),
            json!({"email": 7, "role": "operator"}),
            json!({"email": "r@acme.example.com", "role": "operator", "extra": 1}),
        ] {
            assert_problem(
                app.post("/v1/users", &org.admin_key, &body).await,
                400,
                "invalid_body",
            )
            .await;
        }
        let dup = json!({"email": "admin@acme.example.com", "role": "operator"});
        assert_problem(
            app.post("/v1/users", &org.admin_key, &dup).await,
            409,
            "already_exists",
        )
        .await;

        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let path = format!("/v1/users/{}", m.id);
        assert_invalid_field(app.patch(&path, &org.admin_key, &json!({})).await, "role").await;
        assert_problem(
            app.patch(&path, &org.admin_key, &json!({"role": "root"}))
                .await,
            400,
            "invalid_body",
        )
        .await;
        assert_problem(
            app.patch(&path, &org.admin_key, &json!({"disabled": "yes"}))
                .await,
            400,
            "invalid_body",
        )
        .await;
        // Admins cannot lock themselves out.
        let me = format!("/v1/users/{}", org.admin_id);
        assert_problem(
            app.patch(&me, &org.admin_key, &json!({"role": "operator"}))
                .await,
            409,
            "cannot_modify_self",
        )
        .await;
        assert_problem(
            app.delete(&me, &org.admin_key).await,
            409,
            "cannot_modify_self",
        )
        .await;
        // Malformed and unknown ids are 404, never 500.
        for bad in [
            "/v1/users/not-a-uuid",
            "/v1/users/00000000-0000-0000-0000-000000000000",
            "/v1/users/%00",
        ] {
            assert_problem(app.get(bad, &org.admin_key).await, 404, "not_found").await;
            assert_problem(
                app.patch(bad, &org.admin_key, &json!({"role": "admin"}))
                    .await,
                404,
                "not_found",
            )
            .await;
            assert_problem(app.delete(bad, &org.admin_key).await, 404, "not_found").await;
        }
    });
}

#[tokio::test]
async fn members_read_but_cannot_manage_users() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        assert_eq!(app.get("/v1/users", &m.key).await.status(), StatusCode::OK);
        assert_eq!(
            app.get(&format!("/v1/users/{}", org.admin_id), &m.key)
                .await
                .status(),
            StatusCode::OK
        );
        let body = json!({"email": "x@acme.example.com", "role": "admin"});
        assert_problem(app.post("/v1/users", &m.key, &body).await, 403, "forbidden").await;
        let admin = format!("/v1/users/{}", org.admin_id);
        assert_problem(
            app.patch(&admin, &m.key, &json!({"disabled": true})).await,
            403,
            "forbidden",
        )
        .await;
        assert_problem(app.delete(&admin, &m.key).await, 403, "forbidden").await;
        // Unauthenticated, every route.
        for (method, path) in [
            (Method::POST, "/v1/users".to_owned()),
            (Method::GET, "/v1/users".to_owned()),
            (Method::GET, admin.clone()),
            (Method::PATCH, admin.clone()),
            (Method::DELETE, admin.clone()),
        ] {
            let res = app
                .request(method, &path, None, Some(&json!({"role": "operator"})))
                .await;
            assert_problem(res, 401, "unauthenticated").await;
        }
    });
}

#[tokio::test]
async fn user_list_is_cursor_paginated() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        for i in 0..4 {
            app.clock.advance_ms(1);
            let body = json!({"email": format!("u{i}@acme.example.com"), "role": "operator"});
            assert_eq!(
                app.post("/v1/users", &org.admin_key, &body).await.status(),
                201
            );
        }
        let mut seen = Vec::new();
        let mut path = "/v1/users?limit=2".to_owned();
        loop {
            let v: Value = app.get(&path, &org.admin_key).await.json().await.unwrap();
            let data = v["data"].as_array().unwrap();
            assert!(data.len() <= 2);
            seen.extend(data.iter().map(|u| u["email"].as_str().unwrap().to_owned()));
            match v["next_cursor"].as_str() {
                Some(c) => path = format!("/v1/users?limit=2&cursor={c}"),
                None => break,
            }
        }
        assert_eq!(
            seen,
            vec![
                "u3@acme.example.com",
                "u2@acme.example.com",
                "u1@acme.example.com",
                "u0@acme.example.com",
                "admin@acme.example.com"
            ]
        );
        assert_invalid_field(app.get("/v1/users?limit=0", &org.admin_key).await, "limit").await;
        assert_invalid_field(
            app.get("/v1/users?limit=201", &org.admin_key).await,
            "limit",
        )
        .await;
        assert_invalid_field(
            app.get("/v1/users?cursor=garbage", &org.admin_key).await,
            "cursor",
        )
        .await;
        assert_problem(
            app.get("/v1/users?limit=abc", &org.admin_key).await,
            400,
            "invalid_query",
        )
        .await;
        assert_problem(
            app.get("/v1/users?color=red", &org.admin_key).await,
            400,
            "invalid_query",
        )
        .await;
    });
}
