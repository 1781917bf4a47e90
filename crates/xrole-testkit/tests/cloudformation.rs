//! The customer's CloudFormation templates, tested with real services:
//! cfn-lint, the role stack deployed into a moto customer account and assumed
//! through the gate, and the template's own callback Lambda run under Python
//! against a local receiver (moto cannot run Lambda functions without Docker,
//! so the test plays the Lambda service and CloudFormation's response bucket).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use aws_sdk_cloudformation::types::{Capability, Parameter, StackStatus};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use xrole_crypto::WebhookSecret;
use xrole_testkit::{Aws, free_port, python, workspace_root};

const STACK_ID: &str = "arn:aws:cloudformation:eu-west-3:210987654321:stack/xrole/5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f";
const ROLE_ARN: &str = "arn:aws:iam::210987654321:role/xrole-5c1e2a60-2f6e-11ef-9a4b-0a1b2c3d4e5f";
const LINK_ID: &str = "0191f3c2-7a4e-7c3b-9d2e-4b5a6c7d8e9f";
const EXTERNAL_ID: &str = "xrx-Jq8v3Wm1Zr5Tn2Lk7Hc4Pd9Sx6Fb0Ya3";

// ---------------------------------------------------------------------------
// A local HTTP receiver: the SaaS's callback endpoint and CloudFormation's
// response URL, recording every request.

#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("no {name} header"))
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    requests: Vec<Recorded>,
    /// Replies for `/callback`, in order; then 204.
    callback_replies: VecDeque<(u16, String)>,
}

struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let method = req.method().to_string();
                            let path = req.uri().to_string();
                            let headers = req
                                .headers()
                                .iter()
                                .map(|(k, v)| {
                                    (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())
                                })
                                .collect();
                            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                            let mut s = state.lock().unwrap();
                            let (status, reply) = if path.starts_with("/callback") {
                                s.callback_replies
                                    .pop_front()
                                    .unwrap_or((204, String::new()))
                            } else {
                                (200, String::new())
                            };
                            s.requests.push(Recorded {
                                method,
                                path,
                                headers,
                                body,
                            });
                            let mut resp = hyper::Response::new(Full::new(Bytes::from(reply)));
                            *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                            resp.headers_mut().insert(
                                "content-type",
                                hyper::header::HeaderValue::from_static("application/problem+json"),
                            );
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { addr, state, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn reply_to_callbacks(&self, replies: &[(u16, &str)]) {
        let mut s = self.state.lock().unwrap();
        s.callback_replies = replies.iter().map(|(c, b)| (*c, (*b).to_owned())).collect();
    }

    fn requests(&self, path_prefix: &str) -> Vec<Recorded> {
        let s = self.state.lock().unwrap();
        s.requests
            .iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .cloned()
            .collect()
    }

    /// The one answer the Lambda sent to CloudFormation's response URL.
    fn cfn_answer(&self) -> Recorded {
        let answers = self.requests("/cfn-response");
        assert_eq!(
            answers.len(),
            1,
            "exactly one answer to CloudFormation: {answers:?}"
        );
        answers.into_iter().next().unwrap()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------
// Running the template's Lambda source, as the Lambda service would.

fn template(name: &str) -> PathBuf {
    workspace_root().join("cloudformation").join(name)
}

struct LambdaRun {
    output: String,
}

/// Runs the `ZipFile` source of xrole-role.yaml with `event`, under the
/// project's Python, with a short retry window.
async fn run_lambda(event: &Value, retry_seconds: &str) -> LambdaRun {
    let mut child = tokio::process::Command::new(python().unwrap())
        .arg(workspace_root().join("cloudformation/tests/run_callback.py"))
        .arg(template("xrole-role.yaml"))
        .env("XROLE_CALLBACK_RETRY_SECONDS", retry_seconds)
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
    LambdaRun { output }
}

/// A CloudFormation custom-resource event for the template's `Callback`.
fn event(
    kind: &str,
    receiver: &Receiver,
    callback_url: &str,
    secret: &str,
    physical_id: Option<&str>,
) -> Value {
    let mut e = json!({
        "RequestType": kind,
        "ServiceToken": "arn:aws:lambda:eu-west-3:210987654321:function:xrole-CallbackFunction-1X2Y3Z",
        "ResponseURL": receiver.url("/cfn-response?X-Amz-Signature=abc"),
        "StackId": STACK_ID,
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "LogicalResourceId": "Callback",
        "ResourceType": "Custom::XroleCallback",
        "ResourceProperties": {
            "ServiceToken": "arn:aws:lambda:eu-west-3:210987654321:function:xrole-CallbackFunction-1X2Y3Z",
            "LinkId": LINK_ID,
            "CallbackUrl": callback_url,
            "CallbackSecret": secret,
            "RoleArn": ROLE_ARN,
            "AccessLevel": "Provisioning",
        },
    });
    if let Some(id) = physical_id {
        e["PhysicalResourceId"] = json!(id);
    }
    if kind == "Update" {
        e["OldResourceProperties"] = e["ResourceProperties"].clone();
        e["OldResourceProperties"]["AccessLevel"] = json!("ReadOnly");
    }
    e
}

/// The body CloudFormation expects at the response URL, and nothing else.
fn assert_cfn_answer(answer: &Recorded, event: &Value, status: &str) -> Value {
    assert_eq!(answer.method, "PUT");
    // S3 presigned response URLs are signed for an empty content type.
    assert_eq!(
        answer.headers.get("content-type").map(String::as_str),
        Some("")
    );
    let body = answer.json();
    let keys: Vec<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        [
            "Data",
            "LogicalResourceId",
            "PhysicalResourceId",
            "Reason",
            "RequestId",
            "StackId",
            "Status"
        ]
    );
    assert_eq!(body["Status"], status, "{body}");
    assert_eq!(body["StackId"], event["StackId"]);
    assert_eq!(body["RequestId"], event["RequestId"]);
    assert_eq!(body["LogicalResourceId"], event["LogicalResourceId"]);
    let physical = body["PhysicalResourceId"].as_str().unwrap();
    assert!(!physical.is_empty() && physical.len() <= 1024);
    if let Some(previous) = event.get("PhysicalResourceId") {
        // A changed id on Update would make CloudFormation delete the "old" resource.
        assert_eq!(body["PhysicalResourceId"], *previous);
    }
    assert!(body["Reason"].is_string());
    assert!(body["Data"].is_object());
    assert!(
        answer.body.len() < 4096,
        "CloudFormation refuses answers over 4 KiB"
    );
    body
}

/// Every callback is signed per Standard Webhooks v1 and carries the contract's body.
fn assert_signed_callback(callback: &Recorded, secret: &WebhookSecret, kind: &str) {
    assert_eq!(callback.method, "POST");
    assert_eq!(callback.header("content-type"), "application/json");
    secret
        .verify(
            callback.header("webhook-id"),
            callback.header("webhook-timestamp"),
            callback.header("webhook-signature"),
            &callback.body,
            SystemTime::now(),
        )
        .expect("the callback signature verifies with xrole-crypto");
    assert!(callback.header("webhook-signature").starts_with("v1,"));
    let body = callback.json();
    assert_eq!(
        body,
        json!({
            "link_id": LINK_ID,
            "event": kind,
            "role_arn": ROLE_ARN,
            "account_id": "210987654321",
            "stack_id": STACK_ID,
            "region": "eu-west-3",
        })
    );
}

/// The secret appears in no log line, no answer to CloudFormation and no callback.
fn assert_secret_nowhere(secret: &str, run: &LambdaRun, receiver: &Receiver) {
    let key = secret.trim_start_matches("whsec_");
    assert!(
        !run.output.contains(key),
        "the Lambda logged the secret: {}",
        run.output
    );
    for r in receiver.requests("/") {
        let text = format!("{:?} {}", r.headers, String::from_utf8_lossy(&r.body));
        assert!(!text.contains(key), "the secret left the Lambda: {text}");
    }
}

fn new_secret() -> (WebhookSecret, String) {
    let secret = WebhookSecret::generate();
    let text = secret.expose_secret().to_owned();
    (secret, text)
}

// ---------------------------------------------------------------------------
// The templates pass cfn-lint.

#[test]
fn templates_pass_cfn_lint() {
    let cfn_lint = workspace_root().join(".venv/bin/cfn-lint");
    let out = std::process::Command::new(cfn_lint)
        .arg(template("xrole-role.yaml"))
        .arg(template("xrole-stackset.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cfn-lint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Parameter constraints, checked with Python's regex engine (close to
/// CloudFormation's for these patterns) on the template's own text.
#[test]
fn parameter_patterns_refuse_root_and_bad_external_ids() {
    let script = r#"
import json, re, sys, yaml
class Loader(yaml.SafeLoader): pass
def tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode): return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode): return loader.construct_sequence(node, deep=True)
    return loader.construct_mapping(node, deep=True)
Loader.add_multi_constructor("!", tagged)
out = {}
cases = json.loads(sys.stdin.read())
for path in sys.argv[1:]:
    params = yaml.load(open(path), Loader)["Parameters"]
    def ok(name, value):
        p = params[name]
        if len(value) < p.get("MinLength", 0) or len(value) > p.get("MaxLength", 10**6): return False
        if "AllowedValues" in p and value not in p["AllowedValues"]: return False
        return re.fullmatch(p.get("AllowedPattern", ".*"), value) is not None
    out[path] = {f"{n}={v}": ok(n, v) for n, v in cases if n in params}
    out[path]["no_echo"] = sorted(n for n, p in params.items() if p.get("NoEcho"))
print(json.dumps(out))
"#;
    let cases = json!([
        [
            "SaasPrincipalArn",
            "arn:aws:iam::111122223333:role/xrole-prod"
        ],
        [
            "SaasPrincipalArn",
            "arn:aws:iam::111122223333:user/xrole-saas"
        ],
        [
            "SaasPrincipalArn",
            "arn:aws:iam::111122223333:role/service/xrole"
        ],
        ["SaasPrincipalArn", "arn:aws:iam::111122223333:root"],
        ["SaasPrincipalArn", "111122223333"],
        ["SaasPrincipalArn", "*"],
        ["ExternalId", EXTERNAL_ID],
        ["ExternalId", "a:b/c=d,e.f@g-h+i_j"],
        ["ExternalId", "x"],
        ["ExternalId", "has space"],
        ["ExternalId", "semi;colon"],
        ["RoleName", ""],
        ["RoleName", "xrole-prod"],
        ["RoleName", "has/slash"],
        ["PermissionsBoundaryArn", ""],
        [
            "PermissionsBoundaryArn",
            "arn:aws:iam::111122223333:policy/boundaries/xrole"
        ],
        ["PermissionsBoundaryArn", "not-an-arn"],
        [
            "CallbackUrl",
            "https://xrole.example.com/v1/callbacks/cloudformation"
        ],
        [
            "CallbackUrl",
            "http://127.0.0.1:8080/v1/callbacks/cloudformation"
        ],
        [
            "CallbackUrl",
            "http://xrole.example.com/v1/callbacks/cloudformation"
        ],
        ["CallbackSecret", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        ["CallbackSecret", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
        ["AccessLevel", "ReadOnly"],
        ["AccessLevel", "Provisioning"],
        ["AccessLevel", "Admin"],
    ]);
    let mut child = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg(script)
        .arg(template("xrole-role.yaml"))
        .arg(template("xrole-stackset.yaml"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let role = &results[template("xrole-role.yaml").to_str().unwrap()];
    let expect = |case: &str, allowed: bool| {
        assert_eq!(role[case], allowed, "xrole-role.yaml: {case}");
    };
    expect(
        "SaasPrincipalArn=arn:aws:iam::111122223333:role/xrole-prod",
        true,
    );
    expect(
        "SaasPrincipalArn=arn:aws:iam::111122223333:user/xrole-saas",
        true,
    );
    expect(
        "SaasPrincipalArn=arn:aws:iam::111122223333:role/service/xrole",
        true,
    );
    expect("SaasPrincipalArn=arn:aws:iam::111122223333:root", false);
    expect("SaasPrincipalArn=111122223333", false);
    expect("SaasPrincipalArn=*", false);
    expect(&format!("ExternalId={EXTERNAL_ID}"), true);
    expect("ExternalId=a:b/c=d,e.f@g-h+i_j", true);
    expect("ExternalId=x", false);
    expect("ExternalId=has space", false);
    expect("ExternalId=semi;colon", false);
    expect("RoleName=", true);
    expect("RoleName=xrole-prod", true);
    expect("RoleName=has/slash", false);
    expect("PermissionsBoundaryArn=", true);
    expect(
        "PermissionsBoundaryArn=arn:aws:iam::111122223333:policy/boundaries/xrole",
        true,
    );
    expect("PermissionsBoundaryArn=not-an-arn", false);
    expect(
        "CallbackUrl=https://xrole.example.com/v1/callbacks/cloudformation",
        true,
    );
    expect(
        "CallbackUrl=http://127.0.0.1:8080/v1/callbacks/cloudformation",
        true,
    );
    expect(
        "CallbackUrl=http://xrole.example.com/v1/callbacks/cloudformation",
        false,
    );
    expect(
        "CallbackSecret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        true,
    );
    expect("CallbackSecret=MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", false);
    expect("AccessLevel=ReadOnly", true);
    expect("AccessLevel=Provisioning", true);
    expect("AccessLevel=Admin", false);
    assert_eq!(
        role["no_echo"],
        json!(["CallbackSecret"]),
        "only the secret is hidden"
    );
    // A generated secret fits the template's pattern.
    let (_, generated) = new_secret();
    let fits = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg("import re,sys; sys.exit(0 if re.fullmatch(r'^whsec_[A-Za-z0-9+/]{16,}={0,2}$', sys.argv[1]) else 1)")
        .arg(&generated)
        .status()
        .unwrap();
    assert!(
        fits.success(),
        "xrole-crypto's secrets must pass the CallbackSecret pattern"
    );
    // The StackSet takes the same constraints for the same values.
    let set = &results[template("xrole-stackset.yaml").to_str().unwrap()];
    assert_eq!(
        set["SaasPrincipalArn=arn:aws:iam::111122223333:root"],
        false
    );
    assert_eq!(
        set["SaasPrincipalArn=arn:aws:iam::111122223333:user/xrole-saas"],
        true
    );
    assert_eq!(set["ExternalId=has space"], false);
    assert_eq!(
        set["CallbackUrl=http://127.0.0.1:8080/v1/callbacks/cloudformation"], true,
        "the StackSet allows what the role template allows"
    );
    assert_eq!(
        set["CallbackUrl=http://xrole.example.com/v1/callbacks/cloudformation"],
        false
    );
}

/// The callback runs on Python 3.12 from the standard library alone, with an
/// execution role that can write its own logs and nothing else.
#[test]
fn callback_function_is_stdlib_python_with_a_logs_only_role() {
    let script = r#"
import ast, json, sys, yaml
class Loader(yaml.SafeLoader): pass
def tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode): return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode): return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}
Loader.add_multi_constructor("!", tagged)
res = yaml.load(open(sys.argv[1]), Loader)["Resources"]
fn = res["CallbackFunction"]["Properties"]
imports = set()
for node in ast.walk(ast.parse(fn["Code"]["ZipFile"])):
    if isinstance(node, ast.Import): imports.update(a.name.split(".")[0] for a in node.names)
    if isinstance(node, ast.ImportFrom): imports.add(node.module.split(".")[0])
role = res["CallbackFunctionRole"]["Properties"]
print(json.dumps({
    "runtime": fn["Runtime"], "handler": fn["Handler"], "timeout": fn["Timeout"],
    "non_stdlib": sorted(i for i in imports if i not in sys.stdlib_module_names),
    "trusts": role["AssumeRolePolicyDocument"]["Statement"][0]["Principal"],
    "actions": sorted(a for p in role["Policies"] for st in p["PolicyDocument"]["Statement"] for a in st["Action"]),
    "managed": role.get("ManagedPolicyArns", []),
    "callback_type": res["Callback"]["Type"],
}))
"#;
    let out = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg(script)
        .arg(template("xrole-role.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runtime"], "python3.12");
    assert_eq!(v["handler"], "index.handler");
    assert_eq!(
        v["non_stdlib"],
        json!([]),
        "the inline Lambda imports only the standard library"
    );
    assert_eq!(v["trusts"], json!({"Service": "lambda.amazonaws.com"}));
    assert_eq!(
        v["actions"],
        json!(["logs:CreateLogStream", "logs:PutLogEvents"])
    );
    assert_eq!(v["managed"], json!([]));
    assert!(v["callback_type"].as_str().unwrap().starts_with("Custom::"));
    // The default retry window (50 s) plus answering CloudFormation fits the timeout.
    assert!(v["timeout"].as_i64().unwrap() >= 90, "{}", v["timeout"]);
}

/// The StackSet deploys the role template with every parameter that has no
/// default, and only parameters the role template declares.
#[test]
fn stackset_passes_the_role_templates_parameters() {
    let script = r#"
import json, sys, yaml
class Loader(yaml.SafeLoader): pass
def tagged(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode): return {suffix: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode): return {suffix: loader.construct_sequence(node, deep=True)}
    return {suffix: loader.construct_mapping(node, deep=True)}
Loader.add_multi_constructor("!", tagged)
role = yaml.load(open(sys.argv[1]), Loader)
stackset = yaml.load(open(sys.argv[2]), Loader)
res = stackset["Resources"]["XroleRoles"]["Properties"]
print(json.dumps({
    "role_params": sorted(role["Parameters"]),
    "required": sorted(k for k, v in role["Parameters"].items() if "Default" not in v),
    "passed": sorted(p["ParameterKey"] for p in res["Parameters"]),
    "permission_model": res["PermissionModel"],
    "auto_deployment": res["AutoDeployment"]["Enabled"],
    "targets": res["StackInstancesGroup"][0]["DeploymentTargets"],
    "capabilities": res["Capabilities"],
    "secret_no_echo": stackset["Parameters"]["CallbackSecret"].get("NoEcho"),
}))
"#;
    let out = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg(script)
        .arg(template("xrole-role.yaml"))
        .arg(template("xrole-stackset.yaml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = |k: &str| -> Vec<String> {
        v[k].as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let passed = list("passed");
    for p in list("required") {
        assert!(passed.contains(&p), "the StackSet does not pass {p}");
    }
    for p in &passed {
        assert!(
            list("role_params").contains(p),
            "the role template has no parameter {p}"
        );
    }
    assert!(
        !passed.contains(&"RoleName".to_owned()),
        "one fixed name would not be unique per stack"
    );
    assert_eq!(v["permission_model"], "SERVICE_MANAGED");
    assert_eq!(v["auto_deployment"], true);
    assert_eq!(
        v["targets"],
        json!({"OrganizationalUnitIds": {"Ref": "OrganizationalUnitIds"}})
    );
    assert_eq!(v["capabilities"], json!(["CAPABILITY_NAMED_IAM"]));
    assert_eq!(v["secret_no_echo"], true);
}

// ---------------------------------------------------------------------------
// The callback Lambda, run from the template's source.

#[tokio::test]
async fn create_posts_a_signed_callback_and_answers_success() {
    let receiver = Receiver::start().await;
    let (secret, text) = new_secret();
    let ev = event("Create", &receiver, &receiver.url("/callback"), &text, None);
    let run = run_lambda(&ev, "5").await;

    let callbacks = receiver.requests("/callback");
    assert_eq!(callbacks.len(), 1, "{}", run.output);
    assert_signed_callback(&callbacks[0], &secret, "Create");
    // A different secret does not verify: the check above is not vacuous.
    let (other, _) = new_secret();
    assert!(
        other
            .verify(
                callbacks[0].header("webhook-id"),
                callbacks[0].header("webhook-timestamp"),
                callbacks[0].header("webhook-signature"),
                &callbacks[0].body,
                SystemTime::now(),
            )
            .is_err()
    );
    let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
    assert_eq!(body["PhysicalResourceId"], format!("xrole-link-{LINK_ID}"));
    assert_eq!(body["Data"], json!({"Delivered": "true"}));
    assert_secret_nowhere(&text, &run, &receiver);
}

#[tokio::test]
async fn update_and_delete_send_their_event_and_keep_the_physical_id() {
    let physical = format!("xrole-link-{LINK_ID}");
    for kind in ["Update", "Delete"] {
        let receiver = Receiver::start().await;
        let (secret, text) = new_secret();
        let ev = event(
            kind,
            &receiver,
            &receiver.url("/callback"),
            &text,
            Some(&physical),
        );
        let run = run_lambda(&ev, "5").await;
        let callbacks = receiver.requests("/callback");
        assert_eq!(callbacks.len(), 1, "{kind}: {}", run.output);
        assert_signed_callback(&callbacks[0], &secret, kind);
        let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
        assert_eq!(body["Data"], json!({"Delivered": "true"}));
        assert_secret_nowhere(&text, &run, &receiver);
    }
}

#[tokio::test]
async fn server_errors_are_retried_with_the_same_message_id() {
    let receiver = Receiver::start().await;
    receiver.reply_to_callbacks(&[(503, ""), (429, ""), (204, "")]);
    let (secret, text) = new_secret();
    let ev = event("Create", &receiver, &receiver.url("/callback"), &text, None);
    let run = run_lambda(&ev, "20").await;

    let callbacks = receiver.requests("/callback");
    assert_eq!(callbacks.len(), 3, "503, 429, then success: {}", run.output);
    for c in &callbacks {
        assert_signed_callback(c, &secret, "Create");
        // Standard Webhooks: a retry is the same message, so the SaaS can deduplicate.
        assert_eq!(c.header("webhook-id"), callbacks[0].header("webhook-id"));
    }
    assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
    assert_secret_nowhere(&text, &run, &receiver);
}

#[tokio::test]
async fn delete_and_update_succeed_while_the_saas_is_down() {
    let physical = format!("xrole-link-{LINK_ID}");
    let down = format!("http://127.0.0.1:{}/callback", free_port().unwrap());
    for kind in ["Delete", "Update"] {
        let receiver = Receiver::start().await;
        let (_, text) = new_secret();
        let ev = event(kind, &receiver, &down, &text, Some(&physical));
        let run = run_lambda(&ev, "4").await;
        // More than one attempt: connection errors are retried within the window.
        let attempts = run.output.matches("callback attempt").count();
        assert!(attempts >= 2, "{kind}: {}", run.output);
        let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
        assert_eq!(body["Data"], json!({"Delivered": "false"}));
        assert!(
            body["Reason"].as_str().unwrap().contains("not notified"),
            "{body}"
        );
        assert_secret_nowhere(&text, &run, &receiver);
    }
}

#[tokio::test]
async fn delete_succeeds_while_the_saas_answers_500() {
    let receiver = Receiver::start().await;
    receiver.reply_to_callbacks(&[(500, ""); 50]);
    let (_, text) = new_secret();
    let physical = format!("xrole-link-{LINK_ID}");
    let ev = event(
        "Delete",
        &receiver,
        &receiver.url("/callback"),
        &text,
        Some(&physical),
    );
    let run = run_lambda(&ev, "4").await;
    assert!(receiver.requests("/callback").len() >= 2, "{}", run.output);
    assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
}

#[tokio::test]
async fn rejected_create_fails_with_the_saas_reason() {
    let receiver = Receiver::start().await;
    let problem = json!({
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "code": "link_expired",
        "detail": "this link expired; create a new one in xrole",
    });
    receiver.reply_to_callbacks(&[(409, &problem.to_string())]);
    let (secret, text) = new_secret();
    let ev = event("Create", &receiver, &receiver.url("/callback"), &text, None);
    let run = run_lambda(&ev, "5").await;

    let callbacks = receiver.requests("/callback");
    assert_eq!(
        callbacks.len(),
        1,
        "a 4xx is final, never retried: {}",
        run.output
    );
    assert_signed_callback(&callbacks[0], &secret, "Create");
    let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "FAILED");
    let reason = body["Reason"].as_str().unwrap();
    assert!(
        reason.contains("this link expired; create a new one in xrole"),
        "{reason}"
    );
    assert_secret_nowhere(&text, &run, &receiver);
}

/// A rejected Update still succeeds: failing it would make CloudFormation roll
/// back with another Update that fails the same way, and the stack would be stuck.
#[tokio::test]
async fn rejected_update_still_succeeds() {
    let receiver = Receiver::start().await;
    receiver.reply_to_callbacks(&[(410, r#"{"title":"Gone","detail":"link deleted"}"#)]);
    let (secret, text) = new_secret();
    let physical = format!("xrole-link-{LINK_ID}");
    let ev = event(
        "Update",
        &receiver,
        &receiver.url("/callback"),
        &text,
        Some(&physical),
    );
    let run = run_lambda(&ev, "5").await;
    let callbacks = receiver.requests("/callback");
    assert_eq!(callbacks.len(), 1, "{}", run.output);
    assert_signed_callback(&callbacks[0], &secret, "Update");
    let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "SUCCESS");
    assert!(
        body["Reason"].as_str().unwrap().contains("link deleted"),
        "{body}"
    );
    assert_eq!(body["Data"], json!({"Delivered": "false"}));
    assert_secret_nowhere(&text, &run, &receiver);
}

#[tokio::test]
async fn create_fails_when_the_saas_is_unreachable() {
    let receiver = Receiver::start().await;
    let (_, text) = new_secret();
    let down = format!("http://127.0.0.1:{}/callback", free_port().unwrap());
    let ev = event("Create", &receiver, &down, &text, None);
    let run = run_lambda(&ev, "2").await;
    let body = assert_cfn_answer(&receiver.cfn_answer(), &ev, "FAILED");
    assert!(
        body["Reason"].as_str().unwrap().contains("did not answer"),
        "{body}"
    );
    assert_secret_nowhere(&text, &run, &receiver);
}

#[tokio::test]
async fn a_malformed_secret_fails_create_without_echoing_it() {
    let receiver = Receiver::start().await;
    let bad = "whsec_not!base64!but-secret-looking";
    let ev = event("Create", &receiver, &receiver.url("/callback"), bad, None);
    let run = run_lambda(&ev, "2").await;
    assert!(receiver.requests("/callback").is_empty());
    let answer = receiver.cfn_answer();
    assert_cfn_answer(&answer, &ev, "FAILED");
    assert!(!run.output.contains("not!base64"), "{}", run.output);
    assert!(!String::from_utf8_lossy(&answer.body).contains("not!base64"));
}

// ---------------------------------------------------------------------------
// The role stack in a moto customer account, assumed through the gate.

fn param(key: &str, value: &str) -> Parameter {
    Parameter::builder()
        .parameter_key(key)
        .parameter_value(value)
        .build()
}

/// IAM returns policy documents URL-encoded.
fn policy_json(document: &str) -> Value {
    let decoded = if document.trim_start().starts_with('{') {
        document.to_owned()
    } else {
        let mut out = Vec::new();
        let bytes = document.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' && i + 2 < bytes.len() {
                out.push(u8::from_str_radix(&document[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    if let Ok(v) = serde_json::from_str(&decoded) {
        return v;
    }
    // moto returns an inline policy that CloudFormation gave it as an object in
    // Python's repr (single quotes); read that with Python.
    let out = std::process::Command::new(python().unwrap())
        .arg("-c")
        .arg("import ast, json, sys; print(json.dumps(ast.literal_eval(sys.argv[1])))")
        .arg(&decoded)
        .output()
        .unwrap();
    assert!(out.status.success(), "not a policy: {decoded}");
    serde_json::from_slice(&out.stdout).unwrap()
}

struct DeployedStack {
    stack_id: String,
    role_name: String,
    role_arn: String,
    function_arn: String,
}

/// Creates the role stack; moto creates every resource and waits, as
/// CloudFormation does, for the custom resource's answer.
async fn create_role_stack(
    cfn: &aws_sdk_cloudformation::Client,
    iam: &aws_sdk_iam::Client,
    account: &str,
    params: Vec<Parameter>,
) -> DeployedStack {
    let body = std::fs::read_to_string(template("xrole-role.yaml")).unwrap();
    let created = cfn
        .create_stack()
        .stack_name("xrole")
        .template_body(body)
        .set_parameters(Some(params))
        .capabilities(Capability::CapabilityNamedIam)
        .send()
        .await
        .unwrap();
    let stack_id = created.stack_id().unwrap().to_owned();
    assert!(
        stack_id.contains(&format!(":{account}:stack/xrole/")),
        "{stack_id}"
    );
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
    let role_name = physical("Role");
    let role = iam.get_role().role_name(&role_name).send().await.unwrap();
    let role_arn = role.role().unwrap().arn().to_owned();
    let function_arn = format!(
        "arn:aws:lambda:us-east-1:{account}:function:{}",
        physical("CallbackFunction")
    );
    DeployedStack {
        stack_id,
        role_name,
        role_arn,
        function_arn,
    }
}

/// The event CloudFormation sends the Lambda for this stack: the template's
/// `Callback` properties, resolved.
fn stack_event(
    kind: &str,
    stack: &DeployedStack,
    receiver: &Receiver,
    secret: &str,
    access_level: &str,
) -> Value {
    let mut e = json!({
        "RequestType": kind,
        "ServiceToken": stack.function_arn,
        "ResponseURL": receiver.url("/cfn-response"),
        "StackId": stack.stack_id,
        "RequestId": uuid::Uuid::new_v4().to_string(),
        "LogicalResourceId": "Callback",
        "ResourceType": "Custom::XroleCallback",
        "ResourceProperties": {
            "ServiceToken": stack.function_arn,
            "LinkId": LINK_ID,
            "CallbackUrl": receiver.url("/callback"),
            "CallbackSecret": secret,
            "RoleArn": stack.role_arn,
            "AccessLevel": access_level,
        },
    });
    if kind != "Create" {
        e["PhysicalResourceId"] = json!(format!("xrole-link-{LINK_ID}"));
    }
    e
}

/// Hands the Lambda's answer to moto's CloudFormation, in the customer's account.
async fn deliver_answer_to_moto(aws: &Aws, account: &str, stack_id: &str, answer: &Recorded) {
    let url = url::Url::parse_with_params(
        &format!(
            "{}/cloudformation_us-east-1/cfnresponse",
            aws.moto_endpoint()
        ),
        [("stack", stack_id)],
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .put(url)
        .header("x-moto-account-id", account)
        .header("content-type", "")
        .body(answer.body.clone())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
}

async fn assume(aws: &Aws, role_arn: &str, external_id: Option<&str>) -> Result<String, String> {
    let sts = aws_sdk_sts::Client::new(&aws.saas_config());
    let out = sts
        .assume_role()
        .role_arn(role_arn)
        .role_session_name("xrole-org1-verify")
        .set_external_id(external_id.map(str::to_owned))
        .send()
        .await
        .map_err(|e| format!("{:?}", aws_sdk_sts::error::DisplayErrorContext(&e)))?;
    let c = out.credentials().unwrap();
    let session = aws.config_for(aws_credential_types::Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "test",
    ));
    let me = aws_sdk_sts::Client::new(&session)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    Ok(me.account().unwrap().to_owned())
}

#[tokio::test]
async fn role_stack_deploys_and_is_assumable_only_with_the_external_id() {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let account = customer.account_id().to_owned();
    let admin = customer.admin_config();
    let cfn = aws_sdk_cloudformation::Client::new(&admin);
    let iam = aws_sdk_iam::Client::new(&admin);
    let receiver = Receiver::start().await;
    let (secret, text) = new_secret();

    let stack = create_role_stack(
        &cfn,
        &iam,
        &account,
        vec![
            param("SaasPrincipalArn", &aws.saas_principal_arn()),
            param("ExternalId", EXTERNAL_ID),
            param("LinkId", LINK_ID),
            param("CallbackUrl", &receiver.url("/callback")),
            param("CallbackSecret", &text),
            param("AccessLevel", "Provisioning"),
        ],
    )
    .await;

    // Until the custom resource answers, the stack is not complete.
    let status = |s: &aws_sdk_cloudformation::operation::describe_stacks::DescribeStacksOutput| {
        s.stacks()[0].stack_status().cloned().unwrap()
    };
    let before = cfn
        .describe_stacks()
        .stack_name(&stack.stack_id)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&before), StackStatus::CreateInProgress);

    // Play the Lambda service: run the template's function with the Create event.
    let create = stack_event("Create", &stack, &receiver, &text, "Provisioning");
    let run = run_lambda(&create, "5").await;
    let callbacks = receiver.requests("/callback");
    assert_eq!(callbacks.len(), 1, "{}", run.output);
    secret
        .verify(
            callbacks[0].header("webhook-id"),
            callbacks[0].header("webhook-timestamp"),
            callbacks[0].header("webhook-signature"),
            &callbacks[0].body,
            SystemTime::now(),
        )
        .unwrap();
    let body = callbacks[0].json();
    assert_eq!(body["role_arn"], stack.role_arn.as_str());
    assert_eq!(body["account_id"], account.as_str());
    assert_eq!(body["stack_id"], stack.stack_id.as_str());
    assert_eq!(body["region"], "us-east-1");
    assert_eq!(body["event"], "Create");
    let answer = receiver.cfn_answer();
    assert_cfn_answer(&answer, &create, "SUCCESS");
    deliver_answer_to_moto(&aws, &account, &stack.stack_id, &answer).await;

    let after = cfn
        .describe_stacks()
        .stack_name(&stack.stack_id)
        .send()
        .await
        .unwrap();
    assert_eq!(status(&after), StackStatus::CreateComplete);
    let outputs: HashMap<String, String> = after.stacks()[0]
        .outputs()
        .iter()
        .map(|o| {
            (
                o.output_key().unwrap().to_owned(),
                o.output_value().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(outputs["RoleArn"], stack.role_arn);
    assert_eq!(outputs["ExternalId"], EXTERNAL_ID);
    assert_secret_nowhere(&text, &run, &receiver);

    // The role as the template describes it.
    let stack_uuid = stack.stack_id.rsplit('/').next().unwrap();
    assert_eq!(
        stack.role_name,
        format!("xrole-{stack_uuid}"),
        "unique per stack"
    );
    let role = iam
        .get_role()
        .role_name(&stack.role_name)
        .send()
        .await
        .unwrap();
    let role = role.role().unwrap();
    assert_eq!(role.max_session_duration(), Some(3600));
    let trust = policy_json(role.assume_role_policy_document().unwrap());
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements[0]["Principal"],
        json!({"AWS": aws.saas_principal_arn()})
    );
    assert_eq!(
        statements[0]["Action"],
        json!(["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"])
    );
    assert_eq!(
        statements[0]["Condition"],
        json!({"StringEquals": {"sts:ExternalId": EXTERNAL_ID}})
    );
    let policies = iam
        .list_role_policies()
        .role_name(&stack.role_name)
        .send()
        .await
        .unwrap();
    let mut names = policies.policy_names().to_vec();
    names.sort();
    assert_eq!(
        names,
        [
            "xrole-provisioning",
            "xrole-read-only",
            "xrole-read-own-trust-policy"
        ]
    );
    assert_reads_only_itself(&iam, &stack.role_name, &stack.role_arn).await;
    let provisioning = iam
        .get_role_policy()
        .role_name(&stack.role_name)
        .policy_name("xrole-provisioning")
        .send()
        .await
        .unwrap();
    let provisioning = policy_json(provisioning.policy_document());
    assert_no_wildcard_admin(&provisioning);
    assert_tag_scoped(&provisioning);

    // Through the gate: the SaaS gets in with the External ID, and only with it.
    assert_eq!(
        assume(&aws, &stack.role_arn, Some(EXTERNAL_ID)).await,
        Ok(account.clone())
    );
    let without = assume(&aws, &stack.role_arn, None).await.unwrap_err();
    assert!(without.contains("AccessDenied"), "{without}");
    let wrong = assume(&aws, &stack.role_arn, Some("xrx-someone-elses-id"))
        .await
        .unwrap_err();
    assert!(wrong.contains("AccessDenied"), "{wrong}");

    // Delete: the Lambda reports it, then the stack and the role are gone.
    let receiver = Receiver::start().await;
    let delete = stack_event("Delete", &stack, &receiver, &text, "Provisioning");
    let run = run_lambda(&delete, "5").await;
    let callbacks = receiver.requests("/callback");
    assert_eq!(callbacks.len(), 1, "{}", run.output);
    assert_eq!(callbacks[0].json()["event"], "Delete");
    assert_cfn_answer(&receiver.cfn_answer(), &delete, "SUCCESS");
    cfn.delete_stack()
        .stack_name(&stack.stack_id)
        .send()
        .await
        .unwrap();
    assert!(
        iam.get_role()
            .role_name(&stack.role_name)
            .send()
            .await
            .is_err()
    );
    let gone = assume(&aws, &stack.role_arn, Some(EXTERNAL_ID))
        .await
        .unwrap_err();
    assert!(gone.contains("AccessDenied"), "{gone}");
}

#[tokio::test]
async fn read_only_stack_has_no_provisioning_policy_and_keeps_the_boundary() {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let account = customer.account_id().to_owned();
    let admin = customer.admin_config();
    let cfn = aws_sdk_cloudformation::Client::new(&admin);
    let iam = aws_sdk_iam::Client::new(&admin);
    let boundary = iam
        .create_policy()
        .policy_name("xrole-boundary")
        .policy_document(
            json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
                   "Action": ["ec2:Describe*", "rds:Describe*"], "Resource": "*"}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let boundary_arn = boundary.policy().unwrap().arn().unwrap().to_owned();

    let stack = create_role_stack(
        &cfn,
        &iam,
        &account,
        vec![
            param("SaasPrincipalArn", &aws.saas_principal_arn()),
            param("ExternalId", EXTERNAL_ID),
            param("LinkId", LINK_ID),
            param(
                "CallbackUrl",
                "https://xrole.example.com/v1/callbacks/cloudformation",
            ),
            param("CallbackSecret", new_secret().1.as_str()),
            param("RoleName", "acme-xrole-readonly"),
            param("PermissionsBoundaryArn", &boundary_arn),
        ],
    )
    .await;
    assert_eq!(stack.role_name, "acme-xrole-readonly");
    let policies = iam
        .list_role_policies()
        .role_name(&stack.role_name)
        .send()
        .await
        .unwrap();
    let mut names = policies.policy_names().to_vec();
    names.sort();
    assert_eq!(
        names,
        ["xrole-read-only", "xrole-read-own-trust-policy"],
        "ReadOnly is the default"
    );
    assert_reads_only_itself(&iam, &stack.role_name, &stack.role_arn).await;
    let read_only = iam
        .get_role_policy()
        .role_name(&stack.role_name)
        .policy_name("xrole-read-only")
        .send()
        .await
        .unwrap();
    let read_only = policy_json(read_only.policy_document());
    for statement in read_only["Statement"].as_array().unwrap() {
        let actions: Vec<&str> = match &statement["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("{other}"),
        };
        for action in actions {
            let verb = action.split(':').nth(1).unwrap();
            assert!(
                ["Describe", "List", "Get"]
                    .iter()
                    .any(|p| verb.starts_with(p))
                    && !verb.contains('*'),
                "ReadOnly grants {action}"
            );
        }
    }
    let role = iam
        .get_role()
        .role_name(&stack.role_name)
        .send()
        .await
        .unwrap();
    let bound = role
        .role()
        .unwrap()
        .permissions_boundary()
        .map(|b| b.permissions_boundary_arn());
    assert_eq!(bound, Some(Some(boundary_arn.as_str())));
    assert_eq!(
        assume(&aws, &stack.role_arn, Some(EXTERNAL_ID)).await,
        Ok(account)
    );
}

/// The one IAM permission: `iam:GetRole` on the role itself, so xrole can
/// audit its trust policy.
async fn assert_reads_only_itself(iam: &aws_sdk_iam::Client, role_name: &str, role_arn: &str) {
    let own = iam
        .get_role_policy()
        .role_name(role_name)
        .policy_name("xrole-read-own-trust-policy")
        .send()
        .await
        .unwrap();
    let own = policy_json(own.policy_document());
    assert_eq!(
        own["Statement"],
        json!([{"Sid": "ReadThisRoleOnly", "Effect": "Allow", "Action": "iam:GetRole",
            "Resource": role_arn}])
    );
}

/// No statement grants every action, or every action of a service.
fn assert_no_wildcard_admin(policy: &Value) {
    for statement in policy["Statement"].as_array().unwrap() {
        if statement["Effect"] == "Deny" {
            // A Deny only takes away; its Resource "*" is not a grant.
            assert_eq!(statement["Sid"], "NeverTakeOverTheMasterPassword");
            continue;
        }
        assert_eq!(statement["Effect"], "Allow");
        let actions: Vec<&str> = match &statement["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("{other}"),
        };
        for action in actions {
            assert!(!action.contains('*'), "wildcard action {action}");
        }
        assert!(statement.get("NotAction").is_none());
        // Creates, changes and deletes are conditioned on the xrole tag (or
        // confined by resource: images to launch, RDS's own secrets and role,
        // snapshots named xrole-*).
        let sid = statement["Sid"].as_str().unwrap();
        let unconditioned_ok = [
            "RunInstancesImageAndInterface",
            "CreateDatabasesWithDefaultGroups",
            "FinalSnapshots",
        ];
        if !unconditioned_ok.contains(&sid) {
            assert!(
                statement.get("Condition").is_some(),
                "{sid} has no condition"
            );
        }
    }
}

/// Creates require the xrole request tag, changes and deletes the xrole
/// resource tag, and tagging happens only inside a create.
fn assert_tag_scoped(policy: &Value) {
    let mut seen = Vec::new();
    for statement in policy["Statement"].as_array().unwrap() {
        let sid = statement["Sid"].as_str().unwrap();
        seen.push(sid.to_owned());
        let equals = &statement["Condition"]["StringEquals"];
        let actions: Vec<&str> = match &statement["Action"] {
            Value::String(a) => vec![a.as_str()],
            Value::Array(a) => a.iter().map(|a| a.as_str().unwrap()).collect(),
            other => panic!("{other}"),
        };
        let destructive = actions.iter().any(|a| {
            [
                "Delete",
                "Modify",
                "Terminate",
                "Stop",
                "Reboot",
                "Revoke",
                "Detach",
                "Disassociate",
            ]
            .iter()
            .any(|verb| a.split(':').nth(1).unwrap().starts_with(verb))
        });
        match sid {
            "CreateVpcAndGatewayTagged"
            | "CreateInXroleVpcTagged"
            | "RunInstancesTagged"
            | "AuthorizeTaggedRules"
            | "CreateDatabasesTagged" => {
                assert_eq!(equals["aws:RequestTag/xrole:managed-by"], "xrole", "{sid}");
                assert_eq!(
                    statement["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"],
                    json!(["xrole:*", "Name"]),
                    "{sid}"
                );
            }
            "OnlyInXroleVpcs"
            | "RunInstancesInXroleNetwork"
            | "ChangeOnlyXroleEc2"
            | "TearDownOnlyXroleDatabases" => {
                assert_eq!(equals["aws:ResourceTag/xrole:managed-by"], "xrole", "{sid}");
            }
            "FinalSnapshots" => {
                assert_eq!(actions, ["rds:CreateDBSnapshot"]);
                assert!(
                    statement["Resource"]
                        .as_str()
                        .unwrap()
                        .ends_with(":snapshot:xrole-*")
                );
            }
            "FinalSnapshotsKeepXroleTags" => {
                assert_eq!(actions, ["rds:AddTagsToResource"]);
                assert_eq!(equals["aws:RequestTag/xrole:managed-by"], "xrole", "{sid}");
                assert_eq!(
                    statement["Condition"]["ForAllValues:StringLike"]["aws:TagKeys"],
                    json!(["xrole:*", "Name"]),
                    "{sid}"
                );
            }
            "NeverTakeOverTheMasterPassword" => {
                assert_eq!(statement["Effect"], "Deny");
                assert_eq!(actions, ["rds:ModifyDBInstance"]);
                assert_eq!(
                    statement["Condition"]["Null"]["rds:ManageMasterUserPassword"],
                    "false"
                );
            }
            "TagOnlyWhileCreating" => {
                assert_eq!(actions, ["ec2:CreateTags"]);
                assert!(equals["ec2:CreateAction"].as_array().unwrap().len() >= 6);
            }
            "RdsServiceLinkedRole" => {
                assert_eq!(equals["iam:AWSServiceName"], "rds.amazonaws.com");
            }
            "RdsCreatesItsPasswordSecret" => {
                assert!(
                    statement["Resource"]
                        .as_str()
                        .unwrap()
                        .ends_with(":secret:rds!*")
                );
                assert!(!actions.iter().any(|a| a.contains("GetSecretValue")));
            }
            "RunInstancesImageAndInterface" | "CreateDatabasesWithDefaultGroups" => {}
            other => {
                panic!("unexpected statement {other}: update this test and docs/onboarding.md")
            }
        }
        if destructive && statement["Effect"] == "Allow" {
            assert!(
                sid.starts_with("ChangeOnly") || sid.starts_with("TearDownOnly"),
                "{sid} changes or deletes without the tag"
            );
        }
    }
    assert!(seen.len() >= 13, "{seen:?}");
}
