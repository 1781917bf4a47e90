//! Idempotency-Key records (IETF draft semantics). A key is scoped to
//! (organization, principal, method, route); the request body's fingerprint
//! (SHA-256, computed by the caller) decides replay versus mismatch.
//!
//! ```text
//! begin ─┬─ Began(lock) ── handle the request ── complete(lock, response)
//!        ├─ Replay(response)           same key, same body, completed
//!        ├─ InFlight { retry_after }   same key, still being handled → 409
//!        └─ Mismatch                   same key, different body → 422
//! ```
//!
//! Call [`begin`] and [`complete`] (with the job and the audit event) inside
//! one [`write_transaction`] when the response is
//! known before commit; the record then commits atomically with its effects.

use diesel::prelude::*;
use serde::Serialize;
use uuid::Uuid;
use xrole_crypto::{Aad, Keyring};

use crate::backend::{Conn, insert_or_ignore, write_transaction};
use crate::error::{Error, Result};
use crate::reseal::ResealReport;
use crate::schema::idempotency_records::dsl as i;
use crate::types::OrgId;

/// How long a record is kept: 24 hours.
pub const IDEMPOTENCY_TTL_MS: i64 = 24 * 60 * 60 * 1000;

/// What an idempotency key is scoped to.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyScope<'a> {
    /// Who sent the request (`user:<id>`, `api_key:<id>`).
    pub principal: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// The route template (`/v1/jobs`), not the concrete path.
    pub route: &'a str,
    /// The `Idempotency-Key` header's value.
    pub key: &'a str,
}

/// A response stored for replay, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Headers to replay (name, value), in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// Proof that this request owns the in-flight record; pass it to
/// [`complete`] or [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyLock {
    id: String,
    org: OrgId,
    token: String,
    took_over: bool,
}

impl IdempotencyLock {
    /// Whether this request took over a stuck in-flight record whose lock had
    /// expired (the earlier attempt may have had partial effects).
    pub fn took_over(&self) -> bool {
        self.took_over
    }
}

/// What [`begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// New key (or a stuck one taken over): handle the request.
    Began(IdempotencyLock),
    /// Same key and body, already answered: send this response again.
    Replay(StoredResponse),
    /// Same key and body, still being handled: answer 409 with `Retry-After`.
    InFlight {
        /// Milliseconds until the in-flight lock expires.
        retry_after_ms: i64,
    },
    /// Same key, different body: answer 422.
    Mismatch,
}

#[derive(Queryable, Selectable, Insertable)]
#[diesel(table_name = crate::schema::idempotency_records)]
struct Row {
    id: String,
    org_id: String,
    principal: String,
    method: String,
    route: String,
    idempotency_key: String,
    fingerprint: Vec<u8>,
    state: String,
    lock_token: Option<String>,
    locked_until_ms: i64,
    response_status: Option<i32>,
    response_headers: Option<String>,
    response_body: Option<Vec<u8>>,
    created_ms: i64,
    expires_ms: i64,
}

const IN_FLIGHT: &str = "in_flight";
const COMPLETED: &str = "completed";

/// Starts handling a request carrying an idempotency key. `lock_ms` is how
/// long the in-flight record blocks retries before a later request may take
/// it over (longer than the slowest handler). Expired records (older than
/// [`IDEMPOTENCY_TTL_MS`]) are replaced.
pub fn begin(
    conn: &mut Conn,
    org: OrgId,
    scope: &IdempotencyScope<'_>,
    fingerprint: &[u8],
    lock_ms: i64,
    now_ms: i64,
) -> Result<Begin> {
    write_transaction(conn, |conn| {
        let same_key = i::org_id
            .eq(org.to_string())
            .and(i::principal.eq(scope.principal))
            .and(i::method.eq(scope.method))
            .and(i::route.eq(scope.route))
            .and(i::idempotency_key.eq(scope.key));
        diesel::delete(
            i::idempotency_records
                .filter(same_key.clone())
                .filter(i::expires_ms.le(now_ms)),
        )
        .execute(conn)?;

        let token = Uuid::new_v4().to_string();
        let row = Row {
            id: Uuid::now_v7().to_string(),
            org_id: org.to_string(),
            principal: scope.principal.to_owned(),
            method: scope.method.to_owned(),
            route: scope.route.to_owned(),
            idempotency_key: scope.key.to_owned(),
            fingerprint: fingerprint.to_vec(),
            state: IN_FLIGHT.to_owned(),
            lock_token: Some(token.clone()),
            locked_until_ms: now_ms + lock_ms,
            response_status: None,
            response_headers: None,
            response_body: None,
            created_ms: now_ms,
            expires_ms: now_ms + IDEMPOTENCY_TTL_MS,
        };
        if insert_or_ignore!(&mut *conn, i::idempotency_records, &row)? == 1 {
            return Ok(Begin::Began(IdempotencyLock {
                id: row.id,
                org,
                token,
                took_over: false,
            }));
        }

        let existing: Row = i::idempotency_records
            .filter(same_key)
            .select(Row::as_select())
            .first(conn)?;
        if existing.fingerprint != fingerprint {
            return Ok(Begin::Mismatch);
        }
        if existing.state == COMPLETED {
            return Ok(Begin::Replay(stored_response(&existing)?));
        }
        if existing.locked_until_ms > now_ms {
            return Ok(Begin::InFlight {
                retry_after_ms: existing.locked_until_ms - now_ms,
            });
        }
        // The lock expired: the earlier request died. Take the record over,
        // compare-and-swap on the old token so only one taker wins.
        let n = diesel::update(
            i::idempotency_records
                .filter(i::id.eq(&existing.id))
                .filter(i::state.eq(IN_FLIGHT))
                .filter(i::lock_token.eq(existing.lock_token.as_deref().unwrap_or_default())),
        )
        .set((
            i::lock_token.eq(&token),
            i::locked_until_ms.eq(now_ms + lock_ms),
        ))
        .execute(conn)?;
        if n == 1 {
            Ok(Begin::Began(IdempotencyLock {
                id: existing.id,
                org,
                token,
                took_over: true,
            }))
        } else {
            Ok(Begin::InFlight {
                retry_after_ms: lock_ms,
            })
        }
    })
}

fn stored_response(r: &Row) -> Result<StoredResponse> {
    let status = r
        .response_status
        .and_then(|s| u16::try_from(s).ok())
        .ok_or(Error::Invalid {
            kind: "stored response",
        })?;
    let headers = match &r.response_headers {
        Some(h) => serde_json::from_str(h)?,
        None => Vec::new(),
    };
    Ok(StoredResponse {
        status,
        headers,
        body: r.response_body.clone().unwrap_or_default(),
    })
}

/// Stores the response for replay and ends the in-flight state.
/// [`Error::LockLost`] when another request took the record over.
pub fn complete(conn: &mut Conn, lock: &IdempotencyLock, response: &StoredResponse) -> Result<()> {
    let n = diesel::update(
        i::idempotency_records
            .filter(i::id.eq(&lock.id))
            .filter(i::org_id.eq(lock.org.to_string()))
            .filter(i::state.eq(IN_FLIGHT))
            .filter(i::lock_token.eq(&lock.token)),
    )
    .set((
        i::state.eq(COMPLETED),
        i::lock_token.eq(None::<String>),
        i::response_status.eq(Some(i32::from(response.status))),
        i::response_headers.eq(Some(serde_json::to_string(&response.headers)?)),
        i::response_body.eq(Some(&response.body)),
    ))
    .execute(conn)?;
    if n == 0 {
        return Err(Error::LockLost);
    }
    Ok(())
}

/// Forgets an in-flight record whose request failed in a way the client may
/// retry with the same key (a 5xx before any effect).
pub fn release(conn: &mut Conn, lock: &IdempotencyLock) -> Result<()> {
    let n = diesel::delete(
        i::idempotency_records
            .filter(i::id.eq(&lock.id))
            .filter(i::org_id.eq(lock.org.to_string()))
            .filter(i::state.eq(IN_FLIGHT))
            .filter(i::lock_token.eq(&lock.token)),
    )
    .execute(conn)?;
    if n == 0 {
        return Err(Error::LockLost);
    }
    Ok(())
}

/// Deletes records past their 24-hour lifetime; returns how many.
pub fn purge_expired(conn: &mut Conn, now_ms: i64) -> Result<usize> {
    Ok(diesel::delete(i::idempotency_records.filter(i::expires_ms.le(now_ms))).execute(conn)?)
}

/// How many records `org` holds (for tests and metrics).
pub fn count(conn: &mut Conn, org: OrgId) -> Result<i64> {
    Ok(i::idempotency_records
        .filter(i::org_id.eq(org.to_string()))
        .count()
        .get_result(conn)?)
}

/// The AAD a stored response body is sealed under: it names the record by
/// its unique scope columns (the row id is internal to the store), so a body
/// moved to another record does not open.
pub fn response_aad(org: &str, principal: &str, method: &str, route: &str, key: &str) -> Aad {
    Aad::new(
        "idempotency_records",
        "response_body",
        org,
        &format!("{principal}|{method}|{route}|{key}"),
    )
}

/// Re-seals every stored response body still under a non-primary key with
/// the keyring's primary key (AAD [`response_aad`]), `batch` records per
/// write transaction, calling `progress(done, total)` after each batch. An
/// interrupted run resumes where it stopped: re-sealed bodies are skipped.
pub fn reseal_all(
    conn: &mut Conn,
    keyring: &Keyring,
    batch: u32,
    progress: impl FnMut(u64, u64),
) -> Result<ResealReport> {
    type Row = (
        String,
        String,
        String,
        String,
        String,
        String,
        Option<Vec<u8>>,
    );
    let total: i64 = i::idempotency_records
        .filter(i::response_body.is_not_null())
        .count()
        .get_result(conn)?;
    crate::reseal::in_batches(conn, total, progress, |conn, after| {
        let rows: Vec<Row> = i::idempotency_records
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
            .filter(i::id.gt(after))
            .order(i::id.asc())
            .limit(i64::from(batch.max(1)))
            .load(conn)?;
        let mut resealed = 0;
        for (id, org, principal, method, route, key, body) in &rows {
            let Some(blob) = body else { continue };
            if !keyring.needs_reseal(blob) {
                continue;
            }
            let aad = response_aad(org, principal, method, route, key);
            let new = keyring.reseal(blob, &aad).map_err(Error::Crypto)?;
            diesel::update(i::idempotency_records.find(id))
                .set(i::response_body.eq(Some(new)))
                .execute(conn)?;
            resealed += 1;
        }
        Ok(crate::reseal::Batch {
            rows: rows.len() as u64,
            last: rows.last().map(|r| r.0.clone()),
            resealed,
        })
    })
}
