//! Trust-policy evaluation for `sts:AssumeRole`, following the IAM JSON policy
//! element reference (Effect, Principal, Action, Condition) and the policy
//! evaluation logic: an explicit `Deny` wins, otherwise some `Allow` must match,
//! otherwise the request is implicitly denied.

use std::collections::HashMap;

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

/// The request context the conditions are evaluated against.
#[derive(Debug, Default)]
pub(crate) struct Context {
    /// Lower-cased condition key → value.
    values: HashMap<String, String>,
    /// Ignore every condition on `sts:ExternalId` (fault injection).
    pub skip_external_id: bool,
}

impl Context {
    /// Sets a condition key (`sts:ExternalId`, `aws:PrincipalArn`, ...).
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.values.insert(key.to_ascii_lowercase(), value.into());
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(&key.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Why a policy could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MalformedPolicy(pub String);

/// Whether the trust policy allows `caller` to perform `action` (e.g.
/// `sts:AssumeRole`) in `ctx`.
pub(crate) fn allows(
    policy: &Value,
    caller: &Caller,
    action: &str,
    ctx: &Context,
) -> Result<bool, MalformedPolicy> {
    let statements = match policy.get("Statement") {
        Some(Value::Array(s)) => s.iter().collect::<Vec<_>>(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => return Err(MalformedPolicy("no Statement".into())),
    };
    let mut allowed = false;
    for st in statements {
        let effect = st.get("Effect").and_then(Value::as_str);
        if !statement_matches(st, caller, action, ctx)? {
            continue;
        }
        match effect {
            Some("Deny") => return Ok(false),
            Some("Allow") => allowed = true,
            _ => return Err(MalformedPolicy("Effect must be Allow or Deny".into())),
        }
    }
    Ok(allowed)
}

fn statement_matches(
    st: &Value,
    caller: &Caller,
    action: &str,
    ctx: &Context,
) -> Result<bool, MalformedPolicy> {
    let principal_ok = match (st.get("Principal"), st.get("NotPrincipal")) {
        (Some(p), None) => principal_matches(p, caller),
        (None, Some(p)) => !principal_matches(p, caller),
        _ => {
            return Err(MalformedPolicy(
                "exactly one of Principal, NotPrincipal".into(),
            ));
        }
    };
    let action_ok = match (st.get("Action"), st.get("NotAction")) {
        (Some(a), None) => strings(a).iter().any(|p| glob(p, action, true)),
        (None, Some(a)) => !strings(a).iter().any(|p| glob(p, action, true)),
        _ => return Err(MalformedPolicy("exactly one of Action, NotAction".into())),
    };
    Ok(principal_ok && action_ok && conditions_hold(st.get("Condition"), ctx)?)
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

/// Every operator block must hold; within a block every key must hold; a key
/// holds when any of its values matches. Unknown operators never hold (fail closed).
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
        for (key, values) in keys {
            if ctx.skip_external_id && key.eq_ignore_ascii_case("sts:ExternalId") {
                continue;
            }
            if !condition_holds(op, ctx.get(key), &strings(values)) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn condition_holds(op: &str, actual: Option<&str>, expected: &[String]) -> bool {
    // Single-valued keys: the set qualifiers reduce to the plain operator, except
    // that ForAllValues holds vacuously for a missing key.
    let (op, for_all) = match op.split_once(':') {
        Some(("ForAnyValue", rest)) => (rest, false),
        Some(("ForAllValues", rest)) => (rest, true),
        _ => (op, false),
    };
    let (op, if_exists) = match op.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (op, false),
    };
    if op == "Null" {
        let want_absent = expected.iter().any(|v| v == "true");
        return actual.is_none() == want_absent;
    }
    let Some(actual) = actual else {
        // Missing key: positive operators fail, negated ones hold (IAM docs,
        // "Condition operators": a missing key evaluates to false except for
        // the negated matching operators).
        return if_exists || for_all || op.contains("Not");
    };
    let any = |f: &dyn Fn(&str) -> bool| expected.iter().any(|e| f(e));
    match op {
        "StringEquals" | "ArnEquals" => any(&|e| e == actual),
        "StringNotEquals" | "ArnNotEquals" => !any(&|e| e == actual),
        "StringEqualsIgnoreCase" => any(&|e| e.eq_ignore_ascii_case(actual)),
        "StringNotEqualsIgnoreCase" => !any(&|e| e.eq_ignore_ascii_case(actual)),
        "StringLike" | "ArnLike" => any(&|e| glob(e, actual, false)),
        "StringNotLike" | "ArnNotLike" => !any(&|e| glob(e, actual, false)),
        "Bool" => any(&|e| e.eq_ignore_ascii_case(actual)),
        _ => false,
    }
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
        let unknown = trust(
            json!("*"),
            json!({"NumericEquals": {"sts:ExternalId": "1"}}),
        );
        assert_eq!(
            allows(&unknown, &user(), "sts:AssumeRole", &ctx(Some("1"))),
            Ok(false)
        );
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

    #[test]
    fn globbing() {
        assert!(glob("a*c", "abbbc", false));
        assert!(glob("*", "", false));
        assert!(!glob("a*c", "abbbd", false));
        assert!(glob("sts:*", "STS:AssumeRole", true));
        assert!(!glob("Abc", "abc", false));
    }
}
