//! Fresh databases for tests: a SQLite file in a temporary directory, or a
//! uniquely named PostgreSQL database that is dropped afterwards.

use diesel::{Connection, PgConnection, RunQueryDsl};
use tempfile::TempDir;

/// Where PostgreSQL tests create their databases, unless overridden.
/// Loopback needs no TLS, and libpq's OpenSSL clean-up at process exit can race
/// pool threads still holding TLS connections.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable";
/// The environment variable naming the PostgreSQL server for tests.
pub const POSTGRES_URL_VAR: &str = "XROLE_TEST_POSTGRES_URL";

/// Which database engine a [`TestDb`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Bundled SQLite, one file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// A database that exists for one test and is removed when dropped.
#[derive(Debug)]
pub struct TestDb {
    backend: Backend,
    url: String,
    // SQLite: the directory holding the file. PostgreSQL: the admin URL and name.
    dir: Option<TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh SQLite file.
    pub fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("xrole-test-").tempdir()?;
        let path = dir.path().join("xrole.db");
        Ok(TestDb {
            backend: Backend::Sqlite,
            url: format!("sqlite://{}", path.display()),
            dir: Some(dir),
            pg: None,
        })
    }

    /// A fresh PostgreSQL database, or `Ok(None)` when the server is not
    /// reachable outside CI (the reason is printed). Under `CI` an unreachable
    /// server is an error: CI must never skip the PostgreSQL half silently.
    pub fn postgres() -> anyhow::Result<Option<Self>> {
        let admin_url =
            std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let mut conn = match PgConnection::establish(&admin_url) {
            Ok(c) => c,
            Err(e) if std::env::var_os("CI").is_some() => {
                anyhow::bail!(
                    "PostgreSQL at {admin_url} is unreachable ({e}); CI requires it. \
                     Start PostgreSQL or set {POSTGRES_URL_VAR}."
                )
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: PostgreSQL test, {admin_url} is unreachable ({e}); \
                     set {POSTGRES_URL_VAR} to run it"
                );
                return Ok(None);
            }
        };
        let name = format!("xrole_test_{}", uuid::Uuid::new_v4().simple());
        diesel::sql_query(format!("CREATE DATABASE {name}")).execute(&mut conn)?;
        let url = replace_database(&admin_url, &name)?;
        Ok(Some(TestDb {
            backend: Backend::Postgres,
            url,
            dir: None,
            pg: Some((admin_url, name)),
        }))
    }

    /// SQLite, then PostgreSQL when reachable: run the same test body on each.
    pub fn all() -> anyhow::Result<Vec<Self>> {
        let mut dbs = vec![Self::sqlite()?];
        dbs.extend(Self::postgres()?);
        Ok(dbs)
    }

    /// The connection URL (`sqlite://…` or `postgres://…`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The PostgreSQL database name (`None` on SQLite).
    pub fn postgres_name(&self) -> Option<&str> {
        self.pg.as_ref().map(|(_, n)| n.as_str())
    }

    /// The SQLite file path (`None` on PostgreSQL).
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        self.dir.as_ref().map(|d| d.path().join("xrole.db"))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = &self.pg
            && let Ok(mut conn) = PgConnection::establish(admin_url)
        {
            // FORCE ends connections a pool may still hold.
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn);
        }
    }
}

/// Whether a PostgreSQL database of that name exists (for clean-up tests).
pub fn postgres_database_exists(name: &str) -> anyhow::Result<bool> {
    use diesel::sql_types::{BigInt, Text};
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let admin_url =
        std::env::var(POSTGRES_URL_VAR).unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
    let mut conn = PgConnection::establish(&admin_url)?;
    let c: Count = diesel::sql_query("SELECT count(*) AS n FROM pg_database WHERE datname = $1")
        .bind::<Text, _>(name)
        .get_result(&mut conn)?;
    Ok(c.n > 0)
}

fn replace_database(url: &str, name: &str) -> anyhow::Result<String> {
    let mut u = url::Url::parse(url)?;
    u.set_path(&format!("/{name}"));
    Ok(u.to_string())
}
