//! Audit events: append-only. There is no update or delete function, and
//! triggers in the schema refuse `UPDATE` and `DELETE` on the table.

use diesel::prelude::*;
use serde::Serialize;

use crate::backend::Conn;
use crate::error::{Error, Result};
use crate::schema::audit_events::dsl as a;
use crate::types::{AuditEventId, OrgId, Page, PageRequest, before_cursor, paginate, parse_col};

/// One audit event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Its id.
    pub id: AuditEventId,
    /// Organization.
    pub org_id: OrgId,
    /// Who acted: `user:<id>`, `api_key:<id>`, `system`, …
    pub actor: String,
    /// What happened, dotted: `link.create`, `job.enqueue`, …
    pub action: String,
    /// What it happened to: `link:<id>`, …
    pub target: Option<String>,
    /// The HTTP request id, when there was one.
    pub request_id: Option<String>,
    /// The client address, when there was one.
    pub source_ip: Option<String>,
    /// When, unix ms.
    pub at_ms: i64,
    /// Anything else, as JSON (never secrets).
    pub details: serde_json::Value,
}

/// What [`append`] needs.
#[derive(Debug, Clone)]
pub struct NewAuditEvent<'a> {
    /// Who acted.
    pub actor: &'a str,
    /// What happened.
    pub action: &'a str,
    /// What it happened to.
    pub target: Option<&'a str>,
    /// The HTTP request id.
    pub request_id: Option<&'a str>,
    /// The client address.
    pub source_ip: Option<&'a str>,
    /// Anything else (never secrets).
    pub details: serde_json::Value,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::audit_events)]
struct Row {
    id: String,
    org_id: String,
    actor: String,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    source_ip: Option<String>,
    at_ms: i64,
    details: String,
}

impl TryFrom<Row> for AuditEvent {
    type Error = Error;
    fn try_from(r: Row) -> Result<AuditEvent> {
        Ok(AuditEvent {
            id: parse_col(&r.id)?,
            org_id: parse_col(&r.org_id)?,
            actor: r.actor,
            action: r.action,
            target: r.target,
            request_id: r.request_id,
            source_ip: r.source_ip,
            at_ms: r.at_ms,
            details: serde_json::from_str(&r.details)?,
        })
    }
}

/// Appends an event for `org`.
pub fn append(
    conn: &mut Conn,
    org: OrgId,
    event: &NewAuditEvent<'_>,
    now_ms: i64,
) -> Result<AuditEvent> {
    let row = Row {
        id: AuditEventId::new().to_string(),
        org_id: org.to_string(),
        actor: event.actor.to_owned(),
        action: event.action.to_owned(),
        target: event.target.map(str::to_owned),
        request_id: event.request_id.map(str::to_owned),
        source_ip: event.source_ip.map(str::to_owned),
        at_ms: now_ms,
        details: serde_json::to_string(&event.details)?,
    };
    diesel::insert_into(a::audit_events)
        .values(&row)
        .execute(conn)?;
    row.try_into()
}

/// Reads one event of `org`.
pub fn get(conn: &mut Conn, org: OrgId, id: AuditEventId) -> Result<AuditEvent> {
    a::audit_events
        .filter(a::org_id.eq(org.to_string()))
        .filter(a::id.eq(id.to_string()))
        .select(Row::as_select())
        .first(conn)
        .optional()?
        .ok_or(Error::NotFound)?
        .try_into()
}

/// The events of `org`, newest first.
pub fn list(conn: &mut Conn, org: OrgId, page: &PageRequest) -> Result<Page<AuditEvent>> {
    let limit = page.clamped_limit();
    let q = a::audit_events
        .filter(a::org_id.eq(org.to_string()))
        .select(Row::as_select())
        .into_boxed();
    let q = before_cursor!(q, &page.cursor, a::at_ms, a::id);
    let rows = q
        .order((a::at_ms.desc(), a::id.desc()))
        .limit(limit + 1)
        .load(conn)?;
    paginate(
        rows,
        limit,
        |r: &Row| (r.at_ms, r.id.clone()),
        AuditEvent::try_from,
    )
}
