//! `spawn_app()`: the real server on port 0 against a fresh database, a
//! fake clock, and a log capture that fails the test if a secret was logged.

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, Once};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use xrole_server::config::RateLimit;
use xrole_server::routes::RouteDef;
use xrole_server::{AppState, Config, FakeClock};
use xrole_testkit::TestDb;

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";
/// 2027-01-15T08:00:00Z.
pub const T0: i64 = 1_800_000_000_000;

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());
static INIT: Once = Once::new();

struct Capture;
impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Everything logged by any test so far, at debug level.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn init_logs() {
    INIT.call_once(|| {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(|| Capture)
            .with_ansi(false)
            .init();
    });
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub clock: FakeClock,
    pub state: AppState,
    secrets: Mutex<Vec<String>>,
    handle: actix_web::dev::ServerHandle,
    _db: TestDb,
}

pub struct Options {
    pub signup_open: bool,
    pub rate_limit: RateLimit,
    pub org_rate_limit: RateLimit,
    pub login_concurrency: usize,
    pub auth_cache_ms: u64,
    pub metrics_token: Option<String>,
    pub extra_routes: Vec<RouteDef>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            signup_open: false,
            rate_limit: RateLimit {
                per_second: 0.0,
                burst: 1,
            },
            org_rate_limit: RateLimit {
                per_second: 0.0,
                burst: 1,
            },
            login_concurrency: 4,
            auth_cache_ms: 1000,
            metrics_token: None,
            extra_routes: Vec::new(),
        }
    }
}

pub async fn spawn_app(db: TestDb) -> TestApp {
    spawn_app_with(db, Options::default()).await
}

pub async fn spawn_app_with(db: TestDb, opts: Options) -> TestApp {
    init_logs();
    let mut config = Config::load_with(None, |_| None).unwrap();
    config.database_url = db.url().to_owned();
    config.operator_token = Some(xrole_crypto::SecretString::new(OPERATOR_TOKEN.to_owned()));
    config.signup_open = opts.signup_open;
    config.rate_limit = opts.rate_limit;
    config.org_rate_limit = opts.org_rate_limit;
    config.login_concurrency = opts.login_concurrency;
    config.auth_cache_ms = opts.auth_cache_ms;
    config.metrics_token = opts.metrics_token.map(xrole_crypto::SecretString::new);
    let clock = FakeClock::new(T0);
    let keyring = Arc::new(xrole_crypto::Keyring::generate().unwrap());
    let state = xrole_server::open_state(config, keyring, Arc::new(clock.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut table = xrole_server::routes::table();
    table.extend(opts.extra_routes);
    let server = xrole_server::run_with(listener, state.clone(), table).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        clock,
        state,
        secrets: Mutex::new(vec![OPERATOR_TOKEN.to_owned()]),
        handle,
        _db: db,
    }
}

/// Runs `body` once per available backend.
#[macro_export]
macro_rules! each_db {
    (|$app:ident| $body:block) => {
        for db in xrole_testkit::TestDb::all().unwrap() {
            let $app = $crate::helpers::spawn_app(db).await;
            $body
        }
    };
}

pub struct Org {
    pub id: String,
    pub admin_id: String,
    pub admin_key: String,
    pub admin_key_id: String,
}

pub struct Member {
    pub id: String,
    pub email: String,
    pub password: String,
    pub key: String,
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The database URL the server uses.
    pub fn db_url(&self) -> String {
        self._db.url().to_owned()
    }

    /// Remembers a value that must never appear in a log line.
    pub fn secret(&self, s: &str) {
        self.secrets.lock().unwrap().push(s.to_owned());
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.request(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::POST, path, Some(token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: &Value) -> Response {
        self.request(Method::PATCH, path, Some(token), Some(body))
            .await
    }

    pub async fn delete(&self, path: &str, token: &str) -> Response {
        self.request(Method::DELETE, path, Some(token), None).await
    }

    pub async fn create_org(&self, name: &str) -> Org {
        let res = self
            .post(
                "/v1/organizations",
                OPERATOR_TOKEN,
                &json!({"name": name, "admin_email": format!("admin@{}.example.com", name.to_lowercase())}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let key = v["api_key"]["token"].as_str().unwrap().to_owned();
        self.secret(&key);
        Org {
            id: v["organization"]["id"].as_str().unwrap().to_owned(),
            admin_id: v["admin"]["id"].as_str().unwrap().to_owned(),
            admin_key: key,
            admin_key_id: v["api_key"]["id"].as_str().unwrap().to_owned(),
        }
    }

    /// A user with a password, logged in: returns its session key.
    pub async fn create_user(&self, org: &Org, email: &str, role: &str) -> Member {
        let password = format!("pw-{email}-correct horse");
        self.secret(&password);
        let res = self
            .post(
                "/v1/users",
                &org.admin_key,
                &json!({"email": email, "role": role, "password": password}),
            )
            .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        let v: Value = res.json().await.unwrap();
        let key = self.login(&org.id, email, &password).await;
        Member {
            id: v["id"].as_str().unwrap().to_owned(),
            email: email.to_owned(),
            password,
            key,
        }
    }

    pub async fn login(&self, org_id: &str, email: &str, password: &str) -> String {
        let res = self
            .request(
                Method::POST,
                "/v1/sessions",
                None,
                Some(&json!({"organization_id": org_id, "email": email, "password": password})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        let key = v["token"].as_str().unwrap().to_owned();
        self.secret(&key);
        key
    }

    /// Actions of the org's audit trail, newest first.
    pub async fn audit_actions(&self, org: &Org) -> Vec<String> {
        let v: Value = self
            .get("/v1/audit-events?limit=200", &org.admin_key)
            .await
            .json()
            .await
            .unwrap();
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // The stop command is sent at once; nothing needs to wait for it.
        drop(self.handle.stop(false));
        if std::thread::panicking() {
            return;
        }
        let logs = captured_logs();
        for s in self.secrets.lock().unwrap().iter() {
            assert!(!logs.contains(s.as_str()), "a secret appeared in the logs");
        }
    }
}

/// Asserts an RFC 9457 problem with `status` and `code`; returns the body.
pub async fn assert_problem(res: Response, status: u16, code: &str) -> Value {
    assert_eq!(res.status().as_u16(), status, "expected {status} {code}");
    assert_eq!(
        res.headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .as_deref(),
        Some("application/problem+json")
    );
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], code, "{v}");
    assert_eq!(v["status"], status);
    assert!(v["type"].as_str().unwrap().ends_with(code));
    v
}

/// Asserts a 422 naming `field`.
pub async fn assert_invalid_field(res: Response, field: &str) {
    let v = assert_problem(res, 422, "invalid_field").await;
    assert_eq!(v["field"], field, "{v}");
}
