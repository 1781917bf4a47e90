//! Hardening: three `xrole serve` processes on one PostgreSQL take 100
//! concurrent requests (duplicated Idempotency-Keys on several routes plus
//! reads), spread over the replicas: no 5xx, every duplicate gets the
//! original answer replayed or a 409, and each key's write happens once.
//! The first test has no AWS side (tenant routes only); the second has one
//! on moto, and its duplicates include job-creating POSTs: each job is made
//! once and runs once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "jobs/cluster.rs"]
mod cluster;

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use futures::future::join_all;
use reqwest::Method;
use serde_json::{Value, json};
use xrole_testkit::{Aws, TestDb, free_port};

const OPERATOR_TOKEN: &str = "operator-token-for-replica-tests-0123456789";

struct Replica {
    _child: tokio::process::Child,
    base: String,
    log: std::path::PathBuf,
}

async fn start(
    dir: &std::path::Path,
    db_url: &str,
    keyring: &std::path::Path,
    i: usize,
) -> Replica {
    let port = free_port().unwrap();
    let log = dir.join(format!("serve-{i}.log"));
    let file = std::fs::File::create(&log).unwrap();
    // No AWS identity (nothing listens at the endpoint): tenant routes only.
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xrole"))
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XROLE_DATABASE_URL", db_url)
        .env("XROLE_KEYRING_FILE", keyring)
        .env("XROLE_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("XROLE_RATE_LIMIT_PER_SECOND", "0")
        .env("XROLE_ORG_RATE_LIMIT_PER_SECOND", "0")
        .env("XROLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("AWS_ENDPOINT_URL", dead)
        .env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
        .env("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Replica {
                _child: child,
                base,
                log,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "replica {i} did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_answer_100_concurrent_requests_with_duplicate_keys_once() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("xrole.keyring");
    xrole_crypto::Keyring::generate()
        .unwrap()
        .write_file(&keyring)
        .unwrap();
    let mut replicas = Vec::new();
    for i in 0..3 {
        replicas.push(start(dir.path(), db.url(), &keyring, i).await);
    }
    let http = reqwest::Client::new();
    let res = http
        .post(format!("{}/v1/organizations", replicas[0].base))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "Acme", "admin_email": "admin@acme.example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let v: Value = res.json().await.unwrap();
    let key = v["api_key"]["token"].as_str().unwrap().to_owned();

    // 60 API-key creations under 6 keys, 20 user creations under 2 keys,
    // 20 reads; request i goes to replica i % 3.
    let mut plan: Vec<(Method, &str, Option<String>, Option<Value>)> = Vec::new();
    for i in 0..60 {
        let k = i % 6;
        plan.push((
            Method::POST,
            "/v1/api-keys",
            Some(format!("replica-key-{k}")),
            Some(json!({"name": format!("key {k}")})),
        ));
    }
    for i in 0..20 {
        let k = i % 2;
        plan.push((
            Method::POST,
            "/v1/users",
            Some(format!("replica-user-{k}")),
            Some(json!({"email": format!("u{k}@acme.example.com"), "role": "operator"})),
        ));
    }
    for i in 0..20 {
        let path = if i % 2 == 0 {
            "/v1/api-keys"
        } else {
            "/v1/organization"
        };
        plan.push((Method::GET, path, None, None));
    }
    let calls = plan
        .into_iter()
        .enumerate()
        .map(|(i, (method, path, idem, body))| {
            let http = http.clone();
            let url = format!("{}{path}", replicas[i % 3].base);
            let key = key.clone();
            async move {
                let mut r = http.request(method, url).bearer_auth(key);
                if let Some(k) = &idem {
                    r = r.header("Idempotency-Key", k);
                }
                if let Some(b) = &body {
                    r = r.json(b);
                }
                let res = tokio::time::timeout(Duration::from_secs(120), r.send())
                    .await
                    .expect("a request hung")
                    .unwrap();
                let status = res.status().as_u16();
                let text = res.text().await.unwrap();
                (idem, status, text)
            }
        });
    let results = join_all(calls).await;

    let mut firsts: HashMap<String, String> = HashMap::new();
    for (idem, status, text) in results {
        assert!(status < 500, "{status}: {text}");
        let Some(k) = idem else {
            assert_eq!(status, 200, "{text}");
            continue;
        };
        match status {
            201 => {
                // Every 201 for one key is the same answer, replayed.
                let first = firsts.entry(k.clone()).or_insert_with(|| text.clone());
                assert_eq!(first, &text, "{k}: a second, different 201");
            }
            409 => {}
            other => panic!("{k}: {other} {text}"),
        }
    }
    assert_eq!(firsts.len(), 8, "every key got its 201");

    // Each key's write happened once: 1 + 6 API keys, 1 + 2 users.
    let list = |path: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}?limit=100", replicas[2].base);
        let key = key.clone();
        async move {
            let v: Value = http
                .get(url)
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["data"].as_array().unwrap().len()
        }
    };
    assert_eq!(list("/v1/api-keys").await, 7);
    assert_eq!(list("/v1/users").await, 3);
    for r in &replicas {
        let log = std::fs::read_to_string(&r.log).unwrap();
        assert!(
            !log.lines().any(|l| l.contains(" ERROR xrole_server")),
            "{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_with_aws_make_and_run_each_duplicated_job_once() {
    let Some(db) = TestDb::postgres().unwrap() else {
        return;
    };
    let aws = Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let gate = aws.gate();
    let cluster = cluster::Cluster::new(&aws, &db).await;
    // Two workers each. The lease is long enough that no job is taken over
    // on a busy machine: a job that ran twice would show in `attempts`.
    let names: Vec<String> = (0..3).map(|i| format!("replica-{i}")).collect();
    let replicas = join_all(
        names
            .iter()
            .map(|n| cluster.serve_with(n, 2, &[("XROLE_JOB_LEASE_SECONDS", "60")])),
    )
    .await;
    let (client, link_id) = cluster::org_and_active_link(&aws, &customer, &replicas[0]).await;

    // 30 VPC jobs under 3 keys, 40 API-key creations under 4 keys, 10 user
    // creations under 2 keys, 20 reads; request i goes to replica i % 3.
    let mut plan: Vec<(Method, String, Option<String>, Option<Value>)> = Vec::new();
    for i in 0..30 {
        let k = i % 3;
        plan.push((
            Method::POST,
            format!("/v1/aws-accounts/{link_id}/vpcs"),
            Some(format!("replica-vpc-{k}")),
            Some(
                json!({"name": format!("net{k}"), "cidr_block": format!("10.{}.0.0/16", 70 + k),
                        "availability_zones": ["us-east-1a"]}),
            ),
        ));
    }
    for i in 0..40 {
        let k = i % 4;
        plan.push((
            Method::POST,
            "/v1/api-keys".to_owned(),
            Some(format!("replica-key-{k}")),
            Some(json!({"name": format!("key {k}")})),
        ));
    }
    for i in 0..10 {
        let k = i % 2;
        plan.push((
            Method::POST,
            "/v1/users".to_owned(),
            Some(format!("replica-user-{k}")),
            Some(json!({"email": format!("u{k}@acme.example.com"), "role": "operator"})),
        ));
    }
    for i in 0..20 {
        let path = match i % 3 {
            0 => "/v1/jobs".to_owned(),
            1 => "/v1/organization".to_owned(),
            _ => format!("/v1/aws-accounts/{link_id}/resources"),
        };
        plan.push((Method::GET, path, None, None));
    }
    // Interleave the kinds so duplicates of one key race each other and
    // the other routes.
    let mut plan: Vec<_> = plan.into_iter().enumerate().collect();
    plan.sort_by_key(|(i, _)| (i * 37) % 100);
    assert_eq!(plan.len(), 100);
    let calls = plan
        .into_iter()
        .enumerate()
        .map(|(n, (_, (method, path, idem, body)))| {
            let url = format!("{}{path}", replicas[n % 3].base);
            let client = &client;
            async move {
                let (status, text) = client
                    .call_text(method, url, idem.as_deref(), body.as_ref())
                    .await;
                (path, idem, status, text)
            }
        });
    let results = join_all(calls).await;

    let mut firsts: HashMap<String, String> = HashMap::new();
    let mut tally: HashMap<u16, usize> = HashMap::new();
    for (path, idem, status, text) in results {
        *tally.entry(status).or_default() += 1;
        assert!(status < 500, "{path}: {status} {text}");
        let Some(k) = idem else {
            assert_eq!(status, 200, "{path}: {text}");
            continue;
        };
        let created = if k.starts_with("replica-vpc-") {
            202
        } else {
            201
        };
        match status {
            // Every success for one key is the same answer, replayed.
            s if s == created => {
                let first = firsts.entry(k.clone()).or_insert_with(|| text.clone());
                assert_eq!(first, &text, "{k}: a second, different {s}");
            }
            409 => {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["code"], "idempotency_key_in_use", "{k}: {text}");
            }
            other => panic!("{k}: {other} {text}"),
        }
    }
    assert_eq!(firsts.len(), 9, "every key got its answer: {firsts:?}");
    eprintln!("answers by status: {tally:?}");

    // One job per VPC key, each run once to success by one of the replicas.
    let base = &replicas[1].base;
    let mut job_ids = Vec::new();
    for k in 0..3 {
        let v: Value = serde_json::from_str(&firsts[&format!("replica-vpc-{k}")]).unwrap();
        job_ids.push(v["id"].as_str().unwrap().to_owned());
    }
    let jobs = client.get(format!("{base}/v1/jobs?limit=100")).await;
    let mut listed: Vec<&str> = jobs["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "provision_vpc")
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = job_ids.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected, "exactly one job per key: {jobs}");
    for job in &job_ids {
        let done = client.finished(base, job).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        assert_eq!(done["attempts"], 1, "claimed once: {done}");
        let found = cluster::tagged_by_job(&customer.admin_config(), job).await;
        assert_eq!(found["vpc"].len(), 1, "{job}: {found:?}");
        assert_eq!(
            found["vpc"][0],
            done["resources"][0]["aws_id"].as_str().unwrap()
        );
    }
    assert_eq!(
        gate.count_for_account("CreateVpc", customer.account_id()),
        3,
        "one CreateVpc per distinct key"
    );

    // Each other key's write happened once: 1 + 4 API keys, 1 + 2 users.
    for (path, n) in [("/v1/api-keys", 5), ("/v1/users", 3)] {
        let v = client.get(format!("{base}{path}?limit=100")).await;
        assert_eq!(v["data"].as_array().unwrap().len(), n, "{path}: {v}");
    }
    for r in &replicas {
        let log = r.log();
        assert!(!log.lines().any(|l| l.contains(" ERROR ")), "{log}");
    }
}
