//! Hardening: abuse limits of the running server. Oversize and hostile JSON
//! bodies on every write route, the per-key rate limit under concurrency,
//! slow clients that never finish, and arbitrary Idempotency-Key headers.
//! Each test runs on SQLite and, when reachable, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "api/helpers.rs"]
mod helpers;

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use helpers::{OPERATOR_TOKEN, Options, TestApp, assert_problem, spawn_app, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
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
    // None of the unfinished requests created anything. On a new
    // connection: waiting for the 408s took as long as the server's
    // keep-alive, so the pooled ones may be closing just now.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let keys: serde_json::Value = fresh
        .get(app.url("/v1/api-keys"))
        .bearer_auth(&org.admin_key)
        .send()
        .await
        .unwrap()
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

// Regression tests for the schemathesis findings listed in docs/security.md
// (scripts/schemathesis runs with every check on).

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

/// The OpenAPI document, as `/openapi.json` serves it.
fn document() -> Value {
    serde_json::to_value(xrole_server::openapi::document()).unwrap()
}

/// Every operation of the document: (method, path, operation).
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if [
                "get", "put", "post", "delete", "patch", "head", "options", "trace",
            ]
            .contains(&method.as_str())
            {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Paths that serve static or in-memory content: no input, no database.
const STATIC_PATHS: [&str; 5] = [
    "/healthz",
    "/metrics",
    "/openapi.json",
    "/v1/cloudformation/xrole-role.yaml",
    "/v1/cloudformation/xrole-stackset.yaml",
];

/// The error statuses an operation can answer because of its shape,
/// written out here independently of how openapi.rs derives them.
fn shape_errors(path: &str, op: &Value) -> BTreeSet<&'static str> {
    let mut want = BTreeSet::new();
    if STATIC_PATHS.contains(&path) {
        return want;
    }
    want.extend(["500", "503"]);
    let params = op["parameters"].as_array().cloned().unwrap_or_default();
    let param = |place: &str, name: Option<&str>| {
        params
            .iter()
            .any(|p| p["in"] == place && name.is_none_or(|n| p["name"] == n))
    };
    let schemes: Vec<String> = op["security"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_object())
        .flat_map(|s| s.keys().cloned())
        .collect();
    if !op["requestBody"].is_null() {
        want.extend(["400", "408", "413", "415", "422"]);
    }
    if schemes
        .iter()
        .any(|s| s == "api_key" || s == "operator_token")
    {
        want.insert("401");
    }
    if schemes.iter().any(|s| s == "api_key") {
        want.insert("429");
    }
    if param("path", None) {
        want.insert("404");
    }
    if param("query", None) {
        want.insert("400");
    }
    if param("query", Some("limit")) {
        want.insert("422");
    }
    if param("header", Some("Idempotency-Key")) {
        want.extend(["400", "409", "422"]);
    }
    want
}

#[test]
fn openapi_declares_every_error_status_with_problem_json() {
    let doc = document();
    let mut wrong = Vec::new();
    let mut ids = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap_or_default().to_owned();
        if !ids.insert(id.clone()) {
            wrong.push(format!("{method} {path}: operationId {id:?} is not unique"));
        }
        let responses = op["responses"].as_object().unwrap();
        for status in shape_errors(&path, &op) {
            if !responses.contains_key(status) {
                wrong.push(format!("{method} {path}: {status} not declared"));
            }
        }
        for (status, r) in responses {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let content = r["content"].as_object();
            let declared = content.map(|c| c.keys().cloned().collect::<Vec<_>>());
            if declared.as_deref() != Some(&["application/problem+json".to_owned()][..]) {
                wrong.push(format!("{method} {path} {status}: {declared:?}"));
            } else if r["content"]["application/problem+json"]["schema"]["$ref"]
                != "#/components/schemas/Problem"
            {
                wrong.push(format!("{method} {path} {status}: not a Problem"));
            }
            if r["description"].as_str().unwrap_or_default().is_empty() {
                wrong.push(format!("{method} {path} {status}: no description"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Sends `body` (raw bytes, `content_type`) with an optional bearer token
/// and extra headers.
async fn send(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> reqwest::Response {
    let mut r = app.client.request(
        Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap(),
        app.url(path),
    );
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.header("content-type", content_type).body(b);
    }
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    tokio::time::timeout(BOUND, r.send())
        .await
        .unwrap()
        .unwrap()
}

/// A request body of the error sweep: (what, content type, bytes).
type SweepBody = (&'static str, &'static str, Vec<u8>);

/// One request of the error sweep.
struct Probe<'a> {
    what: String,
    url: String,
    token: Option<&'a str>,
    body: Option<&'a SweepBody>,
    headers: Vec<(&'static str, &'static str)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_the_server_answers_is_declared_for_its_operation() {
    // No AWS side: the routes that need it answer 503, which is declared too.
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let member = app
        .create_user(&org, "member@acme.example.com", "operator")
        .await;
    let doc = document();
    let tokens: [(&str, Option<&str>); 5] = [
        ("no credentials", None),
        ("a malformed key", Some("xrk_not-a-key")),
        ("the operator token", Some(OPERATOR_TOKEN)),
        ("a member's key", Some(&member.key)),
        ("an admin's key", Some(&org.admin_key)),
    ];
    let oversize = vec![b' '; 70 * 1024];
    let bodies: Vec<SweepBody> = vec![
        ("an empty object", "application/json", b"{}".to_vec()),
        ("malformed JSON", "application/json", b"{".to_vec()),
        (
            "an unknown field",
            "application/json",
            br#"{"zz": 1}"#.to_vec(),
        ),
        (
            "a wrong type",
            "application/json",
            br#"{"name": 7}"#.to_vec(),
        ),
        ("text", "text/plain", b"{}".to_vec()),
        ("70 KiB", "application/json", oversize),
    ];
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for (method, path, op) in operations(&doc) {
        if STATIC_PATHS.contains(&path.as_str()) {
            continue;
        }
        let declared = op["responses"].as_object().unwrap().clone();
        let has_body = !op["requestBody"].is_null();
        let probe = |what: String, url: String, token, body, headers| Probe {
            what,
            url,
            token,
            body,
            headers,
        };
        let mut cases = Vec::new();
        let some_id = path.replace("{id}", &uuid::Uuid::now_v7().to_string());
        for (who, token) in &tokens {
            cases.push(probe(
                who.to_string(),
                some_id.clone(),
                *token,
                bodies.first(),
                vec![],
            ));
        }
        let admin = Some(org.admin_key.as_str());
        if has_body {
            for b in &bodies {
                cases.push(probe(
                    format!("admin, {}", b.0),
                    some_id.clone(),
                    admin,
                    Some(b),
                    vec![],
                ));
            }
        }
        if path.contains("{id}") {
            cases.push(probe(
                "a malformed id".into(),
                path.replace("{id}", "not-a-uuid"),
                admin,
                bodies.first(),
                vec![],
            ));
        }
        for q in ["zz=1", "limit=0", "limit=x", "cursor=nope"] {
            cases.push(probe(
                format!("query {q}"),
                format!("{some_id}?{q}"),
                admin,
                bodies.first(),
                vec![],
            ));
        }
        cases.push(probe(
            "a malformed Idempotency-Key".into(),
            some_id.clone(),
            admin,
            bodies.first(),
            vec![("idempotency-key", "a b")],
        ));
        for Probe {
            what,
            url,
            token,
            body,
            headers,
        } in cases
        {
            let (ct, bytes) = match body {
                Some((_, ct, b)) if has_body => (*ct, Some(b.clone())),
                _ => ("application/json", None),
            };
            let res = send(&app, &method, &url, token, ct, bytes, &headers).await;
            let status = res.status().as_u16();
            if status < 400 {
                continue;
            }
            seen.insert(status);
            let ctype = res
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            if !declared.contains_key(&status.to_string()) {
                wrong.push(format!(
                    "{method} {path} with {what}: {status} is not declared"
                ));
            }
            if ctype.as_deref() != Some("application/problem+json") {
                wrong.push(format!(
                    "{method} {path} with {what}: {status} is {ctype:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The requests above reached every kind of error they aim at.
    for s in [400, 401, 403, 404, 413, 415, 422, 503] {
        assert!(seen.contains(&s), "no {s} answered: {seen:?}");
    }
    assert_alive(&app).await;
}

/// The display-name rule of organizations, API keys and AWS account links,
/// as the document states it.
const NAME_PATTERN: &str = r"^[^\x00-\x1f\x7f-\x9f]*[^\x00-\x20\x7f-\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00-\x1f\x7f-\x9f]*$";

#[tokio::test]
async fn names_follow_the_documented_rule() {
    let doc = document();
    for schema in ["CreateOrganization", "CreateApiKey", "CreateLink"] {
        let name = &doc["components"]["schemas"][schema]["properties"]["name"];
        assert_eq!(name["pattern"], NAME_PATTERN, "{schema}");
        assert_eq!(name["minLength"], 1, "{schema}");
        assert_eq!(name["maxLength"], 100, "{schema}");
    }
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    // Valid by the pattern and the lengths (counted in characters, as sent).
    let long = "x".repeat(100);
    let accented = "\u{e9}".repeat(100);
    let astral = "\u{1f680}".repeat(100);
    for (name, stored) in [
        ("a", "a"),
        (long.as_str(), long.as_str()),
        (accented.as_str(), accented.as_str()),
        (astral.as_str(), astral.as_str()),
        (" padded ", "padded"),
        ("\u{a0}x\u{3000}", "x"),
    ] {
        let res = app
            .post("/v1/api-keys", &org.admin_key, &json!({"name": name}))
            .await;
        assert_eq!(res.status(), StatusCode::CREATED, "{name:?}");
        let v: serde_json::Value = res.json().await.unwrap();
        assert_eq!(v["name"], stored, "{name:?}");
    }
    // Invalid by the pattern or the lengths.
    let too_long = "x".repeat(101);
    let padded_too_long = format!(" {}", "x".repeat(100));
    for name in [
        "",
        "   ",
        "\u{3000}",
        "\u{a0}\u{2028}",
        too_long.as_str(),
        padded_too_long.as_str(),
        "a\nb",
        "acme\n",
        "\tacme",
        "\u{85}acme",
        "acme\u{7f}",
    ] {
        let res = app
            .post("/v1/api-keys", &org.admin_key, &json!({"name": name}))
            .await;
        let v = assert_problem(res, 422, "invalid_field").await;
        assert_eq!(v["field"], "name", "{name:?}");
    }
}

#[tokio::test]
async fn passwords_are_counted_in_characters_as_documented() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    for (schema, field, min) in [
        ("CreateUser", "password", 10),
        ("CreateOrganization", "admin_password", 10),
        ("CreateSession", "password", 1),
    ] {
        let p = &schemas[schema]["properties"][field];
        assert_eq!(
            (p["minLength"].as_u64(), p["maxLength"].as_u64()),
            (Some(min), Some(1024)),
            "{schema}"
        );
    }
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    // 1024 characters, 2048 bytes: valid.
    let long = "\u{e9}".repeat(1024);
    let res = app
        .post(
            "/v1/users",
            &org.admin_key,
            &json!({"email": "long@acme.example.com", "role": "operator", "password": long}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let login = |password: String| {
        let app = &app;
        let org_id = org.id.clone();
        async move {
            app.request(
                Method::POST,
                "/v1/sessions",
                None,
                Some(
                    &json!({"organization_id": org_id, "email": "long@acme.example.com",
                    "password": password}),
                ),
            )
            .await
        }
    };
    let res = login(long.clone()).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let v: serde_json::Value = res.json().await.unwrap();
    app.secret(v["token"].as_str().unwrap());
    // 1025 characters, and 9.
    let res = login("\u{e9}".repeat(1025)).await;
    assert_eq!(
        assert_problem(res, 422, "invalid_field").await["field"],
        "password"
    );
    for password in ["x".repeat(1025), "x".repeat(9)] {
        let res = app
            .post(
                "/v1/users",
                &org.admin_key,
                &json!({"email": "p@acme.example.com", "role": "operator", "password": password}),
            )
            .await;
        assert_eq!(
            assert_problem(res, 422, "invalid_field").await["field"],
            "password"
        );
    }
}

#[tokio::test]
async fn a_user_update_needs_a_field_and_refuses_null() {
    let doc = document();
    let schema = &doc["components"]["schemas"]["UpdateUser"];
    assert_eq!(schema["minProperties"], 1);
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(schema["properties"]["disabled"]["type"], "boolean");
    assert_eq!(
        schema["properties"]["role"]["$ref"],
        "#/components/schemas/RoleIn"
    );
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let m = app
        .create_user(&org, "m@acme.example.com", "operator")
        .await;
    let path = format!("/v1/users/{}", m.id);
    let res = app.patch(&path, &org.admin_key, &json!({})).await;
    assert_problem(res, 422, "invalid_field").await;
    for body in [
        json!({"role": null}),
        json!({"disabled": null}),
        json!({"role": "admin", "disabled": null}),
    ] {
        let res = app.patch(&path, &org.admin_key, &body).await;
        assert_problem(res, 400, "invalid_body").await;
    }
    let res = app
        .patch(&path, &org.admin_key, &json!({"role": "admin"}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// The `Idempotency-Key` rule (1 to 255 visible ASCII characters, optionally
/// in double quotes, `""` being empty) as the document states it.
const IDEMPOTENCY_KEY_PATTERN: &str =
    r#"^([!-~]|[!#-~][!-~]|"[!#-~]|[!-~]{3,255}|"[!-~]{254,255}")$"#;

#[tokio::test]
async fn idempotency_keys_follow_the_documented_pattern() {
    let doc = document();
    let mut declared = 0;
    for (method, path, op) in operations(&doc) {
        for p in op["parameters"].as_array().into_iter().flatten() {
            if p["name"] == "Idempotency-Key" {
                assert_eq!(
                    p["schema"]["pattern"], IDEMPOTENCY_KEY_PATTERN,
                    "{method} {path}"
                );
                assert_eq!(p["schema"]["type"], "string", "{method} {path}");
                declared += 1;
            }
        }
    }
    assert_eq!(declared, 7);
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let inner_255 = "k".repeat(255);
    let quoted_255 = format!("\"{}\"", "q".repeat(255));
    let quoted_256 = format!("\"{}\"", "q".repeat(256));
    let unquoted_256 = "u".repeat(256);
    for (i, (key, ok)) in [
        ("\"", true),
        ("\"x", true),
        ("x\"", true),
        ("\"\"", false),
        ("\"'\"", true),
        (inner_255.as_str(), true),
        (quoted_255.as_str(), true),
        (quoted_256.as_str(), false),
        (unquoted_256.as_str(), false),
    ]
    .into_iter()
    .enumerate()
    {
        let res = app
            .client
            .post(app.url("/v1/api-keys"))
            .bearer_auth(&org.admin_key)
            .header("idempotency-key", key)
            .json(&json!({"name": format!("k{i}")}))
            .send()
            .await
            .unwrap();
        if ok {
            assert_eq!(res.status(), StatusCode::CREATED, "{key:?}");
        } else {
            assert_problem(res, 400, "invalid_idempotency_key").await;
        }
    }
}

#[tokio::test]
async fn a_malformed_expiry_offset_is_refused_not_a_crash() {
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    // A two-byte character where the offset's sign is: slicing the string
    // there used to panic the worker.
    for at in [
        "2030-01-01T00:00:00\u{e9}1234",
        "2030-01-01T00:00:00+0\u{e9}:00",
    ] {
        let res = app
            .post(
                "/v1/api-keys",
                &org.admin_key,
                &json!({"name": "k", "expires_at": at}),
            )
            .await;
        let v = assert_problem(res, 422, "invalid_field").await;
        assert_eq!(v["field"], "expires_at");
    }
    let res = app
        .post(
            "/v1/api-keys",
            &org.admin_key,
            &json!({"name": "k", "expires_at": "2030-01-01T00:00:00+01:30"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_alive(&app).await;
}

#[tokio::test]
async fn integers_written_with_a_zero_fraction_are_integers() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    let count = &schemas["CreateInstances"]["properties"]["count"];
    assert_eq!(
        (count["minimum"].as_u64(), count["maximum"].as_u64()),
        (Some(1), Some(10))
    );
    let storage = &schemas["CreateDatabase"]["properties"]["allocated_storage_gb"];
    assert_eq!(
        (storage["minimum"].as_u64(), storage["maximum"].as_u64()),
        (Some(20), Some(65536))
    );
    // JSON Schema's `integer` admits 7.0. Without an AWS side the server
    // answers 503 once the body is read; a body it refuses is 400.
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let link = uuid::Uuid::now_v7();
    for (i, (route, body, status)) in [
        (
            "instances",
            json!({"name": "web", "vpc_id": "vpc-1", "instance_type": "t3.micro", "count": 7.0}),
            503,
        ),
        (
            "instances",
            json!({"name": "web", "vpc_id": "vpc-1", "instance_type": "t3.micro", "count": 7}),
            503,
        ),
        (
            "instances",
            json!({"name": "web", "vpc_id": "vpc-1", "instance_type": "t3.micro", "count": 7.5}),
            400,
        ),
        (
            "instances",
            json!({"name": "web", "vpc_id": "vpc-1", "instance_type": "t3.micro", "count": -1}),
            400,
        ),
        (
            "instances",
            json!({"name": "web", "vpc_id": "vpc-1", "instance_type": "t3.micro", "count": null}),
            503,
        ),
        (
            "databases",
            json!({"name": "db", "vpc_id": "vpc-1", "engine": "postgres",
            "instance_class": "db.t3.micro", "allocated_storage_gb": 1e2}),
            503,
        ),
        (
            "databases",
            json!({"name": "db", "vpc_id": "vpc-1", "engine": "postgres",
            "instance_class": "db.t3.micro", "allocated_storage_gb": 4294967296.0}),
            400,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let res = app
            .client
            .post(app.url(&format!("/v1/aws-accounts/{link}/{route}")))
            .bearer_auth(&org.admin_key)
            .header("idempotency-key", format!("zero-fraction-{i}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), status, "{body}");
    }
}

#[test]
fn links_tell_that_an_aws_account_path_id_is_the_link_id() {
    let doc = document();
    let ids: BTreeSet<String> = operations(&doc)
        .iter()
        .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_owned))
        .collect();
    let with_id: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|(_, path, _)| path.starts_with("/v1/aws-accounts/{id}"))
        .map(|(_, _, op)| op["operationId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(with_id.len(), 8);
    for (path, method, status, value) in [
        ("/v1/aws-accounts", "post", "201", "$response.body#/id"),
        (
            "/v1/aws-accounts",
            "get",
            "200",
            "$response.body#/data/0/id",
        ),
        ("/v1/aws-accounts/{id}", "get", "200", "$response.body#/id"),
    ] {
        let links = &doc["paths"][path][method]["responses"][status]["links"];
        for target in &with_id {
            let link = &links[target.as_str()];
            assert_eq!(link["operationId"], target.as_str(), "{method} {path}");
            assert_eq!(
                link["parameters"]["id"], value,
                "{method} {path} -> {target}"
            );
            assert!(ids.contains(target));
        }
    }
}

/// IAM's role ARN rule (partition, 12-digit account, a path of at most 512
/// characters, a 1-64 character name) as the document states it.
const ROLE_ARN_PATTERN: &str = r"^arn:aws(-cn|-us-gov)?:iam::[0-9]{12}:role(?=.{0,511}/[0-9A-Za-z_+=,.@-]{1,64}$)/([!-.0-~]+/)*[0-9A-Za-z_+=,.@-]{1,64}$";

#[tokio::test]
async fn role_arns_follow_the_documented_rule() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    for schema in ["SetRole", "StackCallback"] {
        let arn = &schemas[schema]["properties"]["role_arn"];
        assert_eq!(arn["pattern"], ROLE_ARN_PATTERN, "{schema}");
        assert_eq!(arn["maxLength"], 613, "{schema}");
    }
    // The ARN is checked before the link is looked up: on a link that does
    // not exist, a valid ARN gets 404 and an invalid one 422.
    let app = spawn_app(TestDb::sqlite().unwrap()).await;
    let org = app.create_org("Acme").await;
    let path = format!("/v1/aws-accounts/{}/role", uuid::Uuid::now_v7());
    let prefix = "arn:aws-us-gov:iam::123456789012:role";
    // A path of exactly 512 characters, with the longest name: 613 in all.
    let longest = format!("{prefix}/{}/{}", "p".repeat(510), "n".repeat(64));
    assert_eq!(longest.chars().count(), 613);
    let path_513 = format!("{prefix}/{}/n", "p".repeat(511));
    let name_65 = format!("{prefix}/{}", "n".repeat(65));
    for (arn, valid) in [
        ("arn:aws:iam::123456789012:role/xrole", true),
        ("arn:aws-cn:iam::123456789012:role/a/b/x+=,.@-_", true),
        (longest.as_str(), true),
        (path_513.as_str(), false),
        (name_65.as_str(), false),
        ("arn:aws:iam::123456789012:role//x", false),
        ("arn:aws:iam::123456789012:role/x*", false),
        (" arn:aws:iam::123456789012:role/x", false),
        ("arn:aws:iam::12345678901:role/x", false),
        ("arn:aws:sts::123456789012:role/x", false),
    ] {
        let res = app
            .client
            .put(app.url(&path))
            .bearer_auth(&org.admin_key)
            .json(&json!({"role_arn": arn}))
            .send()
            .await
            .unwrap();
        if valid {
            assert_problem(res, 404, "not_found").await;
        } else {
            let v = assert_problem(res, 422, "invalid_field").await;
            assert_eq!(v["field"], "role_arn", "{arn}");
        }
    }
}
