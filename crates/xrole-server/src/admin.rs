//! Operator tasks behind the CLI: migrations, re-sealing after key rotation,
//! creating an organization from the command line.

use diesel::prelude::*;
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
/// AWS account links' External IDs and callback secrets (the store's
/// [`xrole_store::links::reseal_all`]) and the stored idempotent responses
/// (sealed by this server). Batches of one transaction each, so an
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
    let responses = reseal_idempotent_responses(&mut conn, keyring, &mut progress)?;
    Ok(links.resealed + responses)
}

fn reseal_idempotent_responses(
    conn: &mut Conn,
    keyring: &Keyring,
    progress: &mut impl FnMut(ResealProgress),
) -> Result<u64, StartError> {
    use xrole_store::schema::idempotency_records::dsl as i;
    type Rec = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<Vec<u8>>,
    );
    let column = "idempotency_records.response_body";
    let total: i64 = i::idempotency_records
        .filter(i::response_body.is_not_null())
        .count()
        .get_result(conn)
        .map_err(xrole_store::Error::from)?;
    let total = u64::try_from(total).unwrap_or(0);
    let (mut after, mut done, mut resealed) = (String::new(), 0u64, 0u64);
    progress(ResealProgress {
        column,
        done,
        total,
    });
    loop {
        let batch = xrole_store::write_transaction(conn, |conn: &mut Conn| {
            let rows: Vec<Rec> = i::idempotency_records
                .select((
                    i::id,
                    i::org_id,
                    i::principal,
                    i::method,
                    i::route,
                    i::idempotency_key,
                    i::response_body,
                ))
                .filter(i::response_body.is_not_null())
                .filter(i::id.gt(&after))
                .order(i::id.asc())
                .limit(i64::from(BATCH))
                .load(conn)?;
            let mut changed = 0u64;
            for (id, org, principal, method, route, key, body) in &rows {
                let Some(blob) = body else { continue };
                if !keyring.needs_reseal(blob) {
                    continue;
                }
                let aad = crate::idempotency::aad(org, principal, method, route, key);
                let new = keyring.reseal(blob, &aad).map_err(ResealError::Crypto)?;
                diesel::update(i::idempotency_records.find(id))
                    .set(i::response_body.eq(Some(new)))
                    .execute(conn)?;
                changed += 1;
            }
            Ok::<_, ResealError>((rows.len() as u64, rows.last().map(|r| r.0.clone()), changed))
        });
        let (seen, last, changed) = batch.map_err(|e| match e {
            ResealError::Crypto(c) => StartError::Keyring(c),
            ResealError::Db(d) => StartError::Store(d.into()),
        })?;
        resealed += changed;
        done += seen;
        progress(ResealProgress {
            column,
            done,
            total,
        });
        match last {
            Some(id) if seen == u64::from(BATCH) => after = id,
            _ => return Ok(resealed),
        }
    }
}

#[derive(Debug)]
enum ResealError {
    Crypto(xrole_crypto::Error),
    Db(diesel::result::Error),
}

impl From<diesel::result::Error> for ResealError {
    fn from(e: diesel::result::Error) -> Self {
        ResealError::Db(e)
    }
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
