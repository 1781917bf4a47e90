//! Organization connections: one link per account however callbacks race,
//! tenants apart, deletion with the links, re-sealing.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Barrier};

use xrole_crypto::{ExternalId, Keyring, WebhookSecret};
use xrole_store::connections::{self, NewConnection};
use xrole_store::links::{self, NewAccountLink};
use xrole_store::resources::NewResource;
use xrole_store::{
    AccessLevel, Error, LinkState, PageRequest, ResourceState, pool, resources, write_transaction,
};

use crate::{T0, each_backend, org};

fn connect_org(
    conn: &mut xrole_store::Conn,
    keyring: &Keyring,
    org: xrole_store::OrgId,
) -> (connections::Connection, ExternalId, WebhookSecret) {
    let ext = ExternalId::generate();
    let secret = WebhookSecret::generate();
    let c = connections::create(
        conn,
        keyring,
        org,
        &NewConnection {
            name: "Acme org",
            access_level: AccessLevel::ReadOnly,
            region: "us-east-1",
            management_account_id: Some("111111111111"),
            external_id: &ext,
            callback_secret: &secret,
        },
        T0,
    )
    .unwrap();
    (c, ext, secret)
}

#[test]
fn racing_callbacks_make_one_link_per_account() {
    each_backend(|db, conn| {
        let keyring = Arc::new(Keyring::generate()?);
        let org = org(conn, "acme");
        let (c, ext, secret) = connect_org(conn, &keyring, org);
        assert_eq!(
            connections::reveal_external_id(conn, &keyring, org, c.id)?.as_str(),
            ext.as_str()
        );
        assert_eq!(
            connections::reveal_callback_secret(conn, &keyring, org, c.id)?.expose_secret(),
            secret.expose_secret()
        );
        assert_eq!(connections::org_of_connection(conn, c.id)?, Some(org));
        // 40 accounts, each reported by 4 threads at once.
        let accounts: Vec<String> = (0..40).map(|i| format!("2000000000{i:02}")).collect();
        let pool = pool(db.url(), 8)?;
        let start = Arc::new(Barrier::new(4));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (pool, start, keyring) = (pool.clone(), start.clone(), keyring.clone());
                let (accounts, ext) = (accounts.clone(), ext.clone());
                std::thread::spawn(move || {
                    let mut conn = pool.get().unwrap();
                    start.wait();
                    let mut made = 0;
                    for a in &accounts {
                        let new = NewAccountLink {
                            connection: c.id,
                            aws_account_id: a,
                            name: "Acme org",
                            access_level: AccessLevel::ReadOnly,
                            external_id: &ext,
                        };
                        let (l, created) = write_transaction(&mut conn, |conn| {
                            links::join_connection(conn, &keyring, org, &new, T0)
                        })
                        .unwrap();
                        assert_eq!(l.aws_account_id, *a);
                        made += usize::from(created);
                    }
                    made
                })
            })
            .collect();
        let made: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(made, 40, "each account's link made exactly once");
        let page = links::list_revealed(conn, &keyring, org, Some(c.id), &PageRequest::first(200))?;
        assert_eq!(page.items.len(), 40);
        let distinct: HashSet<_> = page.items.iter().map(|(l, _)| &l.aws_account_id).collect();
        assert_eq!(distinct.len(), 40);
        for (l, e) in &page.items {
            assert_eq!(l.connection_id, Some(c.id));
            assert_eq!(
                e.as_ref().unwrap().as_str(),
                ext.as_str(),
                "the connection's ID"
            );
        }
        assert_eq!(
            connections::account_counts(conn, org, c.id)?,
            vec![(LinkState::Pending, 40)]
        );
        // Links of no connection are not in the filtered list.
        crate::crud::new_link(conn, &keyring, org, "single");
        assert_eq!(
            links::list_revealed(conn, &keyring, org, Some(c.id), &PageRequest::first(200))?
                .items
                .len(),
            40
        );
        Ok(())
    });
}

#[test]
fn a_connection_is_its_tenants_alone_and_goes_with_its_links() {
    each_backend(|_, conn| {
        let keyring = Keyring::generate()?;
        let (a, b) = (org(conn, "a"), org(conn, "b"));
        let (c, ext, _) = connect_org(conn, &keyring, a);
        assert!(matches!(
            connections::get(conn, b, c.id),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            connections::reveal_callback_secret(conn, &keyring, b, c.id),
            Err(Error::NotFound)
        ));
        assert!(matches!(
            connections::delete(conn, b, c.id),
            Err(Error::NotFound)
        ));
        assert!(
            connections::list(conn, b, &PageRequest::first(10))?
                .items
                .is_empty()
        );
        assert_eq!(
            connections::list(conn, a, &PageRequest::first(10))?
                .items
                .len(),
            1
        );
        let join = |conn: &mut xrole_store::Conn, account: &str| {
            links::join_connection(
                conn,
                &keyring,
                a,
                &NewAccountLink {
                    connection: c.id,
                    aws_account_id: account,
                    name: "x",
                    access_level: AccessLevel::ReadOnly,
                    external_id: &ext,
                },
                T0,
            )
            .unwrap()
            .0
        };
        let l1 = join(conn, "200000000001");
        let l2 = join(conn, "200000000002");
        // Resources in one account keep the connection.
        resources::create(
            conn,
            a,
            &NewResource {
                link: l2.id,
                job: None,
                kind: "vpc",
                aws_id: "vpc-1",
                region: "us-east-1",
                parent: None,
                state: ResourceState::Available,
                tags: &BTreeMap::new(),
            },
            T0,
        )?;
        assert!(matches!(
            write_transaction(conn, |conn| connections::delete(conn, a, c.id)),
            Err(Error::InUse("resources"))
        ));
        assert!(links::get(conn, a, l1.id).is_ok(), "nothing changed");
        Ok(())
    });
}

#[test]
fn connections_are_resealed_under_the_new_key() {
    each_backend(|_, conn| {
        let mut rotated = Keyring::generate()?;
        let org = org(conn, "acme");
        let (c, ext, secret) = connect_org(conn, &rotated, org);
        assert_eq!(connections::count_needing_reseal(conn, &rotated)?, 0);
        let new = rotated.add_key()?;
        rotated.promote(new)?;
        assert_eq!(connections::count_needing_reseal(conn, &rotated)?, 2);
        let report = connections::reseal_all(conn, &rotated, 10, |_, _| {})?;
        assert_eq!(report.resealed, 2);
        assert_eq!(connections::count_needing_reseal(conn, &rotated)?, 0);
        assert_eq!(
            connections::reveal_external_id(conn, &rotated, org, c.id)?.as_str(),
            ext.as_str()
        );
        assert_eq!(
            connections::reveal_callback_secret(conn, &rotated, org, c.id)?.expose_secret(),
            secret.expose_secret()
        );
        Ok(())
    });
}
