//! The `broker_only` example, run against moto behind the STS gate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../broker_only.rs"]
#[allow(dead_code)]
mod broker_only;

use xrole_crypto::ExternalId;
use xrole_testkit::Aws;

#[tokio::test]
async fn lists_only_the_customers_vpcs_through_the_broker() {
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

    // A VPC the customer made themselves, and one in the SaaS's own account.
    let admin = aws_sdk_ec2::Client::new(&customer.admin_config());
    let theirs = admin
        .create_vpc()
        .cidr_block("10.7.0.0/16")
        .send()
        .await
        .unwrap();
    let theirs = theirs.vpc().unwrap().vpc_id().unwrap().to_owned();
    let saas = aws_sdk_ec2::Client::new(&aws.saas_config());
    let ours = saas
        .create_vpc()
        .cidr_block("10.8.0.0/16")
        .send()
        .await
        .unwrap();
    let ours = ours.vpc().unwrap().vpc_id().unwrap().to_owned();

    let listing = broker_only::run(&aws.saas_config(), &role, external_id.as_str(), "us-east-1")
        .await
        .unwrap();
    assert!(listing.vpc_ids.contains(&theirs), "{:?}", listing.vpc_ids);
    assert!(
        !listing.vpc_ids.contains(&ours),
        "SaaS VPC visible to the customer session"
    );
    assert!(!contains(
        &listing.sealed_external_id,
        external_id.as_str().as_bytes()
    ));
    assert_eq!(aws.gate().count("AssumeRole"), 1);
}

#[tokio::test]
async fn a_wrong_external_id_is_refused() {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let role = customer
        .create_xrole_role(
            "xrole-access",
            &aws.saas_principal_arn(),
            ExternalId::generate().as_str(),
        )
        .await
        .unwrap();
    let wrong = ExternalId::generate();
    let err = broker_only::run(&aws.saas_config(), &role, wrong.as_str(), "us-east-1").await;
    assert!(err.is_err());
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
