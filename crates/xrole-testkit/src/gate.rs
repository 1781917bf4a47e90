//! The STS gate: a loopback HTTP proxy in front of moto that decides
//! `sts:AssumeRole` like AWS, evaluates the identity policies of the
//! sessions it saw issued, and counts, delays and fails any action on demand.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::enforce::{Decision, GATE_KEY, Session, decode_message};
use crate::policy::{self, Caller, Context, MalformedPolicy};
use crate::sts::{AssumeRoleParams, CHAINED_MAX_DURATION, role_ref};
use crate::wire::{AwsError, RequestInfo, xml_escape, xml_text};

/// What an injected fault answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The service's throttling error: `Throttling` (HTTP 400) for query
    /// protocols, `RequestLimitExceeded` (503) for EC2, `ThrottlingException`
    /// (400) for JSON protocols. SDKs retry it.
    Throttling,
    /// HTTP 500 `InternalFailure` (`InternalError` for EC2). SDKs retry it.
    Http500,
    /// HTTP 403 `AccessDenied` (`UnauthorizedOperation` for EC2,
    /// `AccessDeniedException` for JSON protocols). SDKs do not retry it.
    AccessDenied,
    /// The request waits this long, then proceeds normally. It has not
    /// reached the upstream yet: a caller that gives up meanwhile leaves no
    /// trace in AWS.
    Delay(Duration),
    /// The request goes to the upstream at once, so AWS performs it, and
    /// its answer waits this long before the caller gets it. A caller that
    /// dies meanwhile has made the change in AWS without learning its
    /// outcome (the id of what it created, say).
    HoldResponse(Duration),
}

/// A running gate. Dropping it stops the listener and every open connection.
#[derive(Debug)]
pub struct Gate {
    addr: SocketAddr,
    upstream: String,
    control: GateControl,
    task: JoinHandle<()>,
}

impl Gate {
    /// Listens on `listen` (port 0 picks a free port) and forwards to `upstream`
    /// (moto's `http://127.0.0.1:PORT`). Must be called inside a Tokio runtime.
    pub async fn start(upstream: &str, listen: SocketAddr) -> anyhow::Result<Gate> {
        let upstream_uri: Uri = upstream
            .parse()
            .context("upstream must be an http:// URL")?;
        anyhow::ensure!(
            upstream_uri.scheme_str() == Some("http") && upstream_uri.authority().is_some(),
            "upstream must look like http://127.0.0.1:PORT, got {upstream}"
        );
        let listener = TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        let control = GateControl::default();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            control: control.clone(),
            identities: Mutex::new(HashMap::new()),
            policy_versions: Mutex::new(HashMap::new()),
        });
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let state = state.clone();
                        connections.spawn(async move {
                            let service = service_fn(move |req| handle(state.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(Gate {
            addr,
            upstream: upstream.to_owned(),
            control,
            task,
        })
    }

    /// `http://127.0.0.1:PORT`: the endpoint every SDK client uses.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the gate listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream (moto) URL.
    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// The handle that programs faults and reads counters.
    pub fn control(&self) -> &GateControl {
        &self.control
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Programs the gate's faults and reads its counters. A cheap, thread-safe
/// handle: clones share one state.
///
/// Actions are named as AWS names them on the wire: the `Action` parameter for
/// query protocols (`AssumeRole`, `RunInstances`, `CreateVpc`), the
/// `X-Amz-Target` suffix for JSON protocols (`Encrypt`, `GetParameter`).
#[derive(Debug, Clone, Default)]
pub struct GateControl {
    inner: Arc<Mutex<ControlState>>,
}

#[derive(Debug, Default)]
struct ControlState {
    faults: HashMap<String, VecDeque<(u32, Fault)>>,
    delay_all: Duration,
    delays: HashMap<String, Duration>,
    propagation: Duration,
    skip_external_id: bool,
    counts: HashMap<String, u64>,
    by_account: HashMap<(String, String), u64>,
    by_token: HashMap<(String, String), u64>,
    issued: Vec<IssuedCredentials>,
    /// Sessions the gate saw issued, by access key id: their requests are
    /// evaluated against the role's policies.
    sessions: HashMap<String, Arc<Session>>,
    /// Enforcement is on unless a test turns it off.
    enforcement_off: bool,
    recording: bool,
    /// Every decision while recording.
    recorded: Vec<Decision>,
    /// The latest denials, recording or not (at most [`DENIALS_KEPT`]).
    denials: VecDeque<Decision>,
    /// Decisions per (`service:Action`, allowed).
    decisions: HashMap<(String, bool), u64>,
}

/// How many denials the gate keeps for [`GateControl::denials`].
const DENIALS_KEPT: usize = 1000;

/// A decision counted by [`GateControl::decision_count`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// The policies allowed the authorization.
    Allowed,
    /// They did not (whether or not enforcement then refused the request).
    Denied,
}

/// Session credentials that STS issued for an `AssumeRole` the gate let
/// through. Tests search for them where they must never appear (databases,
/// logs). `Debug` shows the role, session and access key id only.
#[derive(Clone, PartialEq, Eq, serde::Serialize)]
pub struct IssuedCredentials {
    /// The role assumed (the request's `RoleArn`).
    pub role_arn: String,
    /// The request's `RoleSessionName`.
    pub session_name: String,
    /// The session's access key id.
    pub access_key_id: String,
    /// The session's secret access key.
    pub secret_access_key: String,
    /// The session token.
    pub session_token: String,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl IssuedCredentials {
    /// Reads moto's `AssumeRoleResponse` (`<Credentials>…`); `None` if it holds none.
    fn from_response(role_arn: &str, session_name: &str, xml: &str) -> Option<IssuedCredentials> {
        let credentials = xml_text(xml, "Credentials")?;
        Some(IssuedCredentials {
            role_arn: role_arn.to_owned(),
            session_name: session_name.to_owned(),
            access_key_id: xml_text(&credentials, "AccessKeyId")?,
            secret_access_key: xml_text(&credentials, "SecretAccessKey")?,
            session_token: xml_text(&credentials, "SessionToken")?,
        })
    }
}

impl GateControl {
    fn state(&self) -> MutexGuard<'_, ControlState> {
        // A panicking test thread must not poison the gate for the others.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next `n` requests for `action` answer `fault` (queued after any
    /// faults already pending for that action); later ones pass.
    pub fn fail_next(&self, action: &str, n: u32, fault: Fault) {
        if n > 0 {
            self.state()
                .faults
                .entry(action.to_owned())
                .or_default()
                .push_back((n, fault));
        }
    }

    /// Delays every request for `action` (or every request at all, for `None`)
    /// by `d` until changed; `Duration::ZERO` clears it. Both delays add up.
    pub fn delay(&self, action: Option<&str>, d: Duration) {
        let mut s = self.state();
        match action {
            None => s.delay_all = d,
            Some(a) if d.is_zero() => {
                s.delays.remove(a);
            }
            Some(a) => {
                s.delays.insert(a.to_owned(), d);
            }
        }
    }

    /// `AssumeRole` answers `AccessDenied` for a role during its first `d` after
    /// its `CreateDate`, as a new IAM role does until it has propagated.
    /// `Duration::ZERO` turns it off.
    pub fn propagation_delay(&self, d: Duration) {
        self.state().propagation = d;
    }

    /// When on, the gate ignores every trust-policy condition on
    /// `sts:ExternalId`: every role behaves as if it were open without one.
    pub fn skip_external_id_check(&self, on: bool) {
        self.state().skip_external_id = on;
    }

    /// Requests received for `action` (including faulted and denied ones).
    pub fn count(&self, action: &str) -> u64 {
        self.state().counts.get(action).copied().unwrap_or(0)
    }

    /// Requests received for `action` in `account`: the target role's account
    /// for `AssumeRole`, the caller's account for everything else.
    pub fn count_for_account(&self, action: &str, account: &str) -> u64 {
        let key = (action.to_owned(), account.to_owned());
        self.state().by_account.get(&key).copied().unwrap_or(0)
    }

    /// Requests received for `action` carrying `ClientToken` (or
    /// `ClientRequestToken`) `token`.
    pub fn count_for_client_token(&self, action: &str, token: &str) -> u64 {
        let key = (action.to_owned(), token.to_owned());
        self.state().by_token.get(&key).copied().unwrap_or(0)
    }

    /// Every session the gate has seen issued for an `AssumeRole` it let
    /// through, oldest first (refused and faulted requests issue none; other
    /// credential-issuing actions are not recorded). Kept for the gate's
    /// lifetime; `reset_counters` leaves them.
    pub fn issued_credentials(&self) -> Vec<IssuedCredentials> {
        self.state().issued.clone()
    }

    /// Sets every counter to zero, decision counts included (faults, delays,
    /// recorded decisions and denials stay).
    pub fn reset_counters(&self) {
        let mut s = self.state();
        s.counts.clear();
        s.by_account.clear();
        s.by_token.clear();
        s.decisions.clear();
    }

    /// Turns policy enforcement for the sessions the gate issued on (the
    /// default) or off. Off, their requests pass as moto alone would let
    /// them; while recording, decisions are still made and recorded.
    pub fn enforce(&self, on: bool) {
        self.state().enforcement_off = !on;
    }

    /// Whether enforcement is on.
    pub fn enforcing(&self) -> bool {
        !self.state().enforcement_off
    }

    /// Starts (clearing what was recorded) or stops recording every
    /// decision: each authorization of each request by a session the gate
    /// issued, with its action, resource and outcome.
    pub fn record(&self, on: bool) {
        let mut s = self.state();
        if on {
            s.recorded.clear();
        }
        s.recording = on;
    }

    /// The decisions recorded since [`GateControl::record`] was turned on,
    /// oldest first.
    pub fn recorded(&self) -> Vec<Decision> {
        self.state().recorded.clone()
    }

    /// The latest denials (up to 1000), oldest first, recording or not: the
    /// gate's log of what it refused and why.
    pub fn denials(&self) -> Vec<Decision> {
        self.state().denials.iter().cloned().collect()
    }

    /// How many authorizations of `action` (`ec2:CreateVpc`, IAM's name)
    /// ended with `verdict` (while enforcement was off too).
    pub fn decision_count(&self, action: &str, verdict: Verdict) -> u64 {
        let key = (action.to_owned(), verdict == Verdict::Allowed);
        self.state().decisions.get(&key).copied().unwrap_or(0)
    }

    pub(crate) fn session(&self, access_key_id: &str) -> Option<Arc<Session>> {
        self.state().sessions.get(access_key_id).cloned()
    }

    /// (enforcing, recording).
    fn modes(&self) -> (bool, bool) {
        let s = self.state();
        (!s.enforcement_off, s.recording)
    }

    pub(crate) fn record_decision(&self, d: Decision) {
        let mut s = self.state();
        *s.decisions
            .entry((d.action.clone(), d.allowed))
            .or_default() += 1;
        if !d.allowed {
            if s.denials.len() == DENIALS_KEPT {
                s.denials.pop_front();
            }
            s.denials.push_back(d.clone());
        }
        if s.recording {
            s.recorded.push(d);
        }
    }

    /// The control API for processes that are not Rust (the gate binary):
    /// `command` is the path after [`CONTROL_PREFIX`], `query` its parameters.
    ///
    /// | request | effect |
    /// |---|---|
    /// | `fail_next?action=A&n=N&fault=throttling\|http500\|access_denied\|delay_ms:M\|hold_response_ms:M` | [`GateControl::fail_next`] (`delay_ms`: [`Fault::Delay`], `hold_response_ms`: [`Fault::HoldResponse`]) |
    /// | `delay?ms=M[&action=A]` | [`GateControl::delay`] |
    /// | `propagation_delay?ms=M` | [`GateControl::propagation_delay`] |
    /// | `skip_external_id_check?on=true\|false` | [`GateControl::skip_external_id_check`] |
    /// | `count?action=A[&account=ID\|&client_token=T]` | answers the count |
    /// | `issued_credentials[?role_arn=ARN]` | answers [`GateControl::issued_credentials`] (for that role) as a JSON array |
    /// | `reset_counters` | [`GateControl::reset_counters`] |
    /// | `enforce?on=true\|false` | [`GateControl::enforce`] |
    /// | `record?on=true\|false` | [`GateControl::record`] |
    /// | `recorded` | answers [`GateControl::recorded`] as a JSON array |
    /// | `denials` | answers [`GateControl::denials`] as a JSON array |
    /// | `decision_count?action=ec2:CreateVpc&decision=allowed\|denied` | answers the count |
    ///
    /// Answers `ok` (or the count), or the reason a request was malformed.
    pub fn http_api(&self, command: &str, query: &str) -> Result<String, String> {
        let q: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| {
            q.get(k)
                .map(String::as_str)
                .ok_or_else(|| format!("missing parameter {k}"))
        };
        let ms = |k: &str| -> Result<Duration, String> {
            get(k)?
                .parse()
                .map(Duration::from_millis)
                .map_err(|e| format!("{k}: {e}"))
        };
        match command {
            "fail_next" => {
                let n = get("n")?.parse().map_err(|e| format!("n: {e}"))?;
                let fault = match get("fault")? {
                    "throttling" => Fault::Throttling,
                    "http500" => Fault::Http500,
                    "access_denied" => Fault::AccessDenied,
                    f => {
                        let ms = |prefix: &str| {
                            f.strip_prefix(prefix)
                                .and_then(|m| m.parse().ok())
                                .map(Duration::from_millis)
                        };
                        match (ms("delay_ms:"), ms("hold_response_ms:")) {
                            (Some(d), _) => Fault::Delay(d),
                            (None, Some(d)) => Fault::HoldResponse(d),
                            (None, None) => return Err(format!("unknown fault {f}")),
                        }
                    }
                };
                self.fail_next(get("action")?, n, fault);
            }
            "delay" => self.delay(q.get("action").map(String::as_str), ms("ms")?),
            "propagation_delay" => self.propagation_delay(ms("ms")?),
            "skip_external_id_check" => self.skip_external_id_check(get("on")? == "true"),
            "count" => {
                let action = get("action")?;
                let n = match (q.get("account"), q.get("client_token")) {
                    (Some(a), _) => self.count_for_account(action, a),
                    (None, Some(t)) => self.count_for_client_token(action, t),
                    (None, None) => self.count(action),
                };
                return Ok(n.to_string());
            }
            "issued_credentials" => {
                let role = q.get("role_arn");
                let issued: Vec<IssuedCredentials> = self
                    .issued_credentials()
                    .into_iter()
                    .filter(|c| role.is_none_or(|r| *r == c.role_arn))
                    .collect();
                return serde_json::to_string(&issued).map_err(|e| e.to_string());
            }
            "reset_counters" => self.reset_counters(),
            "enforce" => self.enforce(get("on")? == "true"),
            "record" => self.record(get("on")? == "true"),
            "recorded" => {
                return serde_json::to_string(&self.recorded()).map_err(|e| e.to_string());
            }
            "denials" => {
                return serde_json::to_string(&self.denials()).map_err(|e| e.to_string());
            }
            "decision_count" => {
                let verdict = match get("decision")? {
                    "allowed" => Verdict::Allowed,
                    "denied" => Verdict::Denied,
                    d => return Err(format!("decision must be allowed or denied, not {d}")),
                };
                return Ok(self.decision_count(get("action")?, verdict).to_string());
            }
            c => return Err(format!("unknown command {c}")),
        }
        Ok("ok".to_owned())
    }

    /// Counts the request and returns (delay, fault) for it.
    fn on_request(
        &self,
        action: &str,
        account: Option<&str>,
        token: Option<&str>,
    ) -> (Duration, Option<Fault>) {
        let mut s = self.state();
        *s.counts.entry(action.to_owned()).or_default() += 1;
        if let Some(a) = account {
            *s.by_account
                .entry((action.to_owned(), a.to_owned()))
                .or_default() += 1;
        }
        if let Some(t) = token {
            *s.by_token
                .entry((action.to_owned(), t.to_owned()))
                .or_default() += 1;
        }
        let delay = s.delay_all + s.delays.get(action).copied().unwrap_or_default();
        let mut fault = None;
        if let Some(queue) = s.faults.get_mut(action)
            && let Some((left, f)) = queue.front_mut()
        {
            fault = Some(*f);
            *left -= 1;
            if *left == 0 {
                queue.pop_front();
            }
        }
        (delay, fault)
    }
}

pub(crate) struct State {
    upstream: String,
    client: Client<HttpConnector, Full<Bytes>>,
    pub(crate) control: GateControl,
    /// Access key id → identity. A key never changes owner, so this never goes stale.
    identities: Mutex<HashMap<String, Caller>>,
    /// (managed policy ARN, version id) → document. A version never changes.
    pub(crate) policy_versions:
        Mutex<HashMap<(String, String), Result<serde_json::Value, MalformedPolicy>>>,
}

type Resp = Response<Full<Bytes>>;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
];

/// The path prefix of the gate's own control API (see [`GateControl::http_api`]).
pub const CONTROL_PREFIX: &str = "/_xrole_gate/";

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    if let Some(command) = req.uri().path().strip_prefix(CONTROL_PREFIX) {
        let query = req.uri().query().unwrap_or("");
        return Ok(match state.control.http_api(command, query) {
            Ok(text) => plain(StatusCode::OK, text),
            Err(e) => plain(StatusCode::BAD_REQUEST, e),
        });
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(plain(
                StatusCode::BAD_REQUEST,
                format!("cannot read request body: {e}"),
            ));
        }
    };
    let info = RequestInfo::read(&parts.headers, parts.uri.query(), &body);
    let Some(action) = info.action.clone() else {
        // A REST protocol (S3, Lambda, ...): the gate cannot name its action,
        // so a session it issued is refused rather than let through unchecked.
        if let Some(session) = info.access_key_id.as_deref().and_then(|k| state.session(k)) {
            let (enforcing, recording) = state.control.modes();
            if enforcing || recording {
                let e = state.refuse_unmapped(
                    &info,
                    parts.method.as_str(),
                    parts.uri.path(),
                    &session,
                    enforcing,
                );
                if enforcing {
                    return Ok(e.response(&info));
                }
            }
        }
        return Ok(state.forward(&parts, body).await);
    };
    if action == "AssumeRole" && info.json {
        // Never let an AssumeRole through undecided: the gate reads the query protocol only.
        return Ok(AwsError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            "the xrole gate decides AssumeRole in the awsQuery protocol only",
        )
        .response(&info));
    }
    let assume = action == "AssumeRole";
    let params = if assume {
        Some(AssumeRoleParams::parse(&info.params))
    } else {
        None
    };
    // AssumeRole counts in the target role's account, even when refused.
    let account = if assume {
        info.params
            .get("RoleArn")
            .and_then(|a| role_ref(a))
            .map(|r| r.account)
    } else {
        match &info.access_key_id {
            Some(key) => state.identity(key).await.ok().map(|c| c.account),
            None => None,
        }
    };
    let (delay, fault) =
        state
            .control
            .on_request(&action, account.as_deref(), info.client_token.as_deref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    // How long the answer waits once the upstream has performed the request.
    let mut hold = Duration::ZERO;
    match fault {
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::HoldResponse(d)) => hold = d,
        Some(f) => return Ok(fault_error(f, &action, &info).response(&info)),
        None => {}
    }
    // Requests of the sessions the gate issued meet the role's policies.
    let session = info.access_key_id.as_deref().and_then(|k| state.session(k));
    if let Some(session) = &session {
        let (enforcing, recording) = state.control.modes();
        if enforcing || recording {
            let decision = state.authorize(&info, &action, session, enforcing).await;
            if let Err(e) = decision
                && enforcing
            {
                return Ok(e.response(&info));
            }
        }
    }
    // moto has no DecodeAuthorizationMessage; the gate decodes its own messages.
    if action == "DecodeAuthorizationMessage" && !info.json {
        return Ok(decode_authorization_message(&info));
    }
    let mut allowed = None;
    if let Some(params) = params {
        let decision = match params {
            Ok(p) => state.decide_assume_role(&info, &p).await.map(|()| p),
            Err(e) => Err(e),
        };
        match decision {
            Ok(p) => allowed = Some(p),
            Err(e) => return Ok(e.response(&info)),
        }
    }
    let resp = state.forward(&parts, body).await;
    let resp = match allowed {
        Some(p) => state.record_issued(&p, session.as_deref(), resp).await,
        None => resp,
    };
    if !hold.is_zero() {
        tokio::time::sleep(hold).await;
    }
    Ok(resp)
}

/// `sts:DecodeAuthorizationMessage` for the messages the gate encoded.
fn decode_authorization_message(info: &RequestInfo) -> Resp {
    let Some(decoded) = info
        .params
        .get("EncodedMessage")
        .and_then(|m| decode_message(m))
    else {
        return AwsError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAuthorizationMessageException",
            "The error message provided is invalid.",
        )
        .response(info);
    };
    let body = format!(
        "<DecodeAuthorizationMessageResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\n  \
         <DecodeAuthorizationMessageResult>\n    <DecodedMessage>{}</DecodedMessage>\n  \
         </DecodeAuthorizationMessageResult>\n  <ResponseMetadata>\n    <RequestId>{}</RequestId>\n  \
         </ResponseMetadata>\n</DecodeAuthorizationMessageResponse>\n",
        xml_escape(&decoded),
        uuid::Uuid::new_v4()
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/xml"));
    r
}

fn fault_error(fault: Fault, action: &str, info: &RequestInfo) -> AwsError {
    let ec2 = info.service.as_deref() == Some("ec2");
    let service = info.service.as_deref().unwrap_or("sts");
    match fault {
        Fault::Throttling if ec2 => AwsError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "RequestLimitExceeded",
            "Request limit exceeded.",
        ),
        Fault::Throttling if info.json => AwsError::new(
            StatusCode::BAD_REQUEST,
            "ThrottlingException",
            "Rate exceeded",
        ),
        Fault::Throttling => AwsError::new(StatusCode::BAD_REQUEST, "Throttling", "Rate exceeded"),
        Fault::Http500 if ec2 => AwsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occurred",
        ),
        Fault::AccessDenied if ec2 => AwsError::new(
            StatusCode::FORBIDDEN,
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        ),
        Fault::AccessDenied if info.json => AwsError::new(
            StatusCode::BAD_REQUEST,
            "AccessDeniedException",
            format!("not authorized to perform: {service}:{action} (injected by the gate)"),
        ),
        Fault::AccessDenied => AwsError::access_denied(format!(
            "not authorized to perform: {service}:{action} (injected by the gate)"
        )),
        Fault::Http500 | Fault::Delay(_) | Fault::HoldResponse(_) => AwsError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed because of an unknown error, exception or failure.",
        ),
    }
}

/// What the gate needs to know about the target role.
#[derive(Debug)]
struct RoleInfo {
    arn: String,
    trust_policy: serde_json::Value,
    max_session: i64,
    created: Option<SystemTime>,
}

impl State {
    /// Records the credentials in a successful `AssumeRole` answer, and the
    /// session whose requests the gate will evaluate; passes the answer on
    /// unchanged. `parent` is the calling session when this is role chaining:
    /// its transitive tags and source identity carry over.
    async fn record_issued(
        &self,
        p: &AssumeRoleParams,
        parent: Option<&Session>,
        resp: Resp,
    ) -> Resp {
        let (parts, body) = resp.into_parts();
        let Ok(body) = body.collect().await.map(|b| b.to_bytes());
        if parts.status.is_success()
            && let Some(c) = IssuedCredentials::from_response(
                &p.role_arn,
                &p.session_name,
                &String::from_utf8_lossy(&body),
            )
            && let Some(role) = p.role()
        {
            let mut tags: Vec<(String, String)> = parent
                .map(|s| {
                    s.tags
                        .iter()
                        .filter(|(k, _)| {
                            s.transitive_tag_keys
                                .iter()
                                .any(|t| t.eq_ignore_ascii_case(k))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            tags.extend(p.tags.iter().cloned());
            let mut transitive: Vec<String> = parent
                .map(|s| s.transitive_tag_keys.clone())
                .unwrap_or_default();
            transitive.extend(p.transitive_tag_keys.iter().cloned());
            let session = Session {
                arn: format!(
                    "arn:aws:sts::{}:assumed-role/{}/{}",
                    role.account, role.name, p.session_name
                ),
                role_arn: p.role_arn.clone(),
                role_name: role.name,
                account: role.account,
                session_name: p.session_name.clone(),
                source_identity: p
                    .source_identity
                    .clone()
                    .or_else(|| parent.and_then(|s| s.source_identity.clone())),
                tags,
                transitive_tag_keys: transitive,
                policy: p.policy.clone(),
                policy_arns: p.policy_arns.clone(),
                issued: SystemTime::now(),
            };
            let mut s = self.control.state();
            s.sessions
                .insert(c.access_key_id.clone(), Arc::new(session));
            s.issued.push(c);
        }
        Response::from_parts(parts, Full::new(body))
    }

    async fn forward(&self, parts: &hyper::http::request::Parts, body: Bytes) -> Resp {
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: Uri = match format!("{}{path}", self.upstream).parse() {
            Ok(u) => u,
            Err(e) => return plain(StatusCode::BAD_REQUEST, format!("bad request path: {e}")),
        };
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        self.send(req).await.unwrap_or_else(|e| {
            plain(
                StatusCode::BAD_GATEWAY,
                format!("gate: upstream failed: {e:#}"),
            )
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> anyhow::Result<Resp> {
        let resp = self.client.request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut out = Response::new(Full::new(body));
        *out.status_mut() = parts.status;
        for (name, value) in &parts.headers {
            if !HOP_BY_HOP.contains(&name.as_str()) {
                out.headers_mut().append(name.clone(), value.clone());
            }
        }
        Ok(out)
    }

    /// A query-protocol call to moto. Moto does not check signatures: the
    /// credential scope only routes the request to `service` in `region`, the
    /// access key picks the caller, and `x-moto-account-id` (if given) the account.
    pub(crate) async fn moto_query(
        &self,
        service: &str,
        region: &str,
        access_key_id: &str,
        account: Option<&str>,
        params: &[(&str, &str)],
    ) -> anyhow::Result<(StatusCode, String)> {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(params)
            .finish();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={access_key_id}/20260101/{region}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let mut req = Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = format!("{}/", self.upstream).parse()?;
        let h = req.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        h.insert(hyper::header::AUTHORIZATION, HeaderValue::from_str(&auth)?);
        if let Some(a) = account {
            h.insert(
                HeaderName::from_static("x-moto-account-id"),
                HeaderValue::from_str(a)?,
            );
        }
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// A JSON-protocol call to moto (`target` is the `X-Amz-Target`), in
    /// `account`. Answers the status and the parsed body (`null` if none).
    pub(crate) async fn moto_json(
        &self,
        service: &str,
        target: &str,
        region: &str,
        account: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(StatusCode, serde_json::Value)> {
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={GATE_KEY}/20260101/{region}/{service}/aws4_request, \
             SignedHeaders=host, Signature=0"
        );
        let mut req = Request::new(Full::new(Bytes::from(body.to_string())));
        *req.method_mut() = hyper::Method::POST;
        *req.uri_mut() = format!("{}/", self.upstream).parse()?;
        let h = req.headers_mut();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        h.insert("x-amz-target", HeaderValue::from_str(target)?);
        h.insert(hyper::header::AUTHORIZATION, HeaderValue::from_str(&auth)?);
        h.insert(
            HeaderName::from_static("x-moto-account-id"),
            HeaderValue::from_str(account)?,
        );
        let resp = self.send(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, serde_json::from_slice(&body).unwrap_or_default()))
    }

    /// Who owns `access_key_id`, asked of moto's `GetCallerIdentity` once per key.
    async fn identity(&self, access_key_id: &str) -> anyhow::Result<Caller> {
        if let Some(c) = self
            .identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(access_key_id)
        {
            return Ok(c.clone());
        }
        let params = [("Action", "GetCallerIdentity"), ("Version", "2011-06-15")];
        let (status, xml) = self
            .moto_query("sts", "us-east-1", access_key_id, None, &params)
            .await?;
        anyhow::ensure!(
            status.is_success(),
            "GetCallerIdentity answered {status}: {xml}"
        );
        let arn = xml_text(&xml, "Arn").context("GetCallerIdentity without Arn")?;
        let account = xml_text(&xml, "Account").context("GetCallerIdentity without Account")?;
        let caller = Caller::from_arn(&arn, &account);
        self.identities
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(access_key_id.to_owned(), caller.clone());
        Ok(caller)
    }

    async fn role(&self, account: &str, name: &str) -> anyhow::Result<Option<RoleInfo>> {
        let params = [
            ("Action", "GetRole"),
            ("Version", "2010-05-08"),
            ("RoleName", name),
        ];
        let (status, xml) = self
            .moto_query("iam", "us-east-1", GATE_KEY, Some(account), &params)
            .await?;
        if status == StatusCode::NOT_FOUND || xml.contains("<Code>NoSuchEntity</Code>") {
            return Ok(None);
        }
        anyhow::ensure!(status.is_success(), "GetRole answered {status}: {xml}");
        let arn = xml_text(&xml, "Arn").context("GetRole without Arn")?;
        let doc = xml_text(&xml, "AssumeRolePolicyDocument").context("GetRole without policy")?;
        let trust_policy = policy::decode_document(&doc)
            .map_err(|e| anyhow::anyhow!("the trust policy of {arn} cannot be read: {e}"))?;
        let max_session = xml_text(&xml, "MaxSessionDuration")
            .and_then(|m| m.parse().ok())
            .unwrap_or(3600);
        let created = xml_text(&xml, "CreateDate").and_then(|d| parse_create_date(&d));
        Ok(Some(RoleInfo {
            arn,
            trust_policy,
            max_session,
            created,
        }))
    }

    /// Decides an `AssumeRole` like STS: Ok means "forward to moto".
    async fn decide_assume_role(
        &self,
        info: &RequestInfo,
        p: &AssumeRoleParams,
    ) -> Result<(), AwsError> {
        let Some(key) = info.access_key_id.as_deref() else {
            return Err(AwsError::new(
                StatusCode::FORBIDDEN,
                "MissingAuthenticationToken",
                "Request is missing Authentication Token",
            ));
        };
        let caller = self.identity(key).await.map_err(internal)?;
        if caller.arn.ends_with(":user/moto") {
            // moto's answer for a key it does not know: AWS rejects such a request.
            return Err(AwsError::new(
                StatusCode::FORBIDDEN,
                "InvalidClientTokenId",
                "The security token included in the request is invalid.",
            ));
        }
        let denied = |action: &str| {
            AwsError::access_denied(format!(
                "User: {} is not authorized to perform: {action} on resource: {}",
                caller.arn, p.role_arn
            ))
        };
        let Some(role_ref) = p.role() else {
            return Err(AwsError::validation(format!("{} is invalid", p.role_arn)));
        };
        let Some(role) = self
            .role(&role_ref.account, &role_ref.name)
            .await
            .map_err(internal)?
        else {
            return Err(denied("sts:AssumeRole"));
        };
        // The ARN must name the role exactly, path included.
        if role.arn != p.role_arn {
            return Err(denied("sts:AssumeRole"));
        }
        let (propagation, skip_external_id) = {
            let s = self.control.state();
            (s.propagation, s.skip_external_id)
        };
        if let Some(created) = role.created
            && !propagation.is_zero()
            && SystemTime::now() < created + propagation
        {
            return Err(denied("sts:AssumeRole"));
        }
        let mut ctx = Context::default();
        ctx.skip_external_id = skip_external_id;
        // For a role session, aws:PrincipalArn is the role's ARN, path included.
        let mut principal_arn = caller.principal_arn();
        if let policy::CallerKind::AssumedRole { role_name } = &caller.kind
            && let Ok(Some(own_role)) = self.role(&caller.account, role_name).await
        {
            principal_arn = own_role.arn;
        }
        ctx.set("aws:PrincipalArn", principal_arn);
        ctx.set("aws:PrincipalAccount", caller.account.clone());
        ctx.set("sts:RoleSessionName", p.session_name.clone());
        if let Some(e) = &p.external_id {
            ctx.set("sts:ExternalId", e.clone());
        }
        if let Some(s) = &p.source_identity {
            ctx.set("sts:SourceIdentity", s.clone());
        }
        for (k, v) in &p.tags {
            ctx.set(&format!("aws:RequestTag/{k}"), v.clone());
        }
        let mut actions = vec!["sts:AssumeRole"];
        if p.source_identity.is_some() {
            actions.push("sts:SetSourceIdentity");
        }
        if p.tags_session() {
            actions.push("sts:TagSession");
        }
        for action in actions {
            match policy::allows(&role.trust_policy, &caller, action, &ctx) {
                Ok(true) => {}
                Ok(false) => return Err(denied(action)),
                Err(policy::MalformedPolicy(why)) => {
                    tracing::warn!(role = %role.arn, %why, "malformed trust policy");
                    return Err(denied(action));
                }
            }
        }
        if let Some(d) = p.duration {
            if caller.is_role_session() && d > CHAINED_MAX_DURATION {
                return Err(AwsError::validation(
                    "The requested DurationSeconds exceeds the 1 hour session limit for roles assumed by role chaining.",
                ));
            }
            if d > role.max_session {
                return Err(AwsError::validation(
                    "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
                ));
            }
        }
        Ok(())
    }
}

fn internal(e: anyhow::Error) -> AwsError {
    AwsError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        format!("gate: {e:#}"),
    )
}

fn plain(status: StatusCode, text: String) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(text)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// IAM's `CreateDate`. moto reports whole seconds (`.000Z`), so the creation
/// instant is taken as the end of that second: propagation errs on the long side.
fn parse_create_date(s: &str) -> Option<SystemTime> {
    let t = aws_smithy_types::DateTime::from_str(s, aws_smithy_types::date_time::Format::DateTime)
        .ok()?;
    let t = SystemTime::try_from(t).ok()?;
    Some(if s.ends_with(".000Z") || !s.contains('.') {
        t + Duration::from_millis(999)
    } else {
        t
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_queue_fires_then_clears() {
        let c = GateControl::default();
        c.fail_next("AssumeRole", 2, Fault::Throttling);
        c.fail_next("AssumeRole", 1, Fault::Http500);
        let faults: Vec<_> = (0..4)
            .map(|_| c.on_request("AssumeRole", Some("1"), None).1)
            .collect();
        assert_eq!(
            faults,
            [
                Some(Fault::Throttling),
                Some(Fault::Throttling),
                Some(Fault::Http500),
                None
            ]
        );
        assert_eq!(c.on_request("RunInstances", None, Some("t")).1, None);
        assert_eq!(c.count("AssumeRole"), 4);
        assert_eq!(c.count_for_account("AssumeRole", "1"), 4);
        assert_eq!(c.count_for_client_token("RunInstances", "t"), 1);
        c.reset_counters();
        assert_eq!(c.count("AssumeRole"), 0);
    }

    #[test]
    fn http_api_programs_the_same_state() {
        let c = GateControl::default();
        assert_eq!(
            c.http_api("fail_next", "action=AssumeRole&n=1&fault=throttling")
                .as_deref(),
            Ok("ok")
        );
        assert_eq!(
            c.http_api("fail_next", "action=X&n=1&fault=delay_ms:20")
                .as_deref(),
            Ok("ok")
        );
        assert_eq!(
            c.on_request("AssumeRole", Some("a"), Some("t")).1,
            Some(Fault::Throttling)
        );
        assert_eq!(
            c.http_api("fail_next", "action=X&n=1&fault=hold_response_ms:30")
                .as_deref(),
            Ok("ok")
        );
        assert_eq!(
            c.on_request("X", None, None).1,
            Some(Fault::Delay(Duration::from_millis(20)))
        );
        assert_eq!(
            c.on_request("X", None, None).1,
            Some(Fault::HoldResponse(Duration::from_millis(30)))
        );
        assert_eq!(c.http_api("count", "action=AssumeRole").as_deref(), Ok("1"));
        assert_eq!(
            c.http_api("count", "action=AssumeRole&account=a")
                .as_deref(),
            Ok("1")
        );
        assert_eq!(
            c.http_api("count", "action=AssumeRole&client_token=t")
                .as_deref(),
            Ok("1")
        );
        assert_eq!(c.http_api("delay", "ms=50").as_deref(), Ok("ok"));
        assert_eq!(c.on_request("Y", None, None).0, Duration::from_millis(50));
        assert_eq!(
            c.http_api("skip_external_id_check", "on=true").as_deref(),
            Ok("ok")
        );
        assert!(c.state().skip_external_id);
        assert_eq!(
            c.http_api("propagation_delay", "ms=1500").as_deref(),
            Ok("ok")
        );
        assert_eq!(c.state().propagation, Duration::from_millis(1500));
        assert_eq!(c.http_api("reset_counters", "").as_deref(), Ok("ok"));
        assert_eq!(c.count("AssumeRole"), 0);
        assert!(c.http_api("fail_next", "action=X&n=1&fault=boom").is_err());
        assert!(
            c.http_api("fail_next", "action=X&n=1&fault=hold_response_ms:x")
                .is_err()
        );
        assert!(c.http_api("count", "").is_err());
        assert!(c.http_api("launch_missiles", "").is_err());
    }

    #[test]
    fn delays_add_and_clear() {
        let c = GateControl::default();
        c.delay(None, Duration::from_millis(50));
        c.delay(Some("RunInstances"), Duration::from_millis(10));
        assert_eq!(
            c.on_request("RunInstances", None, None).0,
            Duration::from_millis(60)
        );
        assert_eq!(
            c.on_request("CreateVpc", None, None).0,
            Duration::from_millis(50)
        );
        c.delay(None, Duration::ZERO);
        c.delay(Some("RunInstances"), Duration::ZERO);
        assert_eq!(c.on_request("RunInstances", None, None).0, Duration::ZERO);
    }

    /// A stand-in for moto: answers every request with `made`, and records
    /// when each request arrived.
    async fn recording_upstream() -> (String, Arc<Mutex<Vec<std::time::Instant>>>, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: Request<Incoming>| {
                        seen.lock().unwrap().push(std::time::Instant::now());
                        async { Ok::<_, Infallible>(plain(StatusCode::OK, "made".to_owned())) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (url, arrivals, task)
    }

    #[tokio::test]
    async fn hold_response_answers_late_after_the_upstream_acted() {
        let (upstream, arrivals, upstream_task) = recording_upstream().await;
        let gate = Gate::start(&upstream, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let url = format!("{}/?Action=CreateVpc", gate.endpoint());
        let http = reqwest::Client::new();
        let hits = || arrivals.lock().unwrap().len();

        // Held for longer than the test: the upstream has the request while
        // its answer has not come back; the caller then gives up.
        gate.control().fail_next(
            "CreateVpc",
            1,
            Fault::HoldResponse(Duration::from_secs(600)),
        );
        let held = tokio::spawn(http.get(&url).send());
        tokio::time::timeout(Duration::from_secs(10), async {
            while hits() == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the held request reached the upstream");
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!held.is_finished(), "the answer is still held");
        held.abort();
        assert_eq!(gate.control().count("CreateVpc"), 1);

        // A short hold: the answer comes back at least that long after the
        // upstream answered it, and unchanged.
        let hold = Duration::from_millis(300);
        gate.control()
            .fail_next("CreateVpc", 1, Fault::HoldResponse(hold));
        let resp = http.get(&url).send().await.unwrap();
        let returned = std::time::Instant::now();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "made");
        let arrived = arrivals.lock().unwrap()[1];
        assert!(returned - arrived >= hold, "{:?}", returned - arrived);

        // Fault::Delay, by contrast, waits before the upstream sees anything.
        let sent = std::time::Instant::now();
        gate.control().fail_next("CreateVpc", 1, Fault::Delay(hold));
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let arrived = arrivals.lock().unwrap()[2];
        assert!(arrived - sent >= hold, "{:?}", arrived - sent);
        assert_eq!(hits(), 3);
        upstream_task.abort();
    }

    #[test]
    fn create_dates() {
        let whole = parse_create_date("2026-11-28T20:42:27.000Z").unwrap();
        let frac = parse_create_date("2026-11-28T20:42:27.500Z").unwrap();
        assert!(whole > frac);
        assert!(parse_create_date("yesterday").is_none());
    }
}
