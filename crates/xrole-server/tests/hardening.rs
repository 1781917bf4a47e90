//! Hardening: abuse limits of the running server. Oversize and hostile JSON
//! bodies on every write route, the per-key rate limit under concurrency,
//! slow clients that never finish, and arbitrary Idempotency-Key headers.
//! Each test runs on SQLite and, when reachable, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::time::Duration;

use futures::future::join_all;
use helpers::{OPERATOR_TOKEN, Options, TestApp, assert_problem, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use xrole_server::config::RateLimit;
use xrole_testkit::TestDb;

/// A generous bound on any single wait: a hang fails the test instead of
/// stalling CI. Nothing is timed.
const BOUND: Duration = Duration::from_secs(60);

/// The write routes with the token each needs.
fn write_routes(org: &helpers::Org) -> Vec<(Method, String, Option<String>)> {
    let admin = Some(org.admin_key.clone());
    vec![
        (
            Method::POST,
            "/v1/organizations".into(),
            Some(OPERATOR_TOKEN.into()),
        ),
        (Method::POST, "/v1/users".into(), admin.clone()),
        (
            Method::PATCH,
            format!("/v1/users/{}", org.admin_id),
            admin.clone(),
        ),
        (Method::POST, "/v1/api-keys".into(), admin.clone()),
        (Method::POST, "/v1/sessions".into(), None),
        (Method::POST, "/v1/aws-accounts".into(), admin),
        (Method::POST, "/v1/callbacks/cloudformation".into(), None),
    ]
}

async fn send_raw(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut r = app
        .client
        .request(method, app.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    tokio::time::timeout(BOUND, r.send())
        .await
        .unwrap()
        .unwrap()
}

async fn assert_alive(app: &TestApp) {
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// Hostile JSON under the size limit: deep nesting (a recursion bomb for
/// naive parsers), wide objects, long strings and escapes, and non-JSON.
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    let depth = 20_000;
    let mut deep_obj = String::new();
    for _ in 0..6_000 {
        deep_obj.push_str("{\"a\":");
    }
    deep_obj.push('1');
    deep_obj.push_str(&"}".repeat(6_000));
    let wide: Vec<String> = (0..3_000).map(|i| format!("\"k{i}\":{i}")).collect();
    vec![
        (
            "deep array",
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
        ),
        ("deep unclosed array", "[".repeat(60_000).into_bytes()),
        ("deep object", deep_obj.into_bytes()),
        (
            "wide object",
            format!("{{{}}}", wide.join(",")).into_bytes(),
        ),
        (
            "many numbers",
            format!("[{}1]", "1e999999,".repeat(6_000)).into_bytes(),
        ),
        (
            "escapes",
            format!("{{\"name\":\"{}\"}}", "\\u0000\\ud800".repeat(4_000)).into_bytes(),
        ),
        (
            "long string",
            format!(
                "{{\"name\":\"{}\",\"email\":\"a@b.c\"}}",
                "x".repeat(60_000)
            )
            .into_bytes(),
        ),
        (
            "duplicate keys",
            br#"{"name":"a","name":"b","name":{}}"#.to_vec(),
        ),
        ("invalid utf-8", b"{\"name\":\"\xff\xfe\"}".to_vec()),
        ("nul bytes", vec![0u8; 4_096]),
        ("empty", Vec::new()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_json_gets_a_4xx_problem_on_every_write_route() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app(db).await;
        let org = app.create_org("Acme").await;
        for (method, path, token) in write_routes(&org) {
            for (what, body) in hostile_bodies() {
                let res = send_raw(&app, method.clone(), &path, token.as_deref(), body).await;
                let status = res.status();
                assert!(
                    status.is_client_error(),
                    "{method} {path} with {what}: {status}"
                );
                let ct = res.headers().get("content-type").cloned();
                assert_eq!(
                    ct.as_ref().map(|v| v.to_str().unwrap()),
                    Some("application/problem+json"),
                    "{method} {path} with {what}"
                );
            }
        }
        assert_alive(&app).await;
        // Nothing was created by any of it: Acme still has one user.
        let users: serde_json::Value = app
            .get("/v1/users", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(users["data"].as_array().unwrap().len(), 1, "{users}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_get_413_on_every_write_route() {
    for db in TestDb::all().unwrap() {
        let app = spawn_app(db).await;
        let org = app.create_org("Acme").await;
        let port = app.base.rsplit(':').next().unwrap().to_owned();
        for (method, path, token) in write_routes(&org) {
            // Streamed without a length: cut off at the limit.
            let chunks = (0..200).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
            let mut r = app
                .client
                .request(method.clone(), app.url(&path))
                .header("content-type", "application/json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
            if let Some(t) = &token {
                r = r.bearer_auth(t);
            }
            let res = tokio::time::timeout(BOUND, r.send()).await.unwrap();
            // The server may answer and close before the client has sent
            // everything; then the client sees a reset instead of the 413.
            if let Ok(res) = res {
                assert_problem(res, 413, "payload_too_large").await;
            }

            // A declared 1 GB body: answered from the headers alone, before
            // a single body byte is sent.
            let mut s = TcpStream::connect(format!("127.0.0.1:{port}"))
                .await
                .unwrap();
            let auth = token
                .as_ref()
                .map(|t| format!("authorization: Bearer {t}\r\n"))
                .unwrap_or_default();
            let head = format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\ncontent-length: 1000000000\r\n\r\n"
            );
            s.write_all(head.as_bytes()).await.unwrap();
            let answer = read_head(&mut s, "declared 1 GB").await;
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "{method} {path}: {answer}"
            );
        }
        assert_alive(&app).await;
    }
}

/// Reads until the end of a response head (or EOF), within [`BOUND`].
async fn read_head(s: &mut TcpStream, what: &str) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = s.read(&mut chunk).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    };
    tokio::time::timeout(BOUND, read).await.unwrap_or_else(|_| {
        panic!("{what}: the server neither answered nor closed the connection")
    });
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limit_admits_exactly_the_burst_under_concurrency() {
    for db in TestDb::all().unwrap() {
        // The fake clock stands still, so no token is refilled during the test.
        let app = spawn_app_with(
            db,
            Options {
                rate_limit: RateLimit {
                    per_second: 0.5,
                    burst: 7,
                },
                ..Options::default()
            },
        )
        .await;
        let a = app.create_org("Acme").await;
        let b = app.create_org("Beta").await;
        let calls = (0..40).map(|i| {
            let app = &app;
            let key = a.admin_key.clone();
            async move {
                if i % 2 == 0 {
                    app.get("/v1/organization", &key).await
                } else {
                    app.post("/v1/api-keys", &key, &json!({"name": format!("k{i}")}))
                        .await
                }
            }
        });
        let responses = join_all(calls).await;
        let mut ok = 0;
        let mut limited = 0;
        for res in responses {
            if res.status().is_success() {
                ok += 1;
                continue;
            }
            let retry: u64 = res.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=2).contains(&retry), "retry-after {retry}");
            assert_problem(res, 429, "rate_limited").await;
            limited += 1;
        }
        assert_eq!((ok, limited), (7, 33));
        // Another organization's key is untouched; a key that fails to
        // authenticate is not given a bucket to exhaust.
        assert_eq!(
            app.get("/v1/organization", &b.admin_key).await.status(),
            200
        );
        assert_eq!(
            app.get("/v1/organization", "xrk_not-a-key").await.status(),
            401
        );
        // After the advertised wait the key works again, once.
        app.clock.advance_ms(2_000);
        assert_eq!(
            app.get("/v1/organization", &a.admin_key).await.status(),
            200
        );
        assert_eq!(
            app.get("/v1/organization", &a.admin_key).await.status(),
            429
        );
    }
}

/// Opens `n` connections that send a request head byte by byte and never
/// end it, and `n` whose authenticated body never arrives.
async fn stall(app: &TestApp, org: &helpers::Org, n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut heads = Vec::new();
    let mut bodies = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        for b in b"GET /v1/organization HTTP/1.1\r\nhost: x\r\nx-slow: ".iter() {
            s.write_all(&[*b]).await.unwrap();
        }
        heads.push(s);
        let mut s = TcpStream::connect(&addr).await.unwrap();
        let body = json!({"name": format!("slow{i}")}).to_string();
        let head = format!(
            "POST /v1/api-keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            org.admin_key,
            body.len() + 10
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(&body.as_bytes()[..5]).await.unwrap();
        bodies.push(s);
    }
    (heads, bodies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_do_not_block_others_and_unfinished_heads_get_408() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    // More stalled connections than the server has workers (at most 8).
    let (heads, _bodies) = stall(&app, &org, 12).await;
    // Meanwhile everybody else is served.
    let calls = (0..30).map(|_| async {
        tokio::time::timeout(BOUND, app.get("/v1/organization", &org.admin_key))
            .await
            .expect("a request waited behind slow clients")
            .status()
    });
    for status in join_all(calls).await {
        assert_eq!(status, StatusCode::OK);
    }
    // A head that never ends is answered 408 (or closed) by the server.
    for mut s in heads {
        let answer = read_head(&mut s, "unfinished head").await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
            "{answer}"
        );
    }
    // None of the unfinished requests created anything.
    let keys: serde_json::Value = app
        .get("/v1/api-keys", &org.admin_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unfinished_bodies_are_timed_out() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let (_heads, bodies) = stall(&app, &org, 4).await;
    for mut s in bodies {
        let answer = read_head(&mut s, "unfinished body").await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
}

/// A small deterministic generator (xorshift), so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The documented rule: trimmed, optionally quoted, 1 to 255 visible ASCII.
fn valid_idempotency_key(raw: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(raw) else {
        return false;
    };
    let s = s.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(s);
    !s.is_empty() && s.len() <= 255 && s.bytes().all(|b| (0x21..=0x7e).contains(&b))
}

fn random_key(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(4) {
        0 => rng.below(8),
        1 => 250 + rng.below(10),
        _ => rng.below(300),
    };
    let quoted = rng.below(5) == 0;
    let mut v: Vec<u8> = (0..len)
        .map(|_| match rng.below(80) {
            // Mostly visible ASCII, with spaces, tabs, quotes and high bytes.
            0 => b' ',
            1 => b'\t',
            2 => b'"',
            3 => 0x80 + rng.below(0x80) as u8,
            _ => 0x21 + rng.below(0x5e) as u8,
        })
        .collect();
    if quoted {
        v.insert(0, b'"');
        v.push(b'"');
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arbitrary_idempotency_keys_are_accepted_or_refused_by_the_rule() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (mut accepted, mut refused) = (0, 0);
    for i in 0..300 {
        let key = random_key(&mut rng);
        let Ok(value) = reqwest::header::HeaderValue::from_bytes(&key) else {
            continue;
        };
        let res = app
            .client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&org.admin_key)
            .header("idempotency-key", value)
            .json(&json!({"name": format!("k{i}")}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        assert!(!status.is_server_error(), "{key:?}: {status}");
        if valid_idempotency_key(&key) {
            // 201, or a 422/409 because the same key was drawn twice with
            // another body.
            assert!(
                status == StatusCode::CREATED || status.as_u16() == 422 || status.as_u16() == 409,
                "{key:?}: {status}"
            );
            accepted += 1;
        } else {
            assert_problem(res, 400, "invalid_idempotency_key").await;
            refused += 1;
        }
    }
    // The generator exercised both sides of the rule.
    assert!(
        accepted > 50 && refused > 50,
        "{accepted} accepted, {refused} refused"
    );
}

// Regression tests for the schemathesis findings listed in docs/security.md.
// They are ignored until the server is fixed; scripts/schemathesis excludes
// the matching checks meanwhile.

#[tokio::test]
async fn undeclared_methods_answer_405_with_allow() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    for path in ["/v1/users", "/v1/organization", "/healthz"] {
        let res = app
            .request(
                Method::from_bytes(b"TRACE").unwrap(),
                path,
                Some(&org.admin_key),
                None,
            )
            .await;
        assert_eq!(res.status(), 405, "{path}");
        let allow = res
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(allow.is_some_and(|a| a.contains("GET")), "{path}");
    }
}

#[tokio::test]
async fn openapi_declares_problem_json_for_every_error() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let doc: serde_json::Value = app
        .client
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut wrong = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        // Readiness answers its own JSON status, also when it is 503.
        if path == "/readyz" {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    let declared = r["content"]
                        .as_object()
                        .map(|c| c.keys().cloned().collect::<Vec<_>>());
                    if declared.as_deref() != Some(&["application/problem+json".to_owned()][..]) {
                        wrong.push(format!("{method} {path} {status}: {declared:?}"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
