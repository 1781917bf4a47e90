//! The gate decides `AssumeRole` like AWS, seen through the real `aws-sdk-sts`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use aws_credential_types::Credentials;
use aws_sdk_sts::error::ProvideErrorMetadata;
use xrole_testkit::{Aws, CustomerAccount};

const EXT: &str = "xrole-ext-0123456789abcdef";

async fn setup() -> (Aws, CustomerAccount, String) {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let role = customer
        .create_xrole_role("xrole", &aws.saas_principal_arn(), EXT)
        .await
        .unwrap();
    (aws, customer, role)
}

fn session_creds(c: &aws_sdk_sts::types::Credentials) -> Credentials {
    Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "test",
    )
}

/// The error code of a failed call.
fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    r: Result<T, aws_sdk_sts::error::SdkError<E, R>>,
) -> String {
    let e = r.expect_err("the call must fail");
    e.as_service_error()
        .and_then(|s| s.code())
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{e:?}"))
}

#[tokio::test]
async fn right_external_id_yields_the_customers_assumed_role() {
    let (aws, customer, role) = setup().await;
    let sts = aws_sdk_sts::Client::new(&aws.saas_config());
    let me = sts.get_caller_identity().send().await.unwrap();
    assert_eq!(me.arn(), Some(aws.saas_principal_arn().as_str()));
    assert_eq!(me.account(), Some(aws.saas_account_id().as_str()));

    let out = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("xrole-org-verify")
        .external_id(EXT)
        .send()
        .await
        .unwrap();
    let session =
        aws_sdk_sts::Client::new(&aws.config_for(session_creds(out.credentials().unwrap())));
    let who = session.get_caller_identity().send().await.unwrap();
    assert_eq!(who.account(), Some(customer.account_id()));
    assert_eq!(
        who.arn(),
        Some(
            format!(
                "arn:aws:sts::{}:assumed-role/xrole/xrole-org-verify",
                customer.account_id()
            )
            .as_str()
        )
    );
    assert_ne!(customer.account_id(), aws.saas_account_id());
}

#[tokio::test]
async fn wrong_or_missing_external_id_is_access_denied() {
    let (aws, _customer, role) = setup().await;
    let sts = aws_sdk_sts::Client::new(&aws.saas_config());
    let wrong = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .external_id("xrole-ext-other")
        .send()
        .await;
    assert_eq!(code(wrong), "AccessDenied");
    let missing = sts
        .assume_role()
        .role_arn(&role)
        .role_session_name("s1")
        .send()
        .await;
    assert_eq!(code(missing), "AccessDenied");
}
