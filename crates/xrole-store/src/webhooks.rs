//! Seen webhook ids: a replayed callback (same `webhook-id`) has no effect.

use diesel::prelude::*;

use crate::backend::{Conn, insert_or_ignore};
use crate::error::Result;
use crate::schema::seen_webhook_ids::dsl as w;

/// Records `webhook_id`; `true` when it is new, `false` when it was seen
/// before (the caller then answers success without acting again). Call it in
/// the same transaction as the callback's effects.
pub fn record_webhook_id(conn: &mut Conn, webhook_id: &str, now_ms: i64) -> Result<bool> {
    let n = insert_or_ignore!(
        conn,
        w::seen_webhook_ids,
        (w::webhook_id.eq(webhook_id), w::received_ms.eq(now_ms))
    )?;
    Ok(n == 1)
}

/// Whether `webhook_id` was recorded.
pub fn is_seen(conn: &mut Conn, webhook_id: &str) -> Result<bool> {
    let n: i64 = w::seen_webhook_ids
        .filter(w::webhook_id.eq(webhook_id))
        .count()
        .get_result(conn)?;
    Ok(n > 0)
}

/// Forgets ids received before `before_ms`. Safe once they are older than
/// the signature tolerance (a replay that old fails verification anyway).
pub fn purge_webhook_ids(conn: &mut Conn, before_ms: i64) -> Result<usize> {
    Ok(diesel::delete(w::seen_webhook_ids.filter(w::received_ms.lt(before_ms))).execute(conn)?)
}
