//! The full environment in a customer account through the broker and the
//! gate: placement, tags, settings, teardown, errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};

use aws_sdk_ec2::types::Filter;
use common::*;
use xrole_provision::{Error, InMemoryJournal, JobId, Progress, StepKey};
use xrole_testkit::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_environment_lands_in_the_customer_account_tagged_and_teardown_leaves_nothing() {
    let w = world().await;
    let plan = full_plan();
    let job = JobId::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let exec = executor(&w, InMemoryJournal::new(), job)
        .on_progress(move |p| sink.lock().unwrap().push(p.clone()));
    let env = exec.apply(&plan).await.unwrap();

    let admin = w.customer.admin_config();
    let found = tagged(&admin, job).await;
    assert_eq!(counts(&found), expected_full());
    assert_eq!(found["vpc"], std::slice::from_ref(&env.vpc_id));
    assert_eq!(found["instance"], env.instance_ids["web"]);

    // Nothing in the SaaS account; every create was made as the customer.
    assert_eq!(
        counts(&tagged(&w.aws.saas_config(), job).await),
        expected_none()
    );
    for (action, n) in CREATES {
        assert_eq!(
            w.aws
                .gate()
                .count_for_account(action, w.customer.account_id()),
            *n,
            "{action}"
        );
        assert_eq!(
            w.aws
                .gate()
                .count_for_account(action, &w.aws.saas_account_id()),
            0,
            "{action}"
        );
    }

    // Owner and tags of every EC2 resource.
    let ec2 = aws_sdk_ec2::Client::new(&admin);
    let want_tags = |tags: &[aws_sdk_ec2::types::Tag], what: &str| {
        let get = |k: &str| {
            tags.iter()
                .find(|t| t.key() == Some(k))
                .and_then(|t| t.value())
                .map(str::to_owned)
        };
        assert_eq!(get("xrole:managed-by").as_deref(), Some("xrole"), "{what}");
        assert_eq!(get("xrole:org").as_deref(), Some("org_acme"), "{what}");
        assert_eq!(get("xrole:link").as_deref(), Some("link_1"), "{what}");
        assert_eq!(get("xrole:job"), Some(job.to_string()), "{what}");
        assert!(get("xrole:step").is_some(), "{what}");
        assert!(
            get("Name").is_some_and(|n| n.starts_with("demo-")),
            "{what}"
        );
    };
    let acct = Some(w.customer.account_id());
    let vpc = ec2
        .describe_vpcs()
        .vpc_ids(&env.vpc_id)
        .send()
        .await
        .unwrap();
    let vpc = &vpc.vpcs()[0];
    assert_eq!(vpc.owner_id(), acct);
    assert_eq!(vpc.cidr_block(), Some("10.42.0.0/16"));
    want_tags(vpc.tags(), "vpc");
    for attr in [
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsSupport,
        aws_sdk_ec2::types::VpcAttributeName::EnableDnsHostnames,
    ] {
        let a = ec2
            .describe_vpc_attribute()
            .vpc_id(&env.vpc_id)
            .attribute(attr.clone())
            .send()
            .await
            .unwrap();
        let on = a
            .enable_dns_support()
            .or(a.enable_dns_hostnames())
            .and_then(|v| v.value());
        assert_eq!(on, Some(true), "{attr:?}");
    }
    let subnets = ec2
        .describe_subnets()
        .filters(Filter::builder().name("vpc-id").values(&env.vpc_id).build())
        .send()
        .await
        .unwrap();
    let mut cidrs: Vec<_> = subnets
        .subnets()
        .iter()
        .map(|s| s.cidr_block().unwrap().to_owned())
        .collect();
    cidrs.sort();
    assert_eq!(
        cidrs,
        [
            "10.42.0.0/18",
            "10.42.128.0/18",
            "10.42.192.0/18",
            "10.42.64.0/18"
        ]
    );
    for s in subnets.subnets() {
        assert_eq!(s.owner_id(), acct);
        want_tags(s.tags(), "subnet");
    }
    let igw = ec2
        .describe_internet_gateways()
        .internet_gateway_ids(&env.internet_gateway_id)
        .send()
        .await
        .unwrap();
    let igw = &igw.internet_gateways()[0];
    assert_eq!(igw.owner_id(), acct);
    assert_eq!(igw.attachments()[0].vpc_id(), Some(env.vpc_id.as_str()));
    want_tags(igw.tags(), "igw");
    let rtb = ec2
        .describe_route_tables()
        .route_table_ids(&env.route_table_id)
        .send()
        .await
        .unwrap();
    let rtb = &rtb.route_tables()[0];
    want_tags(rtb.tags(), "route table");
    assert!(
        rtb.routes()
            .iter()
            .any(|r| r.destination_cidr_block() == Some("0.0.0.0/0")
                && r.gateway_id() == Some(env.internet_gateway_id.as_str()))
    );
    let mut assoc: Vec<_> = rtb
        .associations()
        .iter()
        .filter_map(|a| a.subnet_id())
        .collect();
    assoc.sort();
    let mut public: Vec<_> = env.public_subnet_ids.iter().map(String::as_str).collect();
    public.sort();
    assert_eq!(assoc, public);
    let sg = ec2
        .describe_security_groups()
        .group_ids(&env.security_group_ids["app"])
        .send()
        .await
        .unwrap();
    let sg = &sg.security_groups()[0];
    assert_eq!(sg.owner_id(), acct);
    want_tags(sg.tags(), "sg");
    assert_eq!(sg.ip_permissions().len(), 2);
    let inst = ec2
        .describe_instances()
        .instance_ids(&env.instance_ids["web"][0])
        .send()
        .await
        .unwrap();
    let inst = &inst.reservations()[0].instances()[0];
    want_tags(inst.tags(), "instance");
    assert_eq!(
        inst.metadata_options().and_then(|m| m.http_tokens()),
        Some(&aws_sdk_ec2::types::HttpTokensState::Required)
    );
    assert_eq!(inst.subnet_id(), Some(env.public_subnet_ids[0].as_str()));
    let vols = ec2
        .describe_volumes()
        .filters(
            Filter::builder()
                .name("attachment.instance-id")
                .values(inst.instance_id().unwrap())
                .build(),
        )
        .send()
        .await
        .unwrap();
    assert!(!vols.volumes().is_empty());
    for v in vols.volumes() {
        assert_eq!(v.encrypted(), Some(true), "root volume encrypted");
        want_tags(v.tags(), "volume");
    }

    // RDS settings.
    let rds = aws_sdk_rds::Client::new(&admin);
    let db = rds
        .describe_db_instances()
        .db_instance_identifier(&env.db_instance_identifiers["main"])
        .send()
        .await
        .unwrap();
    let db = &db.db_instances()[0];
    assert_eq!(db.storage_encrypted(), Some(true));
    assert_eq!(db.publicly_accessible(), Some(false));
    assert!(
        db.master_user_secret()
            .and_then(|s| s.secret_arn())
            .is_some_and(|a| a.contains(w.customer.account_id())),
        "password managed by RDS in the customer's Secrets Manager"
    );
    assert!(
        db.db_instance_arn()
            .unwrap()
            .contains(w.customer.account_id())
    );
    let mut db_subnets: Vec<_> = db
        .db_subnet_group()
        .unwrap()
        .subnets()
        .iter()
        .filter_map(|s| s.subnet_identifier())
        .collect();
    db_subnets.sort();
    let mut private: Vec<_> = env.private_subnet_ids.iter().map(String::as_str).collect();
    private.sort();
    assert_eq!(db_subnets, private);
    assert_eq!(
        db.vpc_security_groups()[0].vpc_security_group_id(),
        Some(env.security_group_ids["app"].as_str())
    );

    // Progress: every step started and finished.
    {
        let events = events.lock().unwrap();
        let done = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Progress::StepDone {
                        discovered: false,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(done, env.steps.len());
    }

    // Applying again is a no-op: the journal has every step.
    w.aws.gate().reset_counters();
    assert_eq!(exec.apply(&plan).await.unwrap(), env);
    for (action, _) in CREATES {
        assert_eq!(w.aws.gate().count(action), 0, "{action}");
    }

    exec.teardown(&plan).await.unwrap();
    assert_eq!(counts(&tagged(&admin, job).await), expected_none());
    // Teardown again: already done, nothing called.
    w.aws.gate().reset_counters();
    exec.teardown(&plan).await.unwrap();
    assert_eq!(w.aws.gate().count("DeleteVpc"), 0);
    // A torn-down job is not provisioned again by accident.
    assert!(matches!(
        exec.apply(&plan).await,
        Err(Error::Conflict { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_plans_are_rejected_before_any_aws_call() {
    let w = world().await;
    // Field checks happen on the plan itself.
    let mut plan = full_plan().plan().clone();
    plan.vpc.subnet_prefix = Some(29);
    plan.instances[0].security_groups = vec!["nope".into()];
    let Err(Error::InvalidPlan { problems }) = plan.validate() else {
        panic!("accepted")
    };
    let fields: Vec<_> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["vpc.subnet_prefix", "instances[0].security_groups[0]"]
    );

    // Zones outside the session's region are caught by the executor before its first call.
    let mut plan = full_plan().plan().clone();
    plan.vpc.availability_zones = vec!["eu-west-1a".into(), "us-east-1b".into()];
    let plan = plan.validate().unwrap();
    let exec = executor(&w, InMemoryJournal::new(), JobId::new());
    let Err(Error::InvalidPlan { problems }) = exec.apply(&plan).await else {
        panic!("accepted")
    };
    assert_eq!(problems[0].field, "vpc.availability_zones[0]");
    let Err(Error::InvalidPlan { .. }) = exec.teardown(&plan).await else {
        panic!("accepted")
    };
    for action in [
        "AssumeRole",
        "CreateVpc",
        "DescribeVpcs",
        "GetParameter",
        "CreateDBSubnetGroup",
    ] {
        assert_eq!(w.aws.gate().count(action), 0, "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_server_errors_are_absorbed_without_duplicates() {
    let w = world().await;
    let plan = full_plan();
    let job = JobId::new();
    let gate = w.aws.gate();
    gate.fail_next("CreateSubnet", 5, Fault::Throttling);
    gate.fail_next("RunInstances", 3, Fault::Http500);
    gate.fail_next("CreateVpc", 2, Fault::Http500);
    gate.fail_next("CreateDBInstance", 3, Fault::Throttling);
    gate.fail_next("DescribeInstances", 2, Fault::Throttling);
    let retries = Arc::new(Mutex::new(0));
    let r = retries.clone();
    let exec = executor(&w, InMemoryJournal::new(), job).on_progress(move |p| {
        if matches!(p, Progress::Retrying { .. }) {
            *r.lock().unwrap() += 1;
        }
    });
    exec.apply(&plan).await.unwrap();
    assert!(*retries.lock().unwrap() >= 15);
    assert_eq!(
        counts(&tagged(&w.customer.admin_config(), job).await),
        expected_full()
    );
    let token = exec.client_token(&StepKey::new("instance/web/0").unwrap());
    assert_eq!(
        gate.count_for_client_token("RunInstances", &token),
        4,
        "3 failures, then one launch"
    );
    assert_eq!(gate.count("CreateSubnet"), 4 + 5);
    // After a server error on CreateVpc the executor looks before creating again.
    assert_eq!(gate.count("CreateVpc"), 3);
    assert!(gate.count("DescribeVpcs") >= 2);
    exec.teardown(&plan).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_action_is_named_and_the_job_resumes_once_allowed() {
    let w = world().await;
    let plan = full_plan();
    let job = JobId::new();
    let journal = Arc::new(InMemoryJournal::new());
    w.aws
        .gate()
        .fail_next("RunInstances", 1, Fault::AccessDenied);
    let exec = executor(&w, journal.clone(), job);
    match exec.apply(&plan).await {
        Err(e @ Error::Unauthorized { .. }) => {
            assert!(!e.is_retryable());
            let Error::Unauthorized { action, .. } = &e else {
                unreachable!()
            };
            assert_eq!(action, "ec2:RunInstances");
            assert!(e.to_string().contains("ec2:RunInstances"));
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let env = exec.apply(&plan).await.unwrap();
    assert_eq!(
        counts(&tagged(&w.customer.admin_config(), job).await),
        expected_full()
    );
    assert_eq!(w.aws.gate().count("CreateVpc"), 1);
    assert_eq!(env.instance_ids["web"].len(), 1);
    exec.teardown(&plan).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_retries_dependency_violation_until_the_blocker_is_gone() {
    let w = world().await;
    let mut plan = full_plan().plan().clone();
    plan.vpc.subnet_prefix = Some(20); // leaves room for a subnet xrole does not know
    let plan = plan.validate().unwrap();
    let job = JobId::new();
    let journal = Arc::new(InMemoryJournal::new());
    let env = executor(&w, journal.clone(), job)
        .apply(&plan)
        .await
        .unwrap();

    // Something xrole did not create sits in the VPC.
    let admin = aws_sdk_ec2::Client::new(&w.customer.admin_config());
    let blocker = admin
        .create_subnet()
        .vpc_id(&env.vpc_id)
        .cidr_block("10.42.255.0/24")
        .send()
        .await
        .unwrap();
    let blocker = blocker.subnet().unwrap().subnet_id().unwrap().to_owned();

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let exec = executor(&w, journal.clone(), job).on_progress(move |p| {
        if let Progress::Retrying { step, reason, .. } = p
            && step.as_str() == "teardown/vpc"
            && reason.contains("DependencyViolation")
        {
            let _ = tx.send(());
        }
    });
    let plan2 = plan.clone();
    let task = tokio::spawn(async move { exec.teardown(&plan2).await });
    rx.recv().await.expect("teardown retried the VPC");
    rx.recv().await.expect("and retried it again");
    assert!(!task.is_finished());
    admin
        .delete_subnet()
        .subnet_id(&blocker)
        .send()
        .await
        .unwrap();
    task.await.unwrap().unwrap();
    assert_eq!(
        counts(&tagged(&w.customer.admin_config(), job).await),
        expected_none()
    );
}
