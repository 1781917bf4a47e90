//! Operator tasks behind the CLI: migrations, re-sealing after key rotation,
//! creating an organization from the command line.

use xrole_crypto::Keyring;
use xrole_store::Conn;

use crate::error::ApiError;
use crate::routes::organizations::{CreatedOrg, create_org_tx};
use crate::state::AppState;
use crate::{StartError, audit};

/// Applies pending migrations; returns the versions applied.
pub fn migrate(database_url: &str) -> Result<Vec<String>, StartError> {
    let mut conn = xrole_store::connect(database_url)?;
    Ok(xrole_store::run_migrations(&mut conn)?)
}

/// The servers that reported their keyring's primary key recently (see
/// [`crate::keyring_watch`]).
pub fn live_keyring_instances(
    database_url: &str,
) -> Result<Vec<xrole_store::keyring_instances::Instance>, StartError> {
    let mut conn = xrole_store::connect(database_url)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let window = i64::try_from(crate::keyring_watch::LIVE_WITHIN.as_millis()).unwrap_or(30_000);
    Ok(xrole_store::keyring_instances::live(
        &mut conn,
        now - window,
    )?)
}

/// Progress of [`reseal_all`], reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct ResealProgress {
    /// What is being re-sealed.
    pub column: &'static str,
    /// Rows examined so far.
    pub done: u64,
    /// Rows to examine.
    pub total: u64,
}

const BATCH: u32 = 500;

/// Re-seals every sealed value not under the keyring's primary key: the
/// AWS account links' and organization connections' External IDs and
/// callback secrets ([`xrole_store::links::reseal_all`],
/// [`xrole_store::connections::reseal_all`]) and the stored idempotent responses
/// ([`xrole_store::idempotency::reseal_all`]). Batches of one transaction each, so an
/// interrupted run resumes where it stopped. Returns how many values were
/// re-sealed.
pub fn reseal_all(
    database_url: &str,
    keyring: &Keyring,
    mut progress: impl FnMut(ResealProgress),
) -> Result<u64, StartError> {
    let mut conn = xrole_store::connect(database_url)?;
    xrole_store::run_migrations(&mut conn)?;
    let links = xrole_store::links::reseal_all(&mut conn, keyring, BATCH, |done, total| {
        progress(ResealProgress {
            column: "aws_account_links",
            done,
            total,
        })
    })?;
    let connections =
        xrole_store::connections::reseal_all(&mut conn, keyring, BATCH, |done, total| {
            progress(ResealProgress {
                column: "aws_org_connections",
                done,
                total,
            })
        })?;
    let responses =
        xrole_store::idempotency::reseal_all(&mut conn, keyring, BATCH, |done, total| {
            progress(ResealProgress {
                column: "idempotency_records.response_body",
                done,
                total,
            })
        })?;
    Ok(links.resealed + connections.resealed + responses.resealed)
}

/// `xrole org create`: an organization, its first admin (no password) and
/// that admin's first API key, audited as the operator.
pub fn create_org_cli(
    state: &AppState,
    conn: &mut Conn,
    name: &str,
    admin_email: &str,
) -> Result<CreatedOrg, ApiError> {
    let input = crate::routes::organizations::NewOrg::parse(name, admin_email, None)?;
    xrole_store::write_transaction(conn, |conn| {
        create_org_tx(state, conn, input, None, audit::Actor::Operator, None)
    })
}
