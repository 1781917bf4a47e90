//! xrole-store against real databases: every test body runs on SQLite and,
//! when reachable, PostgreSQL (`TestDb::all()`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod concurrency;
mod connections;
mod crud;
mod dump;
mod isolation;
mod migrations;
mod unique;

use xrole_store::{Conn, OrgId, connect, orgs, run_migrations};
use xrole_testkit::TestDb;

/// A fixed starting time; tests move it explicitly.
pub const T0: i64 = 1_767_225_600_000;

/// Runs `body` once per backend on a fresh, migrated database.
pub fn each_backend(body: impl Fn(&TestDb, &mut Conn) -> anyhow::Result<()>) {
    for db in TestDb::all().unwrap() {
        eprintln!("backend: {:?}", db.backend());
        let mut conn = connect(db.url()).unwrap();
        run_migrations(&mut conn).unwrap();
        if let Err(e) = body(&db, &mut conn) {
            panic!("{:?}: {e:?}", db.backend());
        }
    }
}

pub fn org(conn: &mut Conn, name: &str) -> OrgId {
    orgs::create(conn, name, T0).unwrap().id
}
