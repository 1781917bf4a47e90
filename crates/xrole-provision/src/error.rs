//! The crate's error type, and the mapping from AWS SDK errors to it.

use std::fmt;
use std::time::Duration;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::StepKey;

/// A plan field that failed validation, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanProblem {
    /// The field's path in the plan, such as `vpc.cidr` or
    /// `instances[0].instance_type`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for PlanProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Everything that can go wrong while planning, provisioning or tearing down.
///
/// [`Error::is_retryable`] tells a worker whether running the job again later
/// can succeed without anyone changing anything.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The plan is invalid; nothing was sent to AWS.
    #[error("invalid plan: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    InvalidPlan {
        /// Every problem found, each naming its field.
        problems: Vec<PlanProblem>,
    },
    /// The session configuration has no region.
    #[error("the AWS configuration has no region")]
    MissingRegion,
    /// The customer's role does not allow an action xrole needs.
    #[error(
        "the customer role is not allowed to call {action}: add it to the role's policy ({message})"
    )]
    Unauthorized {
        /// The missing IAM action, such as `ec2:RunInstances`.
        action: String,
        /// AWS's message (for EC2, it carries an encoded authorization message).
        message: String,
    },
    /// A service quota of the customer's account is exhausted.
    #[error("{action} hit a service quota of the customer's account ({code}): {message}")]
    QuotaExceeded {
        /// The action, such as `ec2:CreateVpc`.
        action: String,
        /// AWS's error code, such as `VpcLimitExceeded`.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// AWS kept throttling an action after every retry.
    #[error("{action} was still throttled after retrying")]
    Throttled {
        /// The action.
        action: String,
    },
    /// A network failure, timeout or AWS server error persisted after every retry.
    #[error("{action} failed transiently: {message}")]
    Transient {
        /// The action.
        action: String,
        /// What happened.
        message: String,
    },
    /// Any other error AWS returned.
    #[error("{action} failed ({code}): {message}")]
    Aws {
        /// The action.
        action: String,
        /// AWS's error code, or `unknown`.
        code: String,
        /// AWS's message.
        message: String,
    },
    /// A resource could not be deleted because something still depends on it,
    /// even after retrying for the configured time.
    #[error("step {step}: still has dependencies after retrying: {message}")]
    DependencyViolation {
        /// The teardown step.
        step: StepKey,
        /// AWS's message.
        message: String,
    },
    /// A waiter gave up.
    #[error("step {step}: {waiting_for} not reached within {after:?} (last state: {last_state})")]
    Timeout {
        /// The step that waited.
        step: StepKey,
        /// What it waited for, such as `instance running`.
        waiting_for: &'static str,
        /// The configured timeout.
        after: Duration,
        /// The last state AWS reported.
        last_state: String,
    },
    /// A resource reached a state it cannot leave on its own (an instance
    /// terminated while starting, a database `failed`).
    #[error("step {step}: resource entered state `{state}`")]
    ResourceFailed {
        /// The step.
        step: StepKey,
        /// The state AWS reported.
        state: String,
    },
    /// A resource with this job's deterministic name exists but is not this
    /// job's, or several resources claim to be the same step.
    #[error("step {step}: {message}")]
    Conflict {
        /// The step.
        step: StepKey,
        /// What was found.
        message: String,
    },
    /// A database's deletion protection stayed on after teardown lifted it
    /// (something turned it back on meanwhile); teardown does not remove it.
    #[error(
        "step {step}: the database has deletion protection enabled again; disable it to tear down"
    )]
    DeletionProtected {
        /// The teardown step.
        step: StepKey,
    },
    /// Steps whose intent was recorded by an earlier run, whose resource could
    /// not be found by its tags and whose create call is not idempotent. An
    /// operator checks the account, then either records the resource found
    /// with [`StepJournal::record_result`](crate::StepJournal::record_result)
    /// or lists the step in [`ExecutorOptions::recreate`](crate::ExecutorOptions::recreate).
    #[error("steps need reconciliation (intent recorded, resource not found): {}", steps.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    ReconciliationRequired {
        /// The steps.
        steps: Vec<StepKey>,
    },
    /// The journal failed; the job stops (and can be resumed).
    #[error("step journal: {0}")]
    Journal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps a journal implementation's error.
    pub fn journal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Journal(Box::new(e))
    }

    /// Whether retrying the job later, unchanged, can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. }
                | Error::Transient { .. }
                | Error::Timeout { .. }
                | Error::DependencyViolation { .. }
                | Error::Journal(_)
        )
    }
}

/// How an AWS failure should be handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Throttled,
    Transient,
    Unauthorized,
    Quota,
    Other,
}

/// An AWS call's failure, classified, with the action that failed.
#[derive(Debug, Clone)]
pub(crate) struct AwsError {
    pub action: &'static str,
    pub code: Option<String>,
    pub message: String,
    pub kind: Kind,
}

impl AwsError {
    pub fn code(&self) -> &str {
        self.code.as_deref().unwrap_or("")
    }

    pub fn is(&self, code: &str) -> bool {
        self.code() == code
    }
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];

const TRANSIENT: &[&str] = &[
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
];

const UNAUTHORIZED: &[&str] = &[
    "UnauthorizedOperation",
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedAccess",
];

fn classify(code: Option<&str>, status: Option<u16>) -> Kind {
    match code {
        Some(c) if THROTTLING.contains(&c) => Kind::Throttled,
        Some(c) if TRANSIENT.contains(&c) => Kind::Transient,
        Some(c) if UNAUTHORIZED.contains(&c) => Kind::Unauthorized,
        Some(c) if c.ends_with("LimitExceeded") || c.contains("QuotaExceeded") => Kind::Quota,
        _ if status.is_some_and(|s| s >= 500) => Kind::Transient,
        _ if status == Some(429) => Kind::Throttled,
        _ => Kind::Other,
    }
}

/// Classifies an SDK error of `action` (written `ec2:CreateVpc`).
pub(crate) fn aws_error<E>(action: &'static str, err: SdkError<E, HttpResponse>) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    match &err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            let code = e.code().map(str::to_owned);
            let message = e.message().map_or_else(|| e.to_string(), str::to_owned);
            AwsError {
                action,
                kind: classify(code.as_deref(), status),
                code,
                message,
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => AwsError {
            action,
            code: None,
            message: error_chain(&err),
            kind: Kind::Transient,
        },
        _ => AwsError {
            action,
            code: None,
            message: match status {
                Some(s) => format!("HTTP {s}: {}", error_chain(&err)),
                None => error_chain(&err),
            },
            kind: classify(None, status),
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl From<AwsError> for Error {
    fn from(e: AwsError) -> Self {
        let action = e.action.to_owned();
        match e.kind {
            Kind::Throttled => Error::Throttled { action },
            Kind::Transient => Error::Transient {
                action,
                message: e.message,
            },
            Kind::Unauthorized => Error::Unauthorized {
                action,
                message: e.message,
            },
            Kind::Quota => Error::QuotaExceeded {
                action,
                code: e.code.unwrap_or_default(),
                message: e.message,
            },
            Kind::Other => Error::Aws {
                action,
                code: e.code.unwrap_or_else(|| "unknown".to_owned()),
                message: e.message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert_eq!(
            classify(Some("RequestLimitExceeded"), Some(503)),
            Kind::Throttled
        );
        assert_eq!(classify(Some("Throttling"), Some(400)), Kind::Throttled);
        assert_eq!(classify(Some("VpcLimitExceeded"), Some(400)), Kind::Quota);
        assert_eq!(
            classify(Some("InstanceQuotaExceeded"), Some(400)),
            Kind::Quota
        );
        assert_eq!(
            classify(Some("UnauthorizedOperation"), Some(403)),
            Kind::Unauthorized
        );
        assert_eq!(classify(None, Some(500)), Kind::Transient);
        assert_eq!(
            classify(Some("InvalidParameterValue"), Some(400)),
            Kind::Other
        );
    }

    #[test]
    fn unauthorized_names_the_action() {
        let e: Error = AwsError {
            action: "ec2:RunInstances",
            code: Some("UnauthorizedOperation".into()),
            message: "You are not authorized".into(),
            kind: Kind::Unauthorized,
        }
        .into();
        assert!(e.to_string().contains("ec2:RunInstances"), "{e}");
        assert!(!e.is_retryable());
    }
}
