#![doc = include_str!("../README.md")]

mod aws;
mod db;
mod gate;
mod moto;
mod policy;
mod sts;
mod wire;

pub use aws::{Aws, CustomerAccount, SAAS_USER, xrole_trust_policy};
pub use db::{Backend, DEFAULT_POSTGRES_URL, POSTGRES_URL_VAR, TestDb, postgres_database_exists};
pub use gate::{CONTROL_PREFIX, Fault, Gate, GateControl, IssuedCredentials};
pub use moto::{Moto, free_port, python, workspace_root};
