//! The gate evaluates the identity policies of the sessions it issued the
//! way IAM does: AWS's documented policy-evaluation examples as a table, each
//! case a real role in moto, a real session through the gate and a real SDK
//! call; then revocation, live policy edits, the control switches and the
//! error shapes. Cases that need nothing but actions are cross-checked
//! against moto's own IAM mode.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_support;

use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use gate_support::*;
use serde_json::{Value, json};
use xrole_testkit::{Aws, CustomerAccount, Decision, Verdict, xrole_trust_policy};

type Tags = &'static [(&'static str, &'static str)];

/// What a case asks of its session.
#[derive(Debug, Clone, Copy)]
enum Call {
    DescribeVpcs,
    DescribeSubnets,
    /// `CreateVpc` tagging the new VPC with these tags.
    CreateVpc(Tags),
    /// `DeleteVpc` of a VPC the customer made with these tags.
    DeleteVpc(Tags),
    /// `CreateTags` adding `new` to a VPC the customer made with `existing`.
    TagVpc {
        existing: Tags,
        new: Tags,
    },
    /// `iam:GetRole` on the session's own role.
    GetOwnRole,
    GetCallerIdentity,
    /// `cloudformation:DescribeStacks`: an action the gate does not know.
    DescribeStacks,
}

#[derive(Debug, Clone, Copy)]
enum Expect {
    Allow,
    /// Denied; the gate's reason contains this.
    Deny(&'static str),
}

struct Case {
    name: &'static str,
    /// The role's inline policies.
    policies: Vec<Value>,
    boundary: Option<Value>,
    session_policy: Option<Value>,
    role_tags: Tags,
    session_tags: Tags,
    call: Call,
    expect: Expect,
    /// moto's own IAM mode (actions only) must decide the same.
    moto_agrees: bool,
}

fn case(name: &'static str, policies: Vec<Value>, call: Call, expect: Expect) -> Case {
    Case {
        name,
        policies,
        boundary: None,
        session_policy: None,
        role_tags: &[],
        session_tags: &[],
        call,
        expect,
        moto_agrees: false,
    }
}

fn statement(effect: &str, action: Value, condition: Value) -> Value {
    let mut st = json!({"Effect": effect, "Action": action, "Resource": "*"});
    if !condition.is_null() {
        st["Condition"] = condition;
    }
    st
}

fn policy(statements: &[Value]) -> Value {
    json!({"Version": "2012-10-17", "Statement": statements})
}

fn allow(action: &str) -> Value {
    policy(&[statement("Allow", json!(action), Value::Null)])
}

const NO_IDENTITY_ALLOW: &str = "no identity-based policy allows it";
const EXPLICIT: &str = "explicit deny in inline policy";

/// AWS's policy evaluation examples (IAM User Guide: "Policy evaluation
/// logic", "Example policies", the condition operators reference, and the
/// EC2 guide's "Tag your resources during creation").
fn cases() -> Vec<Case> {
    let create_blue = policy(&[
        json!({"Effect": "Allow", "Action": "ec2:CreateVpc", "Resource": "arn:aws:ec2:*:*:vpc/*",
               "Condition": {"StringEquals": {"aws:RequestTag/team": "blue"},
                             "ForAllValues:StringLike": {"aws:TagKeys": ["team", "Name"]}}}),
        json!({"Effect": "Allow", "Action": "ec2:CreateTags", "Resource": "*",
               "Condition": {"StringEquals": {"ec2:CreateAction": "CreateVpc"}}}),
    ]);
    let delete_blue = |key: &str| {
        policy(&[statement(
            "Allow",
            json!("ec2:DeleteVpc"),
            json!({"StringEquals": {key: "blue"}}),
        )])
    };
    let if_exists = policy(&[statement(
        "Allow",
        json!(["ec2:DescribeVpcs", "ec2:DeleteVpc"]),
        json!({"StringEqualsIfExists": {"aws:ResourceTag/team": "blue"}}),
    )]);
    let by_principal_tag = policy(&[statement(
        "Allow",
        json!("ec2:DescribeVpcs"),
        json!({"StringEquals": {"aws:PrincipalTag/team": "blue"}}),
    )]);
    let vpc_in = |region: &str, account: &str| {
        policy(&[json!({"Effect": "Allow", "Action": "ec2:DeleteVpc",
                        "Resource": format!("arn:aws:ec2:{region}:{account}:vpc/*")})])
    };
    let allow_ec2_deny_delete = vec![policy(&[
        statement("Allow", json!("ec2:*"), Value::Null),
        statement("Deny", json!("ec2:DeleteVpc"), Value::Null),
    ])];
    let not_action_allow =
        policy(&[json!({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})]);
    let not_action_deny = policy(&[
        statement("Allow", json!("*"), Value::Null),
        json!({"Effect": "Deny", "NotAction": "ec2:Describe*", "Resource": "*"}),
    ]);
    let moto = |mut c: Case| {
        c.moto_agrees = true;
        c
    };
    let all = vec![
        // Allow, implicit deny, explicit deny.
        moto(case(
            "an allow grants",
            vec![allow("ec2:DescribeVpcs")],
            Call::DescribeVpcs,
            Expect::Allow,
        )),
        moto(case(
            "what nothing allows is implicitly denied",
            vec![allow("ec2:DescribeVpcs")],
            Call::DescribeSubnets,
            Expect::Deny(NO_IDENTITY_ALLOW),
        )),
        moto(case(
            "an explicit deny overrides an allow",
            allow_ec2_deny_delete.clone(),
            Call::DeleteVpc(&[]),
            Expect::Deny(EXPLICIT),
        )),
        moto(case(
            "the same policy still allows the rest",
            allow_ec2_deny_delete,
            Call::DescribeVpcs,
            Expect::Allow,
        )),
        moto(case(
            "a deny in one policy overrides an allow in another",
            vec![
                allow("ec2:*"),
                policy(&[statement("Deny", json!("ec2:Describe*"), Value::Null)]),
            ],
            Call::DescribeVpcs,
            Expect::Deny(EXPLICIT),
        )),
        // NotAction.
        moto(case(
            "Allow with NotAction grants every other action",
            vec![not_action_allow.clone()],
            Call::DescribeVpcs,
            Expect::Allow,
        )),
        moto(case(
            "Allow with NotAction does not grant the named ones",
            vec![not_action_allow],
            Call::GetOwnRole,
            Expect::Deny(NO_IDENTITY_ALLOW),
        )),
        moto(case(
            "Deny with NotAction denies every other action",
            vec![not_action_deny.clone()],
            Call::CreateVpc(&[]),
            Expect::Deny(EXPLICIT),
        )),
        moto(case(
            "Deny with NotAction leaves the named ones",
            vec![not_action_deny],
            Call::DescribeSubnets,
            Expect::Allow,
        )),
        // Resources: region and account are parts of the ARN.
        case(
            "a resource ARN in the request's region matches",
            vec![vpc_in("us-east-1", "*")],
            Call::DeleteVpc(&[]),
            Expect::Allow,
        ),
        case(
            "a resource ARN in another region does not",
            vec![vpc_in("eu-west-1", "*")],
            Call::DeleteVpc(&[]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "a resource ARN in another account does not",
            vec![vpc_in("*", "111122223333")],
            Call::DeleteVpc(&[]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "NotResource excludes what it names",
            vec![policy(&[
                json!({"Effect": "Allow", "Action": "ec2:DeleteVpc",
                                 "NotResource": "arn:aws:ec2:us-east-1:*:vpc/*"}),
            ])],
            Call::DeleteVpc(&[]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        // Tags on create: the request's tags, and CreateTags only with ec2:CreateAction.
        case(
            "a create with the required request tag",
            vec![create_blue.clone()],
            Call::CreateVpc(&[("team", "blue"), ("Name", "web")]),
            Expect::Allow,
        ),
        case(
            "a create with another value of the tag",
            vec![create_blue.clone()],
            Call::CreateVpc(&[("team", "red")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "a create without tags",
            vec![create_blue.clone()],
            Call::CreateVpc(&[]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "ForAllValues on aws:TagKeys refuses an extra tag key",
            vec![create_blue.clone()],
            Call::CreateVpc(&[("team", "blue"), ("owner", "mallory")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "ec2:CreateAction: tagging an existing resource is not tagging on create",
            vec![create_blue],
            Call::TagVpc {
                existing: &[("team", "blue")],
                new: &[("team", "blue")],
            },
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        // Tags of existing resources.
        case(
            "aws:ResourceTag matches the resource's tag",
            vec![delete_blue("aws:ResourceTag/team")],
            Call::DeleteVpc(&[("team", "blue")]),
            Expect::Allow,
        ),
        case(
            "ec2:ResourceTag too",
            vec![delete_blue("ec2:ResourceTag/team")],
            Call::DeleteVpc(&[("team", "blue")]),
            Expect::Allow,
        ),
        case(
            "aws:ResourceTag with another value",
            vec![delete_blue("aws:ResourceTag/team")],
            Call::DeleteVpc(&[("team", "red")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "aws:ResourceTag on an untagged resource: the missing key fails",
            vec![delete_blue("aws:ResourceTag/team")],
            Call::DeleteVpc(&[]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "aws:RequestTag is not aws:ResourceTag",
            vec![delete_blue("aws:RequestTag/team")],
            Call::DeleteVpc(&[("team", "blue")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        // ...IfExists and Null.
        case(
            "IfExists holds when the request has no such key (Describe*)",
            vec![if_exists.clone()],
            Call::DescribeVpcs,
            Expect::Allow,
        ),
        case(
            "IfExists holds for an untagged resource",
            vec![if_exists.clone()],
            Call::DeleteVpc(&[]),
            Expect::Allow,
        ),
        case(
            "IfExists still compares a key that exists",
            vec![if_exists],
            Call::DeleteVpc(&[("team", "red")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "without IfExists a missing key fails the condition",
            vec![policy(&[statement(
                "Allow",
                json!("ec2:DescribeVpcs"),
                json!({"StringEquals": {"aws:ResourceTag/team": "blue"}}),
            )])],
            Call::DescribeVpcs,
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "Null true: only resources without the tag",
            vec![policy(&[statement(
                "Allow",
                json!("ec2:DeleteVpc"),
                json!({"Null": {"aws:ResourceTag/team": "true"}}),
            )])],
            Call::DeleteVpc(&[("team", "red")]),
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        // Principal tags: the role's, overridden by the session's.
        Case {
            role_tags: &[("team", "blue")],
            ..case(
                "a role tag is a principal tag",
                vec![by_principal_tag.clone()],
                Call::DescribeVpcs,
                Expect::Allow,
            )
        },
        Case {
            role_tags: &[("team", "red")],
            ..case(
                "a role tag with another value",
                vec![by_principal_tag.clone()],
                Call::DescribeVpcs,
                Expect::Deny(NO_IDENTITY_ALLOW),
            )
        },
        Case {
            role_tags: &[("team", "red")],
            session_tags: &[("team", "blue")],
            ..case(
                "a session tag overrides the role tag (allowing)",
                vec![by_principal_tag.clone()],
                Call::DescribeVpcs,
                Expect::Allow,
            )
        },
        Case {
            role_tags: &[("team", "blue")],
            session_tags: &[("team", "red")],
            ..case(
                "a session tag overrides the role tag (denying)",
                vec![by_principal_tag],
                Call::DescribeVpcs,
                Expect::Deny(NO_IDENTITY_ALLOW),
            )
        },
        // Permissions boundaries and session policies intersect.
        Case {
            boundary: Some(allow("ec2:Describe*")),
            ..case(
                "a boundary lets through what both allow",
                vec![allow("ec2:*")],
                Call::DescribeVpcs,
                Expect::Allow,
            )
        },
        Case {
            boundary: Some(allow("ec2:Describe*")),
            ..case(
                "a boundary caps the identity policy",
                vec![allow("ec2:*")],
                Call::CreateVpc(&[]),
                Expect::Deny("no permissions boundary allows it"),
            )
        },
        Case {
            boundary: Some(allow("ec2:*")),
            ..case(
                "a boundary alone grants nothing",
                vec![],
                Call::DescribeVpcs,
                Expect::Deny(NO_IDENTITY_ALLOW),
            )
        },
        Case {
            session_policy: Some(allow("ec2:DescribeVpcs")),
            ..case(
                "a session policy lets through what both allow",
                vec![allow("ec2:*")],
                Call::DescribeVpcs,
                Expect::Allow,
            )
        },
        Case {
            session_policy: Some(allow("ec2:DescribeVpcs")),
            ..case(
                "a session policy caps the role",
                vec![allow("ec2:*")],
                Call::DescribeSubnets,
                Expect::Deny("no session policy allows it"),
            )
        },
        Case {
            session_policy: Some(allow("ec2:*")),
            ..case(
                "a session policy grants nothing the role does not",
                vec![allow("ec2:DescribeVpcs")],
                Call::DescribeSubnets,
                Expect::Deny(NO_IDENTITY_ALLOW),
            )
        },
        Case {
            session_policy: Some(policy(&[
                statement("Allow", json!("*"), Value::Null),
                statement("Deny", json!("ec2:DescribeVpcs"), Value::Null),
            ])),
            ..case(
                "a deny in a session policy wins",
                vec![allow("ec2:*")],
                Call::DescribeVpcs,
                Expect::Deny("explicit deny in the inline session policy"),
            )
        },
        // Global keys.
        case(
            "aws:RequestedRegion is the signed region",
            vec![policy(&[statement(
                "Allow",
                json!("ec2:DescribeVpcs"),
                json!({"StringEquals": {"aws:RequestedRegion": "eu-west-1"}}),
            )])],
            Call::DescribeVpcs,
            Expect::Deny(NO_IDENTITY_ALLOW),
        ),
        case(
            "aws:PrincipalArn is the role's ARN",
            vec![policy(&[statement(
                "Allow",
                json!("ec2:DescribeVpcs"),
                json!({"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/case-*"}}),
            )])],
            Call::DescribeVpcs,
            Expect::Allow,
        ),
        case(
            "aws:SecureTransport holds (AWS endpoints are HTTPS)",
            vec![policy(&[
                statement("Allow", json!("ec2:DescribeVpcs"), Value::Null),
                statement(
                    "Deny",
                    json!("*"),
                    json!({"Bool": {"aws:SecureTransport": "false"}}),
                ),
            ])],
            Call::DescribeVpcs,
            Expect::Allow,
        ),
        case(
            "iam:GetRole on the role's own ARN",
            vec![policy(&[
                json!({"Effect": "Allow", "Action": "iam:GetRole",
                                 "Resource": "arn:aws:iam::*:role/case-*"}),
            ])],
            Call::GetOwnRole,
            Expect::Allow,
        ),
        // What IAM does not evaluate, and what the gate refuses to guess.
        case(
            "sts:GetCallerIdentity needs no permission",
            vec![policy(&[statement("Deny", json!("*"), Value::Null)])],
            Call::GetCallerIdentity,
            Expect::Allow,
        ),
        case(
            "an action the gate does not know is denied",
            vec![allow("*")],
            Call::DescribeStacks,
            Expect::Deny("unknown to the gate"),
        ),
        case(
            "an operator the gate cannot evaluate denies",
            vec![policy(&[
                statement("Allow", json!("*"), Value::Null),
                statement(
                    "Deny",
                    json!("*"),
                    json!({"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
                ),
            ])],
            Call::DescribeVpcs,
            Expect::Deny("cannot be evaluated by the gate"),
        ),
    ];
    all
}

fn ec2(config: &SdkConfig) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::from_conf(
        aws_sdk_ec2::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

fn iam(config: &SdkConfig) -> aws_sdk_iam::Client {
    aws_sdk_iam::Client::from_conf(
        aws_sdk_iam::config::Builder::from(config)
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

fn ec2_tags(tags: Tags) -> Vec<aws_sdk_ec2::types::Tag> {
    tags.iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(*k).value(*v).build())
        .collect()
}

/// A VPC the customer made (directly in moto) with these tags.
async fn customer_vpc(customer: &CustomerAccount, tags: Tags) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&customer.admin_config());
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.9.0.0/16")
        .send()
        .await
        .unwrap();
    let id = vpc.vpc().unwrap().vpc_id().unwrap().to_owned();
    if !tags.is_empty() {
        ec2.create_tags()
            .resources(&id)
            .set_tags(Some(ec2_tags(tags)))
            .send()
            .await
            .unwrap();
    }
    id
}

/// The role of a case, made in moto by the customer, and a session of it
/// issued through the gate.
async fn session_for(aws: &Aws, customer: &CustomerAccount, name: &str, c: &Case) -> SdkConfig {
    customer
        .create_role(
            name,
            &xrole_trust_policy(&aws.saas_principal_arn(), EXT),
            3600,
        )
        .await
        .unwrap();
    let admin = aws_sdk_iam::Client::new(&customer.admin_config());
    for (i, p) in c.policies.iter().enumerate() {
        admin
            .put_role_policy()
            .role_name(name)
            .policy_name(format!("p{i}"))
            .policy_document(p.to_string())
            .send()
            .await
            .unwrap();
    }
    if let Some(b) = &c.boundary {
        let created = admin
            .create_policy()
            .policy_name(format!("{name}-boundary"))
            .policy_document(b.to_string())
            .send()
            .await
            .unwrap();
        admin
            .put_role_permissions_boundary()
            .role_name(name)
            .permissions_boundary(created.policy().unwrap().arn().unwrap())
            .send()
            .await
            .unwrap();
    }
    if !c.role_tags.is_empty() {
        let tags = c.role_tags.iter().map(|(k, v)| {
            aws_sdk_iam::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
                .unwrap()
        });
        admin
            .tag_role()
            .role_name(name)
            .set_tags(Some(tags.collect()))
            .send()
            .await
            .unwrap();
    }
    let role = format!("arn:aws:iam::{}:role/{name}", customer.account_id());
    let mut req = saas_sts(aws)
        .assume_role()
        .role_arn(role)
        .role_session_name("case")
        .external_id(EXT)
        .set_policy(c.session_policy.as_ref().map(Value::to_string));
    for (k, v) in c.session_tags {
        req = req.tags(
            aws_sdk_sts::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build()
                .unwrap(),
        );
    }
    let out = req.send().await.unwrap();
    aws.config_for(creds(out.credentials().unwrap()))
}

/// Makes what the call needs (as the customer, directly in moto) and
/// returns the call to make.
async fn prepare(customer: &CustomerAccount, call: Call) -> Option<String> {
    match call {
        Call::DeleteVpc(tags) => Some(customer_vpc(customer, tags).await),
        Call::TagVpc { existing, .. } => Some(customer_vpc(customer, existing).await),
        _ => None,
    }
}

/// Runs the call with `config`; `Err` is the error code.
async fn make(config: &SdkConfig, role: &str, call: Call, vpc: Option<&str>) -> Result<(), String> {
    let code = |e: &dyn aws_sdk_ec2::error::ProvideErrorMetadata| {
        e.code().unwrap_or("(no code)").to_owned()
    };
    match call {
        Call::DescribeVpcs => ec2(config)
            .describe_vpcs()
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::DescribeSubnets => ec2(config)
            .describe_subnets()
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::CreateVpc(tags) => {
            let mut req = ec2(config).create_vpc().cidr_block("10.8.0.0/16");
            if !tags.is_empty() {
                req = req.tag_specifications(
                    aws_sdk_ec2::types::TagSpecification::builder()
                        .resource_type(aws_sdk_ec2::types::ResourceType::Vpc)
                        .set_tags(Some(ec2_tags(tags)))
                        .build(),
                );
            }
            req.send().await.map(drop).map_err(|e| code(&e))
        }
        Call::DeleteVpc(_) => ec2(config)
            .delete_vpc()
            .vpc_id(vpc.unwrap())
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::TagVpc { new, .. } => ec2(config)
            .create_tags()
            .resources(vpc.unwrap())
            .set_tags(Some(ec2_tags(new)))
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::GetOwnRole => iam(config)
            .get_role()
            .role_name(role)
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::GetCallerIdentity => no_retry_sts(config)
            .get_caller_identity()
            .send()
            .await
            .map(drop)
            .map_err(|e| code(&e)),
        Call::DescribeStacks => {
            let cfn = aws_sdk_cloudformation::Client::from_conf(
                aws_sdk_cloudformation::config::Builder::from(config)
                    .retry_config(RetryConfig::disabled())
                    .build(),
            );
            cfn.describe_stacks()
                .send()
                .await
                .map(drop)
                .map_err(|e| code(&e))
        }
    }
}

#[tokio::test]
async fn aws_policy_evaluation_examples() {
    let (aws, customer, _role) = setup().await;
    let mut failures = Vec::new();
    let mut sessions = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let role = format!("case-{i}");
        let session = session_for(&aws, &customer, &role, c).await;
        let vpc = prepare(&customer, c.call).await;
        let denials_before = aws.gate().denials().len();
        let got = make(&session, &role, c.call, vpc.as_deref()).await;
        let denials = aws.gate().denials();
        match (c.expect, &got) {
            (Expect::Allow, Ok(())) => {}
            (Expect::Deny(reason), Err(code)) => {
                let expected_code = match c.call {
                    Call::DescribeVpcs
                    | Call::DescribeSubnets
                    | Call::CreateVpc(_)
                    | Call::DeleteVpc(_)
                    | Call::TagVpc { .. } => "UnauthorizedOperation",
                    _ => "AccessDenied",
                };
                let last: Vec<&Decision> = denials[denials_before..].iter().collect();
                let explained = last.iter().any(|d| d.reason.contains(reason));
                if code != expected_code || !explained {
                    failures.push(format!(
                        "{}: denied with {code}, gate said {:?}",
                        c.name,
                        last.iter().map(|d| &d.reason).collect::<Vec<_>>()
                    ));
                }
                // Every denial names the session.
                assert!(
                    last.iter()
                        .all(|d| d.principal.ends_with(&format!(":assumed-role/{role}/case"))),
                    "{last:?}"
                );
            }
            (want, got) => failures.push(format!("{}: expected {want:?}, got {got:?}", c.name)),
        }
        sessions.push((session, role, vpc, got.is_ok()));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // moto's own IAM mode (actions only, no conditions) decides the same
    // for the cases that need nothing more. It authenticates every request
    // once switched on, so the fixtures are made first.
    let cases = cases();
    let mut fixtures = Vec::new();
    for (i, c) in cases.iter().enumerate().filter(|(_, c)| c.moto_agrees) {
        fixtures.push((i, prepare(&customer, c.call).await));
    }
    let moto_auth = |on: bool| {
        let url = format!("{}/moto-api/reset-auth", aws.moto_endpoint());
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .body(if on { "0" } else { "inf" })
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success());
        }
    };
    moto_auth(true).await;
    let mut disagreements = Vec::new();
    for (i, vpc) in fixtures {
        let (session, role, _, gate_allowed) = &sessions[i];
        let direct = moto_config(&aws, session);
        let moto_allowed = make(&direct, role, cases[i].call, vpc.as_deref())
            .await
            .is_ok();
        if moto_allowed != *gate_allowed {
            disagreements.push(format!(
                "{}: gate allowed={gate_allowed}, moto allowed={moto_allowed}",
                cases[i].name
            ));
        }
    }
    moto_auth(false).await;
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

/// The same credentials, talking to moto directly.
fn moto_config(aws: &Aws, via_gate: &SdkConfig) -> SdkConfig {
    via_gate
        .to_builder()
        .endpoint_url(aws.moto_endpoint())
        .build()
}

/// A role allowed to describe VPCs, and a session of it.
async fn describer(aws: &Aws, customer: &CustomerAccount, name: &str) -> SdkConfig {
    let c = case(
        "describer",
        vec![allow("ec2:DescribeVpcs")],
        Call::DescribeVpcs,
        Expect::Allow,
    );
    session_for(aws, customer, name, &c).await
}

async fn describe(config: &SdkConfig) -> Result<(), String> {
    make(config, "", Call::DescribeVpcs, None).await
}

/// AWS's "Revoke active sessions": a Deny on `aws:TokenIssueTime` older
/// than the moment of revocation stops the sessions issued before it, not
/// those issued after, from the very next request.
#[tokio::test]
async fn token_issue_time_revokes_sessions_issued_before() {
    let (aws, customer, _role) = setup().await;
    let old = describer(&aws, &customer, "revoked").await;
    assert_eq!(describe(&old).await, Ok(()));
    // aws:TokenIssueTime has whole seconds: leave a second on either side.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let revoked_at = aws_smithy_types::DateTime::from(SystemTime::now())
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = saas_sts(&aws)
        .assume_role()
        .role_arn(format!(
            "arn:aws:iam::{}:role/revoked",
            customer.account_id()
        ))
        .role_session_name("fresh")
        .external_id(EXT)
        .send()
        .await
        .unwrap();
    let fresh = aws.config_for(creds(out.credentials().unwrap()));
    aws_sdk_iam::Client::new(&customer.admin_config())
        .put_role_policy()
        .role_name("revoked")
        .policy_name("AWSRevokeOlderSessions")
        .policy_document(
            policy(&[statement(
                "Deny",
                json!("*"),
                json!({"DateLessThan": {"aws:TokenIssueTime": revoked_at}}),
            )])
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&old).await,
        Err("UnauthorizedOperation".to_owned())
    );
    let reason = aws.gate().denials().last().unwrap().reason.clone();
    assert!(reason.contains("AWSRevokeOlderSessions"), "{reason}");
    assert_eq!(describe(&fresh).await, Ok(()));
}

/// Customers edit roles behind the gate's back (console, CloudFormation):
/// a kill switch, a removed permission, a new managed policy version and a
/// changed trust policy all hold from the next request.
#[tokio::test]
async fn role_edits_hold_from_the_next_request() {
    let (aws, customer, _role) = setup().await;
    let session = describer(&aws, &customer, "edited").await;
    let admin = aws_sdk_iam::Client::new(&customer.admin_config());
    assert_eq!(describe(&session).await, Ok(()));

    // The kill switch: a Deny of everything.
    admin
        .put_role_policy()
        .role_name("edited")
        .policy_name("kill-switch")
        .policy_document(policy(&[statement("Deny", json!("*"), Value::Null)]).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&session).await,
        Err("UnauthorizedOperation".to_owned())
    );
    admin
        .delete_role_policy()
        .role_name("edited")
        .policy_name("kill-switch")
        .send()
        .await
        .unwrap();
    assert_eq!(describe(&session).await, Ok(()));

    // The permission removed: an implicit deny.
    admin
        .delete_role_policy()
        .role_name("edited")
        .policy_name("p0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&session).await,
        Err("UnauthorizedOperation".to_owned())
    );

    // A managed policy grants it again; its next default version does not.
    let managed = admin
        .create_policy()
        .policy_name("describe")
        .policy_document(allow("ec2:DescribeVpcs").to_string())
        .send()
        .await
        .unwrap();
    let arn = managed.policy().unwrap().arn().unwrap().to_owned();
    admin
        .attach_role_policy()
        .role_name("edited")
        .policy_arn(&arn)
        .send()
        .await
        .unwrap();
    assert_eq!(describe(&session).await, Ok(()));
    admin
        .create_policy_version()
        .policy_arn(&arn)
        .policy_document(allow("ec2:DescribeSubnets").to_string())
        .set_as_default(true)
        .send()
        .await
        .unwrap();
    assert_eq!(
        describe(&session).await,
        Err("UnauthorizedOperation".to_owned())
    );

    // A trust policy that no longer names the SaaS: the next AssumeRole fails.
    let assume = || {
        saas_sts(&aws)
            .assume_role()
            .role_arn(format!(
                "arn:aws:iam::{}:role/edited",
                customer.account_id()
            ))
            .role_session_name("again")
            .external_id(EXT)
            .send()
    };
    assert!(assume().await.is_ok());
    admin
        .update_assume_role_policy()
        .role_name("edited")
        .policy_document(xrole_trust_policy(
            &aws.saas_principal_arn(),
            "another-external-id",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(code(assume().await), "AccessDenied");
}

/// Enforcement off lets a denied request through (still counted and, while
/// recording, recorded); recording lists every authorization; counters
/// count per action and decision; the control API says the same.
#[tokio::test]
async fn enforcement_switch_recording_and_counters() {
    let (aws, customer, _role) = setup().await;
    let session = describer(&aws, &customer, "switched").await;
    let gate = aws.gate();
    assert!(gate.enforcing());
    gate.record(true);
    assert_eq!(describe(&session).await, Ok(()));
    let subnets = || make(&session, "", Call::DescribeSubnets, None);
    assert_eq!(subnets().await, Err("UnauthorizedOperation".to_owned()));
    gate.enforce(false);
    assert!(!gate.enforcing());
    assert_eq!(subnets().await, Ok(()));
    gate.enforce(true);
    assert_eq!(subnets().await, Err("UnauthorizedOperation".to_owned()));

    let recorded = gate.recorded();
    let summary: Vec<(&str, &str, bool, bool)> = recorded
        .iter()
        .map(|d| {
            (
                d.action.as_str(),
                d.resource.as_str(),
                d.allowed,
                d.enforced,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ec2:DescribeVpcs", "*", true, true),
            ("ec2:DescribeSubnets", "*", false, true),
            ("ec2:DescribeSubnets", "*", false, false),
            ("ec2:DescribeSubnets", "*", false, true),
        ]
    );
    assert!(
        recorded[0].reason.contains("inline policy p0"),
        "{:?}",
        recorded[0]
    );
    assert_eq!(
        gate.decision_count("ec2:DescribeSubnets", Verdict::Denied),
        3
    );
    assert_eq!(gate.decision_count("ec2:DescribeVpcs", Verdict::Allowed), 1);
    assert_eq!(
        gate.http_api(
            "decision_count",
            "action=ec2:DescribeSubnets&decision=denied"
        )
        .as_deref(),
        Ok("3")
    );
    let over_http: Vec<Value> =
        serde_json::from_str(&gate.http_api("recorded", "").unwrap()).unwrap();
    assert_eq!(over_http.len(), 4);
    assert_eq!(over_http[1]["action"], "ec2:DescribeSubnets");
    assert_eq!(over_http[1]["allowed"], false);
    assert_eq!(over_http[1]["principal"], recorded[1].principal.as_str());
    assert_eq!(gate.denials().len(), 3);
    gate.record(false);
    assert_eq!(describe(&session).await, Ok(()));
    assert_eq!(gate.recorded().len(), 4, "not recording any more");
    gate.reset_counters();
    assert_eq!(
        gate.decision_count("ec2:DescribeSubnets", Verdict::Denied),
        0
    );

    // Other credentials are never evaluated: the customer's admin through
    // the gate has no policy at all, and the SaaS identity's own policy
    // allows only AssumeRole.
    let admin = aws.config_for(customer.admin_credentials());
    assert_eq!(subnets_with(&admin).await, Ok(()));
    assert_eq!(subnets_with(&aws.saas_config()).await, Ok(()));
    assert_eq!(gate.denials().len(), 3);
}

async fn subnets_with(config: &SdkConfig) -> Result<(), String> {
    make(config, "", Call::DescribeSubnets, None).await
}

/// Each protocol's AccessDenied shape, and EC2's encoded message, which
/// `sts:DecodeAuthorizationMessage` turns into the request's context.
#[tokio::test]
async fn denials_are_shaped_like_aws_and_decodable() {
    let (aws, customer, _role) = setup().await;
    let session = describer(&aws, &customer, "shaped").await;
    let who = format!(
        "arn:aws:sts::{}:assumed-role/shaped/case",
        customer.account_id()
    );

    let e = ec2(&session)
        .create_vpc()
        .cidr_block("10.7.0.0/16")
        .send()
        .await;
    let (code, message) = error(e);
    assert_eq!(code, "UnauthorizedOperation");
    let prefix = format!(
        "You are not authorized to perform this operation. User: {who} is not authorized to \
         perform: ec2:CreateVpc on resource: arn:aws:ec2:us-east-1:{}:vpc/* because no \
         identity-based policy allows the ec2:CreateVpc action. Encoded authorization failure message: ",
        customer.account_id()
    );
    assert!(message.starts_with(&prefix), "{message}");
    let encoded = &message[prefix.len()..];
    // The SaaS identity decodes it (its own requests are not evaluated).
    let decoded = saas_sts(&aws)
        .decode_authorization_message()
        .encoded_message(encoded)
        .send()
        .await
        .unwrap();
    let decoded: Value = serde_json::from_str(decoded.decoded_message().unwrap()).unwrap();
    assert_eq!(decoded["allowed"], false);
    assert_eq!(decoded["explicitDeny"], false);
    assert_eq!(decoded["context"]["action"], "ec2:CreateVpc");
    assert_eq!(decoded["context"]["principal"]["arn"], who.as_str());
    let keys: Vec<&str> = decoded["context"]["conditions"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.contains(&"aws:PrincipalArn") && keys.contains(&"aws:TokenIssueTime"),
        "{keys:?}"
    );
    // Decoding is an action of its own for a session.
    let (code, _) = error(
        no_retry_sts(&session)
            .decode_authorization_message()
            .encoded_message(encoded)
            .send()
            .await,
    );
    assert_eq!(code, "AccessDenied");
    let (code, _) = error(
        saas_sts(&aws)
            .decode_authorization_message()
            .encoded_message("not-a-message")
            .send()
            .await,
    );
    assert_eq!(code, "InvalidAuthorizationMessageException");

    // A protocol without an Action (S3's REST API): the gate cannot name
    // the action, so the session is refused rather than let through.
    let key = aws
        .gate()
        .issued_credentials()
        .last()
        .unwrap()
        .access_key_id
        .clone();
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/s3/aws4_request, \
         SignedHeaders=host, Signature=0"
    );
    let put = reqwest::Client::new()
        .put(format!("{}/some-bucket", aws.endpoint()))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 403);
    assert!(
        put.text()
            .await
            .unwrap()
            .contains("<Code>AccessDenied</Code>")
    );
    let last = aws.gate().denials().last().unwrap().clone();
    assert_eq!(last.action, "s3:PUT /some-bucket");
    assert!(last.reason.contains("unknown to the gate"), "{last:?}");

    // IAM and STS: AccessDenied with AWS's sentence.
    let (code, message) = error(iam(&session).get_role().role_name("shaped").send().await);
    assert_eq!(code, "AccessDenied");
    assert_eq!(
        message,
        format!(
            "User: {who} is not authorized to perform: iam:GetRole on resource: \
             arn:aws:iam::{}:role/shaped because no identity-based policy allows the iam:GetRole action",
            customer.account_id()
        )
    );
    // RDS: AccessDenied.
    let rds = aws_sdk_rds::Client::from_conf(
        aws_sdk_rds::config::Builder::from(&session)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let (code, message) = error(rds.describe_db_instances().send().await);
    assert_eq!(code, "AccessDenied");
    assert!(
        message.ends_with("allows the rds:DescribeDBInstances action"),
        "{message}"
    );
    // JSON protocols (SSM): AccessDeniedException.
    let ssm = aws_sdk_ssm::Client::from_conf(
        aws_sdk_ssm::config::Builder::from(&session)
            .retry_config(RetryConfig::disabled())
            .build(),
    );
    let (code, message) = error(
        ssm.get_parameter()
            .name("/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")
            .send()
            .await,
    );
    assert_eq!(code, "AccessDeniedException");
    assert!(
        message.contains(
            "on resource: arn:aws:ssm:us-east-1::parameter/aws/service/ami-amazon-linux-latest/"
        ),
        "{message}"
    );
}

/// A request on a resource that does not exist (a teardown repeated after
/// a crash) gets moto's NotFound, not a denial its missing tags would cause;
/// an existing resource without the tag is still denied.
#[tokio::test]
async fn a_missing_resource_is_left_to_motos_not_found() {
    let (aws, customer, _role) = setup().await;
    let c = case(
        "tag-scoped delete",
        vec![policy(&[statement(
            "Allow",
            json!("ec2:DeleteVpc"),
            json!({"StringEquals": {"aws:ResourceTag/team": "blue"}}),
        )])],
        Call::DeleteVpc(&[]),
        Expect::Allow,
    );
    let session = session_for(&aws, &customer, "scoped", &c).await;
    let gone = make(
        &session,
        "",
        Call::DeleteVpc(&[]),
        Some("vpc-0123456789abcdef0"),
    )
    .await;
    assert_eq!(gone, Err("InvalidVpcID.NotFound".to_owned()));
    assert_eq!(aws.gate().denials(), []);
    assert_eq!(
        aws.gate().decision_count("ec2:DeleteVpc", Verdict::Allowed),
        1
    );
    let theirs = customer_vpc(&customer, &[]).await;
    let denied = make(&session, "", Call::DeleteVpc(&[]), Some(&theirs)).await;
    assert_eq!(denied, Err("UnauthorizedOperation".to_owned()));
}

/// Role chaining: the chained session carries the first session's
/// transitive tags and source identity, as AWS does.
#[tokio::test]
async fn role_chaining_carries_transitive_tags_and_source_identity() {
    let (aws, customer, _role) = setup().await;
    customer
        .create_role(
            "first",
            &xrole_trust_policy(&aws.saas_principal_arn(), EXT),
            3600,
        )
        .await
        .unwrap();
    allow_role_chaining(&customer, "first").await;
    let second = format!("arn:aws:iam::{}:role/second", customer.account_id());
    customer
        .create_role(
            "second",
            &trust(
                json!({"AWS": format!("arn:aws:iam::{}:role/first", customer.account_id())}),
                &["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
                Value::Null,
            ),
            3600,
        )
        .await
        .unwrap();
    aws_sdk_iam::Client::new(&customer.admin_config())
        .put_role_policy()
        .role_name("second")
        .policy_name("p0")
        .policy_document(
            policy(&[statement(
                "Allow",
                json!("ec2:DescribeVpcs"),
                json!({"StringEquals": {"aws:PrincipalTag/team": "blue",
                                        "aws:SourceIdentity": "alice"}}),
            )])
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let tag = |k: &str, v: &str| {
        aws_sdk_sts::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
            .unwrap()
    };
    let first = format!("arn:aws:iam::{}:role/first", customer.account_id());
    let chain = |transitive: bool| {
        let aws = &aws;
        let (first, second) = (first.clone(), second.clone());
        async move {
            let mut req = saas_sts(aws)
                .assume_role()
                .role_arn(first)
                .role_session_name("first")
                .external_id(EXT)
                .source_identity("alice")
                .tags(tag("team", "blue"));
            if transitive {
                req = req.transitive_tag_keys("team");
            }
            let one = req.send().await.unwrap();
            let two = session_sts(aws, one.credentials().unwrap())
                .assume_role()
                .role_arn(second)
                .role_session_name("second")
                .send()
                .await
                .unwrap();
            aws.config_for(creds(two.credentials().unwrap()))
        }
    };
    assert_eq!(describe(&chain(true).await).await, Ok(()));
    assert_eq!(
        describe(&chain(false).await).await,
        Err("UnauthorizedOperation".to_owned())
    );
}
