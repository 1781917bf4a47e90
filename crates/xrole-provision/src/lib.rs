#![doc = include_str!("../README.md")]

mod cidr;
mod error;
mod executor;
mod journal;
mod plan;
mod scope;
mod steps;

pub use cidr::{CidrBlock, Ipv4Cidr, MAX_PREFIX, MIN_PREFIX};
pub use error::{Error, PlanProblem};
pub use executor::{Environment, Executor, ExecutorOptions, Progress, tags};
pub use journal::{InMemoryJournal, JournalEntry, StepJournal, StepKey};
pub use plan::{
    AMAZON_LINUX_2023_ARM64, AMAZON_LINUX_2023_X86_64, AmiSource, DatabasePlan, Engine,
    EnvironmentPlan, IngressRule, IngressSource, InstancePlan, Protocol, SecurityGroupPlan,
    SubnetTier, ValidPlan, VpcPlan,
};
pub use scope::{JobId, JobScope};
