//! The job contract: every kind of job the worker runs, its payload, and
//! the one way to queue one ([`enqueue`]). Routes build a [`JobSpec`];
//! the worker reads a claimed row back with [`JobSpec::from_row`] and
//! dispatches on it. A row keeps its encoding (the `kind` column and the
//! payload as JSON), so jobs queued by an older release still run.
//!
//! Each kind runs in its own file (`verify.rs`, `provision.rs`,
//! `teardown.rs`, one `run` each, sharing `context.rs`); the worker
//! (`crate::worker`) only claims, leases and dispatches.
//!
//! To add a job kind: a `KIND_…` name, a payload struct, a [`JobSpec`]
//! variant (with its arms in `kind`, `from_row` and `payload`), a file with
//! its `run`, and its arm in the worker's dispatch.

pub(crate) mod context;
mod error;
pub(crate) mod provision;
pub(crate) mod teardown;
pub(crate) mod verify;

pub use error::JobError;

use serde::{Deserialize, Serialize};
use xrole_provision::EnvironmentPlan;
use xrole_store::jobs::{Job, NewJob};
use xrole_store::{Conn, LinkId, OrgId};

/// Job kind: verify a link's role.
pub const KIND_VERIFY: &str = "verify_link";
/// Job kind: build a VPC.
pub const KIND_VPC: &str = "provision_vpc";
/// Job kind: launch instances in a VPC.
pub const KIND_INSTANCES: &str = "provision_instances";
/// Job kind: create a database in a VPC.
pub const KIND_DATABASE: &str = "provision_database";
/// Job kind: delete a resource (and, with cascade, its dependents).
pub const KIND_TEARDOWN: &str = "teardown";

/// Resource kind of a VPC (with its subnets, gateway, routes and groups).
pub const RES_VPC: &str = "vpc";
/// Resource kind of an EC2 instance.
pub const RES_INSTANCE: &str = "ec2_instance";
/// Resource kind of an RDS instance.
pub const RES_DATABASE: &str = "rds_instance";

/// The payload of a `verify_link` job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VerifyPayload {
    /// Who asked (audit actor string).
    pub actor: String,
    /// The link's generation to test; a result for any other is ignored.
    /// Absent in jobs queued before generations existed: the link's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The role to test (likewise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
}

/// The payload of a provisioning job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionPayload {
    /// Who asked (audit actor string).
    pub actor: String,
    /// The AWS region.
    pub region: String,
    /// The whole plan (for instances and databases: the VPC's plan plus the
    /// new part; the VPC's steps come from its job's journal).
    pub plan: EnvironmentPlan,
    /// The job that built the VPC (instances and databases).
    pub vpc_job: Option<String>,
    /// The VPC resource (instances and databases).
    pub vpc_resource: Option<String>,
}

/// The payload of a `teardown` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TeardownPayload {
    /// Who asked (audit actor string).
    pub actor: String,
    /// The resource to delete.
    pub resource: String,
    /// Whether dependents go too (children first).
    pub cascade: bool,
    /// Whether each database is deleted with a final snapshot (the default;
    /// `false` only when the request said so).
    #[serde(default = "yes")]
    pub final_snapshot: bool,
}

fn yes() -> bool {
    true
}

/// Attempts a job gets.
pub const MAX_ATTEMPTS: u32 = 5;

/// A job to queue, or a claimed job read back: its kind and its payload.
#[derive(Debug, Clone)]
pub enum JobSpec {
    /// Verify a link's role (`verify_link`).
    VerifyLink(VerifyPayload),
    /// Build a VPC (`provision_vpc`).
    ProvisionVpc(ProvisionPayload),
    /// Launch instances in a VPC (`provision_instances`).
    ProvisionInstances(ProvisionPayload),
    /// Create a database in a VPC (`provision_database`).
    ProvisionDatabase(ProvisionPayload),
    /// Delete a resource and, with cascade, its dependents (`teardown`).
    Teardown(TeardownPayload),
}

impl JobSpec {
    /// The `kind` column's value.
    pub fn kind(&self) -> &'static str {
        match self {
            JobSpec::VerifyLink(_) => KIND_VERIFY,
            JobSpec::ProvisionVpc(_) => KIND_VPC,
            JobSpec::ProvisionInstances(_) => KIND_INSTANCES,
            JobSpec::ProvisionDatabase(_) => KIND_DATABASE,
            JobSpec::Teardown(_) => KIND_TEARDOWN,
        }
    }

    /// A stored job's kind and payload, typed; `Err` names what is wrong
    /// (an unknown kind, a payload that does not fit it).
    pub fn from_row(kind: &str, payload: &serde_json::Value) -> Result<JobSpec, String> {
        fn parse<T: serde::de::DeserializeOwned>(
            kind: &str,
            payload: &serde_json::Value,
        ) -> Result<T, String> {
            T::deserialize(payload).map_err(|e| format!("a {kind} job's payload: {e}"))
        }
        Ok(match kind {
            KIND_VERIFY => JobSpec::VerifyLink(parse(kind, payload)?),
            KIND_VPC => JobSpec::ProvisionVpc(parse(kind, payload)?),
            KIND_INSTANCES => JobSpec::ProvisionInstances(parse(kind, payload)?),
            KIND_DATABASE => JobSpec::ProvisionDatabase(parse(kind, payload)?),
            KIND_TEARDOWN => JobSpec::Teardown(parse(kind, payload)?),
            other => return Err(format!("unknown job kind {other}")),
        })
    }

    /// The AWS region a provisioning job acts in (`None` for the others).
    pub fn region(&self) -> Option<&str> {
        match self {
            JobSpec::ProvisionVpc(p)
            | JobSpec::ProvisionInstances(p)
            | JobSpec::ProvisionDatabase(p) => Some(&p.region),
            JobSpec::VerifyLink(_) | JobSpec::Teardown(_) => None,
        }
    }

    /// The payload column's value.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            JobSpec::VerifyLink(p) => serde_json::to_value(p),
            JobSpec::ProvisionVpc(p)
            | JobSpec::ProvisionInstances(p)
            | JobSpec::ProvisionDatabase(p) => serde_json::to_value(p),
            JobSpec::Teardown(p) => serde_json::to_value(p),
        };
        // Plain structs of strings, numbers and a plan of the same: always JSON.
        value.unwrap_or_default()
    }
}

/// Queues `spec` for `org` through `link`, runnable now, with the
/// attempts every job gets ([`MAX_ATTEMPTS`]).
pub fn enqueue(
    conn: &mut Conn,
    org: OrgId,
    link: LinkId,
    spec: &JobSpec,
    now_ms: i64,
) -> xrole_store::Result<Job> {
    let payload = spec.payload();
    xrole_store::jobs::enqueue(
        conn,
        org,
        &NewJob {
            link: Some(link),
            kind: spec.kind(),
            payload: &payload,
            max_attempts: MAX_ATTEMPTS,
        },
        now_ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows as earlier releases wrote them still read back.
    #[test]
    fn stored_rows_read_back_typed() {
        let old_verify = serde_json::json!({"actor": "api_key:k1"});
        let JobSpec::VerifyLink(v) = JobSpec::from_row(KIND_VERIFY, &old_verify).unwrap() else {
            panic!("not a verification");
        };
        assert_eq!((v.actor.as_str(), v.generation), ("api_key:k1", None));
        let old_teardown = serde_json::json!({"actor": "u", "resource": "r", "cascade": true});
        let JobSpec::Teardown(t) = JobSpec::from_row(KIND_TEARDOWN, &old_teardown).unwrap() else {
            panic!("not a teardown");
        };
        assert!(t.final_snapshot, "absent means a final snapshot");
        let spec = JobSpec::Teardown(t);
        let back = JobSpec::from_row(spec.kind(), &spec.payload()).unwrap();
        assert_eq!(back.kind(), KIND_TEARDOWN);
        assert!(JobSpec::from_row("mine_bitcoin", &old_verify).is_err());
        assert!(JobSpec::from_row(KIND_VPC, &old_verify).is_err());
    }
}
