#![doc = include_str!("../README.md")]

mod actions;
mod aws;
mod db;
mod enforce;
mod gate;
mod iam;
mod moto;
mod policy;
mod sts;
mod wire;

pub use aws::{AccessLevel, Aws, CustomerAccount, Organization, SAAS_USER, xrole_trust_policy};
pub use db::{Backend, DEFAULT_POSTGRES_URL, POSTGRES_URL_VAR, TestDb, postgres_database_exists};
pub use enforce::Decision;
pub use gate::{CONTROL_PREFIX, Fault, Gate, GateControl, IssuedCredentials, Verdict};
pub use moto::{Moto, free_port, python, workspace_root};
