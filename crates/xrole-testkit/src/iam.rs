//! The decision for one authorization of a role session, as IAM's policy
//! evaluation logic describes it for a request within one account: an
//! explicit `Deny` in any identity-based policy, permissions boundary or
//! session policy denies; otherwise an identity-based policy must allow,
//! and so must the permissions boundary (if the role has one) and a session
//! policy (if the session was given any).

use serde_json::Value;

use crate::policy::{self, Context, MalformedPolicy, Query};

/// Which kind of policy a document is, as AWS's denial messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Identity,
    Boundary,
    Session,
}

impl Kind {
    /// "an identity-based policy", as in AWS's AccessDenied messages.
    fn article(self) -> &'static str {
        match self {
            Kind::Identity => "an identity-based policy",
            Kind::Boundary => "a permissions boundary",
            Kind::Session => "a session policy",
        }
    }

    fn none(self) -> &'static str {
        match self {
            Kind::Identity => "no identity-based policy",
            Kind::Boundary => "no permissions boundary",
            Kind::Session => "no session policy",
        }
    }
}

/// A policy document with the name the gate reports it by.
#[derive(Debug, Clone)]
pub(crate) struct Named {
    /// `inline policy xrole-read-only`, `managed policy arn:…`, `session policy`.
    pub name: String,
    pub kind: Kind,
    /// The document, or why it could not be read.
    pub doc: Result<Value, MalformedPolicy>,
}

/// Every policy that applies to a role session.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicySet {
    /// The role's inline and attached managed policies.
    pub identity: Vec<Named>,
    /// The role's permissions boundary, if it has one.
    pub boundary: Option<Named>,
    /// The session policies (inline and managed) given to `AssumeRole`, if any.
    pub session: Vec<Named>,
}

/// Why an authorization was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denial {
    /// A Deny statement matched.
    Explicit {
        kind: Kind,
        policy: String,
        statement: String,
    },
    /// No policy of this kind allows it.
    NotAllowed(Kind),
    /// A policy could not be read or evaluated; the gate never guesses.
    Malformed { policy: String, why: String },
}

impl Denial {
    /// AWS's words after "User: … is not authorized to perform: A on resource: R".
    pub(crate) fn aws_reason(&self, action: &str) -> String {
        match self {
            Denial::Explicit { kind, .. } => format!("with an explicit deny in {}", kind.article()),
            Denial::NotAllowed(kind) => {
                format!("because {} allows the {action} action", kind.none())
            }
            // AWS never gets here (it refuses such policies when they are
            // written); say it the way an implicit deny reads.
            Denial::Malformed { .. } => {
                format!("because no identity-based policy allows the {action} action")
            }
        }
    }

    /// The gate's own, more precise account of it, for its log.
    pub(crate) fn detail(&self) -> String {
        match self {
            Denial::Explicit {
                policy, statement, ..
            } => format!("explicit deny in {policy}, statement {statement}"),
            Denial::NotAllowed(kind) => format!("{} allows it", kind.none()),
            Denial::Malformed { policy, why } => {
                format!("{policy} cannot be evaluated by the gate: {why}")
            }
        }
    }

    /// Whether an explicit Deny decided it.
    pub(crate) fn is_explicit(&self) -> bool {
        matches!(self, Denial::Explicit { .. })
    }
}

/// The outcome for one authorization.
pub(crate) type Outcome = Result<String, Denial>;

impl PolicySet {
    /// Decides `action` on `resource` in `ctx`. `Ok` names the policy and
    /// statement that allowed it.
    pub(crate) fn decide(&self, action: &str, resource: &str, ctx: &Context) -> Outcome {
        let q = Query {
            principal: None,
            action,
            resource: Some(resource),
            ctx,
        };
        let mut allowed_by = (None, None, None);
        let all = self
            .identity
            .iter()
            .chain(self.boundary.iter())
            .chain(self.session.iter());
        for named in all {
            let doc = named.doc.as_ref().map_err(|e| Denial::Malformed {
                policy: named.name.clone(),
                why: e.0.clone(),
            })?;
            let v = policy::evaluate(doc, &q).map_err(|e| Denial::Malformed {
                policy: named.name.clone(),
                why: e.0,
            })?;
            if let Some(statement) = v.denied_by {
                return Err(Denial::Explicit {
                    kind: named.kind,
                    policy: named.name.clone(),
                    statement,
                });
            }
            if let Some(statement) = v.allowed_by {
                let by = format!("{} ({statement})", named.name);
                let slot = match named.kind {
                    Kind::Identity => &mut allowed_by.0,
                    Kind::Boundary => &mut allowed_by.1,
                    Kind::Session => &mut allowed_by.2,
                };
                slot.get_or_insert(by);
            }
        }
        let (identity, boundary, session) = allowed_by;
        let identity = identity.ok_or(Denial::NotAllowed(Kind::Identity))?;
        if self.boundary.is_some() && boundary.is_none() {
            return Err(Denial::NotAllowed(Kind::Boundary));
        }
        if !self.session.is_empty() && session.is_none() {
            return Err(Denial::NotAllowed(Kind::Session));
        }
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn named(name: &str, kind: Kind, doc: Value) -> Named {
        Named {
            name: name.to_owned(),
            kind,
            doc: Ok(doc),
        }
    }

    fn allow(action: &str) -> Value {
        json!({"Statement": [{"Sid": "A", "Effect": "Allow", "Action": action, "Resource": "*"}]})
    }

    #[test]
    fn identity_boundary_and_session_all_must_allow() {
        let ctx = Context::default();
        let mut set = PolicySet {
            identity: vec![named("inline policy p", Kind::Identity, allow("ec2:*"))],
            ..PolicySet::default()
        };
        assert_eq!(
            set.decide("ec2:CreateVpc", "*", &ctx),
            Ok("inline policy p (A)".to_owned())
        );
        assert_eq!(
            set.decide("rds:CreateDBInstance", "*", &ctx),
            Err(Denial::NotAllowed(Kind::Identity))
        );
        set.boundary = Some(named("boundary b", Kind::Boundary, allow("ec2:Describe*")));
        assert_eq!(
            set.decide("ec2:CreateVpc", "*", &ctx),
            Err(Denial::NotAllowed(Kind::Boundary))
        );
        assert!(set.decide("ec2:DescribeVpcs", "*", &ctx).is_ok());
        set.session = vec![named(
            "session policy",
            Kind::Session,
            allow("ec2:DescribeSubnets"),
        )];
        assert_eq!(
            set.decide("ec2:DescribeVpcs", "*", &ctx),
            Err(Denial::NotAllowed(Kind::Session))
        );
        assert!(set.decide("ec2:DescribeSubnets", "*", &ctx).is_ok());
        // A Deny anywhere wins, even in a session policy.
        set.session.push(named(
            "session policy arn:x",
            Kind::Session,
            json!({"Statement": {"Sid": "No", "Effect": "Deny", "Action": "*", "Resource": "*"}}),
        ));
        let d = set.decide("ec2:DescribeSubnets", "*", &ctx).unwrap_err();
        assert!(d.is_explicit());
        assert_eq!(
            d.aws_reason("ec2:DescribeSubnets"),
            "with an explicit deny in a session policy"
        );
        assert_eq!(
            d.detail(),
            "explicit deny in session policy arn:x, statement No"
        );
        assert_eq!(
            Denial::NotAllowed(Kind::Identity).aws_reason("ec2:X"),
            "because no identity-based policy allows the ec2:X action"
        );
    }

    #[test]
    fn an_unreadable_policy_denies() {
        let set = PolicySet {
            identity: vec![
                named("inline policy ok", Kind::Identity, allow("*")),
                Named {
                    name: "inline policy bad".into(),
                    kind: Kind::Identity,
                    doc: Err(MalformedPolicy("no Statement".into())),
                },
            ],
            ..PolicySet::default()
        };
        let d = set.decide("ec2:X", "*", &Context::default()).unwrap_err();
        assert!(matches!(d, Denial::Malformed { .. }), "{d:?}");
        let ip = PolicySet {
            identity: vec![named(
                "inline policy ip",
                Kind::Identity,
                json!({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*",
                       "Condition": {"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}}),
            )],
            ..PolicySet::default()
        };
        assert!(matches!(
            ip.decide("ec2:X", "*", &Context::default()),
            Err(Denial::Malformed { .. })
        ));
    }
}
