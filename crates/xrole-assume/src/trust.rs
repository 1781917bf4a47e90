//! The trust-policy audit: reading a role's trust policy and saying whether
//! anyone but the SaaS, or the SaaS without this tenant's External ID, could
//! assume it.
//!
//! The probes of [`Broker::verify_link`](crate::Broker::verify_link) show
//! what STS does with a few External IDs; the audit shows what it would do
//! with every other one, and with every other principal. Only `Allow`
//! statements that grant a way into the role (`sts:AssumeRole`,
//! `sts:AssumeRoleWithSAML`, `sts:AssumeRoleWithWebIdentity`) are examined:
//! `Deny` statements only take access away, and `sts:TagSession` or
//! `sts:SetSourceIdentity` alone let nobody in.

use serde_json::Value;
use xrole_crypto::ExternalId;

/// The actions that hand out sessions of the role.
const ENTRY_ACTIONS: [&str; 3] = [
    "sts:AssumeRole",
    "sts:AssumeRoleWithSAML",
    "sts:AssumeRoleWithWebIdentity",
];

/// Something that makes a role usable by more than the one tenant holding
/// its External ID. [`code`](TrustFinding::code) is a stable word;
/// `Display` says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustFinding {
    /// `AssumeRole` without any External ID succeeded (probe).
    AcceptsNoExternalId,
    /// `AssumeRole` with a random External ID that is not this link's
    /// succeeded (probe): the trust policy matches patterns or any value.
    AcceptsForeignExternalId {
        /// Which probe: `same_shape` (looks like an xrole External ID) or
        /// `other_shape`.
        probe: &'static str,
    },
    /// An `Allow` statement lets in a principal other than exactly the SaaS
    /// principal (a wildcard, an account, `:root`, another role or user, a
    /// service or an identity provider).
    PrincipalTooBroad {
        /// The statement's `Sid`, or `#<index>` (from 0) without one.
        statement: String,
        /// The principal, as written in the policy.
        principal: String,
    },
    /// An `Allow` statement does not require `StringEquals sts:ExternalId`
    /// with this link's External ID.
    ExternalIdNotRequired {
        /// The statement's `Sid`, or `#<index>` (from 0) without one.
        statement: String,
        /// What its condition says instead.
        detail: String,
    },
}

impl TrustFinding {
    /// A stable machine word: `external_id_not_required` (the role can be
    /// assumed without this link's External ID) or `trust_broadened` (it
    /// trusts more principals than the SaaS).
    pub fn code(&self) -> &'static str {
        match self {
            TrustFinding::PrincipalTooBroad { .. } => "trust_broadened",
            _ => "external_id_not_required",
        }
    }
}

impl std::fmt::Display for TrustFinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrustFinding::AcceptsNoExternalId => write!(
                f,
                "the role can be assumed without an External ID: add the condition \
                 StringEquals sts:ExternalId with exactly this link's External ID to its trust policy"
            ),
            TrustFinding::AcceptsForeignExternalId { probe } => write!(
                f,
                "the role's trust policy accepts External IDs other than yours (a random {} \
                 External ID was accepted): use StringEquals with exactly this link's External ID, \
                 never StringLike, wildcards or Null",
                if *probe == "same_shape" {
                    "xrole-shaped"
                } else {
                    "non-xrole"
                }
            ),
            TrustFinding::PrincipalTooBroad {
                statement,
                principal,
            } => write!(
                f,
                "trust policy statement {statement} lets {principal} assume the role: trust \
                 exactly the SaaS principal from the onboarding parameters (never \"*\", an \
                 account root or other principals)"
            ),
            TrustFinding::ExternalIdNotRequired { statement, detail } => write!(
                f,
                "trust policy statement {statement} does not require this link's External ID \
                 ({detail}): use StringEquals sts:ExternalId with exactly this link's External ID"
            ),
        }
    }
}

/// The trust policy document of `iam:GetRole`, which IAM returns
/// URL-encoded (RFC 3986); plain JSON is accepted too.
pub(crate) fn parse_document(raw: &str) -> Option<Value> {
    let trimmed = raw.trim_start();
    if trimmed.starts_with('{') {
        return serde_json::from_str(trimmed).ok();
    }
    serde_json::from_str(&percent_decode(raw)?).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                // Form encoding; IAM itself writes %20.
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Audits a trust policy: every `Allow` statement that hands out sessions
/// must name exactly `trusted_principal` (when given; otherwise only
/// wildcards, account roots and non-AWS principals are refused) and require
/// `StringEquals sts:ExternalId` with `external_id` among its values (a list
/// naming other tenants' External IDs as well is fine: each of them is as
/// unguessable as this one). Empty when the policy is safe.
pub fn audit_trust_policy(
    policy: &Value,
    trusted_principal: Option<&str>,
    external_id: &ExternalId,
) -> Vec<TrustFinding> {
    let statements: Vec<&Value> = match policy.get("Statement") {
        Some(Value::Array(s)) => s.iter().collect(),
        Some(s @ Value::Object(_)) => vec![s],
        _ => Vec::new(),
    };
    let mut findings = Vec::new();
    for (index, st) in statements.iter().enumerate() {
        if st.get("Effect").and_then(Value::as_str) != Some("Allow") || !grants_entry(st) {
            continue;
        }
        let name = st
            .get("Sid")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map_or_else(|| format!("#{index}"), |s| format!("\"{s}\""));
        for principal in broad_principals(st, trusted_principal) {
            findings.push(TrustFinding::PrincipalTooBroad {
                statement: name.clone(),
                principal,
            });
        }
        if let Some(detail) = external_id_gap(st.get("Condition"), external_id) {
            findings.push(TrustFinding::ExternalIdNotRequired {
                statement: name,
                detail,
            });
        }
    }
    findings
}

/// Whether the statement's actions include a way into the role.
fn grants_entry(st: &Value) -> bool {
    let matches_any = |v: &Value, action: &str| strings(v).iter().any(|p| glob_ci(p, action));
    match (st.get("Action"), st.get("NotAction")) {
        (Some(a), _) => ENTRY_ACTIONS.iter().any(|e| matches_any(a, e)),
        (None, Some(n)) => ENTRY_ACTIONS.iter().any(|e| !matches_any(n, e)),
        (None, None) => false,
    }
}

/// The principals of an `Allow` statement other than exactly the trusted one.
fn broad_principals(st: &Value, trusted: Option<&str>) -> Vec<String> {
    if let Some(np) = st.get("NotPrincipal") {
        return vec![format!("everyone but {}", compact(np))];
    }
    match st.get("Principal") {
        None => vec!["(no principal)".to_owned()],
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Object(m)) => {
            let mut out = Vec::new();
            for (kind, values) in m {
                for p in strings(values) {
                    let ok = kind == "AWS"
                        && match trusted {
                            Some(t) => p == t,
                            None => p != "*" && !is_account_wide(&p),
                        };
                    if !ok {
                        out.push(if kind == "AWS" {
                            p
                        } else {
                            format!("{kind}:{p}")
                        });
                    }
                }
            }
            out
        }
        Some(other) => vec![compact(other)],
    }
}

/// `123456789012` or `arn:…:iam::123456789012:root`: every principal of an account.
fn is_account_wide(p: &str) -> bool {
    (p.len() == 12 && p.bytes().all(|b| b.is_ascii_digit())) || p.ends_with(":root")
}

/// Why the condition does not pin this External ID, or `None` when it does.
fn external_id_gap(condition: Option<&Value>, external_id: &ExternalId) -> Option<String> {
    let Some(Value::Object(ops)) = condition else {
        return Some("no condition".to_owned());
    };
    let mut seen = Vec::new();
    for (op, keys) in ops {
        let Value::Object(keys) = keys else { continue };
        for (key, values) in keys {
            if !key.eq_ignore_ascii_case("sts:ExternalId") {
                continue;
            }
            // Operator names are case-sensitive in IAM; only the plain
            // StringEquals pins the value (IfExists and set operators let
            // an absent key through).
            if op == "StringEquals" && strings(values).iter().any(|v| v == external_id.as_str()) {
                return None;
            }
            seen.push(if op == "StringEquals" {
                "StringEquals with other values".to_owned()
            } else {
                format!("{op} {}", compact(values))
            });
        }
    }
    Some(if seen.is_empty() {
        "no sts:ExternalId condition".to_owned()
    } else {
        seen.join(", ")
    })
}

/// A JSON string or array of strings.
fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().flat_map(strings).collect(),
        Value::String(s) => vec![s.clone()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Number(n) => vec![n.to_string()],
        _ => Vec::new(),
    }
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 {
        let cut = (0..=117)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        format!("{}...", &s[..cut])
    } else {
        s
    }
}

/// IAM action matching: case-insensitive, `*` any run, `?` one character.
fn glob_ci(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
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

    const SAAS: &str = "arn:aws:iam::111111111111:role/xrole";

    fn ext() -> ExternalId {
        ExternalId::parse("xrx-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa").unwrap()
    }

    fn policy(principal: Value, condition: Option<Value>) -> Value {
        let mut st = json!({"Sid": "Xrole", "Effect": "Allow", "Principal": principal,
            "Action": ["sts:AssumeRole", "sts:TagSession"]});
        if let Some(c) = condition {
            st["Condition"] = c;
        }
        json!({"Version": "2012-10-17", "Statement": [st]})
    }

    fn codes(p: &Value) -> Vec<&'static str> {
        audit_trust_policy(p, Some(SAAS), &ext())
            .iter()
            .map(TrustFinding::code)
            .collect()
    }

    #[test]
    fn the_template_policy_passes() {
        let p = policy(
            json!({"AWS": SAAS}),
            Some(json!({"StringEquals": {"sts:ExternalId": ext().as_str()}})),
        );
        assert!(codes(&p).is_empty());
        // A list naming another tenant's External ID too is legitimate.
        let p = policy(
            json!({"AWS": [SAAS]}),
            Some(json!({"StringEquals": {"sts:externalid": ["xrx-other", ext().as_str()]}})),
        );
        assert!(codes(&p).is_empty());
    }

    #[test]
    fn external_id_patterns_and_absence_are_found() {
        for cond in [
            None,
            Some(json!({"StringLike": {"sts:ExternalId": "*"}})),
            Some(json!({"StringLike": {"sts:ExternalId": "xrx-*"}})),
            Some(json!({"Null": {"sts:ExternalId": "false"}})),
            Some(json!({"StringEqualsIfExists": {"sts:ExternalId": ext().as_str()}})),
            Some(json!({"StringEquals": {"sts:ExternalId": "xrx-someone-else"}})),
            Some(json!({"StringEquals": {"aws:PrincipalArn": SAAS}})),
        ] {
            let p = policy(json!({"AWS": SAAS}), cond.clone());
            assert_eq!(codes(&p), ["external_id_not_required"], "{cond:?}");
        }
        let found = audit_trust_policy(
            &policy(
                json!({"AWS": SAAS}),
                Some(json!({"StringLike": {"sts:ExternalId": "xrx-*"}})),
            ),
            Some(SAAS),
            &ext(),
        );
        let text = found[0].to_string();
        assert!(
            text.contains("\"Xrole\"") && text.contains("StringLike"),
            "{text}"
        );
    }

    #[test]
    fn broad_principals_are_found() {
        let ok = Some(json!({"StringEquals": {"sts:ExternalId": ext().as_str()}}));
        for principal in [
            json!("*"),
            json!({"AWS": "*"}),
            json!({"AWS": "111111111111"}),
            json!({"AWS": "arn:aws:iam::111111111111:root"}),
            json!({"AWS": [SAAS, "arn:aws:iam::222222222222:role/other"]}),
            json!({"Service": "lambda.amazonaws.com"}),
        ] {
            let p = policy(principal.clone(), ok.clone());
            assert_eq!(codes(&p), ["trust_broadened"], "{principal}");
        }
        let not = json!({"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": SAAS},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"sts:ExternalId": ext().as_str()}}}]});
        assert_eq!(codes(&not), ["trust_broadened"]);
        // Without a known principal, a specific role is accepted but "*" is not.
        let other = policy(
            json!({"AWS": "arn:aws:iam::222222222222:role/x"}),
            ok.clone(),
        );
        assert!(audit_trust_policy(&other, None, &ext()).is_empty());
        let star = policy(json!({"AWS": "*"}), ok);
        assert_eq!(audit_trust_policy(&star, None, &ext()).len(), 1);
    }

    #[test]
    fn only_allow_statements_that_let_someone_in_count() {
        let p = json!({"Statement": [
            {"Effect": "Deny", "Principal": "*", "Action": "sts:AssumeRole"},
            {"Effect": "Allow", "Principal": "*", "Action": "sts:TagSession"},
            {"Sid": "Web", "Effect": "Allow", "Principal": {"Federated": "cognito-identity.amazonaws.com"},
             "Action": "sts:AssumeRoleWithWebIdentity"},
            {"Effect": "Allow", "Principal": {"AWS": SAAS}, "NotAction": "sts:TagSession",
             "Condition": {"StringEquals": {"sts:ExternalId": ext().as_str()}}},
            {"Effect": "Allow", "Principal": {"AWS": SAAS}, "Action": "sts:*"}]});
        let found = audit_trust_policy(&p, Some(SAAS), &ext());
        let summary: Vec<(String, &str)> = found
            .iter()
            .map(|f| match f {
                TrustFinding::PrincipalTooBroad { statement, .. }
                | TrustFinding::ExternalIdNotRequired { statement, .. } => {
                    (statement.clone(), f.code())
                }
                _ => (String::new(), f.code()),
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("\"Web\"".to_owned(), "trust_broadened"),
                ("\"Web\"".to_owned(), "external_id_not_required"),
                ("#4".to_owned(), "external_id_not_required"),
            ]
        );
    }

    #[test]
    fn documents_decode() {
        let raw = "%7B%22Version%22%3A%222012-10-17%22%2C%22Statement%22%3A%5B%5D%7D";
        assert_eq!(
            parse_document(raw).unwrap(),
            json!({"Version": "2012-10-17", "Statement": []})
        );
        assert_eq!(parse_document("{\"a\": 1}").unwrap(), json!({"a": 1}));
        assert!(parse_document("%zz").is_none());
        assert!(parse_document("%E2%82").is_none());
    }
}
