//! How `xrole serve` finds its own AWS identity, and what it says when there
//! is none.
//!
//! The default provider chain ends with EC2 instance metadata (IMDS): on a
//! laptop without AWS credentials it waits for a metadata service that is
//! not there and logs a page of warnings. In development (`--dev`) IMDS is
//! left out unless `XROLE_AWS_IMDS=true` asks for it; elsewhere it stays in,
//! as instances and containers rely on it. Either way a missing identity is
//! one log line, and `/readyz` repeats it.

use std::sync::Arc;

use aws_config::BehaviorVersion;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::meta::region::RegionProviderChain;
use aws_credential_types::provider::ProvideCredentials;
use aws_credential_types::provider::error::CredentialsError;

use crate::link_flow::{AwsRuntime, AwsSettings};

/// What `/readyz` and the start-up log say when there are no credentials and
/// no principal to hand to customers.
pub const NO_CREDENTIALS: &str = "no AWS credentials: AWS account routes answer 503; \
     run scripts/demo to try the whole flow against a local AWS emulator";

/// The region STS is asked in when neither the environment nor a profile
/// names one (development only; IMDS would be asked otherwise).
const DEV_REGION: &str = "us-east-1";

/// The outcome of looking for the server's AWS side.
#[derive(Debug)]
#[non_exhaustive]
pub enum AwsSide {
    /// Ready: install it and start the workers.
    Ready(Arc<AwsRuntime>),
    /// Ready to create links for a configured principal, though no
    /// credentials were found: verification and provisioning will fail
    /// until the server has some. The string says so, for the log.
    WithoutCredentials(Arc<AwsRuntime>, String),
    /// Not available: the string says why and what to do, in one line.
    Unavailable(String),
}

/// Whether IMDS may be asked for credentials and the region: an explicit
/// `XROLE_AWS_IMDS` wins, otherwise everywhere but in development.
pub fn imds_allowed(dev: bool, env: impl Fn(&str) -> Option<String>) -> Result<bool, String> {
    match env("XROLE_AWS_IMDS").as_deref().map(str::trim) {
        None | Some("") => Ok(!dev),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(format!(
                "invalid value for XROLE_AWS_IMDS: {v:?} (expected true or false)"
            )),
        },
    }
}

/// Finds the server's AWS side from the process environment.
pub async fn start(imds: bool) -> AwsSide {
    let settings = match AwsSettings::from_env() {
        Ok(s) => s,
        Err(e) => {
            return AwsSide::Unavailable(format!(
                "AWS side disabled: {e}; AWS account routes answer 503 and no job runs"
            ));
        }
    };
    if imds {
        return match AwsRuntime::from_environment().await {
            Ok(aws) => AwsSide::Ready(aws),
            Err(e) => AwsSide::Unavailable(one_line(&format!(
                "AWS side disabled: {e}; AWS account routes answer 503 and no job runs"
            ))),
        };
    }
    let credentials = chain_without_imds();
    let found = match credentials.provide_credentials().await {
        Ok(_) => true,
        Err(CredentialsError::CredentialsNotLoaded(_)) => false,
        // Configured but failing (an expired SSO session…): the identity
        // check below reports it.
        Err(_) => true,
    };
    let region = RegionProviderChain::first_try(
        aws_config::environment::EnvironmentVariableRegionProvider::new(),
    )
    .or_else(aws_config::profile::ProfileFileRegionProvider::builder().build())
    .or_else(DEV_REGION);
    let base = aws_config::defaults(BehaviorVersion::latest())
        .credentials_provider(credentials)
        .region(region)
        .load()
        .await;
    if !found && settings.saas_principal_arn.is_none() {
        return AwsSide::Unavailable(NO_CREDENTIALS.to_owned());
    }
    let principal = settings.saas_principal_arn.clone();
    match AwsRuntime::start(base, settings).await {
        Ok(aws) if found => AwsSide::Ready(aws),
        Ok(aws) => AwsSide::WithoutCredentials(
            aws,
            format!(
                "no AWS credentials: links can be created for {}, but verifying and \
                 provisioning through them fail until the server has AWS credentials; \
                 run scripts/demo to try the whole flow against a local AWS emulator",
                principal.as_deref().unwrap_or("XROLE_SAAS_PRINCIPAL_ARN")
            ),
        ),
        Err(e) => AwsSide::Unavailable(one_line(&format!(
            "AWS side disabled: {e}; AWS account routes answer 503 and no job runs"
        ))),
    }
}

/// The default chain's providers but IMDS: the environment, the shared
/// profile files, web identity tokens and the container endpoint, none of
/// which waits on the network when it is not configured.
fn chain_without_imds() -> CredentialsProviderChain {
    CredentialsProviderChain::first_try(
        "Environment",
        aws_config::environment::EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else(
        "Profile",
        aws_config::profile::ProfileFileCredentialsProvider::builder().build(),
    )
    .or_else(
        "WebIdentityToken",
        aws_config::web_identity_token::WebIdentityTokenCredentialsProvider::builder().build(),
    )
    .or_else(
        "EcsContainer",
        aws_config::ecs::EcsCredentialsProvider::builder().build(),
    )
}

/// AWS errors can span lines; the log line and `/readyz` take one.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imds_is_off_in_development_unless_asked() {
        let none = |_: &str| None;
        assert_eq!(imds_allowed(true, none), Ok(false));
        assert_eq!(imds_allowed(false, none), Ok(true));
        let yes = |_: &str| Some("true".to_owned());
        assert_eq!(imds_allowed(true, yes), Ok(true));
        let no = |_: &str| Some("0".to_owned());
        assert_eq!(imds_allowed(false, no), Ok(false));
        assert!(imds_allowed(true, |_: &str| Some("maybe".to_owned())).is_err());
    }

    #[test]
    fn errors_become_one_line() {
        assert_eq!(one_line("a\n  b\tc "), "a b c");
    }
}
