//! HTTP tests of the reference server: every test body runs on SQLite and,
//! when reachable, PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod api_keys;
mod auth;
mod cross_org;
mod errors;
mod idempotency;
mod limits;
mod observability;
mod organizations;
mod roles;
mod sessions;
mod status_page;
mod users;
