//! Operator tasks behind the CLI: migrations, re-sealing after key rotation,
//! creating an organization from the command line.

use diesel::prelude::*;
use xrole_crypto::{Aad, Keyring};
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

/// Progress of [`reseal_all`], reported after every batch.
#[derive(Debug, Clone, Copy)]
pub struct ResealProgress {
    /// `table.column` being re-sealed.
    pub column: &'static str,
    /// Rows examined so far in this column.
    pub done: u64,
    /// Rows in this column.
    pub total: u64,
}

/// Every sealed column: (table, column). The AAD of a value is
/// `xrole/v1|<table>|<column>|<org_id>|<row_id>`.
pub const SEALED_COLUMNS: &[(&str, &str)] = &[
    ("aws_account_links", "external_id_sealed"),
    ("aws_account_links", "callback_secret_sealed"),
];

const BATCH: i64 = 500;

/// Re-seals every sealed value that is not under the keyring's primary key,
/// in batches of one transaction each, so an interrupted run resumes where it
/// stopped. Returns how many values were re-sealed.
pub fn reseal_all(
    database_url: &str,
    keyring: &Keyring,
    mut progress: impl FnMut(ResealProgress),
) -> Result<u64, StartError> {
    use xrole_store::schema::aws_account_links::dsl as l;
    let mut conn = xrole_store::connect(database_url)?;
    xrole_store::run_migrations(&mut conn)?;
    let total: i64 = l::aws_account_links
        .count()
        .get_result(&mut conn)
        .map_err(xrole_store::Error::from)?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut resealed = 0u64;
    for (which, &(table, column)) in SEALED_COLUMNS.iter().enumerate() {
        let label = if which == 0 {
            "aws_account_links.external_id_sealed"
        } else {
            "aws_account_links.callback_secret_sealed"
        };
        let mut after = String::new();
        let mut done = 0u64;
        loop {
            let n = xrole_store::write_transaction(&mut conn, |conn: &mut Conn| {
                let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = l::aws_account_links
                    .select((
                        l::id,
                        l::org_id,
                        l::external_id_sealed,
                        l::callback_secret_sealed,
                    ))
                    .filter(l::id.gt(&after))
                    .order(l::id.asc())
                    .limit(BATCH)
                    .load(conn)?;
                let mut changed = 0u64;
                for (id, org, ext, cb) in &rows {
                    let blob = if which == 0 { ext } else { cb };
                    if !keyring.needs_reseal(blob) {
                        continue;
                    }
                    let aad = Aad::new(table, column, org, id);
                    let new = keyring.reseal(blob, &aad).map_err(ResealError::Crypto)?;
                    let target = l::aws_account_links.find(id);
                    if which == 0 {
                        diesel::update(target)
                            .set(l::external_id_sealed.eq(new))
                            .execute(conn)?;
                    } else {
                        diesel::update(target)
                            .set(l::callback_secret_sealed.eq(new))
                            .execute(conn)?;
                    }
                    changed += 1;
                }
                Ok::<_, ResealError>((rows.len(), rows.last().map(|r| r.0.clone()), changed))
            });
            let (seen, last, changed) = n.map_err(|e| match e {
                ResealError::Crypto(c) => StartError::Keyring(c),
                ResealError::Db(d) => StartError::Store(d.into()),
            })?;
            resealed += changed;
            done += seen as u64;
            progress(ResealProgress {
                column: label,
                done,
                total,
            });
            match last {
                Some(id) if seen as i64 == BATCH => after = id,
                _ => break,
            }
        }
    }
    Ok(resealed)
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
