//! The broker against real aws-sdk-sts calls through the testkit's STS gate (moto
//! behind a proxy that enforces trust policies like AWS).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_async::time::TimeSource;
use aws_types::region::Region;
use support::{CannedSts, FakeSleep, ManualClock};
use xrole_assume::{
    AssumeSpec, AwsAccountId, Broker, BrokerBuilder, Error, RoleArn, SessionName, SessionPolicy,
    SourceIdentity, TrustFinding, TrustPolicyCheck, VerifyOptions, VerifyOutcome,
};
use xrole_crypto::ExternalId;
use xrole_testkit::{Aws, CustomerAccount, Fault};

struct Fixture {
    aws: Aws,
    customer: CustomerAccount,
    role: RoleArn,
    external_id: ExternalId,
    clock: ManualClock,
    sleep: FakeSleep,
}

impl Fixture {
    /// moto + gate, one customer account with an xrole role trusting the SaaS user.
    async fn start() -> Fixture {
        let aws = Aws::start().await.unwrap();
        let customer = aws.customer().await.unwrap();
        let external_id = ExternalId::generate();
        let arn = customer
            .create_xrole_role(
                "xrole-access",
                &aws.saas_principal_arn(),
                external_id.as_str(),
            )
            .await
            .unwrap();
        let clock = ManualClock::starting_now();
        let sleep = FakeSleep::new(&clock, 0);
        Fixture {
            role: arn.parse().unwrap(),
            aws,
            customer,
            external_id,
            clock,
            sleep,
        }
    }

    fn account(&self) -> AwsAccountId {
        self.customer.account_id().parse().unwrap()
    }

    /// A broker on the manual clock whose sleeps take no real time.
    fn builder(&self) -> BrokerBuilder {
        Broker::builder(&self.aws.saas_config())
            .time_source(self.clock.shared())
            .sleep_impl(self.sleep.shared())
    }

    fn broker(&self) -> Broker {
        self.builder().build()
    }

    fn spec(&self, purpose: &str) -> AssumeSpec {
        AssumeSpec::builder(
            self.role.clone(),
            self.external_id.clone(),
            SessionName::for_tenant("acme", purpose).unwrap(),
        )
        .build()
        .unwrap()
    }

    /// The account the credentials act in, asked of STS through the gate.
    async fn account_of(&self, creds: Credentials) -> String {
        let sts = aws_sdk_sts::Client::new(&self.aws.config_for(creds));
        sts.get_caller_identity()
            .send()
            .await
            .unwrap()
            .account
            .unwrap()
    }

    fn assume_role_calls(&self) -> u64 {
        self.aws.gate().count("AssumeRole")
    }
}

#[tokio::test]
async fn happy_path_assumes_into_the_customer_account_and_caches() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = f.spec("inventory");

    let creds = broker.credentials(&spec).await.unwrap();
    assert!(creds.session_token().is_some());
    assert_eq!(
        creds.expiry().unwrap(),
        f.clock.now() + Duration::from_secs(900)
    );
    assert_eq!(f.account_of(creds.clone()).await, f.customer.account_id());

    let again = broker.credentials(&spec).await.unwrap();
    assert_eq!(again.access_key_id(), creds.access_key_id());
    assert_eq!(f.assume_role_calls(), 1);
    let m = broker.metrics();
    assert_eq!((m.hits, m.misses, m.sts_calls), (1, 1, 1));
    assert_eq!(m.sts_errors.total(), 0);

    // A different scope is a different session.
    let other = broker.credentials(&f.spec("provision")).await.unwrap();
    assert_ne!(other.access_key_id(), creds.access_key_id());
    assert_eq!(f.assume_role_calls(), 2);

    match broker
        .verify_link(&f.role, &f.external_id, &f.account())
        .await
        .unwrap()
    {
        VerifyOutcome::Verified {
            account,
            caller_arn,
            attempts,
            trust_policy,
        } => {
            assert_eq!(account, f.account());
            // create_xrole_role lets the role read itself: the policy was audited.
            assert_eq!(trust_policy, TrustPolicyCheck::Audited);
            assert!(
                caller_arn.contains(":assumed-role/xrole-access/xrole-verify"),
                "{caller_arn}"
            );
            assert_eq!(attempts, 1);
        }
        other => panic!("expected Verified, got {other:?}"),
    }
    // The denied probes (no External ID, two foreign ones) are expected,
    // not errors worth counting.
    assert_eq!(f.assume_role_calls(), 2 + 4);
    assert_eq!(broker.metrics().sts_errors.access_denied, 0);
}

#[tokio::test]
async fn wrong_external_id_is_a_configuration_error() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let wrong = AssumeSpec::builder(
        f.role.clone(),
        ExternalId::generate(),
        SessionName::for_tenant("acme", "read").unwrap(),
    )
    .build()
    .unwrap();
    let err = broker.credentials(&wrong).await.unwrap_err();
    assert!(
        matches!(&err, Error::AccessDenied { role, .. } if *role == f.role),
        "{err:?}"
    );
    assert!(err.is_configuration() && !err.is_retryable());
    // AccessDenied is not retried outside verification.
    assert_eq!(f.assume_role_calls(), 1);
    assert_eq!(broker.metrics().sts_errors.access_denied, 1);

    // verify_link retries for the whole propagation window, on the manual clock.
    let outcome = broker
        .verify_link(&f.role, &ExternalId::generate(), &f.account())
        .await
        .unwrap();
    match outcome {
        VerifyOutcome::NotAssumable(Error::NotAssumable {
            attempts, waited, ..
        }) => {
            assert!(attempts > 3, "{attempts}");
            assert!(waited >= Duration::from_secs(120), "{waited:?}");
            assert_eq!(f.sleep.total(), waited);
        }
        other => panic!("expected NotAssumable, got {other:?}"),
    }
    assert!(
        f.sleep
            .slept
            .lock()
            .unwrap()
            .iter()
            .all(|d| *d <= Duration::from_secs(15))
    );
}

#[tokio::test]
async fn role_assumable_without_external_id_is_insecure() {
    let f = Fixture::start().await;
    let broker = f.broker();
    // The gate switch: trust conditions on sts:ExternalId are ignored.
    f.aws.gate().skip_external_id_check(true);
    let outcome = broker
        .verify_link(&f.role, &f.external_id, &f.account())
        .await
        .unwrap();
    assert!(
        matches!(outcome, VerifyOutcome::Insecure { .. }),
        "{outcome:?}"
    );
    f.aws.gate().skip_external_id_check(false);

    // A real open role: the trust policy has no External ID condition at all.
    let open_trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f.aws.saas_principal_arn()}, "Action": "sts:AssumeRole"}]});
    let open: RoleArn = f
        .customer
        .create_role("xrole-open", &open_trust.to_string(), 3600)
        .await
        .unwrap()
        .parse()
        .unwrap();
    let outcome = broker
        .verify_link(&open, &f.external_id, &f.account())
        .await
        .unwrap();
    assert!(
        matches!(outcome, VerifyOutcome::Insecure { .. }),
        "{outcome:?}"
    );

    // The properly configured role still verifies.
    let outcome = broker
        .verify_link(&f.role, &f.external_id, &f.account())
        .await
        .unwrap();
    assert!(
        matches!(outcome, VerifyOutcome::Verified { .. }),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn role_in_another_account_is_wrong_account() {
    let f = Fixture::start().await;
    let other = f.aws.customer().await.unwrap();
    let expected: AwsAccountId = other.account_id().parse().unwrap();
    let outcome = f
        .broker()
        .verify_link(&f.role, &f.external_id, &expected)
        .await
        .unwrap();
    match outcome {
        VerifyOutcome::WrongAccount { actual } => assert_eq!(actual, f.account()),
        other => panic!("expected WrongAccount, got {other:?}"),
    }
}

/// `in_organization_of`: membership is asked from inside the account, as
/// the verification session, and only the named organization passes.
#[tokio::test]
async fn only_members_of_the_named_organization_pass() {
    let f = Fixture::start().await;
    let acme = f.aws.organization().await.unwrap();
    let rival = f.aws.organization().await.unwrap();
    let management: AwsAccountId = acme.management().account_id().parse().unwrap();
    let broker = f.broker();
    let check = |account: CustomerAccount, may_ask: bool| {
        let f = &f;
        let broker = &broker;
        async move {
            let arn = account
                .create_xrole_role(
                    "xrole-member",
                    &f.aws.saas_principal_arn(),
                    f.external_id.as_str(),
                )
                .await
                .unwrap();
            if may_ask {
                aws_sdk_iam::Client::new(&account.admin_config())
                    .put_role_policy()
                    .role_name("xrole-member")
                    .policy_name("xrole-read-own-organization")
                    .policy_document(
                        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"organizations:DescribeOrganization","Resource":"*"}]}"#,
                    )
                    .send()
                    .await
                    .unwrap();
            }
            let options = VerifyOptions::new()
                .wait_for_propagation(false)
                .in_organization_of(management);
            broker
                .verify_link_with(
                    &arn.parse().unwrap(),
                    &f.external_id,
                    &account.account_id().parse().unwrap(),
                    &options,
                )
                .await
                .unwrap()
        }
    };
    let member = f.aws.member(&acme).await.unwrap();
    let outcome = check(member, true).await;
    assert!(
        matches!(outcome, VerifyOutcome::Verified { .. }),
        "{outcome:?}"
    );
    let stranger = f.aws.member(&rival).await.unwrap();
    match check(stranger, true).await {
        VerifyOutcome::OutsideOrganization {
            management_account,
            reason,
        } => {
            assert_eq!(
                management_account.unwrap().as_str(),
                rival.management().account_id()
            );
            assert!(reason.contains(acme.management().account_id()), "{reason}");
        }
        other => panic!("expected OutsideOrganization, got {other:?}"),
    }
    let loner = f.aws.customer().await.unwrap();
    match check(loner, true).await {
        VerifyOutcome::OutsideOrganization {
            management_account: None,
            reason,
        } => assert!(reason.contains("no AWS Organization"), "{reason}"),
        other => panic!("expected OutsideOrganization, got {other:?}"),
    }
    // A member whose role may not ask cannot be confirmed.
    let quiet = f.aws.member(&acme).await.unwrap();
    match check(quiet, false).await {
        VerifyOutcome::OutsideOrganization {
            management_account: None,
            reason,
        } => assert!(reason.contains("DescribeOrganization"), "{reason}"),
        other => panic!("expected OutsideOrganization, got {other:?}"),
    }
}

#[tokio::test]
async fn new_role_is_retried_until_it_has_propagated() {
    let aws = Aws::start().await.unwrap();
    aws.gate().propagation_delay(Duration::from_secs(3));
    let customer = aws.customer().await.unwrap();
    let external_id = ExternalId::generate();
    let role: RoleArn = customer
        .create_xrole_role("xrole-new", &aws.saas_principal_arn(), external_id.as_str())
        .await
        .unwrap()
        .parse()
        .unwrap();
    let clock = ManualClock::starting_now();
    // The manual clock runs 10x faster than real time: the 2-minute window is 12 s
    // of real time at most, and the gate's 3 s of propagation really pass.
    let sleep = FakeSleep::new(&clock, 10);
    let broker = Broker::builder(&aws.saas_config())
        .time_source(clock.shared())
        .sleep_impl(sleep.shared())
        .build();
    let account: AwsAccountId = customer.account_id().parse().unwrap();
    let outcome = broker
        .verify_link(&role, &external_id, &account)
        .await
        .unwrap();
    match outcome {
        VerifyOutcome::Verified { attempts, .. } => assert!(attempts > 1, "{attempts}"),
        other => panic!("expected Verified, got {other:?}"),
    }
    assert!(broker.metrics().sts_errors.access_denied >= 1);
    assert!(sleep.total() < Duration::from_secs(120));
}

#[tokio::test]
async fn throttling_and_server_errors_are_retried_then_reported_as_transient() {
    let f = Fixture::start().await;
    let broker = f.broker();
    f.aws.gate().fail_next("AssumeRole", 2, Fault::Throttling);
    let creds = broker.credentials(&f.spec("read")).await.unwrap();
    assert_eq!(f.account_of(creds).await, f.customer.account_id());
    assert_eq!(f.assume_role_calls(), 3);
    assert_eq!(broker.metrics().sts_errors.throttled, 2);
    assert_eq!(f.sleep.slept.lock().unwrap().len(), 2);

    f.aws.gate().fail_next("AssumeRole", 3, Fault::Http500);
    let err = broker.credentials(&f.spec("write")).await.unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(err.is_retryable() && !err.is_configuration());
    assert_eq!(f.assume_role_calls(), 6);
    // Nothing bad was cached: the next call succeeds.
    broker.credentials(&f.spec("write")).await.unwrap();
    assert_eq!(f.assume_role_calls(), 7);

    f.aws.gate().fail_next("AssumeRole", 3, Fault::Throttling);
    let err = broker.credentials(&f.spec("other")).await.unwrap_err();
    assert!(
        matches!(err, Error::Throttled { .. }) && err.is_retryable(),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_callers_cause_one_assume_role() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = f.spec("burst");
    // Hold the one request open so that all callers really overlap.
    f.aws
        .gate()
        .delay(Some("AssumeRole"), Duration::from_millis(300));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let (broker, spec) = (broker.clone(), spec.clone());
            tokio::spawn(async move {
                broker
                    .credentials(&spec)
                    .await
                    .map(|c| c.access_key_id().to_owned())
            })
        })
        .collect();
    let mut keys = std::collections::HashSet::new();
    for t in tasks {
        keys.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(keys.len(), 1);
    assert_eq!(f.assume_role_calls(), 1);
    let m = broker.metrics();
    assert_eq!((m.misses, m.hits, m.sts_calls), (1, 999, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_share_one_failure() {
    let f = Fixture::start().await;
    let broker = Broker::builder(&f.aws.saas_config())
        .retries(1, Duration::ZERO, Duration::ZERO)
        .build();
    let spec = AssumeSpec::builder(
        f.role.clone(),
        ExternalId::generate(),
        SessionName::parse("xrole-x").unwrap(),
    )
    .build()
    .unwrap();
    f.aws
        .gate()
        .delay(Some("AssumeRole"), Duration::from_millis(300));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (broker, spec) = (broker.clone(), spec.clone());
            tokio::spawn(async move { broker.credentials(&spec).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.unwrap(), Err(Error::AccessDenied { .. })));
    }
    // Callers that queued behind the failing call got its error.
    assert!(f.assume_role_calls() < 10, "{}", f.assume_role_calls());
}

#[tokio::test]
async fn refreshes_ahead_of_expiry_and_never_serves_expired_credentials() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = f.spec("refresh");
    let check = |c: &Credentials| {
        assert!(
            c.expiry().unwrap() > f.clock.now(),
            "expired credentials served"
        )
    };

    let a = broker.credentials(&spec).await.unwrap();
    check(&a);
    // 900 s sessions refresh 5 min + up to 1 min of jitter early: not before 540 s.
    f.clock.advance(Duration::from_secs(530));
    let same = broker.credentials(&spec).await.unwrap();
    assert_eq!(same.access_key_id(), a.access_key_id());
    assert_eq!(f.assume_role_calls(), 1);

    // In the refresh window: one caller refreshes.
    f.clock.advance(Duration::from_secs(71)); // 601 s
    let b = broker.credentials(&spec).await.unwrap();
    check(&b);
    assert_ne!(b.access_key_id(), a.access_key_id());
    assert_eq!(f.assume_role_calls(), 2);
    assert_eq!(broker.metrics().refreshes, 1);
    assert_eq!(
        b.expiry().unwrap(),
        f.clock.now() + Duration::from_secs(900)
    );

    // A refresh fails while b is still valid: b keeps being served, and the
    // next attempt waits for the backoff instead of hammering STS.
    f.aws.gate().fail_next("AssumeRole", 4, Fault::Http500);
    f.clock.advance(Duration::from_secs(601));
    let still_b = broker.credentials(&spec).await.unwrap();
    assert_eq!(still_b.access_key_id(), b.access_key_id());
    check(&still_b);
    assert_eq!(f.assume_role_calls(), 3);
    assert_eq!(broker.metrics().refresh_failures, 1);
    let still_b = broker.credentials(&spec).await.unwrap();
    assert_eq!(still_b.access_key_id(), b.access_key_id());
    assert_eq!(
        f.assume_role_calls(),
        3,
        "refresh retried before its backoff"
    );

    // Past b's usable life (less than the 1 min margin left), with STS still
    // failing: an error, never b.
    f.clock.advance(Duration::from_secs(270)); // b expires in 29 s
    let err = broker.credentials(&spec).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(f.assume_role_calls(), 6);

    // STS is back: fresh credentials.
    let c = broker.credentials(&spec).await.unwrap();
    check(&c);
    assert_ne!(c.access_key_id(), b.access_key_id());
    assert_eq!(f.account_of(c).await, f.customer.account_id());
}

#[tokio::test]
async fn evicts_beyond_a_small_bound() {
    let f = Fixture::start().await;
    let broker = f.builder().max_sessions(2).build();
    let specs: Vec<_> = (0..6).map(|i| f.spec(&format!("p{i}"))).collect();
    for s in &specs {
        broker.credentials(s).await.unwrap();
        broker.run_pending_tasks().await;
    }
    broker.run_pending_tasks().await;
    let m = broker.metrics();
    assert!(m.entries <= 2, "{m:?}");
    assert!(m.evictions >= 4, "{m:?}");
    // Asking for every session again costs STS calls for the evicted ones.
    for s in &specs {
        broker.credentials(s).await.unwrap();
    }
    assert!(f.assume_role_calls() >= 10, "{}", f.assume_role_calls());
}

#[tokio::test]
async fn invalidating_a_role_drops_its_sessions() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = f.spec("x");
    let a = broker.credentials(&spec).await.unwrap();
    broker.invalidate_role(&f.role);
    broker.run_pending_tasks().await;
    let b = broker.credentials(&spec).await.unwrap();
    assert_ne!(a.access_key_id(), b.access_key_id());
    assert_eq!(f.assume_role_calls(), 2);
    broker.invalidate(&spec).await;
    broker.credentials(&spec).await.unwrap();
    assert_eq!(f.assume_role_calls(), 3);
}

#[tokio::test]
async fn an_ec2_client_on_the_broker_creates_a_vpc_in_the_customer_account() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = f.spec("provision");
    let ec2 = aws_sdk_ec2::Client::new(&broker.sdk_config(&spec, Region::new("us-east-1")));
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.42.0.0/16")
        .send()
        .await
        .unwrap()
        .vpc
        .unwrap();
    assert_eq!(vpc.owner_id(), Some(f.customer.account_id()));
    // The customer sees it in their own account; the SaaS account has no such VPC.
    let vpc_id = vpc.vpc_id().unwrap();
    let mine = aws_sdk_ec2::Client::new(&f.customer.admin_config())
        .describe_vpcs()
        .vpc_ids(vpc_id)
        .send()
        .await
        .unwrap();
    assert_eq!(mine.vpcs().len(), 1);
    let saas = aws_sdk_ec2::Client::new(&f.aws.saas_config())
        .describe_vpcs()
        .send()
        .await
        .unwrap();
    assert!(saas.vpcs().iter().all(|v| v.vpc_id() != Some(vpc_id)));
    // Two more calls on the same client reuse the cached session.
    ec2.describe_vpcs().send().await.unwrap();
    assert_eq!(f.assume_role_calls(), 1);

    // The provider works on its own too.
    let provider = broker.credentials_provider(&spec);
    let c = provider.provide_credentials().await.unwrap();
    assert_eq!(f.account_of(c).await, f.customer.account_id());
}

#[tokio::test]
async fn source_identity_tags_and_session_policy_pass_the_trust_policy() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let spec = AssumeSpec::builder(f.role.clone(), f.external_id.clone(), SessionName::for_tenant("acme", "p").unwrap())
        .source_identity(SourceIdentity::parse("user-42").unwrap())
        .tag("xrole:org", "acme")
        .unwrap()
        .policy(
            SessionPolicy::new(
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:Describe*","Resource":"*"}]}"#,
            )
            .unwrap(),
        )
        .policy_arn("arn:aws:iam::aws:policy/ReadOnlyAccess")
        .duration(Duration::from_secs(3600))
        .build()
        .unwrap();
    let creds = broker.credentials(&spec).await.unwrap();
    assert_eq!(
        creds.expiry().unwrap(),
        f.clock.now() + Duration::from_secs(3600)
    );
    assert_eq!(f.account_of(creds).await, f.customer.account_id());

    // Beyond the role's MaxSessionDuration (3600): STS refuses, a configuration error.
    let long = AssumeSpec::builder(
        f.role.clone(),
        f.external_id.clone(),
        SessionName::parse("xrole-l").unwrap(),
    )
    .duration(Duration::from_secs(7200))
    .build()
    .unwrap();
    let broker = f.builder().base_is_role_session(false).build();
    let err = broker.credentials(&long).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { .. }) && err.is_configuration(),
        "{err:?}"
    );
}

#[tokio::test]
async fn chained_sessions_are_clamped_to_one_hour() {
    let f = Fixture::start().await;
    // The broker runs as a role session (like an instance profile): the customer
    // admin session of another account, talking through the gate.
    let saas = f.aws.customer().await.unwrap();
    let admin_creds = saas
        .admin_config()
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let base = f.aws.config_for(admin_creds);
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Principal": {"AWS": format!("arn:aws:iam::{}:role/xrole-testkit-admin", saas.account_id())},
        "Action": "sts:AssumeRole",
        "Condition": {"StringEquals": {"sts:ExternalId": f.external_id.as_str()}}}]});
    let role: RoleArn = f
        .customer
        .create_role("xrole-long", &trust.to_string(), 43_200)
        .await
        .unwrap()
        .parse()
        .unwrap();
    let spec = AssumeSpec::builder(
        role,
        f.external_id.clone(),
        SessionName::parse("xrole-chained").unwrap(),
    )
    .duration(Duration::from_secs(4 * 3600))
    .build()
    .unwrap();

    // Told nothing, the broker asks GetCallerIdentity once and clamps.
    let broker = Broker::builder(&base)
        .time_source(f.clock.shared())
        .sleep_impl(f.sleep.shared())
        .build();
    let creds = broker.credentials(&spec).await.unwrap();
    assert_eq!(
        creds.expiry().unwrap(),
        f.clock.now() + Duration::from_secs(3600)
    );
    assert_eq!(f.aws.gate().count("GetCallerIdentity"), 1);
    assert_eq!(f.account_of(creds).await, f.customer.account_id());

    // Told wrongly, STS (the gate) refuses the chained 4-hour session.
    let wrong = Broker::builder(&base).base_is_role_session(false).build();
    let err = wrong.credentials(&spec).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err:?}");
}

#[tokio::test]
async fn invalid_specs_fail_before_any_call() {
    let f = Fixture::start().await;
    let too_big = SessionPolicy::new(format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        "x".repeat(2048)
    ));
    assert!(matches!(too_big, Err(Error::InvalidSpec { .. })));
    let too_short = AssumeSpec::builder(
        f.role.clone(),
        f.external_id.clone(),
        SessionName::parse("ab").unwrap(),
    )
    .duration(Duration::from_secs(60))
    .build();
    assert!(matches!(too_short, Err(Error::InvalidSpec { .. })));
    assert_eq!(f.assume_role_calls(), 0);
}

#[tokio::test]
async fn sts_is_called_in_the_regional_endpoint_of_the_partition() {
    let canned = CannedSts::default();
    let broker = Broker::new(&canned.base_config("eu-west-1"));
    let ext = ExternalId::generate();
    let spec_for = |arn: &str, region: Option<&str>| {
        let mut b = AssumeSpec::builder(
            arn.parse().unwrap(),
            ext.clone(),
            SessionName::parse("xrole-r").unwrap(),
        );
        if let Some(r) = region {
            b = b.region(Region::new(r.to_owned()));
        }
        b.build().unwrap()
    };
    broker
        .credentials(&spec_for("arn:aws:iam::111111111111:role/a", None))
        .await
        .unwrap();
    broker
        .credentials(&spec_for(
            "arn:aws:iam::111111111111:role/b",
            Some("ap-southeast-2"),
        ))
        .await
        .unwrap();
    broker
        .credentials(&spec_for("arn:aws-cn:iam::111111111111:role/c", None))
        .await
        .unwrap();
    broker
        .credentials(&spec_for("arn:aws-us-gov:iam::111111111111:role/d", None))
        .await
        .unwrap();
    // sdk_config's region picks the STS endpoint when the spec has none.
    let provider_cfg = broker.sdk_config(
        &spec_for("arn:aws:iam::111111111111:role/e", None),
        Region::new("sa-east-1"),
    );
    provider_cfg
        .credentials_provider()
        .unwrap()
        .provide_credentials()
        .await
        .unwrap();
    let uris = canned.uris.lock().unwrap().clone();
    assert_eq!(
        uris,
        [
            "https://sts.eu-west-1.amazonaws.com/",
            "https://sts.ap-southeast-2.amazonaws.com/",
            "https://sts.cn-north-1.amazonaws.com.cn/",
            "https://sts.us-gov-west-1.amazonaws.com/",
            "https://sts.sa-east-1.amazonaws.com/",
        ]
    );
}

/// Everything the broker logs, at every level, including the SDK's own logs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_reaches_logs_or_debug_output() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    // Set-up first: the test's own IAM calls carry the External ID in a trust policy.
    let f = Fixture::start().await;
    let _guard = tracing::subscriber::set_default(subscriber);
    let broker = f.broker();
    let spec = f.spec("logs");
    let mut shown = Vec::new();
    let outcome = broker
        .verify_link(&f.role, &f.external_id, &f.account())
        .await
        .unwrap();
    shown.push(format!("{outcome:?}"));
    let creds = broker.credentials(&spec).await.unwrap();
    // A failing refresh and a failing call log warnings and errors too.
    f.aws.gate().fail_next("AssumeRole", 1, Fault::Http500);
    f.clock.advance(Duration::from_secs(700));
    let refreshed = broker.credentials(&spec).await.unwrap();
    let denied = broker
        .verify_link(&f.role, &ExternalId::generate(), &f.account())
        .await
        .unwrap();
    shown.push(format!("{denied:?}"));
    let err = broker
        .credentials(
            &AssumeSpec::builder(
                f.role.clone(),
                ExternalId::generate(),
                SessionName::parse("xrole-e").unwrap(),
            )
            .build()
            .unwrap(),
        )
        .await
        .unwrap_err();
    shown.extend([
        format!("{err:?}"),
        err.to_string(),
        format!("{creds:?}"),
        format!("{refreshed:?}"),
        format!("{spec:?}"),
        format!("{broker:?}"),
        format!("{:?}", broker.credentials_provider(&spec)),
        format!("{:?}", broker.sdk_config(&spec, Region::new("us-east-1"))),
        format!("{:?}", broker.metrics()),
    ]);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    // The capture works: the broker's own events are there.
    assert!(logs.contains("link verified"), "nothing captured");
    assert!(logs.contains("refreshing credentials failed"), "{logs}");
    assert!(logs.contains(f.role.as_str()));
    let secrets = [
        creds.secret_access_key().to_owned(),
        creds.session_token().unwrap().to_owned(),
        refreshed.secret_access_key().to_owned(),
        refreshed.session_token().unwrap().to_owned(),
        f.external_id.as_str().to_owned(),
    ];
    for (i, secret) in secrets.iter().enumerate() {
        let leaks: Vec<_> = logs
            .lines()
            .filter(|l| l.contains(secret.as_str()))
            .map(|l| l.replace(secret.as_str(), "<SECRET>"))
            .collect();
        assert!(leaks.is_empty(), "secret #{i} is in the logs: {leaks:#?}");
        for s in &shown {
            assert!(
                !s.contains(secret.as_str()),
                "a secret is in Debug/Display output: {s}"
            );
        }
    }
}

/// A role trusting the SaaS principal under `condition`, allowed to read
/// itself (as the template's roles are), in the fixture's account.
async fn role_with_condition(f: &Fixture, name: &str, condition: serde_json::Value) -> RoleArn {
    let mut statement = serde_json::json!({"Sid": "Saas", "Effect": "Allow",
        "Principal": {"AWS": f.aws.saas_principal_arn()}, "Action": "sts:AssumeRole"});
    if !condition.is_null() {
        statement["Condition"] = condition;
    }
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [statement]});
    let arn = f
        .customer
        .create_role(name, &trust.to_string(), 3600)
        .await
        .unwrap();
    aws_sdk_iam::Client::new(&f.customer.admin_config())
        .put_role_policy()
        .role_name(name)
        .policy_name("read-itself")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "iam:GetRole", "Resource": arn}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    arn.parse().unwrap()
}

fn findings(outcome: &VerifyOutcome) -> Vec<String> {
    match outcome {
        VerifyOutcome::Insecure { findings, .. } => {
            findings.iter().map(|f| format!("{f:?}")).collect()
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
}

#[tokio::test]
async fn roles_accepting_foreign_external_ids_are_insecure() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let opts = VerifyOptions::new().trusted_principal(f.aws.saas_principal_arn());
    let probe = |shape: &'static str| {
        format!(
            "{:?}",
            TrustFinding::AcceptsForeignExternalId { probe: shape }
        )
    };
    // (condition, the probe findings expected)
    let cases = [
        (
            serde_json::json!({"StringLike": {"sts:ExternalId": "*"}}),
            vec![probe("same_shape"), probe("other_shape")],
        ),
        (
            serde_json::json!({"StringLike": {"sts:ExternalId": "xrx-*"}}),
            vec![probe("same_shape")],
        ),
        (
            serde_json::json!({"Null": {"sts:ExternalId": "false"}}),
            vec![probe("same_shape"), probe("other_shape")],
        ),
    ];
    for (i, (condition, expected)) in cases.into_iter().enumerate() {
        let role = role_with_condition(&f, &format!("xrole-wide-{i}"), condition.clone()).await;
        let outcome = broker
            .verify_link_with(&role, &f.external_id, &f.account(), &opts)
            .await
            .unwrap();
        let found = findings(&outcome);
        for e in &expected {
            assert!(found.contains(e), "{condition}: {found:?}");
        }
        // The audit names the statement and what is wrong with it.
        assert!(
            found
                .iter()
                .any(|s| s.contains("ExternalIdNotRequired") && s.contains("\\\"Saas\\\"")),
            "{condition}: {found:?}"
        );
        assert!(
            !found.iter().any(|s| s.contains("AcceptsNoExternalId")),
            "{condition}: {found:?}"
        );
    }

    // No condition at all: every probe and the audit object.
    let open = role_with_condition(&f, "xrole-open", serde_json::Value::Null).await;
    let outcome = broker
        .verify_link_with(&open, &f.external_id, &f.account(), &opts)
        .await
        .unwrap();
    let found = findings(&outcome);
    assert!(
        found.iter().any(|s| s.contains("AcceptsNoExternalId")),
        "{found:?}"
    );

    // StringEquals with a list holding this tenant's and another tenant's
    // External IDs: each tenant proves its own, nobody else gets in.
    let other_tenant = ExternalId::generate();
    let shared = role_with_condition(
        &f,
        "xrole-shared",
        serde_json::json!({"StringEquals": {"sts:ExternalId": [f.external_id.as_str(), other_tenant.as_str()]}}),
    )
    .await;
    for ext in [&f.external_id, &other_tenant] {
        let outcome = broker
            .verify_link_with(&shared, ext, &f.account(), &opts)
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                VerifyOutcome::Verified {
                    trust_policy: TrustPolicyCheck::Audited,
                    ..
                }
            ),
            "{outcome:?}"
        );
    }
    // A third tenant who registers the same role is not let in.
    let outcome = broker
        .verify_link_with(
            &shared,
            &ExternalId::generate(),
            &f.account(),
            &opts.clone().wait_for_propagation(false),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            VerifyOutcome::NotAssumable(Error::AccessDenied { .. })
        ),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn the_audit_finds_what_the_probes_cannot_and_unreadable_policies_are_said() {
    let f = Fixture::start().await;
    let broker = f.broker();
    // Trusts the SaaS with the exact External ID, but also anyone in another
    // account: the probes (made as the SaaS) pass, the audit does not.
    let trust = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "Saas", "Effect": "Allow", "Principal": {"AWS": f.aws.saas_principal_arn()},
         "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": f.external_id.as_str()}}},
        {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
         "Action": "sts:AssumeRole", "Condition": {"StringEquals": {"sts:ExternalId": f.external_id.as_str()}}}]});
    let name = "xrole-broadened";
    let arn = f
        .customer
        .create_role(name, &trust.to_string(), 3600)
        .await
        .unwrap();
    aws_sdk_iam::Client::new(&f.customer.admin_config())
        .put_role_policy()
        .role_name(name)
        .policy_name("read-itself")
        .policy_document(
            serde_json::json!({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "iam:GetRole", "Resource": arn}]})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    let role: RoleArn = arn.parse().unwrap();
    let opts = VerifyOptions::new().trusted_principal(f.aws.saas_principal_arn());
    let outcome = broker
        .verify_link_with(&role, &f.external_id, &f.account(), &opts)
        .await
        .unwrap();
    match &outcome {
        VerifyOutcome::Insecure {
            findings,
            trust_policy,
        } => {
            assert_eq!(*trust_policy, TrustPolicyCheck::Audited);
            assert_eq!(findings.len(), 1, "{findings:?}");
            assert_eq!(findings[0].code(), "trust_broadened");
            assert!(findings[0].to_string().contains("#1"), "{}", findings[0]);
        }
        other => panic!("expected Insecure, got {other:?}"),
    }

    // When the role may not read itself, the probes alone decide and the
    // outcome says so.
    f.aws.gate().fail_next("GetRole", 1, Fault::AccessDenied);
    let outcome = broker
        .verify_link_with(&f.role, &f.external_id, &f.account(), &opts)
        .await
        .unwrap();
    match outcome {
        VerifyOutcome::Verified {
            trust_policy: TrustPolicyCheck::NotReadable { reason },
            ..
        } => {
            assert!(reason.contains("iam:GetRole"), "{reason}");
        }
        other => panic!("expected Verified without an audit, got {other:?}"),
    }
    // A transient IAM failure is an unknown answer, not a verdict.
    f.aws.gate().fail_next("GetRole", 10, Fault::Http500);
    let err = broker
        .verify_link_with(&f.role, &f.external_id, &f.account(), &opts)
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
}

#[tokio::test]
async fn without_waiting_a_denied_role_answers_at_once() {
    let f = Fixture::start().await;
    let broker = f.broker();
    let before = f.assume_role_calls();
    let outcome = broker
        .verify_link_with(
            &f.role,
            &ExternalId::generate(),
            &f.account(),
            &VerifyOptions::new().wait_for_propagation(false),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            VerifyOutcome::NotAssumable(Error::AccessDenied { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(f.assume_role_calls() - before, 1);
    assert_eq!(f.sleep.total(), Duration::ZERO);
}

#[tokio::test]
async fn the_sts_budget_refuses_past_its_burst_and_says_when_to_come_back() {
    let f = Fixture::start().await;
    let broker = f.builder().sts_budget(1.0, 3).build();
    for purpose in ["a", "b", "c"] {
        broker.credentials(&f.spec(purpose)).await.unwrap();
    }
    let sent = f.assume_role_calls();
    let err = broker.credentials(&f.spec("d")).await.unwrap_err();
    match &err {
        Error::BudgetExhausted { retry_after } => {
            assert!(
                *retry_after > Duration::from_millis(900) && *retry_after <= Duration::from_secs(1),
                "{retry_after:?}"
            );
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    assert!(err.is_retryable() && !err.is_configuration());
    assert_eq!(f.assume_role_calls(), sent, "nothing was sent");
    let m = broker.metrics();
    assert_eq!((m.budget_refusals, m.sts_errors.total()), (1, 0));
    // A verification needs five STS calls: it fails as a whole, unsent.
    assert!(matches!(
        broker
            .verify_link(&f.role, &f.external_id, &f.account())
            .await,
        Err(Error::BudgetExhausted { .. })
    ));
    f.clock.advance(Duration::from_secs(1));
    broker.credentials(&f.spec("d")).await.unwrap();
    f.clock.advance(Duration::from_secs(5));
    // Cached sessions cost nothing.
    for purpose in ["a", "b", "c", "d"] {
        broker.credentials(&f.spec(purpose)).await.unwrap();
    }
    assert_eq!(broker.metrics().budget_refusals, 2);
}
