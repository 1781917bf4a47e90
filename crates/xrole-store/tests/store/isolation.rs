//! Organization B's identity never reads or changes organization A's rows,
//! through any repository function.

use std::collections::BTreeMap;

use serde_json::json;
use xrole_crypto::{ApiKey, Keyring};
use xrole_store::idempotency::{Begin, IdempotencyScope, StoredResponse};
use xrole_store::jobs::NewJob;
use xrole_store::links::{StackReport, Verification};
use xrole_store::resources::NewResource;
use xrole_store::users::{NewUser, UserChanges};
use xrole_store::{
    Email, Error, LinkState, PageRequest, ResourceState, UserRole, api_keys, audit, idempotency,
    jobs, links, resources, users,
};

use crate::crud::new_link;
use crate::{T0, each_backend, org};

fn not_found<T: std::fmt::Debug>(r: Result<T, Error>) {
    assert!(
        matches!(r, Err(Error::NotFound)),
        "expected NotFound, got {r:?}"
    );
}

#[test]
fn org_b_never_reads_or_changes_org_a_rows() {
    each_backend(|_, conn| {
        let a = org(conn, "a");
        let b = org(conn, "b");
        let keyring = Keyring::generate()?;
        let page = PageRequest::default();

        // Organization A's data.
        let email: Email = "ada@a.example".parse()?;
        let user = users::create(
            conn,
            a,
            &NewUser {
                email: &email,
                display_name: "Ada",
                role: UserRole::Admin,
                password_hash: Some("h"),
            },
            T0,
        )?;
        let token = ApiKey::generate();
        let key = api_keys::create(
            conn,
            a,
            &api_keys::NewApiKey {
                key_id: token.key_id(),
                key_hash: &[9; 32],
                name: "k",
                owner: Some(user.id),
                expires_ms: None,
                role: None,
            },
            T0,
        )?;
        let (link, external_id, _) = new_link(conn, &keyring, a, "prod");
        let job = jobs::enqueue(
            conn,
            a,
            &NewJob {
                link: Some(link),
                kind: "k",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        let claimed = jobs::claim(conn, "w", 60_000, T0)?.unwrap();
        jobs::record_intent(conn, &claimed.lease, "vpc", &json!({}), T0)?;
        let tags = BTreeMap::new();
        let res = resources::create(
            conn,
            a,
            &NewResource {
                link,
                job: Some(job.id),
                kind: "vpc",
                aws_id: "vpc-1",
                region: "eu-west-1",
                parent: None,
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )?;
        let event = audit::append(
            conn,
            a,
            &audit::NewAuditEvent {
                actor: "user:1",
                action: "x",
                target: None,
                request_id: None,
                source_ip: None,
                details: json!({}),
            },
            T0,
        )?;
        let scope = IdempotencyScope {
            principal: "user:1",
            method: "POST",
            route: "/v1/jobs",
            key: "same",
        };
        let Begin::Began(lock) = idempotency::begin(conn, a, &scope, &[1; 32], 60_000, T0)? else {
            panic!()
        };
        let response = StoredResponse {
            status: 202,
            headers: vec![],
            body: b"a's response".to_vec(),
        };
        idempotency::complete(conn, &lock, &response)?;

        // users
        not_found(users::get(conn, b, user.id));
        not_found(users::find_by_email(conn, b, &email));
        not_found(users::password_hash(conn, b, user.id));
        not_found(users::update(
            conn,
            b,
            user.id,
            &UserChanges {
                disabled: Some(true),
                ..Default::default()
            },
            T0,
        ));
        not_found(users::delete(conn, b, user.id));
        assert!(users::list(conn, b, &page)?.items.is_empty());
        // api keys
        not_found(api_keys::create(
            conn,
            b,
            &api_keys::NewApiKey {
                key_id: "bbbbbbbbbbbb",
                key_hash: &[0; 32],
                name: "k",
                owner: Some(user.id),
                expires_ms: None,
                role: None,
            },
            T0,
        ));
        not_found(api_keys::get(conn, b, key.id));
        not_found(api_keys::touch(conn, b, key.id, T0 + 1));
        not_found(api_keys::rename(conn, b, key.id, "stolen"));
        not_found(api_keys::revoke(conn, b, key.id, T0 + 1));
        not_found(api_keys::delete(conn, b, key.id));
        assert_eq!(api_keys::revoke_all_of_user(conn, b, user.id, T0 + 1)?, 0);
        assert!(api_keys::list(conn, b, &page)?.items.is_empty());
        // links
        not_found(links::get(conn, b, link));
        not_found(links::reveal_external_id(conn, &keyring, b, link));
        not_found(links::reveal_callback_secret(conn, &keyring, b, link));
        not_found(links::find_by_external_id(conn, &keyring, b, &external_id));
        not_found(links::rename(conn, b, link, "stolen", T0 + 1));
        not_found(links::update(
            conn,
            b,
            link,
            &links::LinkChanges {
                aws_account_id: Some("999999999999"),
                ..Default::default()
            },
            T0 + 1,
        ));
        not_found(links::record_stack(
            conn,
            b,
            link,
            &StackReport {
                role_arn: "arn:aws:iam::999999999999:role/x",
                stack_id: "s",
                region: "r",
                callback_secret_expires_ms: None,
            },
            T0 + 1,
        ));
        not_found(links::set_state(
            conn,
            b,
            link,
            LinkState::Disconnected,
            T0 + 1,
        ));
        not_found(links::record_verification(
            conn,
            b,
            link,
            &links::Tested {
                generation: 0,
                role_arn: "arn:aws:iam::999999999999:role/x",
            },
            &Verification {
                state: LinkState::Active,
                result: "forged",
                error: None,
                trust_policy_audit: None,
            },
            T0 + 1,
        ));
        not_found(links::begin_verification(
            conn,
            b,
            link,
            links::VerifyTrigger::Changed,
            T0 + 1,
        ));
        not_found(links::begin_verification(
            conn,
            b,
            link,
            links::VerifyTrigger::Recheck,
            T0 + 1,
        ));
        not_found(links::disconnect(conn, b, link, T0 + 1));
        not_found(links::delete(conn, b, link));
        assert!(links::list(conn, b, &page)?.items.is_empty());
        assert_eq!(links::org_of_link(conn, link)?, Some(a));
        // jobs and steps
        not_found(jobs::enqueue(
            conn,
            b,
            &NewJob {
                link: Some(link),
                kind: "k",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        ));
        not_found(jobs::get(conn, b, job.id));
        not_found(jobs::cancel(conn, b, job.id, T0 + 1));
        not_found(jobs::steps(conn, b, job.id));
        assert!(jobs::step(conn, b, job.id, "vpc")?.is_none());
        assert!(jobs::list(conn, b, &page)?.items.is_empty());
        // resources
        not_found(resources::create(
            conn,
            b,
            &NewResource {
                link,
                job: None,
                kind: "vpc",
                aws_id: "vpc-2",
                region: "eu-west-1",
                parent: None,
                state: ResourceState::Creating,
                tags: &tags,
            },
            T0,
        ));
        let (b_link, _, _) = new_link(conn, &keyring, b, "b");
        not_found(resources::create(
            conn,
            b,
            &NewResource {
                link: b_link,
                job: Some(job.id),
                kind: "vpc",
                aws_id: "vpc-3",
                region: "eu-west-1",
                parent: None,
                state: ResourceState::Creating,
                tags: &tags,
            },
            T0,
        ));
        not_found(resources::create(
            conn,
            b,
            &NewResource {
                link: b_link,
                job: None,
                kind: "subnet",
                aws_id: "subnet-3",
                region: "eu-west-1",
                parent: Some(res.id),
                state: ResourceState::Creating,
                tags: &tags,
            },
            T0,
        ));
        not_found(resources::get(conn, b, res.id));
        assert!(resources::find_by_aws_id(conn, b, link, "eu-west-1", "vpc-1")?.is_none());
        not_found(resources::set_state(
            conn,
            b,
            res.id,
            ResourceState::Deleted,
            T0 + 1,
        ));
        not_found(resources::set_tags(conn, b, res.id, &tags, T0 + 1));
        assert!(resources::children(conn, b, res.id)?.is_empty());
        not_found(resources::delete(conn, b, res.id));
        assert!(resources::list(conn, b, None, &page)?.items.is_empty());
        assert!(
            resources::list(conn, b, Some(link), &page)?
                .items
                .is_empty()
        );
        // audit
        not_found(audit::get(conn, b, event.id));
        assert!(audit::list(conn, b, &page)?.items.is_empty());
        // idempotency: the same key under B is B's own, never A's response.
        assert!(matches!(
            idempotency::begin(conn, b, &scope, &[1; 32], 60_000, T0 + 1)?,
            Begin::Began(_)
        ));
        assert_eq!(idempotency::count(conn, b)?, 1);

        // A's rows are untouched.
        let u = users::get(conn, a, user.id)?;
        assert!(!u.disabled);
        assert_eq!(u.updated_ms, T0);
        let k = api_keys::get(conn, a, key.id)?;
        assert_eq!(
            (k.name.as_str(), k.revoked_ms, k.last_used_ms),
            ("k", None, None)
        );
        let l = links::get(conn, a, link)?;
        assert_eq!(
            (l.name.as_str(), l.state, l.role_arn.clone()),
            ("prod", LinkState::Pending, None)
        );
        assert_eq!(
            jobs::get(conn, a, job.id)?.state,
            xrole_store::JobState::Running
        );
        assert_eq!(jobs::steps(conn, a, job.id)?.len(), 1);
        let r = resources::get(conn, a, res.id)?;
        assert_eq!((r.state, r.updated_ms), (ResourceState::Available, T0));
        assert_eq!(audit::list(conn, a, &page)?.items.len(), 1);
        assert_eq!(
            idempotency::begin(conn, a, &scope, &[1; 32], 60_000, T0 + 2)?,
            Begin::Replay(response)
        );
        Ok(())
    });
}
