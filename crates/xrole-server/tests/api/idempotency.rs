use actix_web::{HttpRequest, HttpResponse, web};
use reqwest::StatusCode;
use serde_json::{Value, json};
use xrole_server::auth::Principal;
use xrole_server::idempotency::{self, Begun};
use xrole_server::routes::RouteDef;
use xrole_server::{ApiError, AppState};
use xrole_testkit::TestDb;

use crate::each_db;
use crate::helpers::{Options, TestApp, assert_problem, spawn_app_with};

async fn post_with_key(app: &TestApp, token: &str, key: &str, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/v1/users"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn count_users(app: &TestApp, token: &str) -> usize {
    let v: Value = app
        .get("/v1/users?limit=200", token)
        .await
        .json()
        .await
        .unwrap();
    v["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn same_key_same_body_replays_the_first_response_byte_for_byte() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let body = json!({"email": "bob@acme.example.com", "role": "operator"});
        let first = post_with_key(&app, &org.admin_key, "k-1", &body).await;
        assert_eq!(first.status(), StatusCode::CREATED);
        let ct = first.headers().get("content-type").unwrap().clone();
        let first = first.bytes().await.unwrap();
        app.clock.advance_ms(60_000);
        let again = post_with_key(&app, &org.admin_key, "k-1", &body).await;
        assert_eq!(again.status(), StatusCode::CREATED);
        assert_eq!(again.headers().get("content-type").unwrap(), &ct);
        assert_eq!(again.bytes().await.unwrap(), first);
        assert_eq!(count_users(&app, &org.admin_key).await, 2);
        let created = app
            .audit_actions(&org)
            .await
            .iter()
            .filter(|a| *a == "user.created")
            .count();
        assert_eq!(created, 1);
        // The same key on another route, or from another principal, is a different key.
        let res = app
            .client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&org.admin_key)
            .header("idempotency-key", "k-1")
            .json(&json!({"name": "k"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let v: Value = res.json().await.unwrap();
        app.secret(v["token"].as_str().unwrap());
    });
}

#[tokio::test]
async fn replayed_api_key_response_is_identical_and_stored_sealed() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let send = || {
            app.client
                .post(app.url("/v1/api-keys"))
                .bearer_auth(&org.admin_key)
                .header("idempotency-key", "\"key-for-ci\"")
                .json(&json!({"name": "ci"}))
                .send()
        };
        let a = send().await.unwrap().bytes().await.unwrap();
        let b = send().await.unwrap().bytes().await.unwrap();
        assert_eq!(a, b);
        let v: Value = serde_json::from_slice(&a).unwrap();
        let token = v["token"].as_str().unwrap().to_owned();
        app.secret(&token);
        // The replayed token works; only one key was made.
        assert_eq!(app.get("/v1/organization", &token).await.status(), 200);
        let keys: Value = app
            .get("/v1/api-keys", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(keys["data"].as_array().unwrap().len(), 2);
        // The stored response does not hold the token in clear.
        let state = app.state.clone();
        let bodies: Vec<Vec<u8>> = state
            .db(|conn| Ok(stored_response_bodies(conn)))
            .await
            .unwrap();
        assert_eq!(bodies.len(), 1);
        assert!(
            !bodies[0]
                .windows(token.len())
                .any(|w| w == token.as_bytes())
        );
    });
}

#[tokio::test]
async fn same_key_different_body_is_422() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = post_with_key(
            &app,
            &org.admin_key,
            "k",
            &json!({"email": "a@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 201);
        let res = post_with_key(
            &app,
            &org.admin_key,
            "k",
            &json!({"email": "b@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_problem(res, 422, "idempotency_key_reused").await;
        assert_eq!(count_users(&app, &org.admin_key).await, 2);
    });
}

#[tokio::test]
async fn malformed_idempotency_key_is_400() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let body = json!({"email": "a@acme.example.com", "role": "operator"});
        for bad in ["", "with space", &"x".repeat(256)] {
            let res = post_with_key(&app, &org.admin_key, bad, &body).await;
            assert_problem(res, 400, "invalid_idempotency_key").await;
        }
        assert_eq!(count_users(&app, &org.admin_key).await, 1);
    });
}

#[tokio::test]
async fn failed_request_releases_its_key() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = post_with_key(
            &app,
            &org.admin_key,
            "k",
            &json!({"email": "nope", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 422);
        // Fixing the request under the same key works.
        let res = post_with_key(
            &app,
            &org.admin_key,
            "k",
            &json!({"email": "ok@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 201);
    });
}

#[tokio::test]
async fn twenty_concurrent_duplicates_have_exactly_one_effect() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        // A password makes the first request slow (argon2) while the others arrive.
        let password = "a slow password to hash";
        app.secret(password);
        let body =
            json!({"email": "race@acme.example.com", "role": "operator", "password": password});
        let futs = (0..20).map(|_| post_with_key(&app, &org.admin_key, "race", &body));
        let responses = futures::future::join_all(futs).await;
        let mut created = Vec::new();
        let mut in_flight = 0;
        for res in responses {
            match res.status().as_u16() {
                201 => created.push(res.bytes().await.unwrap()),
                409 => {
                    assert!(res.headers().get("retry-after").is_some());
                    assert_problem(res, 409, "idempotency_key_in_use").await;
                    in_flight += 1;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        assert!(!created.is_empty());
        assert!(in_flight > 0, "no request saw the first one in flight");
        assert!(created.windows(2).all(|w| w[0] == w[1]));
        assert_eq!(count_users(&app, &org.admin_key).await, 2);
        let n = app
            .audit_actions(&org)
            .await
            .iter()
            .filter(|a| *a == "user.created")
            .count();
        assert_eq!(n, 1);
    });
}

#[tokio::test]
async fn keys_expire_after_24_hours() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let res = post_with_key(
            &app,
            &org.admin_key,
            "daily",
            &json!({"email": "a@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 201);
        app.clock.advance_ms(24 * 3_600_000 - 1);
        let res = post_with_key(
            &app,
            &org.admin_key,
            "daily",
            &json!({"email": "b@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 422);
        app.clock.advance_ms(1);
        let res = post_with_key(
            &app,
            &org.admin_key,
            "daily",
            &json!({"email": "b@acme.example.com", "role": "operator"}),
        )
        .await;
        assert_eq!(res.status(), 201);
        assert_eq!(count_users(&app, &org.admin_key).await, 3);
    });
}

/// A route that requires the key, as part 2's cloud-resource routes do.
async fn requires_key(
    state: web::Data<AppState>,
    principal: Principal,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    match idempotency::begin(&state, &req, &principal, &body, true).await? {
        Begun::Replay(res) => Ok(res),
        Begun::Proceed(lock) => {
            let st = state.get_ref().clone();
            let l2 = lock.clone();
            let r = state
                .tx(move |conn| {
                    idempotency::respond(
                        &st,
                        conn,
                        l2.as_ref(),
                        actix_web::http::StatusCode::ACCEPTED,
                        &json!({"ok": true}),
                    )
                })
                .await;
            idempotency::finish(&state, lock, r).await
        }
    }
}

#[tokio::test]
async fn required_key_missing_is_400() {
    for db in TestDb::all().unwrap() {
        let route = RouteDef {
            method: actix_web::http::Method::POST,
            path: "/v1/test-required",
            handler: |r| r.to(requires_key),
        };
        let app = spawn_app_with(
            db,
            Options {
                extra_routes: vec![route],
                ..Options::default()
            },
        )
        .await;
        let org = app.create_org("Acme").await;
        let res = app
            .post("/v1/test-required", &org.admin_key, &json!({}))
            .await;
        assert_problem(res, 400, "idempotency_key_required").await;
        let res = app
            .client
            .post(app.url("/v1/test-required"))
            .bearer_auth(&org.admin_key)
            .header("idempotency-key", "x")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
    }
}

#[tokio::test]
async fn key_rotation_reseals_stored_responses() {
    each_db!(|app| {
        let org = app.create_org("Acme").await;
        let body = json!({"email": "bob@acme.example.com", "role": "operator"});
        let first = post_with_key(&app, &org.admin_key, "rotate", &body)
            .await
            .bytes()
            .await
            .unwrap();
        // Rotate: a copy of the server's keyring with a new primary key.
        let mut rotated =
            xrole_crypto::Keyring::parse(app.state.keyring().to_text().expose_secret()).unwrap();
        let old = rotated.primary_key_id();
        let new = rotated.add_key().unwrap();
        rotated.promote(new).unwrap();
        let url = app.db_url();
        let mut seen = Vec::new();
        let n = xrole_server::admin::reseal_all(&url, &rotated, |p| {
            seen.push((p.column, p.done, p.total))
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(
            seen.contains(&("idempotency_records.response_body", 1, 1)),
            "{seen:?}"
        );
        // Everything is now under the new key: retiring the old one loses nothing.
        rotated.retire(old).unwrap();
        let state = app.state.clone();
        let blobs: Vec<Vec<u8>> = state
            .db(|conn| Ok(stored_response_bodies(conn)))
            .await
            .unwrap();
        assert_eq!(blobs.len(), 1);
        assert!(!rotated.needs_reseal(&blobs[0]));
        // A second run has nothing left to do.
        assert_eq!(
            xrole_server::admin::reseal_all(&url, &rotated, |_| {}).unwrap(),
            0
        );
        let _ = first;
    });
}

/// Every stored (sealed) idempotent response body, as the database holds it.
fn stored_response_bodies(conn: &mut xrole_store::Conn) -> Vec<Vec<u8>> {
    use diesel::RunQueryDsl as _;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Binary>)]
        response_body: Option<Vec<u8>>,
    }
    diesel::sql_query("SELECT response_body FROM idempotency_records")
        .load::<Row>(conn)
        .unwrap()
        .into_iter()
        .filter_map(|r| r.response_body)
        .collect()
}
