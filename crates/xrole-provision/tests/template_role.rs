//! The executor with the role a customer deploys from the project's
//! template (`cloudformation/xrole-role.yaml`), its policies enforced by the
//! testkit gate as IAM would: `Provisioning` builds and tears down the full
//! environment without one denial; `ReadOnly` stops at the first creates
//! (the VPC and the internet gateway, which need nothing and start
//! together), having created nothing.
//!
//! The least-privilege test records every action xrole's session calls over
//! the whole flow and compares it with what the template grants, per access
//! level: nothing granted goes unused, nothing used is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use serde_json::Value;
use xrole_assume::{AwsAccountId, VerifyOptions, VerifyOutcome};
use xrole_provision::{
    Error, ExecutorOptions, InMemoryJournal, JobId, JournalEntry, StepJournal, StepKey,
};
use xrole_testkit::{AccessLevel, CustomerAccount, Verdict};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_level_builds_and_tears_down_the_full_environment() {
    let w = template_world(AccessLevel::Provisioning).await;
    assert!(w.aws.gate().enforcing());
    let plan = full_plan();
    let job = JobId::new();
    let exec = executor(&w, InMemoryJournal::new(), job).with_options(ExecutorOptions {
        final_snapshot: None,
        ..fast_options()
    });
    exec.apply(&plan).await.unwrap();
    let admin = w.customer.admin_config();
    assert_eq!(counts(&tagged(&admin, job).await), expected_full());
    let rds = aws_sdk_rds::Client::new(&admin);
    let dbs = rds.describe_db_instances().send().await.unwrap();
    assert_eq!(dbs.db_instances().len(), 1);
    assert_eq!(dbs.db_instances()[0].deletion_protection(), Some(true));
    exec.teardown(&plan).await.unwrap();
    assert_eq!(counts(&tagged(&admin, job).await), expected_none());
    // Asked for no final snapshot: none.
    let snapshots = rds.describe_db_snapshots().send().await.unwrap();
    assert_eq!(snapshots.db_snapshots().len(), 0);
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

/// Records intents only, as a process that died after every AWS call would
/// have: a later teardown must find each resource by its tags.
struct IntentsOnly(Arc<InMemoryJournal>);

impl StepJournal for IntentsOnly {
    async fn record_intent(&self, job: JobId, step: &StepKey) -> Result<(), Error> {
        self.0.record_intent(job, step).await
    }

    async fn record_result(
        &self,
        _job: JobId,
        _step: &StepKey,
        _aws_id: &str,
    ) -> Result<(), Error> {
        Ok(())
    }

    async fn load(&self, job: JobId) -> Result<Vec<JournalEntry>, Error> {
        self.0.load(job).await
    }
}

/// The actions a role's policies allow (Allow statements), and the
/// statements (by Sid) that allow a mutating action without a tag
/// condition.
async fn grants(customer: &CustomerAccount, role: &str) -> (BTreeSet<String>, Vec<String>) {
    let name = role.rsplit('/').next().unwrap();
    let mut actions = BTreeSet::new();
    let mut untagged = Vec::new();
    for (_, doc) in customer.role_policies(name).await.unwrap() {
        let statements = match &doc["Statement"] {
            Value::Array(a) => a.clone(),
            one => vec![one.clone()],
        };
        for st in statements {
            if st["Effect"] != "Allow" {
                continue;
            }
            assert!(st.get("NotAction").is_none(), "{st}");
            let list: Vec<String> = match &st["Action"] {
                Value::String(a) => vec![a.clone()],
                Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
                other => panic!("Action {other}"),
            };
            for a in &list {
                assert!(!a.contains('*'), "a wildcard action is granted: {a}");
            }
            let mutating = list.iter().any(|a| !is_read(a));
            let condition = st
                .get("Condition")
                .map(Value::to_string)
                .unwrap_or_default();
            let tag_bound = ["aws:RequestTag/", "aws:ResourceTag/", "ec2:CreateAction"]
                .iter()
                .any(|k| condition.contains(k));
            if mutating && !tag_bound {
                untagged.push(st["Sid"].as_str().unwrap_or("(no Sid)").to_owned());
            }
            actions.extend(list);
        }
    }
    (actions, untagged)
}

fn is_read(action: &str) -> bool {
    let verb = action.split_once(':').map_or(action, |(_, v)| v);
    ["Describe", "Get", "List"]
        .iter()
        .any(|p| verb.starts_with(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_grants_exactly_the_actions_xrole_calls() {
    let w = template_world(AccessLevel::Provisioning).await;
    let gate = w.aws.gate();
    gate.record(true);

    // Verification (the trust-policy audit reads the role itself).
    let account = AwsAccountId::parse(w.customer.account_id()).unwrap();
    let options = VerifyOptions::new()
        .trusted_principal(w.aws.saas_principal_arn())
        .wait_for_propagation(false);
    let outcome = w
        .broker
        .verify_link_with(&w.role, &w.external_id, &account, &options)
        .await
        .unwrap();
    assert!(
        matches!(outcome, VerifyOutcome::Verified { .. }),
        "{outcome:?}"
    );

    // The full build, then a teardown that must find every resource by its
    // tags (each result was lost), with the default final snapshot.
    let plan = full_plan();
    let job = JobId::new();
    let journal = Arc::new(InMemoryJournal::new());
    executor(&w, IntentsOnly(journal.clone()), job)
        .apply(&plan)
        .await
        .unwrap();
    let admin = w.customer.admin_config();
    assert_eq!(counts(&tagged(&admin, job).await), expected_full());
    executor(&w, journal, job).teardown(&plan).await.unwrap();
    assert_eq!(counts(&tagged(&admin, job).await), expected_none());
    assert_eq!(gate.denials(), []);

    // The database was protected, and is kept as a tagged final snapshot.
    let snapshots = aws_sdk_rds::Client::new(&admin)
        .describe_db_snapshots()
        .send()
        .await
        .unwrap();
    let names: Vec<&str> = snapshots
        .db_snapshots()
        .iter()
        .filter_map(|s| s.db_snapshot_identifier())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(
        names[0].starts_with("xrole-demo-main-") && names[0].ends_with("-final"),
        "{names:?}"
    );
    assert!(gate.decision_count("rds:ModifyDBInstance", Verdict::Allowed) >= 1);
    assert!(gate.decision_count("rds:CreateDBSnapshot", Verdict::Allowed) >= 2);

    let used: BTreeSet<String> = gate
        .recorded()
        .into_iter()
        .filter(|d| d.allowed)
        .map(|d| d.action)
        // Needs no permission (the STS API reference).
        .filter(|a| a != "sts:GetCallerIdentity")
        .collect();
    let (granted, untagged) = grants(&w.customer, w.role.as_str()).await;
    let unused: Vec<&String> = granted.difference(&used).collect();
    let missing: Vec<&String> = used.difference(&granted).collect();
    assert!(unused.is_empty(), "granted but never called: {unused:?}");
    assert!(missing.is_empty(), "called but not granted: {missing:?}");
    // Every statement that allows a change is bound to xrole's tags, except
    // these, each bound otherwise (see cloudformation/xrole-role.yaml):
    // the public image and the instance's own interface; AWS's default
    // parameter and option groups; the final snapshot, allowed only with a
    // database the tag-bound statement allows; the password secret RDS
    // makes (aws:CalledVia); RDS's service-linked role (iam:AWSServiceName).
    assert_eq!(
        untagged,
        [
            "RunInstancesImageAndInterface",
            "CreateDatabasesWithDefaultGroups",
            "FinalSnapshots",
            "RdsCreatesItsPasswordSecret",
            "RdsServiceLinkedRole",
        ]
    );

    // ReadOnly grants exactly the reads among them.
    let reader = w.aws.customer().await.unwrap();
    let ro_role = reader
        .deploy_role_template(
            &w.aws.saas_principal_arn(),
            w.external_id.as_str(),
            AccessLevel::ReadOnly,
        )
        .await
        .unwrap();
    let (ro, ro_untagged) = grants(&reader, &ro_role).await;
    let reads: BTreeSet<String> = used.iter().filter(|a| is_read(a)).cloned().collect();
    assert_eq!(ro, reads);
    assert!(ro_untagged.is_empty(), "{ro_untagged:?}");
}
