//! Unique constraints hold on both backends.

use diesel::RunQueryDsl;
use xrole_crypto::{ExternalId, Keyring, WebhookSecret};
use xrole_store::idempotency::{Begin, IdempotencyScope};
use xrole_store::links::NewLink;
use xrole_store::resources::NewResource;
use xrole_store::users::NewUser;
use xrole_store::{
    AccessLevel, Email, Error, ResourceState, UserRole, api_keys, idempotency, links, resources,
    users, webhooks,
};

use crate::crud::new_link;
use crate::{T0, each_backend, org};

#[test]
fn duplicate_external_id_is_refused_across_organizations() {
    each_backend(|_, conn| {
        let (a, b) = (org(conn, "a"), org(conn, "b"));
        let keyring = Keyring::generate()?;
        let external_id = ExternalId::generate();
        let secret = WebhookSecret::generate();
        let new = NewLink {
            name: "x",
            aws_account_id: "111122223333",
            access_level: AccessLevel::ReadOnly,
            external_id: &external_id,
            callback_secret: &secret,
            callback_secret_expires_ms: T0,
        };
        links::create(conn, &keyring, a, &new, T0)?;
        assert!(matches!(
            links::create(conn, &keyring, a, &new, T0),
            Err(Error::Duplicate("external_id"))
        ));
        assert!(matches!(
            links::create(conn, &keyring, b, &new, T0),
            Err(Error::Duplicate("external_id"))
        ));
        // The index column itself is unique, whatever code writes it.
        let dup = diesel::sql_query(
            "INSERT INTO aws_account_links (id, org_id, name, state, aws_account_id, access_level, external_id_sealed, \
             external_id_index, callback_secret_sealed, callback_secret_expires_ms, created_ms, updated_ms) \
             SELECT 'x', org_id, name, state, aws_account_id, access_level, external_id_sealed, external_id_index, \
             callback_secret_sealed, callback_secret_expires_ms, created_ms, updated_ms FROM aws_account_links",
        )
        .execute(conn);
        assert!(
            matches!(
                dup,
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                ))
            ),
            "{dup:?}"
        );
        new_link(conn, &keyring, a, "another id is fine");
        Ok(())
    });
}

#[test]
fn duplicate_webhook_id_is_not_new() {
    each_backend(|_, conn| {
        assert!(webhooks::record_webhook_id(conn, "msg_2f9", T0)?);
        assert!(!webhooks::record_webhook_id(conn, "msg_2f9", T0)?);
        let dup = diesel::sql_query(
            "INSERT INTO seen_webhook_ids (webhook_id, received_ms) VALUES ('msg_2f9', 0)",
        )
        .execute(conn);
        assert!(matches!(
            dup,
            Err(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _
            ))
        ));
        Ok(())
    });
}

#[test]
fn duplicate_idempotency_key_keeps_one_record() {
    each_backend(|_, conn| {
        let a = org(conn, "a");
        let scope = IdempotencyScope {
            principal: "p",
            method: "POST",
            route: "/r",
            key: "k",
        };
        assert!(matches!(
            idempotency::begin(conn, a, &scope, &[1], 1_000, T0)?,
            Begin::Began(_)
        ));
        assert!(matches!(
            idempotency::begin(conn, a, &scope, &[1], 1_000, T0)?,
            Begin::InFlight { .. }
        ));
        assert_eq!(idempotency::count(conn, a)?, 1);
        let dup = diesel::sql_query(
            "INSERT INTO idempotency_records (id, org_id, principal, method, route, idempotency_key, fingerprint, state, \
             locked_until_ms, created_ms, expires_ms) SELECT 'y', org_id, principal, method, route, idempotency_key, \
             fingerprint, state, locked_until_ms, created_ms, expires_ms FROM idempotency_records",
        )
        .execute(conn);
        assert!(
            matches!(
                dup,
                Err(diesel::result::Error::DatabaseError(
                    diesel::result::DatabaseErrorKind::UniqueViolation,
                    _
                ))
            ),
            "{dup:?}"
        );
        Ok(())
    });
}

#[test]
fn duplicate_email_key_id_and_resource_are_refused() {
    each_backend(|_, conn| {
        let (a, b) = (org(conn, "a"), org(conn, "b"));
        let email: Email = "ada@example.com".parse()?;
        let new = NewUser {
            email: &email,
            display_name: "Ada",
            role: UserRole::Operator,
            password_hash: None,
        };
        users::create(conn, a, &new, T0)?;
        assert!(matches!(
            users::create(conn, a, &new, T0),
            Err(Error::Duplicate("email"))
        ));
        users::create(conn, b, &new, T0)?; // unique per organization only
        assert_eq!(users::login_candidates(conn, &email)?.len(), 2);

        let key = api_keys::NewApiKey {
            key_id: "abcdefABCDEF",
            key_hash: &[1; 32],
            name: "k",
            owner: None,
            expires_ms: None,
            role: None,
        };
        api_keys::create(conn, a, &key, T0)?;
        assert!(matches!(
            api_keys::create(conn, b, &key, T0),
            Err(Error::Duplicate("key_id"))
        ));

        let keyring = Keyring::generate()?;
        let (link, _, _) = new_link(conn, &keyring, a, "l");
        let tags = Default::default();
        let r = NewResource {
            link,
            job: None,
            kind: "vpc",
            aws_id: "vpc-1",
            region: "eu-west-1",
            parent: None,
            state: ResourceState::Available,
            tags: &tags,
        };
        resources::create(conn, a, &r, T0)?;
        assert!(matches!(
            resources::create(conn, a, &r, T0),
            Err(Error::Duplicate("aws_id"))
        ));
        Ok(())
    });
}
