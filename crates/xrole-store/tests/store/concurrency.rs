//! Several connections at once: job claiming, lease takeover, idempotency.

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use serde_json::json;
use xrole_store::idempotency::{Begin, IdempotencyScope};
use xrole_store::jobs::NewJob;
use xrole_store::{Error, JobId, JobState, PageRequest, idempotency, jobs, pool};

use crate::{T0, each_backend, org};

#[test]
fn two_workers_process_100_jobs_exactly_once() {
    each_backend(|db, conn| {
        let org = org(conn, "acme");
        let mut all = HashSet::new();
        for i in 0..100 {
            let j = jobs::enqueue(
                conn,
                org,
                &NewJob {
                    link: None,
                    kind: "n",
                    payload: &json!({ "i": i }),
                    max_attempts: 1,
                },
                T0 + i,
            )?;
            all.insert(j.id);
        }
        let pool = pool(db.url(), 4)?;
        let start = Arc::new(Barrier::new(2));
        let workers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|name| {
                let pool = pool.clone();
                let start = start.clone();
                std::thread::spawn(move || -> Vec<JobId> {
                    let mut conn = pool.get().unwrap();
                    let mut done = Vec::new();
                    start.wait();
                    while let Some(c) = jobs::claim(&mut conn, name, 60_000, T0 + 1_000).unwrap() {
                        assert!(!c.took_over);
                        jobs::complete(&mut conn, &c.lease, &json!({ "by": name }), T0 + 1_001)
                            .unwrap();
                        done.push(c.job.id);
                    }
                    done
                })
            })
            .collect();
        let mut processed = Vec::new();
        for w in workers {
            processed.extend(w.join().unwrap());
        }
        assert_eq!(processed.len(), 100, "every job processed once, none twice");
        assert_eq!(processed.iter().copied().collect::<HashSet<_>>(), all);
        let page = jobs::list(conn, org, &PageRequest::first(200))?;
        assert!(
            page.items
                .iter()
                .all(|j| j.state == JobState::Succeeded && j.attempts == 1)
        );
        Ok(())
    });
}

#[test]
fn an_expired_lease_is_taken_over() {
    each_backend(|_, conn| {
        let org = org(conn, "acme");
        let job = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: None,
                kind: "n",
                payload: &json!({}),
                max_attempts: 3,
            },
            T0,
        )?;
        let first = jobs::claim(conn, "w1", 1_000, T0)?.unwrap();
        jobs::record_intent(
            conn,
            &first.lease,
            "vpc",
            &json!({"client_token": "t"}),
            T0 + 1,
        )?;
        assert!(
            jobs::claim(conn, "w2", 1_000, T0 + 1_000)?.is_none(),
            "lease still valid"
        );
        let second = jobs::claim(conn, "w2", 1_000, T0 + 1_001)?.unwrap();
        assert!(second.took_over);
        assert_eq!((second.job.id, second.job.attempts), (job.id, 2));
        assert_eq!(second.job.lease_owner.as_deref(), Some("w2"));
        // The resumed run sees what the first run recorded.
        assert_eq!(
            jobs::step(conn, org, job.id, "vpc")?.unwrap().intent,
            json!({"client_token": "t"})
        );
        // The first worker lost the job.
        let mut old = first.lease.clone();
        assert!(matches!(
            jobs::renew(conn, &mut old, 1_000, T0 + 1_002),
            Err(Error::LeaseLost)
        ));
        assert!(matches!(
            jobs::complete(conn, &first.lease, &json!({}), T0 + 1_002),
            Err(Error::LeaseLost)
        ));
        assert!(matches!(
            jobs::record_step_result(conn, &first.lease, "vpc", "vpc-1", T0 + 1_002),
            Err(Error::LeaseLost)
        ));
        jobs::complete(conn, &second.lease, &json!({}), T0 + 1_003)?;
        assert_eq!(jobs::get(conn, org, job.id)?.state, JobState::Succeeded);

        // A job whose last attempt's lease expires fails instead of running again.
        let once = jobs::enqueue(
            conn,
            org,
            &NewJob {
                link: None,
                kind: "n",
                payload: &json!({}),
                max_attempts: 1,
            },
            T0,
        )?;
        jobs::claim(conn, "w1", 1_000, T0 + 2_000)?.unwrap();
        assert!(jobs::claim(conn, "w2", 1_000, T0 + 3_001)?.is_none());
        let j = jobs::get(conn, org, once.id)?;
        assert_eq!((j.state, j.attempts), (JobState::Failed, 1));
        Ok(())
    });
}

#[test]
fn twenty_concurrent_begins_on_one_key_have_one_winner() {
    each_backend(|db, conn| {
        let org = org(conn, "acme");
        let pool = pool(db.url(), 20)?;
        let start = Arc::new(Barrier::new(20));
        let threads: Vec<_> = (0..20)
            .map(|_| {
                let pool = pool.clone();
                let start = start.clone();
                std::thread::spawn(move || {
                    let mut conn = pool.get().unwrap();
                    let scope = IdempotencyScope {
                        principal: "user:1",
                        method: "POST",
                        route: "/v1/jobs",
                        key: "race",
                    };
                    start.wait();
                    idempotency::begin(&mut conn, org, &scope, &[42; 32], 30_000, T0).unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Begin> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners = outcomes
            .iter()
            .filter(|o| matches!(o, Begin::Began(_)))
            .count();
        let waiting = outcomes
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    Begin::InFlight {
                        retry_after_ms: 30_000
                    }
                )
            })
            .count();
        assert_eq!((winners, waiting), (1, 19), "{outcomes:?}");
        assert_eq!(idempotency::count(conn, org)?, 1);
        Ok(())
    });
}

#[test]
fn organizations_take_turns_and_a_flood_is_capped() {
    use jobs::Fairness;
    each_backend(|_, conn| {
        let hostile = org(conn, "hostile");
        let honest: Vec<_> = (0..10).map(|i| org(conn, &format!("honest{i}"))).collect();
        let job = |conn: &mut xrole_store::Conn, org, i: i64| {
            jobs::enqueue(
                conn,
                org,
                &NewJob {
                    link: None,
                    kind: "n",
                    payload: &json!({ "i": i }),
                    max_attempts: 1,
                },
                T0 + i,
            )
        };
        // The flood is queued first: a FIFO would serve it all before anyone.
        for i in 0..200 {
            job(conn, hostile, i)?;
        }
        let mut honest_jobs = HashSet::new();
        for (i, o) in honest.iter().enumerate() {
            honest_jobs.insert(job(conn, *o, 1_000 + i64::try_from(i).unwrap())?.id);
        }
        let fair = Fairness {
            max_running_per_org: 3,
        };
        // Claim without finishing anything: every honest job is claimed,
        // and the flood never holds more than its cap.
        let mut claimed = Vec::new();
        while let Some(c) = jobs::claim_with(conn, "w", 60_000, T0 + 10_000, &fair)? {
            claimed.push(c);
        }
        let hostile_running = claimed.iter().filter(|c| c.job.org_id == hostile).count();
        assert_eq!(hostile_running, 3);
        assert_eq!(claimed.len(), 13);
        let got: HashSet<JobId> = claimed
            .iter()
            .filter(|c| c.job.org_id != hostile)
            .map(|c| c.job.id)
            .collect();
        assert_eq!(got, honest_jobs);
        // Turns rotate: among the first 11 claims, no organization had two.
        let first: Vec<_> = claimed.iter().take(11).map(|c| c.job.org_id).collect();
        assert_eq!(first.iter().collect::<HashSet<_>>().len(), 11, "{first:?}");

        // The flood still progresses: each finished job frees a place for
        // the next of its own.
        for c in claimed.iter().filter(|c| c.job.org_id == hostile) {
            jobs::complete(conn, &c.lease, &json!({}), T0 + 10_001)?;
        }
        let next = jobs::claim_with(conn, "w", 60_000, T0 + 10_002, &fair)?.unwrap();
        assert_eq!(next.job.org_id, hostile);
        // A lease that expires frees the place too (the job is taken over).
        let later = T0 + 10_002 + 60_001;
        let mut taken = 0;
        while let Some(c) = jobs::claim_with(conn, "w2", 60_000, later, &fair)? {
            if c.job.org_id == hostile {
                taken += 1;
            }
        }
        assert_eq!(taken, 3, "the cap holds after takeovers too");
        Ok(())
    });
}

#[test]
fn two_admins_demoting_each_other_at_once_leave_one_admin() {
    use xrole_store::users::{NewUser, UserChanges};
    use xrole_store::{Email, UserRole, users};
    each_backend(|db, conn| {
        let pool = pool(db.url(), 4)?;
        for round in 0..20 {
            let org = org(conn, &format!("acme{round}"));
            let mk = |conn: &mut xrole_store::Conn, name: &str| {
                let email: Email = format!("{name}@acme.example.com").parse().unwrap();
                users::create(
                    conn,
                    org,
                    &NewUser {
                        email: &email,
                        display_name: name,
                        role: UserRole::Admin,
                        password_hash: None,
                    },
                    T0,
                )
                .unwrap()
                .id
            };
            let (a, b) = (mk(conn, "a"), mk(conn, "b"));
            let start = Arc::new(Barrier::new(2));
            let outcomes: Vec<bool> = [(a, b), (b, a)]
                .into_iter()
                .map(|(_, target)| {
                    let pool = pool.clone();
                    let start = start.clone();
                    std::thread::spawn(move || {
                        let mut c = pool.get().unwrap();
                        start.wait();
                        let demote = UserChanges {
                            role: Some(UserRole::Operator),
                            ..Default::default()
                        };
                        // Each demotion in its own write transaction, as a
                        // request makes it.
                        match xrole_store::write_transaction(&mut c, |c| {
                            users::update(c, org, target, &demote, T0 + 1)
                        }) {
                            Ok(_) => true,
                            Err(Error::LastAdmin) => false,
                            Err(e) => panic!("{e}"),
                        }
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            assert_eq!(outcomes.iter().filter(|ok| **ok).count(), 1, "{outcomes:?}");
            assert_eq!(users::count_admins(conn, org)?, 1);
        }
        Ok(())
    });
}
