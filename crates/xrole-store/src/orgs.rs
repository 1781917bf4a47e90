//! Organizations: the tenants. Every other table hangs off one.

use diesel::prelude::*;
use serde::Serialize;

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::organizations::dsl as o;
use crate::types::{OrgId, Page, PageRequest, before_cursor, paginate, parse_col};

/// An organization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Org {
    /// Its id.
    pub id: OrgId,
    /// Display name.
    pub name: String,
    /// Creation time, unix ms.
    pub created_ms: i64,
    /// Last change, unix ms.
    pub updated_ms: i64,
    /// Whether operators may make destructive changes (delete a link,
    /// change its role, tear down a database); otherwise only admins.
    pub operators_may_destroy: bool,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::organizations)]
struct Row {
    id: String,
    name: String,
    created_ms: i64,
    updated_ms: i64,
    operators_may_destroy: bool,
}

impl TryFrom<Row> for Org {
    type Error = Error;
    fn try_from(r: Row) -> Result<Org> {
        Ok(Org {
            id: parse_col(&r.id)?,
            name: r.name,
            created_ms: r.created_ms,
            updated_ms: r.updated_ms,
            operators_may_destroy: r.operators_may_destroy,
        })
    }
}

/// Creates an organization.
pub fn create(conn: &mut Conn, name: &str, now_ms: i64) -> Result<Org> {
    let row = Row {
        id: OrgId::new().to_string(),
        name: name.to_owned(),
        created_ms: now_ms,
        updated_ms: now_ms,
        operators_may_destroy: false,
    };
    diesel::insert_into(o::organizations)
        .values(&row)
        .execute(conn)?;
    row.try_into()
}

/// Reads an organization.
pub fn get(conn: &mut Conn, org: OrgId) -> Result<Org> {
    o::organizations
        .find(org.to_string())
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// Renames an organization.
pub fn rename(conn: &mut Conn, org: OrgId, name: &str, now_ms: i64) -> Result<Org> {
    let n = diesel::update(o::organizations.find(org.to_string()))
        .set((o::name.eq(name), o::updated_ms.eq(now_ms)))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org)
}

/// Lets operators of `org` make destructive changes, or not.
pub fn set_operators_may_destroy(
    conn: &mut Conn,
    org: OrgId,
    allowed: bool,
    now_ms: i64,
) -> Result<Org> {
    let n = diesel::update(o::organizations.find(org.to_string()))
        .set((
            o::operators_may_destroy.eq(allowed),
            o::updated_ms.eq(now_ms),
        ))
        .execute(conn)?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    get(conn, org)
}

/// Deletes an organization and, by cascade, its users, keys, links, jobs,
/// resources and idempotency records. An organization with audit history is
/// kept (audit events are never deleted): [`Error::InUse`]`("organization")`.
pub fn delete(conn: &mut Conn, org: OrgId) -> Result<()> {
    let n = diesel::delete(o::organizations.find(org.to_string()))
        .execute(conn)
        .map_err(Error::in_use_as("organization"))?;
    if n == 0 {
        return Err(Error::NotFound);
    }
    Ok(())
}

/// Every organization, newest first (an operator's view; not tenant data).
pub fn list(conn: &mut Conn, page: &PageRequest) -> Result<Page<Org>> {
    let limit = page.clamped_limit();
    let q = o::organizations.select(Row::as_select()).into_boxed();
    let q = before_cursor!(q, &page.cursor, o::created_ms, o::id);
    let rows = q
        .order((o::created_ms.desc(), o::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.created_ms, r.id.clone()),
        Org::try_from,
    )
}
