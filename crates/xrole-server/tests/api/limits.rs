//! Limits no tenant can dodge: one budget per organization whatever keys it
//! mints, login throttling with a bound on password checks, and a verified
//! key cache that anonymous requests cannot flush.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use xrole_server::config::RateLimit;
use xrole_testkit::TestDb;

use crate::helpers::{Options, assert_problem, spawn_app_with};

#[tokio::test]
async fn an_organization_shares_one_budget_across_all_its_keys() {
    for db in TestDb::all().unwrap() {
        // The fake clock stands still: no token comes back during the test.
        let app = spawn_app_with(
            db,
            Options {
                org_rate_limit: RateLimit {
                    per_second: 1.0,
                    burst: 10,
                },
                ..Options::default()
            },
        )
        .await;
        let a = app.create_org("Acme").await;
        let b = app.create_org("Beta").await;
        // Fresh keys and a session do not bring fresh budgets.
        let mut keys = vec![a.admin_key.clone()];
        for i in 0..2 {
            let res = app
                .post(
                    "/v1/api-keys",
                    &a.admin_key,
                    &json!({"name": format!("k{i}")}),
                )
                .await;
            assert_eq!(res.status(), StatusCode::CREATED);
            let token = res.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
            app.secret(&token);
            keys.push(token);
        }
        let m = app.create_user(&a, "m@acme.example.com", "operator").await;
        keys.push(m.key.clone());
        // 2 key creations + 1 user creation used 3 of the 10; 7 remain,
        // whichever keys spend them.
        let mut ok = 0;
        for i in 0.. {
            let res = app.get("/v1/whoami", &keys[i % keys.len()]).await;
            if res.status() == StatusCode::TOO_MANY_REQUESTS {
                assert!(res.headers().get("retry-after").is_some());
                assert_problem(res, 429, "rate_limited").await;
                break;
            }
            assert_eq!(res.status(), StatusCode::OK);
            ok += 1;
            assert!(ok <= 7, "more requests than the organization's budget");
        }
        assert_eq!(ok, 7);
        for k in &keys {
            assert_eq!(app.get("/v1/whoami", k).await.status(), 429);
        }
        // Another organization is untouched.
        assert_eq!(app.get("/v1/whoami", &b.admin_key).await.status(), 200);
        app.clock.advance_ms(1_000);
        assert_eq!(app.get("/v1/whoami", &keys[3]).await.status(), 200);
    }
}

#[tokio::test]
async fn repeated_login_failures_are_throttled_per_account() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app_with(db, Options::default()).await;
        let org = app.create_org("Acme").await;
        let m = app
            .create_user(&org, "m@acme.example.com", "operator")
            .await;
        let login = |password: &str| {
            let body = json!({"organization_id": org.id, "email": m.email, "password": password});
            let app = &app;
            async move {
                app.request(Method::POST, "/v1/sessions", None, Some(&body))
                    .await
            }
        };
        // Five free failures, then each failure doubles the pause.
        for _ in 0..6 {
            assert_problem(login("wrong password!").await, 401, "unauthenticated").await;
        }
        // Throttled: even the right password answers 429, before any work.
        let res = login(&m.password).await;
        assert_eq!(res.headers().get("retry-after").unwrap(), "1");
        assert_problem(res, 429, "rate_limited").await;
        app.clock.advance_ms(1_000);
        assert_problem(login("wrong password!").await, 401, "unauthenticated").await;
        let res = login(&m.password).await;
        assert_eq!(res.headers().get("retry-after").unwrap(), "2");
        assert_problem(res, 429, "rate_limited").await;
        // Another account of the organization is not slowed down by it.
        let other = app
            .create_user(&org, "o@acme.example.com", "operator")
            .await;
        assert!(!other.key.is_empty());
        app.clock.advance_ms(2_000);
        let res = login(&m.password).await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let token = res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        app.secret(&token);
        // Success forgets the account's failures.
        assert_problem(login("wrong password!").await, 401, "unauthenticated").await;
        assert_eq!(login(&m.password).await.status(), StatusCode::CREATED);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_checks_are_bounded_and_the_rest_answer_429_at_once() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app_with(
            db,
            Options {
                login_concurrency: 1,
                ..Options::default()
            },
        )
        .await;
        let org = app.create_org("Acme").await;
        // Twenty logins at once for twenty accounts (no account is
        // throttled): one argon2 check at a time, the rest refused.
        let attempts = (0..20).map(|i| {
            let body = json!({"organization_id": org.id,
                "email": format!("u{i}@acme.example.com"), "password": "guess-guess-guess"});
            let app = &app;
            async move {
                app.request(Method::POST, "/v1/sessions", None, Some(&body))
                    .await
                    .status()
            }
        });
        let statuses = futures::future::join_all(attempts).await;
        let refused = statuses.iter().filter(|s| s.as_u16() == 429).count();
        let checked = statuses.iter().filter(|s| s.as_u16() == 401).count();
        assert_eq!(refused + checked, 20, "{statuses:?}");
        assert!(refused > 0 && checked > 0, "{statuses:?}");
    }
}

#[tokio::test]
async fn anonymous_requests_do_not_flush_the_verified_key_cache() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app_with(
            db,
            Options {
                auth_cache_ms: 60_000,
                ..Options::default()
            },
        )
        .await;
        let org = app.create_org("Acme").await;
        let m = app.create_user(&org, "m@acme.example.com", "admin").await;
        let u = app
            .create_user(&org, "u@acme.example.com", "operator")
            .await;
        // Cached by its first use.
        assert_eq!(app.get("/v1/whoami", &org.admin_key).await.status(), 200);
        // Revoked behind the server's back (another replica, say): this
        // replica trusts its cache for up to its TTL...
        {
            let mut conn = app.state.pool.get().unwrap();
            let id = org.admin_key_id.parse().unwrap();
            let org_id = org.id.parse().unwrap();
            xrole_store::api_keys::revoke(&mut conn, org_id, id, crate::helpers::T0).unwrap();
        }
        // ... and garbage POSTs without credentials, in any number, do not
        // force it back to the database: the cache still answers.
        for path in ["/v1/aws-accounts", "/v1/api-keys", "/v1/sessions", "/nope"] {
            for _ in 0..5 {
                let res = app
                    .request(Method::POST, path, None, Some(&json!({"x": 1})))
                    .await;
                assert!(res.status().is_client_error());
            }
        }
        assert_eq!(app.get("/v1/whoami", &org.admin_key).await.status(), 200);
        // A write that changes credentials on this replica clears it at once.
        let res = app
            .patch(
                &format!("/v1/users/{}", u.id),
                &m.key,
                &json!({"role": "admin"}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        assert_problem(
            app.get("/v1/whoami", &org.admin_key).await,
            401,
            "unauthenticated",
        )
        .await;
    }
}
