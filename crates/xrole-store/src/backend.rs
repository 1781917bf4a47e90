//! Everything that differs between SQLite and PostgreSQL lives in this file:
//! the connection enum, URL parsing, per-connection SQLite settings, the
//! embedded migrations, `BEGIN IMMEDIATE` and `FOR UPDATE SKIP LOCKED`.

use std::time::Duration;

use diesel::connection::{
    AnsiTransactionManager, Connection, SimpleConnection, TransactionManager,
};
use diesel::{PgConnection, SqliteConnection};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use r2d2::CustomizeConnection;

use crate::error::{Error, Result};

/// A connection to either backend. Every repository function takes
/// `&mut Conn`; open a transaction with [`Connection::transaction`] (or
/// [`write_transaction`]) to compose several of them atomically.
#[derive(diesel::MultiConnection)]
pub enum Conn {
    /// Bundled SQLite (one file, WAL mode).
    Sqlite(SqliteConnection),
    /// PostgreSQL.
    Pg(PgConnection),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Sqlite(_) => "Conn::Sqlite",
            Conn::Pg(_) => "Conn::Pg",
        })
    }
}

/// Which engine a URL or connection points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl Conn {
    /// The engine behind this connection.
    pub fn backend(&self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }
}

/// A pool of [`Conn`]s (r2d2).
pub type Pool = r2d2::Pool<Manager>;
/// A connection checked out of a [`Pool`]; derefs to [`Conn`].
pub type PooledConn = r2d2::PooledConnection<Manager>;

/// How long a SQLite connection waits for a competing writer before failing.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Splits a database URL into the backend and the string the driver expects:
/// `postgres://…`/`postgresql://…` stay as they are; `sqlite://path`,
/// `sqlite:path` and a bare file path become the SQLite file path.
pub fn parse_url(url: &str) -> Result<(Backend, String)> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok((Backend::Postgres, url.to_owned()));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() || path.contains("://") {
        return Err(Error::UnsupportedUrl);
    }
    Ok((Backend::Sqlite, path.to_owned()))
}

/// Opens one connection with the per-connection settings applied (no
/// migrations run).
pub fn connect(url: &str) -> Result<Conn> {
    let (backend, target) = parse_url(url)?;
    let mut conn = establish(backend, &target)?;
    configure(&mut conn)?;
    Ok(conn)
}

/// A pool of up to `max_size` connections to `url`, each configured like
/// [`connect`]'s. Call [`run_migrations`] on one of them at start-up.
pub fn pool(url: &str, max_size: u32) -> Result<Pool> {
    let (backend, target) = parse_url(url)?;
    Ok(r2d2::Pool::builder()
        .max_size(max_size)
        .connection_customizer(Box::new(Configure))
        .build(Manager { backend, target })?)
}

// The derived `Conn::establish` tries each backend in turn and discards the
// errors; choosing by URL keeps the real error and never opens a stray file.
fn establish(backend: Backend, target: &str) -> Result<Conn> {
    Ok(match backend {
        Backend::Sqlite => Conn::Sqlite(SqliteConnection::establish(target)?),
        Backend::Postgres => Conn::Pg(PgConnection::establish(target)?),
    })
}

/// Per-connection settings (SQLite forgets them on every new connection).
fn configure(conn: &mut Conn) -> Result<()> {
    match conn {
        Conn::Sqlite(c) => c.batch_execute(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {}; \
             PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
            SQLITE_BUSY_TIMEOUT.as_millis()
        ))?,
        Conn::Pg(_) => {}
    }
    Ok(())
}

/// The r2d2 connection manager behind [`Pool`]: opens the backend the URL
/// names.
pub struct Manager {
    backend: Backend,
    // May hold a password (`postgres://user:pass@…`): never printed.
    target: String,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = Error;

    fn connect(&self) -> Result<Conn> {
        establish(self.backend, &self.target)
    }

    fn is_valid(&self, conn: &mut Conn) -> Result<()> {
        use diesel::r2d2::R2D2Connection;
        Ok(conn.ping()?)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        use diesel::r2d2::R2D2Connection;
        conn.is_broken()
    }
}

#[derive(Debug, Clone, Copy)]
struct Configure;

impl CustomizeConnection<Conn, Error> for Configure {
    fn on_acquire(&self, conn: &mut Conn) -> Result<()> {
        configure(conn)
    }
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const POSTGRES_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// The PostgreSQL advisory lock that serialises migrators: replicas that
/// start at once on a database with pending migrations would otherwise run
/// the same `CREATE`s concurrently, and all but one would fail to start.
const MIGRATION_LOCK: i64 = 0x7872_6f6c_655f_6d67;

/// Applies every pending migration; returns the versions applied. On
/// PostgreSQL, concurrent callers (several replicas starting at once) take
/// turns: the first applies the migrations, the others then find none
/// pending.
pub fn run_migrations(conn: &mut Conn) -> Result<Vec<String>> {
    fn versions<'a>(
        r: diesel::migration::Result<Vec<diesel::migration::MigrationVersion<'a>>>,
    ) -> Result<Vec<String>> {
        let applied = r.map_err(|e| Error::Migration(e.to_string()))?;
        Ok(applied.into_iter().map(|v| v.to_string()).collect())
    }
    match conn {
        Conn::Sqlite(c) => versions(c.run_pending_migrations(SQLITE_MIGRATIONS)),
        Conn::Pg(c) => {
            c.batch_execute(&format!("SELECT pg_advisory_lock({MIGRATION_LOCK})"))?;
            let applied = versions(c.run_pending_migrations(POSTGRES_MIGRATIONS));
            // A session lock: closing the connection releases it too.
            let unlocked = c.batch_execute(&format!("SELECT pg_advisory_unlock({MIGRATION_LOCK})"));
            let applied = applied?;
            unlocked?;
            Ok(applied)
        }
    }
}

/// One round trip that needs no table: is the database answering?
pub fn ping(conn: &mut Conn) -> Result<()> {
    conn.batch_execute("SELECT 1")?;
    Ok(())
}

/// Reverts every applied migration (down.sql, newest first): an empty database.
pub fn revert_all_migrations(conn: &mut Conn) -> Result<Vec<String>> {
    let reverted = match conn {
        Conn::Sqlite(c) => c.revert_all_migrations(SQLITE_MIGRATIONS),
        Conn::Pg(c) => c.revert_all_migrations(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| Error::Migration(e.to_string()))?;
    Ok(reverted.into_iter().map(|v| v.to_string()).collect())
}

/// Whether migrations are pending (for a start-up check).
pub fn has_pending_migrations(conn: &mut Conn) -> Result<bool> {
    match conn {
        Conn::Sqlite(c) => c.has_pending_migration(SQLITE_MIGRATIONS),
        Conn::Pg(c) => c.has_pending_migration(POSTGRES_MIGRATIONS),
    }
    .map_err(|e| Error::Migration(e.to_string()))
}

/// Runs `f` in a transaction that intends to write.
///
/// On SQLite the outermost call issues `BEGIN IMMEDIATE`, taking the write
/// lock up front: a deferred transaction that reads and then writes can fail
/// with `SQLITE_BUSY` when another writer committed in between, and the busy
/// timeout cannot help it. Nested calls become savepoints. On PostgreSQL this
/// is an ordinary transaction. Use it for any transaction that writes (the
/// idempotency + job + audit transaction of a request, for instance).
pub fn write_transaction<T, E, F>(conn: &mut Conn, f: F) -> Result<T, E>
where
    F: FnOnce(&mut Conn) -> Result<T, E>,
    E: From<diesel::result::Error>,
{
    let outermost_sqlite = match conn {
        Conn::Sqlite(c) => {
            let depth =
                AnsiTransactionManager::transaction_manager_status_mut(c).transaction_depth()?;
            if depth.is_none() {
                AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?;
                true
            } else {
                false
            }
        }
        Conn::Pg(_) => false,
    };
    if !outermost_sqlite {
        return conn.transaction(f);
    }
    // The MultiConnection's transaction manager delegates to the SQLite
    // connection's, which now knows it is one level deep.
    match f(conn) {
        Ok(value) => {
            <Conn as Connection>::TransactionManager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            <Conn as Connection>::TransactionManager::rollback_transaction(conn)?;
            Err(e)
        }
    }
}

/// `INSERT … ON CONFLICT DO NOTHING` (diesel's MultiBackend has no
/// `ON CONFLICT`, so the statement is built per backend). Returns the number
/// of rows inserted: 0 means a unique constraint already held the row.
macro_rules! insert_or_ignore {
    ($conn:expr, $table:expr, $values:expr) => {{
        use diesel::RunQueryDsl as _;
        match $conn {
            $crate::backend::Conn::Sqlite(c) => diesel::insert_into($table)
                .values($values)
                .on_conflict_do_nothing()
                .execute(c),
            $crate::backend::Conn::Pg(c) => diesel::insert_into($table)
                .values($values)
                .on_conflict_do_nothing()
                .execute(c),
        }
    }};
}
pub(crate) use insert_or_ignore;

/// The organizations whose turn comes next: those with a runnable job
/// (queued and due, or running under an expired lease) and fewer than
/// `max_running` jobs running under a live lease, the one served longest ago
/// first (`job_org_turns`; never served counts as longest ago), at most
/// `limit`. Claiming in this order rotates across organizations, so one
/// tenant's flood waits behind everyone else's single job.
pub(crate) fn fair_org_order(
    conn: &mut Conn,
    now_ms: i64,
    max_running: i64,
    limit: i64,
) -> Result<Vec<String>> {
    use diesel::RunQueryDsl;
    use diesel::sql_types::BigInt;
    #[derive(diesel::QueryableByName)]
    struct OrgRow {
        #[diesel(sql_type = diesel::sql_types::Text)]
        org_id: String,
    }
    // The same statement in each dialect: SQLite numbers its parameters
    // `?1`, PostgreSQL `$1`.
    const SQL: &str = "SELECT q.org_id AS org_id FROM (\
            SELECT DISTINCT org_id FROM jobs \
            WHERE (state = 'queued' AND run_after_ms <= {now}) \
               OR (state = 'running' AND lease_expires_ms < {now})\
        ) q \
        LEFT JOIN job_org_turns t ON t.org_id = q.org_id \
        WHERE (SELECT COUNT(*) FROM jobs r WHERE r.org_id = q.org_id \
               AND r.state = 'running' AND r.lease_expires_ms >= {now}) < {cap} \
        ORDER BY COALESCE(t.last_claim_ms, 0), q.org_id \
        LIMIT {limit}";
    let rows: Vec<OrgRow> = match conn {
        Conn::Sqlite(c) => diesel::sql_query(
            SQL.replace("{now}", "?1")
                .replace("{cap}", "?2")
                .replace("{limit}", "?3"),
        )
        .bind::<BigInt, _>(now_ms)
        .bind::<BigInt, _>(max_running)
        .bind::<BigInt, _>(limit)
        .load(c)?,
        Conn::Pg(c) => diesel::sql_query(
            SQL.replace("{now}", "$1")
                .replace("{cap}", "$2")
                .replace("{limit}", "$3"),
        )
        .bind::<BigInt, _>(now_ms)
        .bind::<BigInt, _>(max_running)
        .bind::<BigInt, _>(limit)
        .load(c)?,
    };
    Ok(rows.into_iter().map(|r| r.org_id).collect())
}

/// The id of the next runnable job of `org`, locked for this transaction on
/// PostgreSQL (`FOR UPDATE SKIP LOCKED`, so concurrent workers pass over each
/// other's rows). On SQLite the caller holds the write lock already
/// (`BEGIN IMMEDIATE`), which serialises claimers.
pub(crate) fn next_runnable_job(conn: &mut Conn, org: &str, now_ms: i64) -> Result<Option<String>> {
    use crate::schema::jobs::dsl as j;
    use diesel::prelude::*;
    let runnable = j::state
        .eq("queued")
        .and(j::run_after_ms.le(now_ms))
        .or(j::state.eq("running").and(j::lease_expires_ms.lt(now_ms)));
    let q = j::jobs
        .select(j::id)
        .filter(j::org_id.eq(org))
        .filter(runnable)
        .order((j::run_after_ms.asc(), j::id.asc()))
        .limit(1);
    Ok(match conn {
        Conn::Sqlite(c) => q.first::<String>(c).optional()?,
        Conn::Pg(c) => q.for_update().skip_locked().first::<String>(c).optional()?,
    })
}

/// Serialises the writes of one organization that must see each other (the
/// last-admin rule): PostgreSQL locks the organization's row until the
/// transaction ends; SQLite's `BEGIN IMMEDIATE` already serialises writers.
pub(crate) fn lock_org(conn: &mut Conn, org: &str) -> Result<()> {
    use crate::schema::organizations::dsl as o;
    use diesel::prelude::*;
    match conn {
        Conn::Sqlite(_) => Ok(()),
        Conn::Pg(c) => {
            o::organizations
                .find(org)
                .select(o::id)
                .for_update()
                .first::<String>(c)
                .optional()?;
            Ok(())
        }
    }
}

/// Records that `org` was served a job at `now_ms` (its turn is over).
pub(crate) fn record_org_turn(conn: &mut Conn, org: &str, now_ms: i64) -> Result<()> {
    use crate::schema::job_org_turns::dsl as t;
    use diesel::prelude::*;
    let row = (t::org_id.eq(org), t::last_claim_ms.eq(now_ms));
    match conn {
        Conn::Sqlite(c) => diesel::insert_into(t::job_org_turns)
            .values(row)
            .on_conflict(t::org_id)
            .do_update()
            .set(t::last_claim_ms.eq(now_ms))
            .execute(c)?,
        Conn::Pg(c) => diesel::insert_into(t::job_org_turns)
            .values(row)
            .on_conflict(t::org_id)
            .do_update()
            .set(t::last_claim_ms.eq(now_ms))
            .execute(c)?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_sqlite_keeps_one_plan_per_statement() {
        use diesel::RunQueryDsl;
        // Without the query planner stability guarantee every `LIMIT ?`
        // query is parsed and planned again on each run (.cargo/config.toml).
        let Conn::Sqlite(mut c) = connect(":memory:").unwrap() else {
            unreachable!("a path is SQLite")
        };
        let on: i32 = diesel::select(diesel::dsl::sql::<diesel::sql_types::Integer>(
            "sqlite_compileoption_used('ENABLE_QPSG')",
        ))
        .get_result(&mut c)
        .unwrap();
        assert_eq!(on, 1, "SQLite built without SQLITE_ENABLE_QPSG");
    }

    #[test]
    fn urls_choose_the_backend() {
        let pg = "postgres://u@127.0.0.1:5432/x";
        assert_eq!(parse_url(pg).unwrap(), (Backend::Postgres, pg.to_owned()));
        assert_eq!(parse_url("postgresql://h/x").unwrap().0, Backend::Postgres);
        assert_eq!(
            parse_url("sqlite:///var/lib/xrole.db").unwrap(),
            (Backend::Sqlite, "/var/lib/xrole.db".to_owned())
        );
        assert_eq!(
            parse_url("sqlite://xrole.db").unwrap(),
            (Backend::Sqlite, "xrole.db".to_owned())
        );
        assert_eq!(
            parse_url("sqlite:xrole.db").unwrap(),
            (Backend::Sqlite, "xrole.db".to_owned())
        );
        assert_eq!(
            parse_url("/tmp/x.db").unwrap(),
            (Backend::Sqlite, "/tmp/x.db".to_owned())
        );
        let m = Manager {
            backend: Backend::Postgres,
            target: "postgres://u:hunter2@h/x".into(),
        };
        assert!(!format!("{m:?}").contains("hunter2"));
        for bad in ["", "sqlite://", "mysql://h/x"] {
            assert!(
                matches!(parse_url(bad), Err(Error::UnsupportedUrl)),
                "{bad}"
            );
        }
    }

    #[test]
    fn write_transactions_nest_on_sqlite() {
        use diesel::RunQueryDsl;
        let mut conn = connect(":memory:").unwrap();
        run_migrations(&mut conn).unwrap();
        let r: Result<(), Error> = write_transaction(&mut conn, |c| {
            diesel::sql_query("INSERT INTO seen_webhook_ids VALUES ('a', 1)").execute(c)?;
            // The inner failure rolls back to its savepoint only.
            let inner: Result<(), Error> = write_transaction(c, |c| {
                diesel::sql_query("INSERT INTO seen_webhook_ids VALUES ('b', 1)").execute(c)?;
                Err(Error::NotFound)
            });
            assert!(inner.is_err());
            Ok(())
        });
        r.unwrap();
        assert!(crate::webhooks::is_seen(&mut conn, "a").unwrap());
        assert!(!crate::webhooks::is_seen(&mut conn, "b").unwrap());
    }
}
