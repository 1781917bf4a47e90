//! Helpers shared by the gate tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use xrole_testkit::{Aws, CustomerAccount};

/// The External ID the customer roles of these tests expect.
pub const EXT: &str = "xrole-ext-0123456789abcdef";

/// moto + gate, one customer, and its xrole role (named `xrole`).
pub async fn setup() -> (Aws, CustomerAccount, String) {
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let role = customer
        .create_xrole_role("xrole", &aws.saas_principal_arn(), EXT)
        .await
        .unwrap();
    (aws, customer, role)
}

/// Lets the sessions of role `name` assume the account's roles (role
/// chaining): the gate evaluates the session's identity policies too.
pub async fn allow_role_chaining(customer: &CustomerAccount, name: &str) {
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow",
        "Action": ["sts:AssumeRole", "sts:TagSession", "sts:SetSourceIdentity"],
        "Resource": format!("arn:aws:iam::{}:role/*", customer.account_id())}]});
    aws_sdk_iam::Client::new(&customer.admin_config())
        .put_role_policy()
        .role_name(name)
        .policy_name("role-chaining")
        .policy_document(policy.to_string())
        .send()
        .await
        .unwrap();
}

/// An STS client as the SaaS identity, through the gate, without retries (so a
/// test sees each answer).
pub fn saas_sts(aws: &Aws) -> aws_sdk_sts::Client {
    no_retry_sts(&aws.saas_config())
}

pub fn no_retry_sts(config: &aws_config::SdkConfig) -> aws_sdk_sts::Client {
    let conf = aws_sdk_sts::config::Builder::from(config)
        .retry_config(RetryConfig::disabled())
        .build();
    aws_sdk_sts::Client::from_conf(conf)
}

/// Session credentials as an SDK credentials value.
pub fn creds(c: &aws_sdk_sts::types::Credentials) -> Credentials {
    Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        None,
        "test",
    )
}

/// An STS client for a session, through the gate.
pub fn session_sts(aws: &Aws, c: &aws_sdk_sts::types::Credentials) -> aws_sdk_sts::Client {
    no_retry_sts(&aws.config_for(creds(c)))
}

/// The admin identity of `customer`, but talking through the gate.
pub async fn admin_through_gate(aws: &Aws, customer: &CustomerAccount) -> aws_config::SdkConfig {
    aws.config_for(customer.admin_credentials())
}

/// Assumes `role` as the SaaS identity with the test External ID.
pub async fn assume(aws: &Aws, role: &str, session: &str) -> aws_sdk_sts::types::Credentials {
    let out = saas_sts(aws)
        .assume_role()
        .role_arn(role)
        .role_session_name(session)
        .external_id(EXT)
        .send()
        .await
        .unwrap();
    out.credentials().unwrap().clone()
}

/// The AWS error code and message of a call that must fail.
pub fn error<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    r: Result<T, SdkError<E, R>>,
) -> (String, String) {
    let e = r.expect_err("the call must fail");
    match e.as_service_error() {
        Some(s) => (
            s.code().unwrap_or("").to_owned(),
            s.message().unwrap_or("").to_owned(),
        ),
        None => (format!("{e:?}"), String::new()),
    }
}

/// Just the code.
pub fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    r: Result<T, SdkError<E, R>>,
) -> String {
    error(r).0
}

/// A trust policy with one Allow statement.
pub fn trust(
    principal: serde_json::Value,
    actions: &[&str],
    condition: serde_json::Value,
) -> String {
    let mut st = serde_json::json!({"Effect": "Allow", "Principal": principal, "Action": actions});
    if !condition.is_null() {
        st["Condition"] = condition;
    }
    serde_json::json!({"Version": "2012-10-17", "Statement": [st]}).to_string()
}
