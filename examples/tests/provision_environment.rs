//! The `provision_environment` example, run against moto behind the STS gate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../provision_environment.rs"]
#[allow(dead_code)]
mod provision_environment;

use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use aws_types::region::Region;
use xrole_assume::{AssumeSpec, Broker, ExternalId, RoleArn, SessionName};
use xrole_provision::ExecutorOptions;
use xrole_testkit::Aws;

#[tokio::test]
async fn builds_in_the_customer_account_and_leaves_nothing_behind() {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let external_id = ExternalId::generate();
    let role = customer
        .create_xrole_role(
            "xrole-access",
            &aws.saas_principal_arn(),
            external_id.as_str(),
        )
        .await
        .unwrap();
    let broker = Broker::new(&aws.saas_config());
    let spec = AssumeSpec::builder(
        RoleArn::parse(&role).unwrap(),
        external_id,
        SessionName::for_tenant("example", "provision").unwrap(),
    )
    .build()
    .unwrap();
    let session = broker.sdk_config(&spec, Region::new("us-east-1"));
    let options = ExecutorOptions {
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(50),
        poll_interval: Duration::from_millis(20),
        ..ExecutorOptions::default()
    };

    let env = provision_environment::run(&session, "us-east-1", options)
        .await
        .unwrap();

    // It was built in the customer's account, by the customer session...
    assert!(env.vpc_id.starts_with("vpc-"));
    assert_eq!(
        aws.gate()
            .count_for_account("CreateVpc", customer.account_id()),
        1
    );
    assert_eq!(
        aws.gate()
            .count_for_account("CreateVpc", &aws.saas_account_id()),
        0
    );
    assert_eq!(aws.gate().count("RunInstances"), 1);
    assert_eq!(aws.gate().count("CreateDBInstance"), 1);
    // ...and teardown left nothing tagged behind.
    let ec2 = aws_sdk_ec2::Client::new(&customer.admin_config());
    let managed = || {
        Filter::builder()
            .name("tag:xrole:managed-by")
            .values("xrole")
            .build()
    };
    assert!(
        ec2.describe_vpcs()
            .filters(managed())
            .send()
            .await
            .unwrap()
            .vpcs()
            .is_empty()
    );
    assert!(
        ec2.describe_subnets()
            .filters(managed())
            .send()
            .await
            .unwrap()
            .subnets()
            .is_empty()
    );
    let rds = aws_sdk_rds::Client::new(&customer.admin_config());
    assert!(
        rds.describe_db_instances()
            .send()
            .await
            .unwrap()
            .db_instances()
            .is_empty()
    );
}
