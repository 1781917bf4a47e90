//! The real server on port 0 with its AWS side pointed at moto through the
//! testkit's STS gate, job workers in the same process, and helpers that
//! play the customer (deploy the template, run its Lambda) and the client.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpListener;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use aws_sdk_cloudformation::types::{Capability, Parameter};
use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use xrole_server::config::RateLimit;
use xrole_server::link_flow::{AwsRuntime, AwsSettings};
use xrole_server::worker::WorkerPool;
use xrole_server::{AppState, Config, SystemClock};
use xrole_testkit::{Aws, CustomerAccount, TestDb, python, workspace_root};

pub const OPERATOR_TOKEN: &str = "operator-token-for-flow-tests-0123456789";

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

/// Everything logged so far, at debug level for xrole crates.
pub fn captured_logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

fn init_logs() {
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "info,xrole_server=debug,xrole_assume=debug",
            ))
            .with_writer(|| Capture)
            .with_ansi(false)
            .try_init();
    });
}

/// Fast settings for tests: short propagation window, leases and polls.
pub fn test_settings() -> AwsSettings {
    AwsSettings {
        propagation_window: Duration::from_secs(3),
        lease: Duration::from_secs(4),
        job_poll: Duration::from_millis(100),
        executor_poll: Duration::from_millis(200),
        ..AwsSettings::default()
    }
}

pub struct FlowApp {
    pub base: String,
    pub client: reqwest::Client,
    pub state: AppState,
    pub workers: Option<WorkerPool>,
    pub aws_runtime: Arc<AwsRuntime>,
    handle: actix_web::dev::ServerHandle,
    _db: Option<TestDb>,
}

pub struct Org {
    pub id: String,
    pub key: String,
}

/// Starts the server on `db_url` (migrating it) with `workers` job workers.
pub async fn spawn_on(
    db_url: &str,
    keyring: Arc<xrole_crypto::Keyring>,
    aws: &Aws,
    settings: AwsSettings,
    workers: usize,
) -> FlowApp {
    spawn_configured(db_url, keyring, aws, settings, workers, |_| {}).await
}

/// [`spawn_on`], with the configuration adjusted by `configure` last.
pub async fn spawn_configured(
    db_url: &str,
    keyring: Arc<xrole_crypto::Keyring>,
    aws: &Aws,
    settings: AwsSettings,
    workers: usize,
    configure: impl FnOnce(&mut Config),
) -> FlowApp {
    init_logs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = Config::load_with(None, |_| None).unwrap();
    config.database_url = db_url.to_owned();
    config.operator_token = Some(xrole_crypto::SecretString::new(OPERATOR_TOKEN.to_owned()));
    config.rate_limit = RateLimit {
        per_second: 0.0,
        burst: 1,
    };
    config.org_rate_limit = RateLimit {
        per_second: 0.0,
        burst: 1,
    };
    config.public_url = Some(url::Url::parse(&format!("http://127.0.0.1:{port}")).unwrap());
    config.workers = workers;
    configure(&mut config);
    let state = xrole_server::open_state(config, keyring, Arc::new(SystemClock)).unwrap();
    let runtime = AwsRuntime::start(aws.saas_config(), settings)
        .await
        .unwrap();
    xrole_server::link_flow::install(&state, runtime.clone());
    let server = xrole_server::run(listener, state.clone()).unwrap();
    let handle = server.handle();
    tokio::spawn(server);
    let workers = (workers > 0).then(|| WorkerPool::spawn(state.clone(), runtime.clone(), workers));
    FlowApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        state,
        workers,
        aws_runtime: runtime,
        handle,
        _db: None,
    }
}

pub async fn spawn_flow_app(db: TestDb, aws: &Aws, workers: usize) -> FlowApp {
    let keyring = Arc::new(xrole_crypto::Keyring::generate().unwrap());
    let mut app = spawn_on(db.url(), keyring, aws, test_settings(), workers).await;
    app._db = Some(db);
    app
}

/// [`spawn_flow_app`] with adjusted settings and configuration.
pub async fn spawn_flow_app_with(
    db: TestDb,
    aws: &Aws,
    workers: usize,
    settings: AwsSettings,
    configure: impl FnOnce(&mut Config),
) -> FlowApp {
    let keyring = Arc::new(xrole_crypto::Keyring::generate().unwrap());
    let mut app = spawn_configured(db.url(), keyring, aws, settings, workers, configure).await;
    app._db = Some(db);
    app
}

impl Drop for FlowApp {
    fn drop(&mut self) {
        self.workers.take();
        drop(self.handle.stop(false));
    }
}

impl FlowApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut r = self.client.request(method, self.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            r = r.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            r = r.json(b);
        }
        r.send().await.unwrap()
    }

    pub async fn get_json(&self, path: &str, token: &str) -> Value {
        let res = self
            .request(Method::GET, path, Some(token), None, None)
            .await;
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.unwrap()
    }

    /// POST with a fresh Idempotency-Key.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Response {
        let key = uuid::Uuid::new_v4().to_string();
        self.request(Method::POST, path, Some(token), Some(&key), Some(body))
            .await
    }

    pub async fn create_org(&self, name: &str) -> Org {
        let res = self
            .request(
                Method::POST,
                "/v1/organizations",
                Some(OPERATOR_TOKEN),
                None,
                Some(&json!({"name": name, "admin_email": format!("admin@{}.example.com", name.to_lowercase())})),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        let v: Value = res.json().await.unwrap();
        Org {
            id: v["organization"]["id"].as_str().unwrap().to_owned(),
            key: v["api_key"]["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Creates a link; returns the 201 body.
    pub async fn create_link(&self, org: &Org, account: Option<&str>, access_level: &str) -> Value {
        let mut body =
            json!({"name": "Acme production", "access_level": access_level, "region": "us-east-1"});
        if let Some(a) = account {
            body["aws_account_id"] = json!(a);
        }
        let res = self.post("/v1/aws-accounts", &org.key, &body).await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap()
        );
        res.json().await.unwrap()
    }

    /// Polls a link until it leaves `pending`/`verifying`.
    pub async fn settled_link(&self, org: &Org, link_id: &str) -> Value {
        for _ in 0..600 {
            let v = self
                .get_json(&format!("/v1/aws-accounts/{link_id}"), &org.key)
                .await;
            if !matches!(v["state"].as_str(), Some("pending" | "verifying")) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let logs = captured_logs();
        eprintln!("LOGS:\n{}", &logs[logs.len().saturating_sub(30000)..]);
        panic!("link {link_id} never settled");
    }

    /// Polls a job until it is finished.
    pub async fn finished_job(&self, org: &Org, job_id: &str) -> Value {
        for _ in 0..1200 {
            let v = self.get_json(&format!("/v1/jobs/{job_id}"), &org.key).await;
            if matches!(
                v["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            ) {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("job {job_id} never finished");
    }
}

/// A signed callback, as the Lambda would send it.
pub struct Callback {
    pub id: String,
    pub timestamp: i64,
    pub body: Vec<u8>,
}

pub fn callback_body(link_id: &str, event: &str, role_arn: &str, account: &str) -> Vec<u8> {
    json!({
        "link_id": link_id, "event": event, "role_arn": role_arn, "account_id": account,
        "stack_id": format!("arn:aws:cloudformation:us-east-1:{account}:stack/xrole/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f"),
        "region": "us-east-1",
    })
    .to_string()
    .into_bytes()
}

pub fn now_secs() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

impl FlowApp {
    /// Sends a callback signed with `secret` (a `whsec_…` text).
    pub async fn send_callback(&self, secret: &str, cb: &Callback) -> Response {
        let s = xrole_crypto::WebhookSecret::parse(secret).unwrap();
        let sig = s.sign(&cb.id, cb.timestamp, &cb.body);
        self.client
            .post(self.url("/v1/callbacks/cloudformation"))
            .header("content-type", "application/json")
            .header("webhook-id", &cb.id)
            .header("webhook-timestamp", cb.timestamp.to_string())
            .header("webhook-signature", sig)
            .body(cb.body.clone())
            .send()
            .await
            .unwrap()
    }
}

// ---------------------------------------------------------------------------
// The customer's side: the template deployed into moto, and its Lambda.

pub fn template_path() -> std::path::PathBuf {
    workspace_root().join("cloudformation/xrole-role.yaml")
}

pub struct Stack {
    pub stack_id: String,
    pub role_arn: String,
    pub function_arn: String,
}

/// Deploys `xrole-role.yaml` into the customer's account with the
/// onboarding parameters xrole handed out.
pub async fn deploy_stack(customer: &CustomerAccount, onboarding: &Value) -> Stack {
    let admin = customer.admin_config();
    let cfn = aws_sdk_cloudformation::Client::new(&admin);
    let iam = aws_sdk_iam::Client::new(&admin);
    let params: Vec<Parameter> = onboarding["parameters"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| !v.as_str().unwrap().is_empty())
        .map(|(k, v)| {
            Parameter::builder()
                .parameter_key(k)
                .parameter_value(v.as_str().unwrap())
                .build()
        })
        .collect();
    let body = std::fs::read_to_string(template_path()).unwrap();
    let created = cfn
        .create_stack()
        .stack_name(onboarding["stack_name"].as_str().unwrap())
        .template_body(body)
        .set_parameters(Some(params))
        .capabilities(Capability::CapabilityNamedIam)
        .send()
        .await
        .unwrap();
    let stack_id = created.stack_id().unwrap().to_owned();
    let resources = cfn
        .describe_stack_resources()
        .stack_name(&stack_id)
        .send()
        .await
        .unwrap();
    let physical = |logical: &str| -> String {
        resources
            .stack_resources()
            .iter()
            .find(|r| r.logical_resource_id() == Some(logical))
            .and_then(|r| r.physical_resource_id())
            .unwrap_or_else(|| panic!("no {logical} in the stack"))
            .to_owned()
    };
    let role = iam
        .get_role()
        .role_name(physical("Role"))
        .send()
        .await
        .unwrap();
    let role_arn = role.role().unwrap().arn().to_owned();
    let function_arn = format!(
        "arn:aws:lambda:us-east-1:{}:function:{}",
        customer.account_id(),
        physical("CallbackFunction")
    );
    Stack {
        stack_id,
        role_arn,
        function_arn,
    }
}

/// A tiny stand-in for CloudFormation's response bucket: records the PUT.
pub struct ResponseBucket {
    pub url: String,
    pub answers: Arc<Mutex<Vec<Vec<u8>>>>,
    handle: actix_web::dev::ServerHandle,
}

impl ResponseBucket {
    pub async fn start() -> ResponseBucket {
        let answers: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let shared = answers.clone();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = actix_web::HttpServer::new(move || {
            let shared = shared.clone();
            actix_web::App::new().default_service(actix_web::web::to(
                move |body: actix_web::web::Bytes| {
                    let shared = shared.clone();
                    async move {
                        shared.lock().unwrap().push(body.to_vec());
                        actix_web::HttpResponse::Ok().finish()
                    }
                },
            ))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        ResponseBucket {
            url: format!("http://127.0.0.1:{port}/cfn-response"),
            answers,
            handle,
        }
    }

    pub fn last_answer(&self) -> Value {
        let a = self.answers.lock().unwrap();
        serde_json::from_slice(a.last().expect("the Lambda answered CloudFormation")).unwrap()
    }
}

impl Drop for ResponseBucket {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

/// Runs the template's own Lambda source under Python with a
/// CloudFormation event for the stack; returns its output.
pub async fn run_lambda(
    kind: &str,
    stack: &Stack,
    onboarding: &Value,
    bucket: &ResponseBucket,
) -> String {
    let p = &onboarding["parameters"];
    let mut event = json!({
        "RequestType": kind,
        "ServiceToken": stack.function_arn,
        "ResponseURL": bucket.url,
        "StackId": stack.stack_id,
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "LogicalResourceId": "Callback",
        "ResourceType": "Custom::XroleCallback",
        "ResourceProperties": {
            "ServiceToken": stack.function_arn,
            "LinkId": p.get("LinkId").cloned().unwrap_or(json!("")),
            "ConnectionId": p.get("ConnectionId").cloned().unwrap_or(json!("")),
            "CallbackUrl": p["CallbackUrl"],
            "CallbackSecret": p["CallbackSecret"],
            "RoleArn": stack.role_arn,
            "AccessLevel": p["AccessLevel"],
        },
    });
    if kind != "Create" {
        let id = p
            .get("LinkId")
            .or_else(|| p.get("ConnectionId"))
            .and_then(Value::as_str)
            .unwrap();
        event["PhysicalResourceId"] = json!(format!("xrole-link-{id}"));
    }
    let mut child = tokio::process::Command::new(python().unwrap())
        .arg(workspace_root().join("cloudformation/tests/run_callback.py"))
        .arg(template_path())
        .env("XROLE_CALLBACK_RETRY_SECONDS", "5")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(event.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the Lambda crashed: {output}");
    output
}

/// Tagged, live xrole resources in an account (VPCs, instances not
/// terminated, DB instances), seen with `config`.
pub async fn tagged_resources(config: &aws_config::SdkConfig, link_id: &str) -> Vec<String> {
    let ec2 = aws_sdk_ec2::Client::new(config);
    let rds = aws_sdk_rds::Client::new(config);
    let filter = aws_sdk_ec2::types::Filter::builder()
        .name("tag:xrole:link")
        .values(link_id)
        .build();
    let mut out = Vec::new();
    let vpcs = ec2
        .describe_vpcs()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        vpcs.vpcs()
            .iter()
            .filter_map(|v| v.vpc_id().map(str::to_owned)),
    );
    let subnets = ec2
        .describe_subnets()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        subnets
            .subnets()
            .iter()
            .filter_map(|v| v.subnet_id().map(str::to_owned)),
    );
    let igws = ec2
        .describe_internet_gateways()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        igws.internet_gateways()
            .iter()
            .filter_map(|v| v.internet_gateway_id().map(str::to_owned)),
    );
    let sgs = ec2
        .describe_security_groups()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        sgs.security_groups()
            .iter()
            .filter_map(|v| v.group_id().map(str::to_owned)),
    );
    let rtbs = ec2
        .describe_route_tables()
        .filters(filter.clone())
        .send()
        .await
        .unwrap();
    out.extend(
        rtbs.route_tables()
            .iter()
            .filter_map(|v| v.route_table_id().map(str::to_owned)),
    );
    let instances = ec2
        .describe_instances()
        .filters(filter)
        .send()
        .await
        .unwrap();
    for r in instances.reservations() {
        for i in r.instances() {
            let terminated = i
                .state()
                .and_then(|s| s.name())
                .is_some_and(|n| *n == aws_sdk_ec2::types::InstanceStateName::Terminated);
            if !terminated {
                out.push(i.instance_id().unwrap_or_default().to_owned());
            }
        }
    }
    let dbs = rds.describe_db_instances().send().await.unwrap();
    for d in dbs.db_instances() {
        let ours = d
            .tag_list()
            .iter()
            .any(|t| t.key() == Some("xrole:link") && t.value() == Some(link_id));
        if ours {
            out.push(d.db_instance_identifier().unwrap_or_default().to_owned());
        }
    }
    out
}

/// Audit actions of the org, newest first, with their details.
pub async fn audit_events(app: &FlowApp, org: &Org) -> Vec<Value> {
    let v = app.get_json("/v1/audit-events?limit=200", &org.key).await;
    v["data"].as_array().unwrap().clone()
}

// ---------------------------------------------------------------------------
// Roles made by hand (not by the template), linked with `PUT …/role`.

/// `PUT /v1/aws-accounts/{link_id}/role`.
pub async fn put_role(app: &FlowApp, org: &Org, link_id: &str, role: &str) -> Response {
    app.request(
        Method::PUT,
        &format!("/v1/aws-accounts/{link_id}/role"),
        Some(&org.key),
        None,
        Some(&json!({"role_arn": role})),
    )
    .await
}

/// A role trusting the SaaS principal under `condition` (none when null),
/// allowed EC2 and the AMI parameters; with `readable`, it may also read
/// itself (`iam:GetRole`), as the template's roles may, so verification
/// audits its trust policy. Returns its ARN.
pub async fn customer_role(
    aws: &Aws,
    customer: &CustomerAccount,
    name: &str,
    condition: Value,
    readable: bool,
) -> String {
    let mut statement = json!({"Sid": "XroleWithExternalId", "Effect": "Allow",
        "Principal": {"AWS": aws.saas_principal_arn()},
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"]});
    if !condition.is_null() {
        statement["Condition"] = condition;
    }
    let trust = json!({"Version": "2012-10-17", "Statement": [statement]});
    let arn = customer
        .create_role(name, &trust.to_string(), 3600)
        .await
        .unwrap();
    let mut grants =
        vec![json!({"Effect": "Allow", "Action": ["ec2:*", "ssm:GetParameter*"], "Resource": "*"})];
    if readable {
        grants.push(json!({"Effect": "Allow", "Action": "iam:GetRole", "Resource": arn}));
    }
    aws_sdk_iam::Client::new(&customer.admin_config())
        .put_role_policy()
        .role_name(name)
        .policy_name("xrole")
        .policy_document(json!({"Version": "2012-10-17", "Statement": grants}).to_string())
        .send()
        .await
        .unwrap();
    arn
}

/// A role trusting the SaaS exactly with `link`'s External ID (the `201`
/// body of a link), readable by itself: verification makes it `active`.
pub async fn exact_role(aws: &Aws, customer: &CustomerAccount, name: &str, link: &Value) -> String {
    let ext = link["external_id"].as_str().unwrap();
    customer_role(
        aws,
        customer,
        name,
        json!({"StringEquals": {"sts:ExternalId": ext}}),
        true,
    )
    .await
}
