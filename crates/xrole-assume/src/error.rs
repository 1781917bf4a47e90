//! The one error type of the crate.

use std::time::Duration;

use crate::types::RoleArn;

/// What went wrong, sorted by what the caller should do about it.
///
/// Configuration errors ([`is_configuration`](Error::is_configuration)) do not go away
/// by retrying: the spec, the customer's trust policy or the region must change.
/// Transient errors ([`is_retryable`](Error::is_retryable)) may succeed later; the broker
/// has already retried them a few times with backoff.
///
/// Messages carry role ARNs and AWS error text, never a secret or an External ID.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value breaks an STS rule (bad ARN, session name, duration, policy too large…).
    #[error("invalid assume-role request: {reason}")]
    InvalidSpec {
        /// Which rule, in words.
        reason: String,
    },
    /// STS refused: the role's trust policy does not let this principal in with this
    /// External ID, or the role does not exist.
    #[error("access denied assuming {role}: {message}")]
    AccessDenied {
        /// The role that refused.
        role: RoleArn,
        /// STS's message.
        message: String,
    },
    /// AccessDenied for the whole propagation window: the role is absent or its trust
    /// policy is wrong, not merely new.
    #[error("{role} is not assumable after {attempts} attempts over {waited:?}: {message}")]
    NotAssumable {
        /// The role.
        role: RoleArn,
        /// AssumeRole calls made.
        attempts: u32,
        /// Time spent retrying.
        waited: Duration,
        /// The last STS message.
        message: String,
    },
    /// STS is not activated in this region for the account.
    #[error("STS is disabled in region {region} for this account")]
    RegionDisabled {
        /// The region called.
        region: String,
    },
    /// The broker's own AWS identity is not usable (no credentials, invalid token…).
    #[error("the broker's own AWS identity cannot call STS: {message}")]
    BaseIdentity {
        /// What the credentials provider or STS said.
        message: String,
    },
    /// STS throttled the request, also on the broker's retries.
    #[error("STS throttled the request: {message}")]
    Throttled {
        /// STS's message.
        message: String,
    },
    /// Network failure, timeout or an STS server error, also on the broker's retries.
    #[error("STS call failed transiently: {message}")]
    Transient {
        /// What failed.
        message: String,
    },
    /// The broker's own STS budget ([`BrokerBuilder::sts_budget`](crate::BrokerBuilder::sts_budget))
    /// is spent: nothing was sent. Try again after `retry_after`.
    #[error("the STS budget is spent; try again in {retry_after:?}")]
    BudgetExhausted {
        /// When a token is free.
        retry_after: Duration,
    },
    /// An STS error xrole does not classify.
    #[error("unexpected STS error {code}: {message}")]
    Unexpected {
        /// The AWS error code.
        code: String,
        /// The AWS message.
        message: String,
    },
}

impl Error {
    /// Whether the same call may succeed later (throttling, network, 5xx).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled { .. } | Error::Transient { .. } | Error::BudgetExhausted { .. }
        )
    }

    /// Whether something must change first: the spec, the customer's role or trust
    /// policy, the region, or the broker's own identity.
    pub fn is_configuration(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec { .. }
                | Error::AccessDenied { .. }
                | Error::NotAssumable { .. }
                | Error::RegionDisabled { .. }
                | Error::BaseIdentity { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_disjoint() {
        let role = RoleArn::parse("arn:aws:iam::123456789012:role/r").unwrap();
        let all = [
            Error::InvalidSpec { reason: "x".into() },
            Error::AccessDenied {
                role: role.clone(),
                message: "x".into(),
            },
            Error::NotAssumable {
                role,
                attempts: 3,
                waited: Duration::from_secs(1),
                message: "x".into(),
            },
            Error::RegionDisabled { region: "x".into() },
            Error::BaseIdentity {
                message: "x".into(),
            },
            Error::Throttled {
                message: "x".into(),
            },
            Error::Transient {
                message: "x".into(),
            },
            Error::Unexpected {
                code: "x".into(),
                message: "x".into(),
            },
            Error::BudgetExhausted {
                retry_after: Duration::from_millis(5),
            },
        ];
        for e in &all {
            assert!(!(e.is_retryable() && e.is_configuration()), "{e}");
        }
        assert_eq!(all.iter().filter(|e| e.is_retryable()).count(), 3);
        assert_eq!(all.iter().filter(|e| e.is_configuration()).count(), 5);
    }
}
