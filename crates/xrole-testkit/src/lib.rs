//! Test support for xrole: real services for every test.
//!
//! - [`Moto`]: the AWS emulator on a free loopback port, killed when dropped.
//! - [`TestDb`]: a fresh SQLite file or PostgreSQL database, removed when dropped.

mod db;
mod moto;

pub use db::{Backend, DEFAULT_POSTGRES_URL, POSTGRES_URL_VAR, TestDb, postgres_database_exists};
pub use moto::{Moto, free_port, python, workspace_root};
