//! Connections to AWS Organizations. One connection hands a StackSet one
//! External ID and one callback secret (both sealed here like a link's);
//! every member account's stack reports with that secret, and each account
//! gets its own link ([`crate::links::join_connection`]), verified alone.

use diesel::prelude::*;
use serde::Serialize;
use xrole_crypto::{Aad, ExternalId, Keyring, WebhookSecret};

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::aws_org_connections::dsl as c;
use crate::types::{
    AccessLevel, ConnectionId, LinkId, LinkState, OrgId, Page, PageRequest, before_cursor,
    paginate, parse_col,
};

/// The table name in the AAD of sealed connection columns.
pub const TABLE: &str = "aws_org_connections";
/// The blind-index purpose for connection External IDs.
pub const EXTERNAL_ID_INDEX_PURPOSE: &str = "connection_external_id";

/// A connection to an AWS Organization, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Connection {
    /// Its id (the StackSet's `ConnectionId` parameter).
    pub id: ConnectionId,
    /// Organization (tenant).
    pub org_id: OrgId,
    /// Human label.
    pub name: String,
    /// The permission set every account's role gets.
    pub access_level: AccessLevel,
    /// The region the StackSet deploys into (the stacks' region).
    pub region: String,
    /// The AWS Organization's management account, as the SaaS gave it
    /// (recorded; not yet checked against AWS Organizations).
    pub management_account_id: Option<String>,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
}

/// What [`create`] needs. The server generates both secrets.
#[derive(Debug)]
pub struct NewConnection<'a> {
    /// Human label.
    pub name: &'a str,
    /// The permission set.
    pub access_level: AccessLevel,
    /// The StackSet's region.
    pub region: &'a str,
    /// The management account (12 digits, checked by the caller), if known.
    pub management_account_id: Option<&'a str>,
    /// The External ID every account's role will require.
    pub external_id: &'a ExternalId,
    /// The secret every account's stack signs its callback with.
    pub callback_secret: &'a WebhookSecret,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::aws_org_connections)]
struct Row {
    id: String,
    org_id: String,
    name: String,
    access_level: String,
    region: String,
    management_account_id: Option<String>,
    external_id_sealed: Vec<u8>,
    external_id_index: Vec<u8>,
    callback_secret_sealed: Vec<u8>,
    created_ms: i64,
    updated_ms: i64,
}

impl TryFrom<Row> for Connection {
    type Error = Error;
    fn try_from(r: Row) -> Result<Connection> {
        Ok(Connection {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            name: r.name,
            access_level: r.access_level.parse()?,
            region: r.region,
            management_account_id: r.management_account_id,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
        })
    }
}

fn aad(column: &'static str, org: &str, row: &str) -> Aad {
    Aad::new(TABLE, column, org, row)
}

/// Creates a connection of `org`, sealing its External ID and callback
/// secret. [`Error::Duplicate`]`("external_id")` when another connection
/// has the same External ID.
pub fn create(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    new: &NewConnection<'_>,
    now_ms: i64,
) -> Result<Connection> {
    let id = ConnectionId::new().to_string();
    let org_s = org.to_string();
    let row = Row {
        external_id_sealed: keyring
            .seal(
                new.external_id.as_str().as_bytes(),
                &aad("external_id", &org_s, &id),
            )
            .map_err(Error::Crypto)?,
        external_id_index: keyring
            .blind_index(
                EXTERNAL_ID_INDEX_PURPOSE,
                new.external_id.as_str().as_bytes(),
            )
            .to_vec(),
        callback_secret_sealed: keyring
            .seal(
                new.callback_secret.expose_secret().as_bytes(),
                &aad("callback_secret", &org_s, &id),
            )
            .map_err(Error::Crypto)?,
        id,
        org_id: org_s,
        name: new.name.to_owned(),
        access_level: new.access_level.as_str().to_owned(),
        region: new.region.to_owned(),
        management_account_id: new.management_account_id.map(str::to_owned),
        created_ms: now_ms,
        updated_ms: now_ms,
    };
    diesel::insert_into(c::aws_org_connections)
        .values(&row)
        .execute(conn)
        .map_err(Error::duplicate_as("external_id"))?;
    row.try_into()
}

fn load(conn: &mut Conn, org: OrgId, id: ConnectionId) -> Result<Row> {
    c::aws_org_connections
        .filter(c::org_id.eq(org.to_string()))
        .filter(c::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)
}

/// Reads a connection of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: ConnectionId) -> Result<Connection> {
    load(conn, org, id)?.try_into()
}

/// The organization owning connection `id`: the one lookup made before a
/// tenant is known, for the callback of a member account's stack. Verify
/// the callback's signature with [`reveal_callback_secret`] before trusting
/// anything else in it.
pub fn org_of_connection(conn: &mut Conn, id: ConnectionId) -> Result<Option<OrgId>> {
    let org: Option<String> = c::aws_org_connections
        .find(id.to_string())
        .select(c::org_id)
        .first(conn)
        .optional()?;
    org.as_deref().map(parse_col).transpose()
}

fn open_text(keyring: &Keyring, sealed: &[u8], aad: &Aad, kind: &'static str) -> Result<String> {
    let plain = keyring.open(sealed, aad).map_err(Error::Crypto)?;
    std::str::from_utf8(plain.expose_secret())
        .map(str::to_owned)
        .map_err(|_| Error::Invalid { kind })
}

/// The connection's External ID, in clear (for its accounts' links and the
/// StackSet's parameters).
pub fn reveal_external_id(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    id: ConnectionId,
) -> Result<ExternalId> {
    let row = load(conn, org, id)?;
    let text = open_text(
        keyring,
        &row.external_id_sealed,
        &aad("external_id", &row.org_id, &row.id),
        "external id",
    )?;
    ExternalId::parse(&text).map_err(Error::Crypto)
}

/// The connection's callback secret, in clear (to verify a member account's
/// callback). It serves as long as the connection exists: accounts join
/// the organization's OUs at any time.
pub fn reveal_callback_secret(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    id: ConnectionId,
) -> Result<WebhookSecret> {
    let row = load(conn, org, id)?;
    let text = open_text(
        keyring,
        &row.callback_secret_sealed,
        &aad("callback_secret", &row.org_id, &row.id),
        "callback secret",
    )?;
    WebhookSecret::parse(&text).map_err(Error::Crypto)
}

/// The connections of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<Connection>> {
    let limit = page.clamped_limit();
    let q = c::aws_org_connections
        .filter(c::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    let q = before_cursor!(q, &page.cursor, c::created_ms, c::id);
    let rows = q
        .order((c::created_ms.desc(), c::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.created_ms, r.id.clone()),
        Connection::try_from,
    )
}

/// How many account links of connection `id` are in each state.
pub fn account_counts(
    conn: &mut Conn,
    org: OrgId,
    id: ConnectionId,
) -> Result<Vec<(LinkState, i64)>> {
    use crate::schema::aws_account_links::dsl as l;
    let rows: Vec<(String, i64)> = l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::connection_id.eq(id.to_string()))
        .group_by(l::state)
        .select((l::state, diesel::dsl::count_star()))
        .load(conn)?;
    rows.into_iter().map(|(s, n)| Ok((s.parse()?, n))).collect()
}

/// The ids of connection `id`'s account links.
pub fn account_links(conn: &mut Conn, org: OrgId, id: ConnectionId) -> Result<Vec<LinkId>> {
    use crate::schema::aws_account_links::dsl as l;
    let ids: Vec<String> = l::aws_account_links
        .filter(l::org_id.eq(org.to_string()))
        .filter(l::connection_id.eq(id.to_string()))
        .select(l::id)
        .load(conn)?;
    ids.iter().map(|i| parse_col(i)).collect()
}

/// Deletes connection `id` of `org` with its account links and their idle
/// jobs; returns the links deleted. [`Error::InUse`]`("resources")` while
/// xrole-managed resources remain in one of its accounts,
/// [`Error::InUse`]`("link")` while a job runs through one. Nothing changes
/// on error: call it in a transaction.
pub fn delete(conn: &mut Conn, org: OrgId, id: ConnectionId) -> Result<Vec<LinkId>> {
    load(conn, org, id)?;
    let links = account_links(conn, org, id)?;
    for link in &links {
        let left = crate::resources::list(conn, org, Some(*link), &PageRequest::first(1))?;
        if !left.items.is_empty() {
            return Err(Error::InUse("resources"));
        }
    }
    for link in &links {
        crate::jobs::delete_idle_of_link(conn, org, *link)?;
        crate::links::delete(conn, org, *link)?;
    }
    diesel::delete(
        c::aws_org_connections
            .filter(c::org_id.eq(org.to_string()))
            .filter(c::id.eq(id.to_string())),
    )
    .execute(conn)?;
    Ok(links)
}

/// Re-seals the connections' sealed columns still under a non-primary key
/// (see [`crate::links::reseal_all`]).
pub fn reseal_all(
    conn: &mut Conn,
    keyring: &Keyring,
    batch: u32,
    progress: impl FnMut(u64, u64),
) -> Result<crate::reseal::ResealReport> {
    let total: i64 = c::aws_org_connections.count().get_result(conn)?;
    crate::reseal::in_batches(conn, total, progress, |conn, after| {
        let rows: Vec<(String, String, Vec<u8>, Vec<u8>)> = c::aws_org_connections
            .select((
                c::id,
                c::org_id,
                c::external_id_sealed,
                c::callback_secret_sealed,
            ))
            .filter(c::id.gt(after))
            .order(c::id.asc())
            .limit(i64::from(batch.max(1)))
            .load(conn)?;
        let mut resealed = 0;
        for (id, org, ext, cb) in &rows {
            let Some((ext_new, cb_new)) = crate::reseal::reseal_pair(
                keyring,
                (ext, &aad("external_id", org, id)),
                (cb, &aad("callback_secret", org, id)),
                &mut resealed,
            )?
            else {
                continue;
            };
            diesel::update(c::aws_org_connections.find(id))
                .set((
                    c::external_id_sealed.eq(ext_new),
                    c::callback_secret_sealed.eq(cb_new),
                ))
                .execute(conn)?;
        }
        Ok(crate::reseal::Batch {
            rows: rows.len() as u64,
            last: rows.last().map(|r| r.0.clone()),
            resealed,
        })
    })
}

/// How many sealed connection values are still under a key other than the
/// primary.
pub fn count_needing_reseal(conn: &mut Conn, keyring: &Keyring) -> Result<u64> {
    let rows: Vec<(Vec<u8>, Vec<u8>)> = c::aws_org_connections
        .select((c::external_id_sealed, c::callback_secret_sealed))
        .load(conn)?;
    Ok(crate::reseal::count_stale(keyring, &rows))
}
