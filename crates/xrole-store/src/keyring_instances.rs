//! Which keyring key each running server seals with. A server reports its
//! primary key id when it starts, every few seconds, and whenever it reloads
//! its keyring; `xrole keys retire` refuses a key that a server seen
//! recently still seals with, because values it seals after the re-seal
//! would become unreadable once the key is gone.

use diesel::prelude::*;

use crate::backend::Conn;
use crate::error::Result;
use crate::schema::keyring_instances::dsl as k;

/// A server's last report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// The server process (host, pid and a random suffix).
    pub instance: String,
    /// The key it seals new values with.
    pub primary_key_id: u32,
    /// When it last reported, unix ms.
    pub seen_ms: i64,
}

/// Records that `instance` seals with `primary_key_id` at `now_ms`.
pub fn report(conn: &mut Conn, instance: &str, primary_key_id: u32, now_ms: i64) -> Result<()> {
    let row = (
        k::instance.eq(instance),
        k::primary_key_id.eq(i64::from(primary_key_id)),
        k::seen_ms.eq(now_ms),
    );
    let set = (
        k::primary_key_id.eq(i64::from(primary_key_id)),
        k::seen_ms.eq(now_ms),
    );
    match conn {
        Conn::Sqlite(c) => diesel::insert_into(k::keyring_instances)
            .values(row)
            .on_conflict(k::instance)
            .do_update()
            .set(set)
            .execute(c)?,
        Conn::Pg(c) => diesel::insert_into(k::keyring_instances)
            .values(row)
            .on_conflict(k::instance)
            .do_update()
            .set(set)
            .execute(c)?,
    };
    Ok(())
}

/// Forgets `instance` (it is shutting down).
pub fn forget(conn: &mut Conn, instance: &str) -> Result<()> {
    diesel::delete(k::keyring_instances.find(instance)).execute(conn)?;
    Ok(())
}

/// The servers that reported at or after `since_ms`; older rows (servers
/// that stopped without saying so) are removed.
pub fn live(conn: &mut Conn, since_ms: i64) -> Result<Vec<Instance>> {
    diesel::delete(k::keyring_instances.filter(k::seen_ms.lt(since_ms))).execute(conn)?;
    let rows: Vec<(String, i64, i64)> = k::keyring_instances
        .select((k::instance, k::primary_key_id, k::seen_ms))
        .order(k::instance.asc())
        .load(conn)?;
    Ok(rows
        .into_iter()
        .map(|(instance, primary, seen_ms)| Instance {
            instance,
            primary_key_id: u32::try_from(primary).unwrap_or(u32::MAX),
            seen_ms,
        })
        .collect())
}
