//! Migrations run up → down → up on both backends.

use diesel::RunQueryDsl;
use xrole_store::{has_pending_migrations, orgs, revert_all_migrations, run_migrations};

use crate::{T0, each_backend};

#[test]
fn migrations_up_down_up() {
    each_backend(|_, conn| {
        // `each_backend` ran them once already.
        assert!(!has_pending_migrations(conn)?);
        assert!(run_migrations(conn)?.is_empty());
        orgs::create(conn, "before", T0)?;

        let reverted = revert_all_migrations(conn)?;
        assert_eq!(reverted.len(), 1, "{reverted:?}");
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

        let applied = run_migrations(conn)?;
        assert_eq!(applied, reverted);
        assert!(orgs::list(conn, &Default::default())?.items.is_empty());
        orgs::create(conn, "after", T0)?;
        Ok(())
    });
}
