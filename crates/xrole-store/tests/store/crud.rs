use std::collections::BTreeMap;

use diesel::RunQueryDsl;
use serde_json::json;
use xrole_crypto::{ApiKey, ExternalId, Keyring, WebhookSecret};
use xrole_store::idempotency::{Begin, IDEMPOTENCY_TTL_MS, IdempotencyScope, StoredResponse};
use xrole_store::jobs::{FailOutcome, NewJob, RetryPolicy};
use xrole_store::links::{NewLink, StackReport, Tested, Verification, VerifyTrigger};
use xrole_store::resources::NewResource;
use xrole_store::users::{NewUser, UserChanges};
use xrole_store::{
    AccessLevel, Conn, Email, Error, JobState, LinkId, LinkState, OrgId, PageRequest,
    ResourceState, UserRole, api_keys, audit, idempotency, jobs, links, orgs, resources, users,
    webhooks, write_transaction,
};

use crate::{T0, each_backend, org};

pub fn new_link(
    conn: &mut Conn,
    keyring: &Keyring,
    org: OrgId,
    name: &str,
) -> (LinkId, ExternalId, WebhookSecret) {
    let external_id = ExternalId::generate();
    let secret = WebhookSecret::generate();
    let link = links::create(
        conn,
        keyring,
        org,
        &NewLink {
            name,
            aws_account_id: "111122223333",
            access_level: AccessLevel::Provisioning,
            external_id: &external_id,
            callback_secret: &secret,
            callback_secret_expires_ms: T0 + 48 * 3600 * 1000,
        },
        T0,
    )
    .unwrap();
    (link.id, external_id, secret)
}

#[test]
fn organizations_crud_and_pages() {
    each_backend(|_, conn| {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(orgs::create(conn, &format!("org {i}"), T0 + i)?.id);
        }
        assert_eq!(orgs::get(conn, ids[0])?.name, "org 0");
        assert_eq!(orgs::rename(conn, ids[0], "Acme", T0 + 10)?.name, "Acme");
        let first = orgs::list(conn, &PageRequest::first(2))?;
        assert_eq!(
            first.items.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let cursor: xrole_store::Cursor = first.next_cursor.unwrap().to_string().parse()?;
        let second = orgs::list(conn, &PageRequest::after(2, cursor))?;
        assert_eq!(
            second.items.iter().map(|o| o.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1]]
        );
        let third = orgs::list(conn, &PageRequest::after(2, second.next_cursor.unwrap()))?;
        assert_eq!(third.items.len(), 1);
        assert!(third.next_cursor.is_none());
        orgs::delete(conn, ids[4])?;
        assert!(matches!(orgs::get(conn, ids[4]), Err(Error::NotFound)));
        assert!(matches!(orgs::delete(conn, ids[4]), Err(Error::NotFound)));
        Ok(())
    });
}

#[test]
fn users_crud() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let email: Email = "Ada@Example.com".parse()?;
        let new = NewUser {
            email: &email,
            display_name: "Ada",
            role: UserRole::Operator,
            password_hash: Some("$argon2id$x"),
        };
        let ada = users::create(conn, org, &new, T0)?;
        assert_eq!(ada.email.as_str(), "ada@example.com");
        assert!(ada.has_password && !ada.disabled);
        assert_eq!(users::get(conn, org, ada.id)?, ada);
        assert_eq!(
            users::find_by_email(conn, org, &"ADA@example.com".parse()?)?.id,
            ada.id
        );
        assert_eq!(
            users::password_hash(conn, org, ada.id)?.as_deref(),
            Some("$argon2id$x")
        );
        let cands = users::login_candidates(conn, &email)?;
        assert_eq!(cands.len(), 1);
        assert_eq!(cands[0].1.as_deref(), Some("$argon2id$x"));

        let changes = UserChanges {
            role: Some(UserRole::Viewer),
            disabled: Some(true),
            password_hash: Some(None),
            display_name: Some("Ada L."),
            ..Default::default()
        };
        let changed = users::update(conn, org, ada.id, &changes, T0 + 5)?;
        assert_eq!(changed.role, UserRole::Viewer);
        assert!(changed.disabled && !changed.has_password);
        assert_eq!(changed.display_name, "Ada L.");
        assert_eq!(changed.updated_ms, T0 + 5);
        assert_eq!(users::password_hash(conn, org, ada.id)?, None);

        for i in 0..3 {
            let e: Email = format!("u{i}@example.com").parse()?;
            users::create(
                conn,
                org,
                &NewUser {
                    email: &e,
                    display_name: "u",
                    role: UserRole::Operator,
                    password_hash: None,
                },
                T0 + 1 + i,
            )?;
        }
        let page = users::list(conn, org, &PageRequest::first(3))?;
        assert_eq!(page.items.len(), 3);
        let rest = users::list(conn, org, &PageRequest::after(3, page.next_cursor.unwrap()))?;
        assert_eq!(
            rest.items.iter().map(|u| u.id).collect::<Vec<_>>(),
            vec![ada.id]
        );

        users::delete(conn, org, ada.id)?;
        assert!(matches!(
            users::get(conn, org, ada.id),
            Err(Error::NotFound)
        ));
        Ok(())
    });
}

#[test]
fn api_keys_crud() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let email: Email = "ops@example.com".parse()?;
        let owner = users::create(
            conn,
            org,
            &NewUser {
                email: &email,
                display_name: "Ops",
                role: UserRole::Operator,
                password_hash: None,
            },
            T0,
        )?;
        let keyring = Keyring::generate()?;
        let token = ApiKey::generate();
        let hash = keyring.api_key_hasher().hash(&token);
        let new = api_keys::NewApiKey {
            key_id: token.key_id(),
            key_hash: &hash,
            name: "ci",
            owner: Some(owner.id),
            expires_ms: Some(T0 + 1000),
            role: None,
        };
        let key = api_keys::create(conn, org, &new, T0)?;
        assert_eq!(key.owner, Some(owner.id));
        assert!(key.is_usable(T0) && !key.is_usable(T0 + 1000));
        assert_eq!(api_keys::get(conn, org, key.id)?, key);

        let (found, stored) = api_keys::find_for_auth(conn, token.key_id())?.unwrap();
        assert_eq!(found.id, key.id);
        assert!(keyring.api_key_hasher().verify(&token, &stored));
        assert!(api_keys::find_for_auth(conn, "nonexistent12")?.is_none());

        api_keys::touch(conn, org, key.id, T0 + 7)?;
        assert_eq!(api_keys::get(conn, org, key.id)?.last_used_ms, Some(T0 + 7));
        assert_eq!(
            api_keys::rename(conn, org, key.id, "deploy")?.name,
            "deploy"
        );
        let revoked = api_keys::revoke(conn, org, key.id, T0 + 8)?;
        assert_eq!(revoked.revoked_ms, Some(T0 + 8));
        assert!(!revoked.is_usable(T0 + 9));
        assert_eq!(
            api_keys::revoke(conn, org, key.id, T0 + 99)?.revoked_ms,
            Some(T0 + 8)
        );
        assert_eq!(
            api_keys::list(conn, org, &PageRequest::default())?
                .items
                .len(),
            1
        );
        api_keys::delete(conn, org, key.id)?;
        assert!(
            api_keys::list(conn, org, &PageRequest::default())?
                .items
                .is_empty()
        );

        // Deleting the owner deletes the owner's keys.
        let t2 = ApiKey::generate();
        let k2 = api_keys::create(
            conn,
            org,
            &api_keys::NewApiKey {
                key_id: t2.key_id(),
                key_hash: &[1; 32],
                name: "x",
                owner: Some(owner.id),
                expires_ms: None,
                role: None,
            },
            T0,
        )?;
        users::delete(conn, org, owner.id)?;
        assert!(matches!(
            api_keys::get(conn, org, k2.id),
            Err(Error::NotFound)
        ));
        Ok(())
    });
}

#[test]
fn links_crud_and_sealed_columns() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (id, external_id, secret) = new_link(conn, &keyring, org, "prod");
        let link = links::get(conn, org, id)?;
        assert_eq!(link.state, LinkState::Pending);
        assert_eq!(link.access_level, AccessLevel::Provisioning);
        assert_eq!(
            links::reveal_external_id(conn, &keyring, org, id)?.as_str(),
            external_id.as_str()
        );
        assert_eq!(
            links::reveal_callback_secret(conn, &keyring, org, id)?.expose_secret(),
            secret.expose_secret()
        );
        assert_eq!(
            links::find_by_external_id(conn, &keyring, org, &external_id)?.id,
            id
        );
        assert!(matches!(
            links::find_by_external_id(conn, &keyring, org, &ExternalId::generate()),
            Err(Error::NotFound)
        ));
        assert_eq!(links::org_of_link(conn, id)?, Some(org));
        assert_eq!(links::org_of_link(conn, LinkId::new())?, None);

        // A different keyring cannot open the sealed values.
        assert!(matches!(
            links::reveal_external_id(conn, &Keyring::generate()?, org, id),
            Err(Error::Crypto(_))
        ));

        let report = StackReport {
            role_arn: "arn:aws:iam::111122223333:role/xrole",
            stack_id: "arn:aws:cloudformation:eu-west-1:111122223333:stack/x/1",
            region: "eu-west-1",
            callback_secret_expires_ms: Some(T0 + 1000),
        };
        let l = links::record_stack(conn, org, id, &report, T0 + 1)?;
        assert_eq!(l.role_arn.as_deref(), Some(report.role_arn));
        assert_eq!(l.last_callback_ms, Some(T0 + 1));
        assert_eq!(l.callback_secret_expires_ms, T0 + 1000);
        let l = links::begin_verification(conn, org, id, VerifyTrigger::Changed, T0 + 2)?;
        assert_eq!((l.state, l.generation), (LinkState::Verifying, 1));
        let v = Verification {
            state: LinkState::Active,
            result: "external id required",
            error: None,
            trust_policy_audit: Some("audited"),
        };
        let tested = links::Tested {
            generation: 1,
            role_arn: report.role_arn,
        };
        let l = links::record_verification(conn, org, id, &tested, &v, T0 + 3)?.unwrap();
        assert_eq!(
            (l.state, l.last_verified_ms, l.trust_policy_audit.as_deref()),
            (LinkState::Active, Some(T0 + 3), Some("audited"))
        );
        assert_eq!(
            links::rename(conn, org, id, "production", T0 + 4)?.name,
            "production"
        );
        let (id2, _, _) = new_link(conn, &keyring, org, "staging");
        let page = links::list(conn, org, &PageRequest::first(1))?;
        assert_eq!(page.items.len(), 1);
        assert_eq!(
            links::list(conn, org, &PageRequest::after(1, page.next_cursor.unwrap()))?
                .items
                .len(),
            1
        );
        links::delete(conn, org, id2)?;
        assert!(matches!(links::get(conn, org, id2), Err(Error::NotFound)));
        Ok(())
    });
}

#[test]
fn reseal_moves_every_sealed_value_to_the_primary_key() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let mut keyring = Keyring::generate()?;
        let old = keyring.primary_key_id();
        let made: Vec<_> = (0..5)
            .map(|i| new_link(conn, &keyring, org, &format!("l{i}")))
            .collect();
        assert_eq!(links::count_needing_reseal(conn, &keyring)?, 0);
        let new = keyring.add_key()?;
        keyring.promote(new)?;
        assert_eq!(links::count_needing_reseal(conn, &keyring)?, 10);
        let mut calls = Vec::new();
        let report = links::reseal_all(conn, &keyring, 2, |done, total| calls.push((done, total)))?;
        assert_eq!((report.rows, report.resealed), (5, 10));
        assert_eq!(calls, vec![(0, 5), (2, 5), (4, 5), (5, 5)]);
        assert_eq!(links::count_needing_reseal(conn, &keyring)?, 0);
        keyring.retire(old)?;
        for (id, ext, secret) in &made {
            assert_eq!(
                links::reveal_external_id(conn, &keyring, org, *id)?.as_str(),
                ext.as_str()
            );
            assert_eq!(
                links::reveal_callback_secret(conn, &keyring, org, *id)?.expose_secret(),
                secret.expose_secret()
            );
        }
        // Running it again changes nothing.
        assert_eq!(links::reseal_all(conn, &keyring, 2, |_, _| {})?.resealed, 0);
        Ok(())
    });
}

#[test]
fn webhook_ids_are_recorded_once() {
    each_backend(|_, conn| {
        assert!(webhooks::record_webhook_id(conn, "msg_1", T0)?);
        assert!(!webhooks::record_webhook_id(conn, "msg_1", T0 + 1)?);
        assert!(webhooks::is_seen(conn, "msg_1")?);
        assert!(!webhooks::is_seen(conn, "msg_2")?);
        assert!(webhooks::record_webhook_id(conn, "msg_2", T0 + 10)?);
        assert_eq!(webhooks::purge_webhook_ids(conn, T0 + 5)?, 1);
        assert!(!webhooks::is_seen(conn, "msg_1")?);
        assert!(webhooks::is_seen(conn, "msg_2")?);
        Ok(())
    });
}

#[test]
fn jobs_lifecycle_steps_and_retries() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (link, _, _) = new_link(conn, &keyring, org, "prod");
        let payload = json!({"vpc_cidr": "10.0.0.0/16"});
        let job = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: Some(link),
                kind: "provision",
                payload: &payload,
                max_attempts: 2,
            },
            T0,
        )?;
        assert_eq!(
            (job.state, job.attempts, job.payload.clone()),
            (JobState::Queued, 0, payload.clone())
        );
        assert_eq!(jobs::get(conn, org, job.id)?, job);
        assert_eq!(
            jobs::list(conn, org, &PageRequest::default())?.items,
            vec![job.clone()]
        );

        let c = jobs::claim(conn, "w1", 30_000, T0 + 1)?.unwrap();
        assert!(!c.took_over);
        assert_eq!(
            (c.job.id, c.job.state, c.job.attempts),
            (job.id, JobState::Running, 1)
        );
        assert_eq!(c.job.lease_owner.as_deref(), Some("w1"));
        assert!(jobs::claim(conn, "w2", 30_000, T0 + 2)?.is_none());
        let mut lease = c.lease;
        jobs::renew(conn, &mut lease, 30_000, T0 + 10)?;
        assert_eq!(lease.expires_ms(), T0 + 30_010);
        jobs::set_progress(conn, &lease, 1, 3, T0 + 11)?;
        let step =
            jobs::record_intent(conn, &lease, "vpc", &json!({"client_token": "t1"}), T0 + 12)?;
        assert_eq!(step.aws_id, None);
        let step = jobs::record_step_result(conn, &lease, "vpc", "vpc-0abc", T0 + 13)?;
        assert_eq!(step.aws_id.as_deref(), Some("vpc-0abc"));
        // Recording the same intent again (a resumed run) returns the record.
        let again = jobs::record_intent(
            conn,
            &lease,
            "vpc",
            &json!({"client_token": "other"}),
            T0 + 14,
        )?;
        assert_eq!(again, step);
        jobs::record_intent(conn, &lease, "subnet-a", &json!({}), T0 + 15)?;
        let steps = jobs::steps(conn, org, job.id)?;
        assert_eq!(
            steps
                .iter()
                .map(|s| s.step_key.as_str())
                .collect::<Vec<_>>(),
            vec!["vpc", "subnet-a"]
        );
        assert_eq!(
            jobs::step(conn, org, job.id, "vpc")?
                .unwrap()
                .aws_id
                .as_deref(),
            Some("vpc-0abc")
        );

        // First failure: queued again after the backoff.
        let policy = RetryPolicy {
            base_ms: 1_000,
            max_ms: 60_000,
        };
        let out = jobs::fail(conn, &lease, "throttled", &policy, T0 + 20)?;
        assert_eq!(
            out,
            FailOutcome::Retrying {
                next_run_ms: T0 + 1_020
            }
        );
        assert!(matches!(
            jobs::complete(conn, &lease, &json!({}), T0 + 21),
            Err(Error::LeaseLost)
        ));
        let j = jobs::get(conn, org, job.id)?;
        assert_eq!(
            (
                j.state,
                j.error.as_deref(),
                j.progress_done,
                j.progress_total
            ),
            (JobState::Queued, Some("throttled"), 1, 3)
        );
        assert!(jobs::claim(conn, "w1", 30_000, T0 + 1_019)?.is_none());
        let c2 = jobs::claim(conn, "w2", 30_000, T0 + 1_020)?.unwrap();
        assert_eq!(c2.job.attempts, 2);
        // Second failure: attempts spent.
        assert_eq!(
            jobs::fail(conn, &c2.lease, "still throttled", &policy, T0 + 1_030)?,
            FailOutcome::Failed
        );
        let j = jobs::get(conn, org, job.id)?;
        assert_eq!(
            (j.state, j.finished_ms),
            (JobState::Failed, Some(T0 + 1_030))
        );

        // A successful job.
        let ok = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: None,
                kind: "noop",
                payload: &json!(null),
                max_attempts: 1,
            },
            T0 + 2_000,
        )?;
        let c3 = jobs::claim(conn, "w1", 30_000, T0 + 2_001)?.unwrap();
        assert_eq!(c3.job.id, ok.id);
        let done = jobs::complete(conn, &c3.lease, &json!({"ok": true}), T0 + 2_002)?;
        assert_eq!(
            (done.state, done.result.clone()),
            (JobState::Succeeded, Some(json!({"ok": true})))
        );
        assert_eq!(
            jobs::cancel(conn, org, ok.id, T0 + 2_003)?.state,
            JobState::Succeeded
        );

        // Cancelling a running job takes the lease away.
        let x = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: None,
                kind: "noop",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0 + 3_000,
        )?;
        let c4 = jobs::claim(conn, "w1", 30_000, T0 + 3_001)?.unwrap();
        assert_eq!(
            jobs::cancel(conn, org, x.id, T0 + 3_002)?.state,
            JobState::Cancelled
        );
        assert!(matches!(
            jobs::set_progress(conn, &c4.lease, 1, 1, T0 + 3_003),
            Err(Error::LeaseLost)
        ));
        assert!(matches!(
            jobs::record_intent(conn, &c4.lease, "s", &json!({}), T0 + 3_003),
            Err(Error::LeaseLost)
        ));
        Ok(())
    });
}

#[test]
fn resources_crud_with_parent_and_tags() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (link, _, _) = new_link(conn, &keyring, org, "prod");
        let job = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: Some(link),
                kind: "provision",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        let tags: BTreeMap<String, String> =
            [("xrole:managed-by".to_owned(), "xrole".to_owned())].into();
        let vpc = resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: Some(job.id),
                kind: "vpc",
                aws_id: "vpc-1",
                region: "eu-west-1",
                parent: None,
                state: ResourceState::Creating,
                tags: &tags,
            },
            T0,
        )?;
        let subnet = resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: Some(job.id),
                kind: "subnet",
                aws_id: "subnet-1",
                region: "eu-west-1",
                parent: Some(vpc.id),
                state: ResourceState::Available,
                tags: &tags,
            },
            T0 + 1,
        )?;
        assert_eq!(resources::get(conn, org, vpc.id)?, vpc);
        assert_eq!(
            resources::find_by_aws_id(conn, org, link, "eu-west-1", "subnet-1")?
                .unwrap()
                .id,
            subnet.id
        );
        assert!(resources::find_by_aws_id(conn, org, link, "us-east-1", "subnet-1")?.is_none());
        assert_eq!(
            resources::children(conn, org, vpc.id)?
                .iter()
                .map(|r| r.id)
                .collect::<Vec<_>>(),
            vec![subnet.id]
        );
        assert_eq!(
            resources::set_state(conn, org, vpc.id, ResourceState::Available, T0 + 2)?.state,
            ResourceState::Available
        );
        let mut more = tags.clone();
        more.insert("xrole:job".into(), job.id.to_string());
        assert_eq!(
            resources::set_tags(conn, org, vpc.id, &more, T0 + 3)?.tags,
            more
        );
        let page = resources::list(conn, org, Some(link), &PageRequest::first(1))?;
        assert_eq!(page.items[0].id, subnet.id);
        assert_eq!(
            resources::list(
                conn,
                org,
                None,
                &PageRequest::after(1, page.next_cursor.unwrap())
            )?
            .items[0]
                .id,
            vpc.id
        );
        // The database refuses to orphan a child.
        assert!(resources::delete(conn, org, vpc.id).is_err());
        resources::delete(conn, org, subnet.id)?;
        resources::delete(conn, org, vpc.id)?;
        assert!(
            resources::list(conn, org, None, &PageRequest::default())?
                .items
                .is_empty()
        );
        Ok(())
    });
}

fn scope(key: &str) -> IdempotencyScope<'_> {
    IdempotencyScope {
        principal: "user:1",
        method: "POST",
        route: "/v1/jobs",
        key,
    }
}

#[test]
fn idempotency_begin_complete_replay_expire_takeover() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let fp = [7u8; 32];
        let Begin::Began(lock) = idempotency::begin(conn, org, &scope("k1"), &fp, 10_000, T0)?
        else {
            panic!("expected Began")
        };
        assert!(!lock.took_over());
        assert_eq!(
            idempotency::begin(conn, org, &scope("k1"), &fp, 10_000, T0 + 4_000)?,
            Begin::InFlight {
                retry_after_ms: 6_000
            }
        );
        assert_eq!(
            idempotency::begin(conn, org, &scope("k1"), &[8u8; 32], 10_000, T0 + 4_000)?,
            Begin::Mismatch
        );
        let response = StoredResponse {
            status: 202,
            headers: vec![("location".into(), "/v1/jobs/1".into())],
            body: b"{\"id\":1}\x00\xff".to_vec(),
        };
        idempotency::complete(conn, &lock, &response)?;
        assert_eq!(
            idempotency::begin(conn, org, &scope("k1"), &fp, 10_000, T0 + 5_000)?,
            Begin::Replay(response.clone())
        );
        assert!(matches!(
            idempotency::complete(conn, &lock, &response),
            Err(Error::LockLost)
        ));
        // Other route or principal: another key.
        let other = IdempotencyScope {
            route: "/v1/aws-accounts",
            ..scope("k1")
        };
        assert!(matches!(
            idempotency::begin(conn, org, &other, &fp, 10_000, T0)?,
            Begin::Began(_)
        ));
        // After 24 hours the key is new again.
        assert!(matches!(
            idempotency::begin(
                conn,
                org,
                &scope("k1"),
                &fp,
                10_000,
                T0 + IDEMPOTENCY_TTL_MS
            )?,
            Begin::Began(_)
        ));

        // A stuck in-flight record is taken over once its lock expires.
        let Begin::Began(stuck) = idempotency::begin(conn, org, &scope("k2"), &fp, 10_000, T0)?
        else {
            panic!()
        };
        let Begin::Began(taker) =
            idempotency::begin(conn, org, &scope("k2"), &fp, 10_000, T0 + 10_000)?
        else {
            panic!("expected takeover")
        };
        assert!(taker.took_over());
        assert!(matches!(
            idempotency::complete(conn, &stuck, &response),
            Err(Error::LockLost)
        ));
        idempotency::complete(conn, &taker, &response)?;

        // Released records let the client retry.
        let Begin::Began(l3) = idempotency::begin(conn, org, &scope("k3"), &fp, 10_000, T0)? else {
            panic!()
        };
        idempotency::release(conn, &l3)?;
        assert!(matches!(
            idempotency::begin(conn, org, &scope("k3"), &fp, 10_000, T0 + 1)?,
            Begin::Began(_)
        ));

        let before = idempotency::count(conn, org)?;
        assert_eq!(
            idempotency::purge_expired(conn, T0 + IDEMPOTENCY_TTL_MS + 1)?,
            3
        );
        assert_eq!(idempotency::count(conn, org)?, before - 3);
        Ok(())
    });
}

#[test]
fn audit_is_append_only_and_newest_first() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let mut ids = Vec::new();
        for i in 0..3 {
            let e = audit::NewAuditEvent {
                actor: "user:1",
                action: "link.create",
                target: Some("link:1"),
                request_id: Some("req-1"),
                source_ip: Some("192.0.2.1"),
                details: json!({"i": i}),
            };
            ids.push(audit::append(conn, org, &e, T0 + i)?.id);
        }
        let got = audit::get(conn, org, ids[0])?;
        assert_eq!(
            (got.details.clone(), got.source_ip.as_deref()),
            (json!({"i": 0}), Some("192.0.2.1"))
        );
        let page = audit::list(conn, org, &PageRequest::first(2))?;
        assert_eq!(
            page.items.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1]]
        );
        let rest = audit::list(conn, org, &PageRequest::after(2, page.next_cursor.unwrap()))?;
        assert_eq!(
            rest.items.iter().map(|e| e.id).collect::<Vec<_>>(),
            vec![ids[0]]
        );
        assert!(rest.next_cursor.is_none());
        // The database refuses edits, whatever code tries.
        assert!(
            diesel::sql_query("UPDATE audit_events SET action = 'forged'")
                .execute(conn)
                .is_err()
        );
        assert!(
            diesel::sql_query("DELETE FROM audit_events")
                .execute(conn)
                .is_err()
        );
        assert_eq!(
            audit::list(conn, org, &PageRequest::default())?.items.len(),
            3
        );
        // An organization with audit history is not deleted.
        assert!(orgs::delete(conn, org).is_err());
        Ok(())
    });
}

#[test]
fn idempotency_job_and_audit_commit_or_roll_back_together() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let fp = [1u8; 32];
        let attempt = |conn: &mut Conn, fail: bool| -> Result<(), Error> {
            write_transaction(conn, |conn| {
                let Begin::Began(lock) =
                    idempotency::begin(conn, org, &scope("tx"), &fp, 10_000, T0)?
                else {
                    panic!()
                };
                let job = jobs::enqueue(
                    conn,
                    org,
                    &NewJob {
                        link: None,
                        kind: "k",
                        payload: &json!({}),
                        max_attempts: 1,
                    },
                    T0,
                )?;
                let target = format!("job:{}", job.id);
                audit::append(
                    conn,
                    org,
                    &audit::NewAuditEvent {
                        actor: "user:1",
                        action: "job.enqueue",
                        target: Some(&target),
                        request_id: None,
                        source_ip: None,
                        details: json!({}),
                    },
                    T0,
                )?;
                idempotency::complete(
                    conn,
                    &lock,
                    &StoredResponse {
                        status: 202,
                        headers: vec![],
                        body: job.id.to_string().into_bytes(),
                    },
                )?;
                if fail { Err(Error::NotFound) } else { Ok(()) }
            })
        };
        assert!(attempt(conn, true).is_err());
        assert_eq!(idempotency::count(conn, org)?, 0);
        assert!(
            jobs::list(conn, org, &PageRequest::default())?
                .items
                .is_empty()
        );
        assert!(
            audit::list(conn, org, &PageRequest::default())?
                .items
                .is_empty()
        );
        attempt(conn, false)?;
        assert_eq!(idempotency::count(conn, org)?, 1);
        let job = &jobs::list(conn, org, &PageRequest::default())?.items[0];
        assert_eq!(
            audit::list(conn, org, &PageRequest::default())?.items[0].target,
            Some(format!("job:{}", job.id))
        );
        let Begin::Replay(r) = idempotency::begin(conn, org, &scope("tx"), &fp, 10_000, T0 + 1)?
        else {
            panic!()
        };
        assert_eq!(r.body, job.id.to_string().into_bytes());
        Ok(())
    });
}

#[test]
fn api_key_authentication() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let hasher = keyring.api_key_hasher();
        let email: Email = "bot@example.com".parse()?;
        let owner = users::create(
            conn,
            org,
            &NewUser {
                email: &email,
                display_name: "Bot",
                role: UserRole::Operator,
                password_hash: None,
            },
            T0,
        )?;
        let token = ApiKey::generate();
        let new = api_keys::NewApiKey {
            key_id: token.key_id(),
            key_hash: &hasher.hash(&token),
            name: "bot",
            owner: Some(owner.id),
            expires_ms: Some(T0 + 100),
            role: None,
        };
        let key = api_keys::create(conn, org, &new, T0)?;
        let ok = api_keys::authenticate(conn, &hasher, &token, T0 + 1)?.unwrap();
        assert_eq!((ok.id, ok.last_used_ms), (key.id, Some(T0 + 1)));
        // An unknown token, and the right key id hashed under another pepper.
        let forged = ApiKey::generate();
        assert!(api_keys::authenticate(conn, &hasher, &forged, T0 + 1)?.is_none());
        assert!(
            api_keys::authenticate(conn, &Keyring::generate()?.api_key_hasher(), &token, T0 + 1)?
                .is_none()
        );
        assert!(
            api_keys::authenticate(conn, &hasher, &token, T0 + 100)?.is_none(),
            "expired"
        );
        users::update(
            conn,
            org,
            owner.id,
            &UserChanges {
                disabled: Some(true),
                ..Default::default()
            },
            T0 + 2,
        )?;
        assert!(
            api_keys::authenticate(conn, &hasher, &token, T0 + 3)?.is_none(),
            "owner disabled"
        );
        users::update(
            conn,
            org,
            owner.id,
            &UserChanges {
                disabled: Some(false),
                ..Default::default()
            },
            T0 + 4,
        )?;
        api_keys::revoke(conn, org, key.id, T0 + 5)?;
        assert!(
            api_keys::authenticate(conn, &hasher, &token, T0 + 6)?.is_none(),
            "revoked"
        );
        Ok(())
    });
}

#[test]
fn secrets_stay_out_of_debug_output() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let external_id = ExternalId::generate();
        let secret = WebhookSecret::generate();
        let new = NewLink {
            name: "n",
            aws_account_id: "111122223333",
            access_level: AccessLevel::ReadOnly,
            external_id: &external_id,
            callback_secret: &secret,
            callback_secret_expires_ms: T0,
        };
        let link = links::create(conn, &keyring, org, &new, T0)?;
        let dup = links::create(conn, &keyring, org, &new, T0).unwrap_err();
        let wrong_key =
            links::reveal_callback_secret(conn, &Keyring::generate()?, org, link.id).unwrap_err();
        let shown = format!("{new:?} {link:?} {dup:?} {dup} {wrong_key:?} {wrong_key} {conn:?}");
        let random_part = &secret.expose_secret()["whsec_".len()..];
        assert!(!shown.contains(external_id.as_str()), "{shown}");
        assert!(!shown.contains(random_part), "{shown}");
        Ok(())
    });
}

#[test]
fn deletes_of_referenced_rows_answer_in_use() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (link, _, _) = new_link(conn, &keyring, org, "prod");
        jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: Some(link),
                kind: "k",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        assert!(matches!(
            links::delete(conn, org, link),
            Err(Error::InUse("link"))
        ));
        let tags = BTreeMap::new();
        let parent = resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: None,
                kind: "vpc",
                aws_id: "vpc-1",
                region: "r",
                parent: None,
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )?;
        resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: None,
                kind: "subnet",
                aws_id: "subnet-1",
                region: "r",
                parent: Some(parent.id),
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )?;
        assert!(matches!(
            resources::delete(conn, org, parent.id),
            Err(Error::InUse("resource"))
        ));
        audit::append(
            conn,
            org,
            &audit::NewAuditEvent {
                actor: "system",
                action: "x",
                target: None,
                request_id: None,
                source_ip: None,
                details: json!({}),
            },
            T0,
        )?;
        assert!(matches!(
            orgs::delete(conn, org),
            Err(Error::InUse("organization"))
        ));
        Ok(())
    });
}

#[test]
fn sqlite_connections_use_wal_busy_timeout_and_foreign_keys() {
    use diesel::sql_types::{BigInt, Text};
    #[derive(diesel::QueryableByName)]
    struct Mode {
        #[diesel(sql_type = Text)]
        journal_mode: String,
    }
    #[derive(diesel::QueryableByName)]
    struct Num {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let db = xrole_testkit::TestDb::sqlite().unwrap();
    let bare_path = db.sqlite_path().unwrap().display().to_string();
    for url in [db.url().to_owned(), bare_path] {
        let pool = xrole_store::pool(&url, 2).unwrap();
        let mut conn = pool.get().unwrap();
        xrole_store::run_migrations(&mut conn).unwrap();
        let mode: Mode = diesel::sql_query("PRAGMA journal_mode")
            .get_result(&mut *conn)
            .unwrap();
        assert_eq!(mode.journal_mode, "wal");
        let fk: Num = diesel::sql_query("SELECT foreign_keys AS n FROM pragma_foreign_keys")
            .get_result(&mut *conn)
            .unwrap();
        assert_eq!(fk.n, 1);
        let busy: Num = diesel::sql_query("SELECT timeout AS n FROM pragma_busy_timeout")
            .get_result(&mut *conn)
            .unwrap();
        assert_eq!(busy.n, 10_000);
        assert_eq!(conn.backend(), xrole_store::Backend::Sqlite);
    }
    assert!(db.sqlite_path().unwrap().exists());
}

#[test]
fn deleting_an_organization_removes_its_tenant_data() {
    each_backend(|_, conn| {
        let org = org(conn, "leaving");
        let stays = crate::org(conn, "stays");
        let keyring = Keyring::generate()?;
        let email: Email = "a@example.com".parse()?;
        let user = users::create(
            conn,
            org,
            &NewUser {
                email: &email,
                display_name: "A",
                role: UserRole::Admin,
                password_hash: None,
            },
            T0,
        )?;
        let token = ApiKey::generate();
        api_keys::create(
            conn,
            org,
            &api_keys::NewApiKey {
                key_id: token.key_id(),
                key_hash: &[1; 32],
                name: "k",
                owner: Some(user.id),
                expires_ms: None,
                role: None,
            },
            T0,
        )?;
        let (link, _, _) = new_link(conn, &keyring, org, "l");
        let (other_link, _, _) = new_link(conn, &keyring, stays, "other");
        let job = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: Some(link),
                kind: "k",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        let c = jobs::claim(conn, "w", 1_000, T0)?.unwrap();
        jobs::record_intent(conn, &c.lease, "vpc", &json!({}), T0)?;
        let tags = BTreeMap::new();
        let vpc = resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: Some(job.id),
                kind: "vpc",
                aws_id: "vpc-1",
                region: "r",
                parent: None,
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )?;
        resources::create(
            conn,
            org,
            &NewResource {
                link,
                job: Some(job.id),
                kind: "subnet",
                aws_id: "subnet-1",
                region: "r",
                parent: Some(vpc.id),
                state: ResourceState::Available,
                tags: &tags,
            },
            T0,
        )?;
        let scope = IdempotencyScope {
            principal: "p",
            method: "POST",
            route: "/r",
            key: "k",
        };
        idempotency::begin(conn, org, &scope, &[1], 1_000, T0)?;

        orgs::delete(conn, org)?;
        assert!(matches!(
            users::get(conn, org, user.id),
            Err(Error::NotFound)
        ));
        assert!(api_keys::find_for_auth(conn, token.key_id())?.is_none());
        assert!(matches!(links::get(conn, org, link), Err(Error::NotFound)));
        assert!(matches!(jobs::get(conn, org, job.id), Err(Error::NotFound)));
        assert!(
            resources::list(conn, org, None, &PageRequest::default())?
                .items
                .is_empty()
        );
        assert_eq!(idempotency::count(conn, org)?, 0);
        // The other organization keeps its link.
        assert_eq!(links::get(conn, stays, other_link)?.name, "other");
        Ok(())
    });
}

#[test]
fn a_verification_applies_only_to_the_generation_and_role_it_tested() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (id, _, _) = new_link(conn, &keyring, org, "prod");
        let first = "arn:aws:iam::111122223333:role/first";
        let second = "arn:aws:iam::111122223333:role/second";
        let set_role = |conn: &mut Conn, role: &str, at: i64| {
            links::update(
                conn,
                org,
                id,
                &links::LinkChanges {
                    role_arn: Some(role),
                    ..Default::default()
                },
                at,
            )?;
            links::begin_verification(conn, org, id, VerifyTrigger::Changed, at)
        };
        let active = Verification {
            state: LinkState::Active,
            result: "verified",
            error: None,
            trust_policy_audit: Some("audited"),
        };
        let insecure = Verification {
            state: LinkState::Insecure,
            result: "insecure",
            error: Some("accepts any External ID"),
            trust_policy_audit: Some("audited"),
        };
        // A verification of the first role starts; the role changes meanwhile.
        let g1 = set_role(conn, first, T0)?.generation;
        let l = set_role(conn, second, T0 + 1)?;
        assert_eq!((l.generation, l.state), (g1 + 1, LinkState::Verifying));
        // The first role's result finds another role: ignored.
        let stale = Tested {
            generation: g1,
            role_arn: first,
        };
        assert!(links::record_verification(conn, org, id, &stale, &active, T0 + 2)?.is_none());
        // Same role ARN, older generation (an Update callback re-reported
        // it): ignored too.
        let stale_same_role = Tested {
            generation: g1,
            role_arn: second,
        };
        assert!(
            links::record_verification(conn, org, id, &stale_same_role, &active, T0 + 2)?.is_none()
        );
        assert_eq!(links::get(conn, org, id)?.state, LinkState::Verifying);
        // The current generation's finding applies, whatever the state.
        let current = Tested {
            generation: g1 + 1,
            role_arn: second,
        };
        let l = links::record_verification(conn, org, id, &current, &insecure, T0 + 3)?.unwrap();
        assert_eq!(l.state, LinkState::Insecure);
        // A recheck keeps `insecure` (no session) until its own result.
        let l = links::begin_verification(conn, org, id, VerifyTrigger::Recheck, T0 + 4)?;
        assert_eq!((l.state, l.generation), (LinkState::Insecure, g1 + 1));
        // A disconnected link stays disconnected: a late result cannot revive it.
        let l = links::disconnect(conn, org, id, T0 + 5)?;
        assert_eq!((l.state, l.generation), (LinkState::Disconnected, g1 + 2));
        let after = Tested {
            generation: g1 + 2,
            role_arn: second,
        };
        assert!(links::record_verification(conn, org, id, &after, &active, T0 + 6)?.is_none());
        assert_eq!(links::get(conn, org, id)?.state, LinkState::Disconnected);
        // A recheck of a failed link makes it `verifying`.
        links::set_state(conn, org, id, LinkState::Failed, T0 + 7)?;
        let l = links::begin_verification(conn, org, id, VerifyTrigger::Recheck, T0 + 8)?;
        assert_eq!((l.state, l.generation), (LinkState::Verifying, g1 + 2));
        Ok(())
    });
}

#[test]
fn a_deferred_job_waits_without_spending_an_attempt() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let (link, _, _) = new_link(conn, &keyring, org, "prod");
        let job = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: Some(link),
                kind: "provision",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        // Three waits on a job with a single attempt: none of them spends it.
        for round in 0..3 {
            let at = T0 + round * 1_000;
            let c = jobs::claim(conn, "w", 30_000, at)?.unwrap();
            assert_eq!((c.job.id, c.job.attempts), (job.id, 1));
            jobs::defer(conn, &c.lease, at + 500, "waiting: link verifying", at)?;
            let j = jobs::get(conn, org, job.id)?;
            assert_eq!(
                (j.state, j.attempts, j.run_after_ms, j.error.as_deref()),
                (
                    JobState::Queued,
                    0,
                    at + 500,
                    Some("waiting: link verifying")
                )
            );
            assert!(jobs::claim(conn, "w", 30_000, at + 499)?.is_none());
            // The old lease is spent.
            assert!(matches!(
                jobs::defer(conn, &c.lease, at, "again", at),
                Err(Error::LeaseLost)
            ));
        }
        let c = jobs::claim(conn, "w", 30_000, T0 + 5_000)?.unwrap();
        jobs::complete(conn, &c.lease, &json!({}), T0 + 5_001)?;
        assert_eq!(jobs::get(conn, org, job.id)?.state, JobState::Succeeded);
        Ok(())
    });
}

#[test]
fn the_last_enabled_admin_can_be_neither_demoted_disabled_nor_deleted() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let mk = |conn: &mut Conn, name: &str, role| {
            let email: Email = format!("{name}@acme.example.com").parse().unwrap();
            users::create(
                conn,
                org,
                &NewUser {
                    email: &email,
                    display_name: name,
                    role,
                    password_hash: None,
                },
                T0,
            )
        };
        let admin = mk(conn, "a", UserRole::Admin)?.id;
        let viewer = mk(conn, "v", UserRole::Viewer)?.id;
        let demote = UserChanges {
            role: Some(UserRole::Operator),
            ..Default::default()
        };
        let disable = UserChanges {
            disabled: Some(true),
            ..Default::default()
        };
        for changes in [&demote, &disable] {
            assert!(matches!(
                users::update(conn, org, admin, changes, T0 + 1),
                Err(Error::LastAdmin)
            ));
        }
        assert!(matches!(
            users::delete(conn, org, admin),
            Err(Error::LastAdmin)
        ));
        let a = users::get(conn, org, admin)?;
        assert_eq!((a.role, a.disabled), (UserRole::Admin, false));
        // With a second admin, either may go.
        let promote = UserChanges {
            role: Some(UserRole::Admin),
            ..Default::default()
        };
        users::update(conn, org, viewer, &promote, T0 + 2)?;
        users::update(conn, org, admin, &disable, T0 + 3)?;
        // A disabled admin does not count: the other is the last one now.
        assert!(matches!(
            users::delete(conn, org, viewer),
            Err(Error::LastAdmin)
        ));
        assert_eq!(users::count_admins(conn, org)?, 1);
        // Changes that touch neither role nor status are not checked.
        let rename = UserChanges {
            display_name: Some("Vee"),
            ..Default::default()
        };
        users::update(conn, org, viewer, &rename, T0 + 4)?;
        Ok(())
    });
}

#[test]
fn running_servers_report_the_key_they_seal_with() {
    use xrole_store::keyring_instances;
    each_backend(|_, conn| {
        keyring_instances::report(conn, "a", 1, T0)?;
        keyring_instances::report(conn, "b", 1, T0)?;
        keyring_instances::report(conn, "a", 2, T0 + 10)?;
        let live = keyring_instances::live(conn, T0)?;
        assert_eq!(
            live.iter()
                .map(|i| (i.instance.as_str(), i.primary_key_id))
                .collect::<Vec<_>>(),
            [("a", 2), ("b", 1)]
        );
        // b stopped reporting: it is no longer live, and its row goes.
        let live = keyring_instances::live(conn, T0 + 5)?;
        assert_eq!(live.len(), 1);
        keyring_instances::forget(conn, "a")?;
        assert!(keyring_instances::live(conn, 0)?.is_empty());
        Ok(())
    });
}

#[test]
fn a_link_goes_with_its_idle_jobs_but_never_under_a_running_one() {
    each_backend(|_, conn| {
        let keyring = Keyring::generate()?;
        let org = org(conn, "acme");
        let other = crate::org(conn, "globex");
        let (link, _, _) = new_link(conn, &keyring, org, "prod");
        let (theirs, _, _) = new_link(conn, &keyring, other, "prod");
        let job = |conn: &mut Conn, org, link| {
            jobs::enqueue(
                conn,
                org,
                &NewJob {
                    link: Some(link),
                    kind: "vpc",
                    payload: &json!({}),
                    max_attempts: 3,
                },
                T0,
            )
        };
        job(conn, org, link)?;
        job(conn, org, link)?;
        job(conn, other, theirs)?;
        // One of the two starts running (the claim order is not this test's
        // business: keep claiming until it is this link's).
        let running = loop {
            let c = jobs::claim(conn, "w1", 60_000, T0 + 1)?.unwrap();
            if c.job.link_id == Some(link) {
                break c;
            }
        };
        // Another organization's id changes nothing of theirs.
        assert_eq!(jobs::delete_idle_of_link(conn, other, link)?, 0);
        assert_eq!(jobs::delete_idle_of_link(conn, org, link)?, 1);
        assert!(matches!(
            links::delete(conn, org, link),
            Err(Error::InUse(_))
        ));
        assert_eq!(
            jobs::get(conn, org, running.job.id)?.state,
            JobState::Running
        );
        jobs::complete(conn, &running.lease, &json!({}), T0 + 2)?;
        assert_eq!(jobs::delete_idle_of_link(conn, org, link)?, 1);
        links::delete(conn, org, link)?;
        assert!(links::get(conn, other, theirs).is_ok());
        Ok(())
    });
}
