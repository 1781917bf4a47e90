#![doc = include_str!("../README.md")]

pub mod api_keys;
pub mod audit;
mod backend;
pub mod connections;
mod error;
pub mod idempotency;
pub mod jobs;
pub mod keyring_instances;
pub mod links;
pub mod orgs;
mod reseal;
pub mod resources;
mod schema;
mod types;
pub mod users;
pub mod webhooks;

pub use backend::{
    Backend, Conn, Manager, Pool, PooledConn, SQLITE_BUSY_TIMEOUT, connect, has_pending_migrations,
    parse_url, ping, pool, revert_all_migrations, run_migrations, write_transaction,
};
pub use error::{Error, Result};
pub use types::{
    AccessLevel, ApiKeyId, AuditEventId, ConnectionId, Cursor, Email, JobId, JobState, JobStepId,
    LinkId, LinkState, MAX_PAGE_SIZE, OrgId, Page, PageRequest, ResourceId, ResourceState, UserId,
    UserRole,
};
