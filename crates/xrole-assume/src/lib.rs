#![doc = include_str!("../README.md")]

mod backoff;
mod broker;
mod error;
mod metrics;
mod provider;
mod spec;
mod sts;
mod trust;
mod types;
mod verify;

pub use broker::{Broker, BrokerBuilder};
pub use error::Error;
pub use metrics::{Metrics, StsErrors};
pub use provider::TenantCredentials;
pub use spec::{
    AssumeSpec, AssumeSpecBuilder, DEFAULT_SESSION_DURATION, MAX_CHAINED_SESSION_DURATION,
    MAX_POLICY_ARNS, MAX_SESSION_DURATION, MAX_SESSION_TAGS, MIN_SESSION_DURATION,
};
pub use trust::{TrustFinding, audit_trust_policy};
pub use types::{
    AwsAccountId, MAX_SESSION_NAME_LEN, MAX_SESSION_POLICY_CHARS, Partition, RoleArn, SessionName,
    SessionPolicy, SessionTag, SourceIdentity,
};
pub use verify::{
    PROBE_SESSION_NAME, TrustPolicyCheck, VERIFY_SESSION_NAME, VerifyOptions, VerifyOutcome,
};
/// Re-exported so callers need not depend on `xrole-crypto` just to name it.
pub use xrole_crypto::ExternalId;
