//! Faults, delays, propagation, the External ID switch and counters: each
//! fires, then clears.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod gate_support;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use gate_support::*;
use xrole_testkit::Fault;

async fn assume_ok(sts: &aws_sdk_sts::Client, role: &str) -> bool {
    sts.assume_role()
        .role_arn(role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await
        .is_ok()
}

#[tokio::test]
async fn assume_role_faults_fire_then_clear() {
    let (aws, _customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let gate = aws.gate();
    let call = || {
        sts.assume_role()
            .role_arn(&role)
            .role_session_name("s1")
            .external_id(EXT)
            .send()
    };

    gate.fail_next("AssumeRole", 2, Fault::Throttling);
    let (code, message) = error(call().await);
    assert_eq!(
        (code.as_str(), message.as_str()),
        ("Throttling", "Rate exceeded")
    );
    assert_eq!(gate_support::code(call().await), "Throttling");
    assert!(call().await.is_ok());

    gate.fail_next("AssumeRole", 1, Fault::Http500);
    let r = call().await;
    let raw_status = r
        .as_ref()
        .err()
        .and_then(|e| e.raw_response())
        .map(|r| r.status().as_u16());
    assert_eq!(raw_status, Some(500));
    assert_eq!(gate_support::code(r), "InternalFailure");
    assert!(call().await.is_ok());

    gate.fail_next("AssumeRole", 1, Fault::AccessDenied);
    assert_eq!(gate_support::code(call().await), "AccessDenied");
    assert!(call().await.is_ok());

    // Faults for one action leave the others alone.
    gate.fail_next("GetCallerIdentity", 1, Fault::Throttling);
    assert!(call().await.is_ok());
    assert_eq!(
        gate_support::code(sts.get_caller_identity().send().await),
        "Throttling"
    );
    assert!(sts.get_caller_identity().send().await.is_ok());
    assert_eq!(gate.count("AssumeRole"), 8);
}

#[tokio::test]
async fn the_sdk_retries_injected_throttling_and_500s() {
    let (aws, _customer, role) = setup().await;
    // The default (standard) retry policy: three attempts.
    let sts = aws_sdk_sts::Client::new(&aws.saas_config());
    aws.gate().fail_next("AssumeRole", 1, Fault::Throttling);
    aws.gate().fail_next("AssumeRole", 1, Fault::Http500);
    let out = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert!(out.is_ok(), "{out:?}");
    assert_eq!(aws.gate().count("AssumeRole"), 3);
    // AccessDenied is not retried.
    aws.gate().fail_next("AssumeRole", 1, Fault::AccessDenied);
    let r = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
    assert_eq!(aws.gate().count("AssumeRole"), 4);
}

#[tokio::test]
async fn ec2_faults_use_ec2_error_codes() {
    let (aws, _customer, role) = setup().await;
    let session = assume(&aws, &role, "ec2-faults").await;
    let conf = aws_sdk_ec2::config::Builder::from(&aws.config_for(creds(&session)))
        .retry_config(RetryConfig::disabled())
        .build();
    let ec2 = aws_sdk_ec2::Client::from_conf(conf);
    let gate = aws.gate();
    gate.fail_next("DescribeVpcs", 1, Fault::Throttling);
    gate.fail_next("DescribeVpcs", 1, Fault::Http500);
    gate.fail_next("DescribeVpcs", 1, Fault::AccessDenied);
    let mut codes = Vec::new();
    for _ in 0..3 {
        codes.push(gate_support::code(ec2.describe_vpcs().send().await));
    }
    assert_eq!(
        codes,
        [
            "RequestLimitExceeded",
            "InternalError",
            "UnauthorizedOperation"
        ]
    );
    assert!(ec2.describe_vpcs().send().await.is_ok());
}

#[tokio::test]
async fn delays_hold_requests_until_cleared() {
    let (aws, _customer, role) = setup().await;
    // `impatient` gives up after 2 s, far below the 60 s delays, so a delayed
    // call fails and an undelayed one has ample time; `patient` has no limit.
    let conf = aws_sdk_sts::config::Builder::from(&aws.saas_config())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(2))
                .build(),
        )
        .build();
    let impatient = aws_sdk_sts::Client::from_conf(conf);
    let patient = saas_sts(&aws);
    let gate = aws.gate();
    let long = Duration::from_secs(60);

    gate.delay(Some("AssumeRole"), long);
    let r = impatient
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert!(
        matches!(r, Err(aws_sdk_sts::error::SdkError::TimeoutError(_))),
        "{r:?}"
    );
    assert!(
        impatient.get_caller_identity().send().await.is_ok(),
        "other actions are not delayed"
    );
    gate.delay(Some("AssumeRole"), Duration::ZERO);
    assert!(assume_ok(&patient, &role).await);

    gate.delay(None, long);
    assert!(
        impatient.get_caller_identity().send().await.is_err(),
        "every action is delayed"
    );
    gate.delay(None, Duration::ZERO);
    assert!(patient.get_caller_identity().send().await.is_ok());

    // A one-shot delay.
    gate.fail_next("GetCallerIdentity", 1, Fault::Delay(long));
    assert!(impatient.get_caller_identity().send().await.is_err());
    assert!(patient.get_caller_identity().send().await.is_ok());
}

#[tokio::test]
async fn new_roles_are_denied_while_they_propagate() {
    let (aws, customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let gate = aws.gate();
    gate.propagation_delay(Duration::from_secs(3600));
    assert!(
        !assume_ok(&sts, &role).await,
        "a role younger than the propagation delay is denied"
    );
    let r = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id(EXT)
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
    gate.propagation_delay(Duration::ZERO);
    assert!(assume_ok(&sts, &role).await);

    // With a short delay, a fresh role starts denied and becomes usable by itself.
    gate.propagation_delay(Duration::from_secs(2));
    let fresh = customer
        .create_xrole_role("fresh", &aws.saas_principal_arn(), EXT)
        .await
        .unwrap();
    assert!(!assume_ok(&sts, &fresh).await);
    let mut attempts = 0;
    while !assume_ok(&sts, &fresh).await {
        attempts += 1;
        assert!(attempts < 120, "the role never propagated");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The first role is older than 2 s by now.
    assert!(assume_ok(&sts, &role).await);
}

#[tokio::test]
async fn skipping_the_external_id_check_opens_every_role() {
    let (aws, _customer, role) = setup().await;
    let sts = saas_sts(&aws);
    let without = || {
        sts.assume_role()
            .role_arn(&role)
            .role_session_name("s1")
            .send()
    };
    let wrong = || {
        sts.assume_role()
            .role_arn(&role)
            .role_session_name("s1")
            .external_id("wrong-id")
            .send()
    };
    assert_eq!(gate_support::code(without().await), "AccessDenied");
    aws.gate().skip_external_id_check(true);
    assert!(without().await.is_ok());
    assert!(wrong().await.is_ok());
    // The principal is still checked.
    let other = aws.customer().await.unwrap();
    let stranger = no_retry_sts(&admin_through_gate(&aws, &other).await);
    let r = stranger
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .send()
        .await;
    assert_eq!(gate_support::code(r), "AccessDenied");
    aws.gate().skip_external_id_check(false);
    assert_eq!(gate_support::code(without().await), "AccessDenied");
    assert_eq!(gate_support::code(wrong().await), "AccessDenied");
}

#[tokio::test]
async fn counters_per_action_account_and_client_token() {
    let (aws, a, role_a) = setup().await;
    let b = aws.customer().await.unwrap();
    let role_b = b
        .create_xrole_role("xrole", &aws.saas_principal_arn(), EXT)
        .await
        .unwrap();
    let gate = aws.gate();
    assert_eq!(gate.count("AssumeRole"), 0, "set-up talks to moto directly");

    let sts = saas_sts(&aws);
    let session_a = assume(&aws, &role_a, "c1").await;
    assume(&aws, &role_a, "c2").await;
    assume(&aws, &role_b, "c3").await;
    assert!(!assume_ok(&sts, &role_b.replace("role/xrole", "role/absent")).await);
    assert_eq!(gate.count("AssumeRole"), 4);
    assert_eq!(gate.count_for_account("AssumeRole", a.account_id()), 2);
    assert_eq!(gate.count_for_account("AssumeRole", b.account_id()), 2);
    assert_eq!(
        gate.count_for_account("AssumeRole", &aws.saas_account_id()),
        0
    );

    let ec2 = aws_sdk_ec2::Client::new(&aws.config_for(creds(&session_a)));
    let admin_ec2 = aws_sdk_ec2::Client::new(&a.admin_config());
    let images = admin_ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .unwrap();
    let ami = images.images()[0].image_id().unwrap().to_owned();
    for _ in 0..2 {
        ec2.run_instances()
            .image_id(&ami)
            .instance_type(aws_sdk_ec2::types::InstanceType::T3Micro)
            .min_count(1)
            .max_count(1)
            .client_token("xrole-job-1-step-3")
            .send()
            .await
            .unwrap();
    }
    ec2.create_vpc()
        .cidr_block("10.1.0.0/16")
        .send()
        .await
        .unwrap();
    assert_eq!(gate.count("RunInstances"), 2);
    assert_eq!(
        gate.count_for_client_token("RunInstances", "xrole-job-1-step-3"),
        2
    );
    assert_eq!(gate.count_for_client_token("RunInstances", "other"), 0);
    assert_eq!(gate.count_for_account("RunInstances", a.account_id()), 2);
    assert_eq!(gate.count_for_account("RunInstances", b.account_id()), 0);
    assert_eq!(gate.count_for_account("CreateVpc", a.account_id()), 1);
    assert_eq!(
        gate.count("DescribeImages"),
        0,
        "admin calls bypass the gate"
    );

    gate.reset_counters();
    for action in ["AssumeRole", "RunInstances", "CreateVpc"] {
        assert_eq!(gate.count(action), 0);
        assert_eq!(gate.count_for_account(action, a.account_id()), 0);
    }
    assert_eq!(
        gate.count_for_client_token("RunInstances", "xrole-job-1-step-3"),
        0
    );
    assume(&aws, &role_a, "c4").await;
    assert_eq!(gate.count("AssumeRole"), 1);
}

#[tokio::test]
async fn issued_credentials_are_recorded_for_allowed_assume_roles_only() {
    let (aws, _customer, role) = setup().await;
    let gate = aws.gate();
    let sts = saas_sts(&aws);
    let first = assume(&aws, &role, "s1").await;
    let second = assume(&aws, &role, "s2").await;
    // Refused (no External ID) and faulted requests issue nothing.
    assert!(
        sts.assume_role()
            .role_arn(&role)
            .role_session_name("s3")
            .send()
            .await
            .is_err()
    );
    gate.fail_next("AssumeRole", 1, Fault::Throttling);
    assert!(!assume_ok(&sts, &role).await);

    let issued = gate.issued_credentials();
    assert_eq!(issued.len(), 2, "{issued:?}");
    for (got, (want, session)) in issued.iter().zip([(&first, "s1"), (&second, "s2")]) {
        assert_eq!(got.role_arn, role);
        assert_eq!(got.session_name, session);
        assert_eq!(got.access_key_id, want.access_key_id());
        assert_eq!(got.secret_access_key, want.secret_access_key());
        assert_eq!(got.session_token, want.session_token());
    }
    assert_ne!(issued[0].secret_access_key, issued[1].secret_access_key);
    let shown = format!("{issued:?}");
    assert!(
        !shown.contains(&issued[0].secret_access_key) && !shown.contains(&issued[0].session_token)
    );

    // The same list over the control API, filtered by role.
    let url = |q: &str| format!("{}/_xrole_gate/issued_credentials{q}", aws.endpoint());
    let all: Vec<serde_json::Value> = reqwest::get(url("")).await.unwrap().json().await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["session_token"], second.session_token());
    let q = format!("?role_arn={}", role.replace(':', "%3A").replace('/', "%2F"));
    let mine: Vec<serde_json::Value> = reqwest::get(url(&q)).await.unwrap().json().await.unwrap();
    assert_eq!(mine.len(), 2);
    let none: Vec<serde_json::Value> =
        reqwest::get(url("?role_arn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(none.is_empty());
}
