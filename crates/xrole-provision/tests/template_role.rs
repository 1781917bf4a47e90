//! The executor with the role a customer deploys from the project's
//! template (`cloudformation/xrole-role.yaml`), its policies enforced by the
//! testkit gate as IAM would: `Provisioning` builds and tears down the full
//! environment without one denial; `ReadOnly` stops at the first creates
//! (the VPC and the internet gateway, which need nothing and start
//! together), having created nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use xrole_provision::{Error, InMemoryJournal, JobId};
use xrole_testkit::{AccessLevel, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_level_builds_and_tears_down_the_full_environment() {
    let w = template_world(AccessLevel::Provisioning).await;
    assert!(w.aws.gate().enforcing());
    let plan = full_plan();
    let job = JobId::new();
    let exec = executor(&w, InMemoryJournal::new(), job);
    exec.apply(&plan).await.unwrap();
    let admin = w.customer.admin_config();
    assert_eq!(counts(&tagged(&admin, job).await), expected_full());
    exec.teardown(&plan).await.unwrap();
    assert_eq!(counts(&tagged(&admin, job).await), expected_none());
    let gate = w.aws.gate();
    assert_eq!(gate.denials(), []);
    // Every call was decided by the template's policies, not waved through.
    for action in [
        "ec2:CreateVpc",
        "ec2:RunInstances",
        "ec2:DeleteVpc",
        "rds:CreateDBInstance",
        "secretsmanager:CreateSecret",
        "rds:DeleteDBInstance",
    ] {
        assert!(
            gate.decision_count(action, Verdict::Allowed) >= 1,
            "{action}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_level_is_denied_at_the_first_creates() {
    let w = template_world(AccessLevel::ReadOnly).await;
    let plan = full_plan();
    let job = JobId::new();
    let exec = executor(&w, InMemoryJournal::new(), job);
    match exec.apply(&plan).await {
        Err(e @ Error::Unauthorized { .. }) => {
            assert!(!e.is_retryable());
            let Error::Unauthorized { action, .. } = &e else {
                unreachable!()
            };
            assert!(
                ["ec2:CreateVpc", "ec2:CreateInternetGateway"].contains(&action.as_str()),
                "{action}"
            );
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    assert_eq!(
        counts(&tagged(&w.customer.admin_config(), job).await),
        expected_none()
    );
    let gate = w.aws.gate();
    assert_eq!(gate.count("CreateVpc"), 1);
    assert!(gate.count("CreateInternetGateway") <= 1);
    for later in [
        "CreateSubnet",
        "CreateRouteTable",
        "RunInstances",
        "CreateDBInstance",
    ] {
        assert_eq!(gate.count(later), 0, "{later}");
    }
    // Each create is refused, and so is the tagging that comes with it.
    let denials = gate.denials();
    let denied: Vec<&str> = denials.iter().map(|d| d.action.as_str()).collect();
    assert!(denied.contains(&"ec2:CreateVpc"), "{denied:?}");
    assert!(
        denied.iter().all(|a| [
            "ec2:CreateVpc",
            "ec2:CreateInternetGateway",
            "ec2:CreateTags"
        ]
        .contains(a)),
        "{denied:?}"
    );
}
