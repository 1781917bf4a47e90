//! The `AssumeRole` parameters and their constraints, as the STS API reference
//! states them.

use std::collections::HashMap;

use crate::wire::AwsError;

/// AWS's upper bound for any role's `MaxSessionDuration` and `DurationSeconds`.
pub(crate) const MAX_DURATION: i64 = 43_200;
/// The lower bound for `DurationSeconds`.
pub(crate) const MIN_DURATION: i64 = 900;
/// Role chaining limits a session to one hour.
pub(crate) const CHAINED_MAX_DURATION: i64 = 3_600;

/// The `AssumeRole` request parameters the gate decides on.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct AssumeRoleParams {
    pub role_arn: String,
    pub session_name: String,
    pub external_id: Option<String>,
    pub duration: Option<i64>,
    pub source_identity: Option<String>,
    /// Session tags (`Tags.member.N.Key/Value`) and `TransitiveTagKeys`.
    pub tags: Vec<(String, String)>,
    pub transitive_tag_keys: Vec<String>,
    /// The inline session policy (`Policy`).
    pub policy: Option<String>,
    /// Managed session policies (`PolicyArns.member.N.arn`).
    pub policy_arns: Vec<String>,
}

/// The role ARN parts: account and the role name (last path segment).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct RoleRef {
    pub account: String,
    pub name: String,
}

impl AssumeRoleParams {
    /// Parses and validates, answering `ValidationError` with the messages STS
    /// gives (all violations at once, as STS does).
    pub(crate) fn parse(p: &HashMap<String, String>) -> Result<AssumeRoleParams, AwsError> {
        let mut errors = Vec::new();
        let role_arn = p.get("RoleArn").cloned();
        let session_name = p.get("RoleSessionName").cloned();
        match &role_arn {
            None => errors.push(null_error("roleArn")),
            Some(a) => check_len(&mut errors, "roleArn", a, 20, 2048),
        }
        match &session_name {
            None => errors.push(null_error("roleSessionName")),
            Some(s) => {
                check_len(&mut errors, "roleSessionName", s, 2, 64);
                check_chars(&mut errors, "roleSessionName", s, "+=,.@-", r"[\w+=,.@-]*");
            }
        }
        let external_id = p.get("ExternalId").cloned();
        if let Some(e) = &external_id {
            check_len(&mut errors, "externalId", e, 2, 1224);
            check_chars(&mut errors, "externalId", e, "+=,.@:/-", r"[\w+=,.@:/-]*");
        }
        let source_identity = p.get("SourceIdentity").cloned();
        if let Some(s) = &source_identity {
            check_len(&mut errors, "sourceIdentity", s, 2, 64);
            check_chars(&mut errors, "sourceIdentity", s, "+=,.@-", r"[\w+=,.@-]*");
        }
        let duration = match p.get("DurationSeconds") {
            None => None,
            Some(d) => match d.parse::<i64>() {
                Ok(d) => {
                    if d < MIN_DURATION {
                        errors.push(format!(
                            "Value '{d}' at 'durationSeconds' failed to satisfy constraint: \
                             Member must have value greater than or equal to {MIN_DURATION}"
                        ));
                    } else if d > MAX_DURATION {
                        errors.push(format!(
                            "Value '{d}' at 'durationSeconds' failed to satisfy constraint: \
                             Member must have value less than or equal to {MAX_DURATION}"
                        ));
                    }
                    Some(d)
                }
                Err(_) => {
                    return Err(AwsError::validation(format!(
                        "Invalid DurationSeconds: {d}"
                    )));
                }
            },
        };
        if !errors.is_empty() {
            let n = errors.len();
            let plural = if n == 1 { "error" } else { "errors" };
            return Err(AwsError::validation(format!(
                "{n} validation {plural} detected: {}",
                errors.join("; ")
            )));
        }
        let mut tags = Vec::new();
        for i in 1.. {
            let Some(k) = p.get(&format!("Tags.member.{i}.Key")) else {
                break;
            };
            let v = p
                .get(&format!("Tags.member.{i}.Value"))
                .cloned()
                .unwrap_or_default();
            tags.push((k.clone(), v));
        }
        let mut transitive_tag_keys = Vec::new();
        for i in 1.. {
            let Some(k) = p.get(&format!("TransitiveTagKeys.member.{i}")) else {
                break;
            };
            transitive_tag_keys.push(k.clone());
        }
        let policy_arns = (1..)
            .map_while(|i| p.get(&format!("PolicyArns.member.{i}.arn")).cloned())
            .collect();
        Ok(AssumeRoleParams {
            policy: p.get("Policy").cloned(),
            policy_arns,
            role_arn: role_arn.unwrap_or_default(),
            session_name: session_name.unwrap_or_default(),
            external_id,
            duration,
            source_identity,
            tags,
            transitive_tag_keys,
        })
    }

    /// Whether the request sets session tags (which needs `sts:TagSession`).
    pub(crate) fn tags_session(&self) -> bool {
        !self.tags.is_empty() || !self.transitive_tag_keys.is_empty()
    }

    /// The account and name of the role, if the ARN is an IAM role ARN.
    pub(crate) fn role(&self) -> Option<RoleRef> {
        role_ref(&self.role_arn)
    }
}

/// The account and name of an IAM role ARN (`None` for anything else).
pub(crate) fn role_ref(arn: &str) -> Option<RoleRef> {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", _partition, "iam", "", account, resource] = parts[..] else {
        return None;
    };
    let path_and_name = resource.strip_prefix("role/")?;
    let name = path_and_name.rsplit('/').next()?;
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) || name.is_empty() {
        return None;
    }
    Some(RoleRef {
        account: account.to_owned(),
        name: name.to_owned(),
    })
}

fn null_error(field: &str) -> String {
    format!("Value null at '{field}' failed to satisfy constraint: Member must not be null")
}

fn check_len(errors: &mut Vec<String>, field: &str, v: &str, min: usize, max: usize) {
    let n = v.chars().count();
    if n < min {
        errors.push(format!(
            "Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must have length greater than or equal to {min}"
        ));
    } else if n > max {
        errors.push(format!(
            "Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must have length less than or equal to {max}"
        ));
    }
}

/// `\w` in the STS patterns is ASCII `[A-Za-z0-9_]`.
fn check_chars(errors: &mut Vec<String>, field: &str, v: &str, extra: &str, pattern: &str) {
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || extra.contains(c))
    {
        errors.push(format!(
            "Value '{v}' at '{field}' failed to satisfy constraint: \
             Member must satisfy regular expression pattern: {pattern}"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ARN: &str = "arn:aws:iam::222222222222:role/team/xrole";

    #[test]
    fn valid_request() {
        let p = AssumeRoleParams::parse(&params(&[
            ("RoleArn", ARN),
            ("RoleSessionName", "xrole-org_1=a,b.c@d-e"),
            ("ExternalId", "abc+=,.@:/-_Z9"),
            ("DurationSeconds", "900"),
            ("Tags.member.1.Key", "k"),
            ("Tags.member.1.Value", "v"),
            ("Policy", "{}"),
            (
                "PolicyArns.member.1.arn",
                "arn:aws:iam::aws:policy/ReadOnlyAccess",
            ),
        ]))
        .unwrap();
        assert_eq!(p.duration, Some(900));
        assert_eq!(p.policy.as_deref(), Some("{}"));
        assert_eq!(p.policy_arns, ["arn:aws:iam::aws:policy/ReadOnlyAccess"]);
        assert!(p.tags_session());
        assert_eq!(
            p.role(),
            Some(RoleRef {
                account: "222222222222".into(),
                name: "xrole".into()
            })
        );
    }

    #[test]
    fn invalid_requests() {
        let msg =
            |pairs: &[(&str, &str)]| AssumeRoleParams::parse(&params(pairs)).unwrap_err().message;
        assert!(
            msg(&[("RoleArn", ARN), ("RoleSessionName", "a")])
                .contains("greater than or equal to 2")
        );
        let long = "a".repeat(65);
        assert!(
            msg(&[("RoleArn", ARN), ("RoleSessionName", &long)])
                .contains("less than or equal to 64")
        );
        assert!(msg(&[("RoleArn", ARN), ("RoleSessionName", "a b")]).contains(r"[\w+=,.@-]*"));
        assert!(
            msg(&[("RoleArn", ARN), ("RoleSessionName", "a:b")]).contains("regular expression")
        );
        assert!(msg(&[("RoleArn", ARN)]).contains("Value null at 'roleSessionName'"));
        let e = msg(&[
            ("RoleArn", ARN),
            ("RoleSessionName", "ab"),
            ("ExternalId", "x y"),
        ]);
        assert!(e.starts_with("1 validation error detected") && e.contains(r"[\w+=,.@:/-]*"));
        let big = "e".repeat(1225);
        assert!(
            msg(&[
                ("RoleArn", ARN),
                ("RoleSessionName", "ab"),
                ("ExternalId", &big)
            ])
            .contains("1224")
        );
        assert!(
            msg(&[
                ("RoleArn", ARN),
                ("RoleSessionName", "ab"),
                ("DurationSeconds", "899")
            ])
            .contains("900")
        );
        assert!(
            msg(&[
                ("RoleArn", ARN),
                ("RoleSessionName", "ab"),
                ("DurationSeconds", "43201")
            ])
            .contains("43200")
        );
        let two = msg(&[
            ("RoleArn", ARN),
            ("RoleSessionName", "a"),
            ("ExternalId", "e"),
        ]);
        assert!(two.starts_with("2 validation errors detected"));
        let ok = AssumeRoleParams::parse(&params(&[
            ("RoleArn", "arn:aws:iam::12:role/x/"),
            ("RoleSessionName", "ab"),
        ]));
        assert_eq!(ok.unwrap().role(), None);
    }
}
