//! Migrations run up → down → up on both backends, and concurrent
//! migrators (replicas starting at once) on PostgreSQL take turns.

use diesel::RunQueryDsl;
use xrole_store::{connect, has_pending_migrations, orgs, revert_all_migrations, run_migrations};
use xrole_testkit::TestDb;

use crate::{T0, each_backend};

#[test]
fn migrations_up_down_up() {
    each_backend(|_, conn| {
        // `each_backend` ran them once already.
        assert!(!has_pending_migrations(conn)?);
        assert!(run_migrations(conn)?.is_empty());
        orgs::create(conn, "before", T0)?;

        let reverted = revert_all_migrations(conn)?;
        let folders =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))?.count();
        assert_eq!(reverted.len(), folders, "{reverted:?}");
        assert!(has_pending_migrations(conn)?);
        for table in [
            "organizations",
            "users",
            "api_keys",
            "aws_account_links",
            "seen_webhook_ids",
            "jobs",
            "job_steps",
            "resources",
            "idempotency_records",
            "audit_events",
        ] {
            assert!(
                diesel::sql_query(format!("SELECT * FROM {table}"))
                    .execute(conn)
                    .is_err(),
                "{table} survived down"
            );
        }

        let mut applied = run_migrations(conn)?;
        applied.reverse(); // reverted newest first, applied oldest first
        assert_eq!(applied, reverted);
        assert!(orgs::list(conn, &Default::default())?.items.is_empty());
        orgs::create(conn, "after", T0)?;
        Ok(())
    });
}

#[test]
fn concurrent_migrators_on_a_fresh_postgres_database_all_succeed() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let n = 4;
    let start = std::sync::Barrier::new(n);
    let applied: Vec<Vec<String>> = std::thread::scope(|s| {
        let runs: Vec<_> = (0..n)
            .map(|_| {
                s.spawn(|| {
                    let mut conn = connect(db.url()).unwrap();
                    start.wait();
                    run_migrations(&mut conn)
                })
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().unwrap().unwrap())
            .collect()
    });
    // One of them applied every migration; the others found none pending.
    assert_eq!(
        applied.iter().filter(|a| !a.is_empty()).count(),
        1,
        "{applied:?}"
    );
    let mut conn = connect(db.url()).unwrap();
    assert!(!has_pending_migrations(&mut conn).unwrap());
}
