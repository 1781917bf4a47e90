//! IAM policy evaluation, following the IAM JSON policy element reference
//! (Effect, Principal, Action, Resource, Condition) and the policy evaluation
//! logic: an explicit `Deny` wins, otherwise some `Allow` must match,
//! otherwise the request is implicitly denied. One engine serves trust
//! policies (a principal, no resource) and identity, boundary and session
//! policies (a resource, no principal).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Who is calling, as moto's `GetCallerIdentity` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// The ARN `GetCallerIdentity` returned.
    pub arn: String,
    /// The 12-digit account.
    pub account: String,
    /// What kind of principal the ARN names.
    pub kind: CallerKind,
}

/// The principal kinds a trust policy distinguishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallerKind {
    /// An IAM user (`arn:aws:iam::A:user/path/name`).
    User,
    /// A role session (`arn:aws:sts::A:assumed-role/name/session`).
    AssumedRole { role_name: String },
    /// The account root user.
    Root,
    /// Anything else (federated user, ...).
    Other,
}

impl Caller {
    /// Classifies a `GetCallerIdentity` ARN.
    pub fn from_arn(arn: &str, account: &str) -> Caller {
        let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
        let kind = if arn.contains(":sts::") && resource.starts_with("assumed-role/") {
            let role_name = resource.split('/').nth(1).unwrap_or("").to_owned();
            CallerKind::AssumedRole { role_name }
        } else if arn.contains(":iam::") && resource.starts_with("user/") {
            CallerKind::User
        } else if arn.contains(":iam::") && resource == "root" {
            CallerKind::Root
        } else {
            CallerKind::Other
        };
        Caller {
            arn: arn.to_owned(),
            account: account.to_owned(),
            kind,
        }
    }

    /// The value of `aws:PrincipalArn`: for a role session it is the role's ARN,
    /// not the session's. The session ARN does not carry the role's path, so
    /// this assumes `/`; the gate looks the real ARN up when it can.
    pub fn principal_arn(&self) -> String {
        match &self.kind {
            CallerKind::AssumedRole { role_name } => {
                let partition = self.arn.split(':').nth(1).unwrap_or("aws");
                format!("arn:{partition}:iam::{}:role/{role_name}", self.account)
            }
            _ => self.arn.clone(),
        }
    }

    /// Whether this caller is itself a role session (so a new AssumeRole is role chaining).
    pub fn is_role_session(&self) -> bool {
        matches!(self.kind, CallerKind::AssumedRole { .. })
    }

    /// Whether one `AWS` principal value of a policy names this caller.
    pub fn matches_principal(&self, p: &str) -> bool {
        if p == "*" {
            return true;
        }
        if p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit()) {
            return p == self.account;
        }
        let parts: Vec<&str> = p.splitn(6, ':').collect();
        let [arn, _partition, service, _region, account, resource] = parts[..] else {
            return false;
        };
        if arn != "arn" || account != self.account {
            return false;
        }
        match (service, resource) {
            ("iam", "root") => true,
            ("iam", r) if r.starts_with("role/") => match &self.kind {
                CallerKind::AssumedRole { role_name } => r.rsplit('/').next() == Some(role_name),
                _ => false,
            },
            ("iam", r) if r.starts_with("user/") => self.kind == CallerKind::User && p == self.arn,
            ("sts", r) if r.starts_with("assumed-role/") => p == self.arn,
            _ => false,
        }
    }
}

/// The request context the conditions are evaluated against. Keys are
/// case-insensitive (as IAM's are); a key holds one value or, for
/// multivalued keys such as `aws:TagKeys`, several.
#[derive(Debug, Default, Clone)]
pub(crate) struct Context {
    /// Lower-cased condition key → (key as first set, values).
    values: HashMap<String, (String, Vec<String>)>,
    /// Ignore every condition on `sts:ExternalId` (fault injection).
    pub skip_external_id: bool,
}

impl Context {
    /// Sets a single-valued condition key (`sts:ExternalId`, `aws:PrincipalArn`, ...).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.set_many(key, vec![value.into()]);
    }

    /// Sets a multivalued key (`aws:TagKeys`, `aws:CalledVia`).
    pub fn set_many(&mut self, key: &str, values: Vec<String>) {
        self.values
            .insert(key.to_ascii_lowercase(), (key.to_owned(), values));
    }

    /// The values of `key`, if the request has it.
    pub fn get(&self, key: &str) -> Option<&[String]> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(|(_, v)| v.as_slice())
    }

    /// Adds every key of `other`, replacing keys both have.
    pub fn extend(&mut self, other: &Context) {
        for (k, v) in &other.values {
            self.values.insert(k.clone(), v.clone());
        }
    }

    /// Every key and its values, sorted by key (for decoded messages and logs).
    pub fn entries(&self) -> Vec<(&str, &[String])> {
        let mut all: Vec<_> = self
            .values
            .values()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        all.sort_by_key(|(k, _)| k.to_ascii_lowercase());
        all
    }
}

/// Why a policy could not be read or evaluated. The gate never guesses: a
/// request that meets such a policy is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MalformedPolicy(pub String);

impl std::fmt::Display for MalformedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One request as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Query<'a> {
    /// The caller, for trust policies (which name principals); `None` for
    /// identity-based policies, which must not have a `Principal`.
    pub principal: Option<&'a Caller>,
    /// `service:Action`.
    pub action: &'a str,
    /// The resource ARN (or `*`); `None` for trust policies, whose resource
    /// is the role itself.
    pub resource: Option<&'a str>,
    pub ctx: &'a Context,
}

/// What one policy says about a request: the statements that matched, by
/// `Sid` (or `#index` without one).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Matched {
    pub allowed_by: Option<String>,
    pub denied_by: Option<String>,
}

impl Matched {
    /// Allowed by this policy alone: some Allow matched and no Deny did.
    pub fn allows(&self) -> bool {
        self.allowed_by.is_some() && self.denied_by.is_none()
    }
}

/// The statements of a policy document (an object or an array of them).
fn statements(policy: &Value) -> Result<Vec<&Value>, MalformedPolicy> {
    match policy.get("Statement") {
        Some(Value::Array(s)) => Ok(s.iter().collect()),
        Some(s @ Value::Object(_)) => Ok(vec![s]),
        _ => Err(MalformedPolicy("no Statement".into())),
    }
}

/// Evaluates every statement of `policy` against `q`.
pub(crate) fn evaluate(policy: &Value, q: &Query<'_>) -> Result<Matched, MalformedPolicy> {
    let mut verdict = Matched::default();
    for (i, st) in statements(policy)?.into_iter().enumerate() {
        let label = st
            .get("Sid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("#{i}"), str::to_owned);
        let effect = st.get("Effect").and_then(Value::as_str);
        if !matches!(effect, Some("Allow" | "Deny")) {
            return Err(MalformedPolicy(format!(
                "statement {label}: Effect must be Allow or Deny"
            )));
        }
        let matched = statement_matches(st, q)
            .map_err(|MalformedPolicy(why)| MalformedPolicy(format!("statement {label}: {why}")))?;
        if !matched {
            continue;
        }
        match effect {
            Some("Deny") => {
                verdict.denied_by.get_or_insert(label);
            }
            _ => {
                verdict.allowed_by.get_or_insert(label);
            }
        }
    }
    Ok(verdict)
}

/// Whether the trust policy allows `caller` to perform `action` (e.g.
/// `sts:AssumeRole`) in `ctx`.
pub(crate) fn allows(
    policy: &Value,
    caller: &Caller,
    action: &str,
    ctx: &Context,
) -> Result<bool, MalformedPolicy> {
    let q = Query {
        principal: Some(caller),
        action,
        resource: None,
        ctx,
    };
    Ok(evaluate(policy, &q)?.allows())
}

fn statement_matches(st: &Value, q: &Query<'_>) -> Result<bool, MalformedPolicy> {
    let principal_ok = match (st.get("Principal"), st.get("NotPrincipal"), q.principal) {
        (Some(p), None, Some(caller)) => principal_matches(p, caller),
        (None, Some(p), Some(caller)) => !principal_matches(p, caller),
        (None, None, None) => true,
        (_, _, Some(_)) => {
            return Err(MalformedPolicy(
                "exactly one of Principal, NotPrincipal".into(),
            ));
        }
        (_, _, None) => {
            return Err(MalformedPolicy(
                "an identity-based policy cannot name a Principal".into(),
            ));
        }
    };
    let action_ok = match (st.get("Action"), st.get("NotAction")) {
        (Some(a), None) => strings(a).iter().any(|p| glob(p, q.action, true)),
        (None, Some(a)) => !strings(a).iter().any(|p| glob(p, q.action, true)),
        _ => return Err(MalformedPolicy("exactly one of Action, NotAction".into())),
    };
    let resource_ok = match (q.resource, st.get("Resource"), st.get("NotResource")) {
        // A trust policy's resource is the role: its Resource element (if
        // any) is not consulted.
        (None, _, _) => true,
        (Some(r), Some(p), None) => strings(p).iter().any(|p| resource_matches(p, r)),
        (Some(r), None, Some(p)) => !strings(p).iter().any(|p| resource_matches(p, r)),
        (Some(_), _, _) => {
            return Err(MalformedPolicy(
                "exactly one of Resource, NotResource".into(),
            ));
        }
    };
    if !(principal_ok && action_ok && resource_ok) {
        return Ok(false);
    }
    conditions_hold(st.get("Condition"), q.ctx)
}

fn principal_matches(p: &Value, caller: &Caller) -> bool {
    match p {
        Value::String(s) => s == "*",
        Value::Object(m) => m
            .get("AWS")
            .is_some_and(|aws| strings(aws).iter().any(|s| caller.matches_principal(s))),
        _ => false,
    }
}

/// A `Resource` pattern against a request's resource. `*` matches anything
/// (including a request whose resource is `*`, an action without
/// resource-level permissions); otherwise the six ARN parts are compared one
/// by one, wildcards never spanning a colon.
fn resource_matches(pattern: &str, resource: &str) -> bool {
    pattern == "*" || arn_like(pattern, resource)
}

/// `ArnLike`: each of the six colon-separated parts matched on its own.
pub(crate) fn arn_like(pattern: &str, arn: &str) -> bool {
    let p: Vec<&str> = pattern.splitn(6, ':').collect();
    let a: Vec<&str> = arn.splitn(6, ':').collect();
    p.len() == 6 && a.len() == 6 && p.iter().zip(&a).all(|(p, a)| glob(p, a, false))
}

/// A JSON string or array of strings (numbers and booleans as their text).
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

/// Every operator block must hold; within a block every key must hold.
fn conditions_hold(cond: Option<&Value>, ctx: &Context) -> Result<bool, MalformedPolicy> {
    let Some(cond) = cond else { return Ok(true) };
    let Value::Object(ops) = cond else {
        return Err(MalformedPolicy("Condition must be an object".into()));
    };
    for (op, keys) in ops {
        let Value::Object(keys) = keys else {
            return Err(MalformedPolicy(format!(
                "Condition operator {op} must be an object"
            )));
        };
        let op = Operator::parse(op)?;
        for (key, values) in keys {
            if ctx.skip_external_id && key.eq_ignore_ascii_case("sts:ExternalId") {
                continue;
            }
            if !op.holds(ctx.get(key), &strings(values)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How a multivalued key is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    /// No qualifier: the key is compared as a single value (any of several
    /// values may match a positive operator; none may match a negated one).
    None,
    /// `ForAnyValue:`: some value of the request satisfies the operator.
    Any,
    /// `ForAllValues:`: every value satisfies it (vacuously true when empty).
    All,
}

/// The base comparison of a condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    ArnLike,
    Numeric(Ordering),
    Date(Ordering),
    Bool,
}

/// An ordering test for numbers and dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ordering {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

impl Ordering {
    fn holds(self, actual: f64, expected: f64) -> bool {
        match self {
            Ordering::Equals => actual == expected,
            Ordering::LessThan => actual < expected,
            Ordering::LessThanEquals => actual <= expected,
            Ordering::GreaterThan => actual > expected,
            Ordering::GreaterThanEquals => actual >= expected,
        }
    }
}

/// A parsed condition operator (`ForAllValues:StringLikeIfExists`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    Null,
    Match {
        set: SetQualifier,
        compare: Compare,
        negated: bool,
        if_exists: bool,
    },
}

impl Operator {
    /// Reads an operator name. One the gate cannot evaluate (IP addresses,
    /// binary) is an error, so the request is denied rather than decided on a
    /// guess, whichever the statement's effect.
    fn parse(name: &str) -> Result<Operator, MalformedPolicy> {
        let unknown = || MalformedPolicy(format!("condition operator {name} is not supported"));
        let (set, rest) = match name.split_once(':') {
            Some(("ForAnyValue", rest)) => (SetQualifier::Any, rest),
            Some(("ForAllValues", rest)) => (SetQualifier::All, rest),
            Some(_) => return Err(unknown()),
            None => (SetQualifier::None, name),
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        if base == "Null" {
            return if set == SetQualifier::None && !if_exists {
                Ok(Operator::Null)
            } else {
                Err(unknown())
            };
        }
        use Ordering as O;
        let (compare, negated) = match base {
            "StringEquals" => (Compare::StringEquals, false),
            "StringNotEquals" => (Compare::StringEquals, true),
            "StringEqualsIgnoreCase" => (Compare::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Compare::StringEqualsIgnoreCase, true),
            "StringLike" => (Compare::StringLike, false),
            "StringNotLike" => (Compare::StringLike, true),
            // ArnEquals and ArnLike behave the same: both take wildcards.
            "ArnEquals" | "ArnLike" => (Compare::ArnLike, false),
            "ArnNotEquals" | "ArnNotLike" => (Compare::ArnLike, true),
            "NumericEquals" => (Compare::Numeric(O::Equals), false),
            "NumericNotEquals" => (Compare::Numeric(O::Equals), true),
            "NumericLessThan" => (Compare::Numeric(O::LessThan), false),
            "NumericLessThanEquals" => (Compare::Numeric(O::LessThanEquals), false),
            "NumericGreaterThan" => (Compare::Numeric(O::GreaterThan), false),
            "NumericGreaterThanEquals" => (Compare::Numeric(O::GreaterThanEquals), false),
            "DateEquals" => (Compare::Date(O::Equals), false),
            "DateNotEquals" => (Compare::Date(O::Equals), true),
            "DateLessThan" => (Compare::Date(O::LessThan), false),
            "DateLessThanEquals" => (Compare::Date(O::LessThanEquals), false),
            "DateGreaterThan" => (Compare::Date(O::GreaterThan), false),
            "DateGreaterThanEquals" => (Compare::Date(O::GreaterThanEquals), false),
            "Bool" => (Compare::Bool, false),
            _ => return Err(unknown()),
        };
        Ok(Operator::Match {
            set,
            compare,
            negated,
            if_exists,
        })
    }

    /// Whether the condition holds for the request's values of one key.
    fn holds(self, actual: Option<&[String]>, expected: &[String]) -> bool {
        let Operator::Match {
            set,
            compare,
            negated,
            if_exists,
        } = self
        else {
            // Null: "true" asks for the key to be absent, "false" present.
            let want_absent = expected.iter().any(|v| v.eq_ignore_ascii_case("true"));
            let absent = actual.is_none_or(<[String]>::is_empty);
            return absent == want_absent;
        };
        // One request value against the policy's values: positive operators
        // need some policy value to match, negated ones none.
        let one = |v: &str| expected.iter().any(|e| compare.matches(v, e)) != negated;
        match (set, actual) {
            (_, None) if if_exists => true,
            // ForAllValues holds vacuously for a missing or empty key;
            // ForAnyValue never holds then.
            (SetQualifier::All, None) => true,
            (SetQualifier::Any, None) => false,
            // "If the key is not present, the condition is false, unless the
            // operator is negated" (IAM condition operators reference).
            (SetQualifier::None, None) => negated,
            (SetQualifier::All, Some(vals)) => vals.iter().all(|v| one(v)),
            (SetQualifier::Any, Some(vals)) => vals.iter().any(|v| one(v)),
            (SetQualifier::None, Some(vals)) => {
                if negated {
                    vals.iter().all(|v| one(v))
                } else {
                    vals.iter().any(|v| one(v))
                }
            }
        }
    }
}

impl Compare {
    /// The positive comparison of one request value with one policy value.
    fn matches(self, actual: &str, expected: &str) -> bool {
        match self {
            Compare::StringEquals => actual == expected,
            Compare::StringEqualsIgnoreCase => actual.eq_ignore_ascii_case(expected),
            Compare::StringLike => glob(expected, actual, false),
            Compare::ArnLike => arn_like(expected, actual),
            Compare::Bool => actual.eq_ignore_ascii_case(expected),
            Compare::Numeric(o) => match (actual.trim().parse(), expected.trim().parse()) {
                (Ok(a), Ok(e)) => o.holds(a, e),
                _ => false,
            },
            Compare::Date(o) => match (parse_date(actual), parse_date(expected)) {
                (Some(a), Some(e)) => o.holds(a, e),
                _ => false,
            },
        }
    }
}

/// A date as IAM's `Date*` operators read it: epoch seconds, or ISO 8601
/// (`2026-01-01`, `2026-01-01T12:00:00Z`, with fractions or an offset).
/// Returns seconds since the epoch.
pub(crate) fn parse_date(s: &str) -> Option<f64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Some(n);
    }
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, time) = match s.split_once(['T', 't', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut d = date.split('-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    let mut secs = days_from_civil(y, m, day) as f64 * 86_400.0;
    if let Some(t) = time {
        // Split off the zone: Z, +HH:MM or -HH:MM.
        let (clock, offset) = if let Some(c) = t.strip_suffix(['Z', 'z']) {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (h, mi) = t[i + 1..].split_once(':').unwrap_or((&t[i + 1..], "0"));
            let sign = if t.as_bytes()[i] == b'-' { -1 } else { 1 };
            (&t[..i], sign * (num(h)? * 3600 + num(mi)? * 60))
        } else {
            (t, 0)
        };
        let mut parts = clock.split(':');
        let h = num(parts.next()?)?;
        let mi = parts.next().map_or(Some(0), num)?;
        let sec: f64 = match parts.next() {
            Some(x) => x.parse().ok()?,
            None => 0.0,
        };
        if h > 23 || mi > 59 || !(0.0..61.0).contains(&sec) {
            return None;
        }
        secs += (h * 3600 + mi * 60 - offset) as f64 + sec;
    }
    Some(secs)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2026-01-01T12:00:00Z`: how AWS writes `aws:TokenIssueTime` and `aws:CurrentTime`.
pub(crate) fn format_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    aws_smithy_types::DateTime::from_secs(i64::try_from(secs).unwrap_or(i64::MAX))
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_default()
}

/// IAM wildcard matching: `*` any run of characters, `?` one character.
pub(crate) fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let norm = |s: &str| -> Vec<char> {
        if ignore_case {
            s.to_lowercase().chars().collect()
        } else {
            s.chars().collect()
        }
    };
    let (p, t) = (norm(pattern), norm(text));
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

/// A policy document as IAM's API returns it: URL-encoded JSON. moto also
/// returns inline policies that CloudFormation gave it as YAML objects in
/// Python's `repr` (single quotes, `True`), which is read here too.
pub(crate) fn decode_document(text: &str) -> Result<Value, MalformedPolicy> {
    let trimmed = text.trim();
    let decoded = if trimmed.starts_with('{') {
        trimmed.to_owned()
    } else {
        percent_decode(trimmed)
    };
    if let Ok(v) = serde_json::from_str(&decoded) {
        return Ok(v);
    }
    let mut p = PyLiteral {
        s: decoded.as_bytes(),
        i: 0,
    };
    let v = p.value()?;
    p.ws();
    if p.i != p.s.len() {
        return Err(MalformedPolicy("trailing text after the policy".into()));
    }
    Ok(v)
}

/// `%XX` decoding; `+` stays a plus (IAM encodes a space as `%20`).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reader for the Python literals moto writes (`{'a': ['b', True]}`).
struct PyLiteral<'a> {
    s: &'a [u8],
    i: usize,
}

impl PyLiteral<'_> {
    fn err(&self, what: &str) -> MalformedPolicy {
        MalformedPolicy(format!("not a policy document: {what} at byte {}", self.i))
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, MalformedPolicy> {
        self.ws();
        match self.s.get(self.i) {
            Some(b'{') => {
                self.i += 1;
                let mut m = serde_json::Map::new();
                if self.eat(b'}') {
                    return Ok(Value::Object(m));
                }
                loop {
                    let Value::String(k) = self.value()? else {
                        return Err(self.err("a non-string key"));
                    };
                    if !self.eat(b':') {
                        return Err(self.err("a missing ':'"));
                    }
                    m.insert(k, self.value()?);
                    // A trailing comma is allowed, as in Python.
                    if self.eat(b'}') {
                        return Ok(Value::Object(m));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("a missing ','"));
                    }
                    if self.eat(b'}') {
                        return Ok(Value::Object(m));
                    }
                }
            }
            Some(open @ (b'[' | b'(')) => {
                let close = if *open == b'[' { b']' } else { b')' };
                self.i += 1;
                let mut a = Vec::new();
                if self.eat(close) {
                    return Ok(Value::Array(a));
                }
                loop {
                    a.push(self.value()?);
                    // A trailing comma is allowed, as in Python.
                    if self.eat(close) {
                        return Ok(Value::Array(a));
                    }
                    if !self.eat(b',') {
                        return Err(self.err("a missing ','"));
                    }
                    if self.eat(close) {
                        return Ok(Value::Array(a));
                    }
                }
            }
            Some(q @ (b'\'' | b'"')) => {
                let q = *q;
                self.i += 1;
                let mut out = String::new();
                loop {
                    let rest = std::str::from_utf8(&self.s[self.i..])
                        .map_err(|_| self.err("invalid UTF-8"))?;
                    let mut chars = rest.char_indices();
                    let Some((_, c)) = chars.next() else {
                        return Err(self.err("an unterminated string"));
                    };
                    self.i += c.len_utf8();
                    match c {
                        c if c as u32 == u32::from(q) => return Ok(Value::String(out)),
                        '\\' => {
                            let e = *self.s.get(self.i).ok_or_else(|| self.err("a bad escape"))?;
                            self.i += 1;
                            let hex = |me: &mut Self, n: usize| -> Result<char, MalformedPolicy> {
                                let h =
                                    me.s.get(me.i..me.i + n)
                                        .and_then(|h| std::str::from_utf8(h).ok())
                                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                                        .and_then(char::from_u32)
                                        .ok_or_else(|| me.err("a bad escape"))?;
                                me.i += n;
                                Ok(h)
                            };
                            out.push(match e {
                                b'n' => '\n',
                                b't' => '\t',
                                b'r' => '\r',
                                b'x' => hex(self, 2)?,
                                b'u' => hex(self, 4)?,
                                b'U' => hex(self, 8)?,
                                other => other as char,
                            });
                        }
                        c => out.push(c),
                    }
                }
            }
            Some(_) => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric()
                        || matches!(self.s[self.i], b'.' | b'-' | b'+'))
                {
                    self.i += 1;
                }
                let word = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
                match word {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    w => serde_json::from_str::<serde_json::Number>(w)
                        .map(Value::Number)
                        .map_err(|_| self.err("an unknown word")),
                }
            }
            None => Err(self.err("the end")),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn user() -> Caller {
        Caller::from_arn("arn:aws:iam::111111111111:user/xrole-saas", "111111111111")
    }

    fn session() -> Caller {
        Caller::from_arn(
            "arn:aws:sts::111111111111:assumed-role/app/s1",
            "111111111111",
        )
    }

    fn trust(principal: Value, condition: Value) -> Value {
        json!({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole",
            "Condition": condition}]})
    }

    fn ctx(ext: Option<&str>) -> Context {
        let mut c = Context::default();
        if let Some(e) = ext {
            c.set("sts:ExternalId", e);
        }
        c
    }

    #[test]
    fn principals() {
        let u = user();
        assert!(u.matches_principal("*"));
        assert!(u.matches_principal("111111111111"));
        assert!(u.matches_principal("arn:aws:iam::111111111111:root"));
        assert!(u.matches_principal("arn:aws:iam::111111111111:user/xrole-saas"));
        assert!(!u.matches_principal("arn:aws:iam::111111111111:user/other"));
        assert!(!u.matches_principal("arn:aws:iam::222222222222:root"));
        assert!(!u.matches_principal("arn:aws:iam::111111111111:role/xrole-saas"));
        let s = session();
        assert!(s.matches_principal("arn:aws:iam::111111111111:role/app"));
        assert!(s.matches_principal("arn:aws:iam::111111111111:role/path/app"));
        assert!(s.matches_principal("arn:aws:sts::111111111111:assumed-role/app/s1"));
        assert!(!s.matches_principal("arn:aws:sts::111111111111:assumed-role/app/s2"));
        assert!(!s.matches_principal("arn:aws:iam::111111111111:role/other"));
        assert_eq!(s.principal_arn(), "arn:aws:iam::111111111111:role/app");
        assert!(s.is_role_session() && !u.is_role_session());
    }

    #[test]
    fn external_id_conditions() {
        let p = trust(
            json!({"AWS": "arn:aws:iam::111111111111:root"}),
            json!({"StringEquals": {"sts:ExternalId": "abc"}}),
        );
        assert_eq!(
            allows(&p, &user(), "sts:AssumeRole", &ctx(Some("abc"))),
            Ok(true)
        );
        assert_eq!(
            allows(&p, &user(), "sts:AssumeRole", &ctx(Some("abd"))),
            Ok(false)
        );
        assert_eq!(allows(&p, &user(), "sts:AssumeRole", &ctx(None)), Ok(false));
        let mut skip = ctx(None);
        skip.skip_external_id = true;
        assert_eq!(allows(&p, &user(), "sts:AssumeRole", &skip), Ok(true));
        let like = trust(
            json!("*"),
            json!({"StringLike": {"sts:ExternalId": ["x-*", "a?c"]}}),
        );
        assert_eq!(
            allows(&like, &user(), "sts:AssumeRole", &ctx(Some("x-1"))),
            Ok(true)
        );
        assert_eq!(
            allows(&like, &user(), "sts:AssumeRole", &ctx(Some("abc"))),
            Ok(true)
        );
        assert_eq!(
            allows(&like, &user(), "sts:AssumeRole", &ctx(Some("abbc"))),
            Ok(false)
        );
        assert_eq!(
            allows(&like, &user(), "sts:AssumeRole", &ctx(None)),
            Ok(false)
        );
        let not = trust(
            json!("*"),
            json!({"StringNotEquals": {"sts:ExternalId": "bad"}}),
        );
        assert_eq!(
            allows(&not, &user(), "sts:AssumeRole", &ctx(None)),
            Ok(true)
        );
        let null = trust(json!("*"), json!({"Null": {"sts:ExternalId": "false"}}));
        assert_eq!(
            allows(&null, &user(), "sts:AssumeRole", &ctx(None)),
            Ok(false)
        );
        assert_eq!(
            allows(&null, &user(), "sts:AssumeRole", &ctx(Some("x"))),
            Ok(true)
        );
        // An operator the gate cannot evaluate is an error (the caller denies).
        let unknown = trust(
            json!("*"),
            json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
        );
        assert!(allows(&unknown, &user(), "sts:AssumeRole", &ctx(Some("1"))).is_err());
    }

    #[test]
    fn deny_wins_and_actions_match() {
        let p = json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "sts:*"},
            {"Effect": "Deny", "Principal": {"AWS": "111111111111"}, "Action": "sts:TagSession"}]});
        assert_eq!(allows(&p, &user(), "sts:AssumeRole", &ctx(None)), Ok(true));
        assert_eq!(allows(&p, &user(), "sts:TagSession", &ctx(None)), Ok(false));
        let one = json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": ["STS:assumerole"]}});
        assert_eq!(
            allows(&one, &user(), "sts:AssumeRole", &ctx(None)),
            Ok(true)
        );
        assert_eq!(
            allows(&one, &user(), "sts:SetSourceIdentity", &ctx(None)),
            Ok(false)
        );
        assert!(allows(&json!({}), &user(), "sts:AssumeRole", &ctx(None)).is_err());
    }

    fn identity(action: &str, resource: &str, ctx: &Context, policy: &Value) -> Matched {
        evaluate(
            policy,
            &Query {
                principal: None,
                action,
                resource: Some(resource),
                ctx,
            },
        )
        .unwrap()
    }

    #[test]
    fn resources_and_not_resources() {
        let p = json!({"Statement": [
            {"Sid": "Vpcs", "Effect": "Allow", "Action": "ec2:DeleteVpc",
             "Resource": "arn:aws:ec2:*:111111111111:vpc/*"},
            {"Effect": "Deny", "Action": "ec2:*",
             "NotResource": ["arn:aws:ec2:us-east-1:*:*", "arn:aws:ec2:us-east-1:*:*/*"]}]});
        let c = Context::default();
        let v = identity(
            "ec2:DeleteVpc",
            "arn:aws:ec2:us-east-1:111111111111:vpc/vpc-1",
            &c,
            &p,
        );
        assert_eq!(v.allowed_by.as_deref(), Some("Vpcs"));
        assert!(v.allows());
        let other_region = identity(
            "ec2:DeleteVpc",
            "arn:aws:ec2:eu-west-1:111111111111:vpc/vpc-1",
            &c,
            &p,
        );
        assert_eq!(other_region.denied_by.as_deref(), Some("#1"));
        assert!(!other_region.allows());
        // A wildcard never spans a colon: the account part must match on its own.
        assert!(
            !identity(
                "ec2:DeleteVpc",
                "arn:aws:ec2:us-east-1:222222222222:vpc/vpc-1",
                &c,
                &p
            )
            .allows()
        );
        assert!(arn_like(
            "arn:aws:rds:*:1:db:xrole-*",
            "arn:aws:rds:r:1:db:xrole-a"
        ));
        assert!(!arn_like(
            "arn:aws:rds:*:1:db:xrole-*",
            "arn:aws:rds:r:1:db:other"
        ));
        assert!(resource_matches("*", "*"));
        assert!(!resource_matches("arn:aws:ec2:*:*:vpc/*", "*"));
        // An identity policy may not name a principal.
        let bad = json!({"Statement": {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}});
        assert!(
            evaluate(
                &bad,
                &Query {
                    principal: None,
                    action: "ec2:X",
                    resource: Some("*"),
                    ctx: &c
                }
            )
            .is_err()
        );
    }

    fn holds(op: &str, actual: Option<&[&str]>, expected: &[&str]) -> bool {
        let actual: Option<Vec<String>> =
            actual.map(|a| a.iter().map(|s| (*s).to_owned()).collect());
        let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        Operator::parse(op)
            .unwrap()
            .holds(actual.as_deref(), &expected)
    }

    #[test]
    fn operators() {
        // Set qualifiers on a multivalued key (aws:TagKeys).
        let keys: &[&str] = &["xrole:job", "Name"];
        assert!(holds(
            "ForAllValues:StringLike",
            Some(keys),
            &["xrole:*", "Name"]
        ));
        assert!(!holds(
            "ForAllValues:StringLike",
            Some(&["xrole:job", "Owner"]),
            &["xrole:*", "Name"]
        ));
        assert!(holds("ForAllValues:StringLike", None, &["xrole:*"]));
        assert!(holds("ForAllValues:StringLike", Some(&[]), &["xrole:*"]));
        assert!(holds("ForAnyValue:StringEquals", Some(keys), &["Name"]));
        assert!(!holds("ForAnyValue:StringEquals", None, &["Name"]));
        assert!(!holds("ForAnyValue:StringEquals", Some(keys), &["Owner"]));
        assert!(holds("ForAnyValue:StringNotEquals", Some(keys), &["Name"]));
        assert!(!holds(
            "ForAllValues:StringNotEquals",
            Some(keys),
            &["Name"]
        ));
        // Missing keys: positive fails, negated holds, IfExists holds.
        assert!(!holds("StringLike", None, &["*"]));
        assert!(holds("StringNotEquals", None, &["a"]));
        assert!(holds("StringEqualsIfExists", None, &["a"]));
        assert!(!holds("StringEqualsIfExists", Some(&["b"]), &["a"]));
        assert!(holds("StringEqualsIgnoreCase", Some(&["ABC"]), &["abc"]));
        assert!(holds("StringNotEqualsIgnoreCase", Some(&["ABD"]), &["abc"]));
        assert!(holds(
            "ArnLike",
            Some(&["arn:aws:iam::1:role/x"]),
            &["arn:aws:iam::*:role/*"]
        ));
        assert!(holds(
            "ArnNotEquals",
            Some(&["arn:aws:iam::1:role/x"]),
            &["arn:aws:iam::2:role/*"]
        ));
        assert!(holds("Bool", Some(&["true"]), &["True"]));
        assert!(!holds("Bool", Some(&["false"]), &["true"]));
        // Numbers.
        assert!(holds("NumericLessThanEquals", Some(&["3600"]), &["3600"]));
        assert!(!holds("NumericLessThan", Some(&["3600"]), &["3600"]));
        assert!(holds("NumericGreaterThan", Some(&["10"]), &["9.5"]));
        assert!(holds("NumericNotEquals", Some(&["10"]), &["9"]));
        assert!(!holds("NumericEquals", Some(&["ten"]), &["10"]));
        // Dates, in ISO 8601 and epoch seconds.
        let issued: &[&str] = &["2026-03-01T12:00:00Z"];
        assert!(holds(
            "DateLessThan",
            Some(issued),
            &["2026-03-01T12:00:01Z"]
        ));
        assert!(!holds(
            "DateLessThan",
            Some(issued),
            &["2026-03-01T12:00:00Z"]
        ));
        assert!(holds(
            "DateLessThanEquals",
            Some(issued),
            &["2026-03-01T12:00:00Z"]
        ));
        assert!(holds("DateGreaterThan", Some(issued), &["2026-03-01"]));
        assert!(holds(
            "DateEquals",
            Some(issued),
            &["2026-03-01T13:00:00+01:00"]
        ));
        assert!(holds("DateNotEquals", Some(issued), &["1772366401"]));
        assert!(holds(
            "DateGreaterThanEquals",
            Some(issued),
            &["1772366400"]
        ));
        // Null.
        assert!(holds("Null", None, &["true"]));
        assert!(!holds("Null", Some(&["x"]), &["true"]));
        assert!(holds("Null", Some(&["x"]), &["false"]));
        // What the gate cannot evaluate is an error, never a guess.
        for bad in [
            "IpAddress",
            "BinaryEquals",
            "ForSomeValues:StringEquals",
            "NullIfExists",
            "ForAnyValue:Null",
        ] {
            assert!(Operator::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0.0));
        assert_eq!(parse_date("1970-01-02T00:00:00Z"), Some(86_400.0));
        assert_eq!(parse_date("2000-03-01T00:00:00Z"), Some(951_868_800.0));
        assert_eq!(parse_date("2000-03-01T01:00:00+01:00"), Some(951_868_800.0));
        assert_eq!(parse_date("2000-03-01T00:00:00.500Z"), Some(951_868_800.5));
        assert_eq!(parse_date("yesterday"), None);
        assert_eq!(parse_date("2000-13-01"), None);
        let t = UNIX_EPOCH + Duration::from_secs(951_868_800);
        assert_eq!(format_date(t), "2000-03-01T00:00:00Z");
        assert_eq!(parse_date(&format_date(t)), Some(951_868_800.0));
    }

    #[test]
    fn documents_in_json_url_encoding_and_python_repr() {
        let want = json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow",
            "Action": ["ec2:Describe*"], "Resource": "*",
            "Condition": {"Bool": {"aws:SecureTransport": true}}}]});
        let encoded = "%7B%22Version%22%3A%20%222012-10-17%22%2C%20%22Statement%22%3A%20%5B%7B%22Effect%22%3A%20%22Allow%22%2C%20%22Action%22%3A%20%5B%22ec2%3ADescribe%2A%22%5D%2C%20%22Resource%22%3A%20%22%2A%22%2C%20%22Condition%22%3A%20%7B%22Bool%22%3A%20%7B%22aws%3ASecureTransport%22%3A%20true%7D%7D%7D%5D%7D";
        assert_eq!(decode_document(encoded), Ok(want.clone()));
        assert_eq!(decode_document(&want.to_string()), Ok(want.clone()));
        let repr = "{'Version': '2012-10-17', 'Statement': [{'Effect': 'Allow', \
                    'Action': ['ec2:Describe*'], 'Resource': '*', \
                    'Condition': {'Bool': {'aws:SecureTransport': True}}}]}";
        assert_eq!(decode_document(repr), Ok(want));
        assert_eq!(
            decode_document(r#"{'a': "it's", 'b': ('x\u00e9', None, 3)}"#),
            Ok(json!({"a": "it's", "b": ["xé", null, 3]}))
        );
        assert_eq!(
            decode_document("%7B%22a%22%3A%22x+y%22%7D"),
            Ok(json!({"a": "x+y"}))
        );
        assert!(decode_document("{'a': }").is_err());
        assert!(decode_document("{'a': 1} x").is_err());
        assert!(decode_document("").is_err());
    }

    #[test]
    fn globbing() {
        assert!(glob("a*c", "abbbc", false));
        assert!(glob("*", "", false));
        assert!(!glob("a*c", "abbbd", false));
        assert!(glob("sts:*", "STS:AssumeRole", true));
        assert!(!glob("Abc", "abc", false));
    }
}
