//! Calls to STS and the classification of what comes back.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_types::SdkConfig;
use aws_types::region::Region;
use xrole_crypto::ExternalId;

use crate::Error;
use crate::spec::AssumeSpec;
use crate::types::{RoleArn, SessionName};

/// Which kind of failure an STS call ended in (one metrics counter each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    AccessDenied,
    RegionDisabled,
    InvalidRequest,
    BaseIdentity,
    Throttled,
    Transient,
    Unexpected,
    /// The broker's own STS budget is spent; `message` holds the wait in ms.
    BudgetExhausted,
}

impl Class {
    pub(crate) fn is_retryable(self) -> bool {
        matches!(self, Class::Throttled | Class::Transient)
    }
}

/// A failed call, before it is given the caller's context.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) class: Class,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn into_error(self, role: &RoleArn, region: &str) -> Error {
        let Failure {
            class,
            code,
            message,
        } = self;
        match class {
            Class::AccessDenied => Error::AccessDenied {
                role: role.clone(),
                message,
            },
            Class::RegionDisabled => Error::RegionDisabled {
                region: region.to_owned(),
            },
            Class::InvalidRequest => Error::InvalidSpec {
                reason: format!("STS rejected the request ({code}): {message}"),
            },
            Class::BaseIdentity => Error::BaseIdentity {
                message: format!("{code}: {message}"),
            },
            Class::Throttled => Error::Throttled {
                message: format!("{code}: {message}"),
            },
            Class::Transient => Error::Transient {
                message: format!("{code}: {message}"),
            },
            Class::Unexpected => Error::Unexpected { code, message },
            Class::BudgetExhausted => Error::BudgetExhausted {
                retry_after: std::time::Duration::from_millis(message.parse().unwrap_or(1000)),
            },
        }
    }
}

fn classify_code(code: &str, status: Option<u16>) -> Class {
    match code {
        "AccessDenied" | "AccessDeniedException" => Class::AccessDenied,
        "RegionDisabledException" | "RegionDisabled" => Class::RegionDisabled,
        "MalformedPolicyDocument"
        | "MalformedPolicyDocumentException"
        | "PackedPolicyTooLarge"
        | "PackedPolicyTooLargeException"
        | "ValidationError"
        | "InvalidParameterValue"
        | "InvalidParameterCombination" => Class::InvalidRequest,
        "InvalidClientTokenId"
        | "SignatureDoesNotMatch"
        | "UnrecognizedClientException"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidAccessKeyId"
        | "OptInRequired" => Class::BaseIdentity,
        "Throttling"
        | "ThrottlingException"
        | "ThrottledException"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ProvisionedThroughputExceededException"
        | "SlowDown"
        | "PriorRequestNotComplete"
        | "EC2ThrottledException"
        | "BandwidthLimitExceeded" => Class::Throttled,
        // An expired base session token or a skewed request: the SDK refreshes and corrects.
        "ExpiredToken"
        | "ExpiredTokenException"
        | "RequestExpired"
        | "RequestTimeout"
        | "RequestTimeoutException"
        | "InternalFailure"
        | "InternalError"
        | "ServiceUnavailable"
        | "IDPCommunicationError" => Class::Transient,
        _ if status.is_some_and(|s| s >= 500) => Class::Transient,
        _ if status == Some(429) => Class::Throttled,
        _ => Class::Unexpected,
    }
}

/// Sorts an SDK error into a [`Failure`]; never copies request parameters.
pub(crate) fn classify<E>(err: &SdkError<E, HttpResponse>) -> Failure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let chain = error_chain(err);
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("Unknown").to_owned();
            let message = ctx.err().message().unwrap_or_default().to_owned();
            Failure {
                class: classify_code(&code, Some(status)),
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) => Failure {
            class: Class::Transient,
            code: "Timeout".into(),
            message: chain,
        },
        SdkError::DispatchFailure(d) => {
            // Identity resolution fails here too: tell "our credentials are missing"
            // apart from "the network is down".
            if let Some(c) = find_credentials_error(err) {
                let class = match c {
                    CredentialsError::CredentialsNotLoaded(_)
                    | CredentialsError::InvalidConfiguration(_) => Class::BaseIdentity,
                    _ => Class::Transient,
                };
                return Failure {
                    class,
                    code: "Credentials".into(),
                    message: chain,
                };
            }
            let code = if d.is_timeout() {
                "Timeout"
            } else {
                "Dispatch"
            };
            Failure {
                class: Class::Transient,
                code: code.into(),
                message: chain,
            }
        }
        SdkError::ResponseError(r) => {
            let status = r.raw().status().as_u16();
            let class = if status == 429 {
                Class::Throttled
            } else {
                Class::Transient
            };
            Failure {
                class,
                code: format!("HTTP{status}"),
                message: chain,
            }
        }
        // Nothing was sent: a broken endpoint URL or similar local configuration.
        SdkError::ConstructionFailure(_) => Failure {
            class: Class::Unexpected,
            code: "ConstructionFailure".into(),
            message: chain,
        },
        _ => Failure {
            class: Class::Unexpected,
            code: "Unknown".into(),
            message: chain,
        },
    }
}

fn find_credentials_error<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a CredentialsError> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(c) = e.downcast_ref::<CredentialsError>() {
            return Some(c);
        }
        cur = e.source();
    }
    None
}

fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

/// What an AssumeRole call returned, secrets still inside SDK types.
pub(crate) struct Assumed {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: String,
}

/// One request: a spec, or the unprotected probe of [`Sts::assume_without_external_id`].
pub(crate) struct Request<'a> {
    pub(crate) role: &'a RoleArn,
    pub(crate) external_id: Option<&'a ExternalId>,
    pub(crate) session_name: &'a SessionName,
    pub(crate) duration: Duration,
    pub(crate) spec: Option<&'a AssumeSpec>,
}

/// Regional STS clients built from the broker's own configuration.
#[derive(Debug)]
pub(crate) struct Sts {
    base: SdkConfig,
    clients: RwLock<HashMap<String, aws_sdk_sts::Client>>,
}

impl Sts {
    pub(crate) fn new(base: SdkConfig) -> Self {
        Sts {
            base,
            clients: RwLock::new(HashMap::new()),
        }
    }

    pub(crate) fn base(&self) -> &SdkConfig {
        &self.base
    }

    /// A client calling STS in `region`. It keeps the base endpoint URL when one is set
    /// (`AWS_ENDPOINT_URL`, tests) and otherwise resolves the regional endpoint. SDK
    /// retries are off: the broker retries itself, with its own clock and metrics.
    pub(crate) fn client(&self, region: &str) -> aws_sdk_sts::Client {
        if let Some(c) = self
            .clients
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(region)
        {
            return c.clone();
        }
        let conf = aws_sdk_sts::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .retry_config(RetryConfig::disabled())
            .build();
        let client = aws_sdk_sts::Client::from_conf(conf);
        self.clients
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(region.to_owned())
            .or_insert(client)
            .clone()
    }

    /// A client that signs with `creds` instead of the broker's identity.
    pub(crate) fn client_with(
        &self,
        region: &str,
        creds: aws_credential_types::Credentials,
    ) -> aws_sdk_sts::Client {
        let conf = aws_sdk_sts::config::Builder::from(&self.base)
            .region(Region::new(region.to_owned()))
            .retry_config(RetryConfig::disabled())
            .credentials_provider(creds)
            .build();
        aws_sdk_sts::Client::from_conf(conf)
    }

    pub(crate) async fn assume_role(
        &self,
        region: &str,
        req: &Request<'_>,
    ) -> Result<Assumed, Failure> {
        let secs = i32::try_from(req.duration.as_secs()).unwrap_or(i32::MAX);
        let mut call = self
            .client(region)
            .assume_role()
            .role_arn(req.role.as_str())
            .role_session_name(req.session_name.as_str())
            .duration_seconds(secs)
            .set_external_id(req.external_id.map(|e| e.as_str().to_owned()));
        if let Some(spec) = req.spec {
            if let Some(si) = spec.source_identity() {
                call = call.source_identity(si.as_str());
            }
            if let Some(p) = spec.policy() {
                call = call.policy(p.as_str());
            }
            for arn in spec.policy_arns() {
                call = call.policy_arns(PolicyDescriptorType::builder().arn(arn).build());
            }
            for t in spec.tags() {
                let tag = Tag::builder()
                    .key(t.key())
                    .value(t.value())
                    .build()
                    .map_err(|e| Failure {
                        class: Class::InvalidRequest,
                        code: "InvalidTag".into(),
                        message: e.to_string(),
                    })?;
                call = call.tags(tag);
            }
        }
        let out = call.send().await.map_err(|e| classify(&e))?;
        let c = out.credentials.ok_or_else(|| Failure {
            class: Class::Transient,
            code: "EmptyResponse".into(),
            message: "AssumeRole answered without credentials".into(),
        })?;
        Ok(Assumed {
            access_key_id: c.access_key_id,
            secret_access_key: c.secret_access_key,
            session_token: c.session_token,
        })
    }

    /// `GetCallerIdentity` as `creds` (or as the broker when `None`): (account, ARN).
    pub(crate) async fn caller_identity(
        &self,
        region: &str,
        creds: Option<aws_credential_types::Credentials>,
    ) -> Result<(String, String), Failure> {
        let client = match creds {
            Some(c) => self.client_with(region, c),
            None => self.client(region),
        };
        let out = client
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| classify(&e))?;
        Ok((out.account.unwrap_or_default(), out.arn.unwrap_or_default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert_eq!(
            classify_code("AccessDenied", Some(403)),
            Class::AccessDenied
        );
        assert_eq!(classify_code("Throttling", Some(400)), Class::Throttled);
        assert_eq!(classify_code("Whatever", Some(503)), Class::Transient);
        assert_eq!(classify_code("Whatever", Some(429)), Class::Throttled);
        assert_eq!(classify_code("Whatever", Some(400)), Class::Unexpected);
        assert_eq!(
            classify_code("RegionDisabledException", Some(403)),
            Class::RegionDisabled
        );
        assert_eq!(
            classify_code("PackedPolicyTooLarge", Some(400)),
            Class::InvalidRequest
        );
        assert_eq!(
            classify_code("InvalidClientTokenId", Some(403)),
            Class::BaseIdentity
        );
        assert!(Class::Throttled.is_retryable() && Class::Transient.is_retryable());
        assert!(!Class::AccessDenied.is_retryable());
    }
}
