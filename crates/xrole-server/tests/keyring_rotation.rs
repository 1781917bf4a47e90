//! Rotating the keyring while a server runs and writes: the running server
//! reloads the file and seals with the new key before the old one is
//! retired, so after a restart every sealed value still opens; a key that a
//! live server still seals with is never retired.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use xrole_testkit::{TestDb, free_port};

const OPERATOR_TOKEN: &str = "operator-token-for-rotation-tests-0123";

struct Server {
    child: tokio::process::Child,
    base: String,
    log: PathBuf,
}

async fn serve(dir: &Path, db_url: &str, reload_secs: u64, n: usize) -> Server {
    let port = free_port().unwrap();
    let log = dir.join(format!("serve-{n}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let dead = format!("http://127.0.0.1:{}", free_port().unwrap());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_xrole"))
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XROLE_DATABASE_URL", db_url)
        .env("XROLE_KEYRING_FILE", dir.join("keyring"))
        .env("XROLE_KEYRING_RELOAD_SECONDS", reload_secs.to_string())
        .env("XROLE_OPERATOR_TOKEN", OPERATOR_TOKEN)
        .env("XROLE_RATE_LIMIT_PER_SECOND", "0")
        .env("XROLE_ORG_RATE_LIMIT_PER_SECOND", "0")
        .env("XROLE_LISTEN", format!("127.0.0.1:{port}"))
        .env("XROLE_PUBLIC_URL", format!("http://127.0.0.1:{port}"))
        .env(
            "XROLE_SAAS_PRINCIPAL_ARN",
            "arn:aws:iam::123456789012:role/xrole-saas",
        )
        .env("XROLE_WORKERS", "0")
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
    for _ in 0..600 {
        if let Ok(r) = reqwest::get(format!("{base}/healthz")).await
            && r.status().is_success()
        {
            return Server { child, base, log };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the server did not start: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

fn xrole(dir: &Path, db_url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_xrole"))
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("XROLE_DATABASE_URL", db_url)
        .env("XROLE_KEYRING_FILE", dir.join("keyring"))
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn admin_key(base: &str) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{base}/v1/organizations"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({"name": "Acme", "admin_email": "admin@acme.example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["api_key"]["token"].as_str().unwrap().to_owned()
}

async fn create_link(client: &reqwest::Client, base: &str, key: &str, n: usize) -> Option<String> {
    let res = client
        .post(format!("{base}/v1/aws-accounts"))
        .bearer_auth(key)
        .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"name": format!("link {n}"), "access_level": "read_only"}))
        .send()
        .await
        .ok()?;
    if res.status() != 201 {
        return None;
    }
    let v: Value = res.json().await.ok()?;
    v["id"].as_str().map(str::to_owned)
}

/// Every link of the organization, page by page.
async fn all_links(base: &str, key: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{base}/v1/aws-accounts?limit=100");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let res = client.get(url).bearer_auth(key).send().await.unwrap();
        assert_eq!(res.status(), 200);
        let v: Value = res.json().await.unwrap();
        out.extend(v["data"].as_array().unwrap().iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotating_under_load_then_restarting_loses_nothing() {
    for db in TestDb::all().unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_owned();
        assert!(xrole(&d, db.url(), &["keys", "generate"]).0);
        assert!(xrole(&d, db.url(), &["migrate"]).0);
        let server = serve(&d, db.url(), 1, 0).await;
        let key = admin_key(&server.base).await;

        // A writer seals new values the whole time.
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (base, key, stop) = (server.base.clone(), key.clone(), stop.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut made = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    if let Some(id) = create_link(&client, &base, &key, n).await {
                        made.push(id);
                    }
                }
                made
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (d2, url) = (d.clone(), db.url().to_owned());
        let (ok, out) = tokio::task::spawn_blocking(move || {
            xrole(&d2, &url, &["keys", "rotate", "--retire-old"])
        })
        .await
        .unwrap();
        assert!(ok, "{out}");
        assert!(out.contains("retired key 1"), "{out}");
        // Writes go on under the new key.
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.store(true, Ordering::SeqCst);
        let made = writer.await.unwrap();
        assert!(made.len() > 10, "the writer made {} links", made.len());
        let log = std::fs::read_to_string(&server.log).unwrap();
        assert!(log.contains("keyring reloaded"), "{log}");

        // A restart reads only the new keyring file: everything opens.
        drop(server);
        let server = serve(&d, db.url(), 1, 1).await;
        let links = all_links(&server.base, &key).await;
        assert_eq!(links.len(), made.len());
        for l in &links {
            assert!(l["external_id"].is_string(), "{l}");
            assert!(l["keyring_error"].is_null(), "{l}");
        }
        let (ok, out) = xrole(&d, db.url(), &["keys", "reseal"]);
        assert!(
            ok && out.contains("re-sealed 0 value(s) under key 2"),
            "{out}"
        );
        drop(server);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_a_live_server_seals_with_is_not_retired() {
    let db = TestDb::sqlite().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    assert!(xrole(&d, db.url(), &["keys", "generate"]).0);
    assert!(xrole(&d, db.url(), &["migrate"]).0);
    // This server checks its keyring file once an hour: it keeps sealing
    // with key 1 after key 2 is promoted in the file.
    let server = serve(&d, db.url(), 3600, 0).await;
    assert!(xrole(&d, db.url(), &["keys", "add"]).0);
    assert!(xrole(&d, db.url(), &["keys", "promote", "2"]).0);
    let (ok, out) = xrole(&d, db.url(), &["keys", "retire", "1"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("still the primary key of running server"),
        "{out}"
    );
    let text = std::fs::read_to_string(d.join("keyring")).unwrap();
    assert_eq!(
        xrole_crypto::Keyring::parse(&text).unwrap().key_ids(),
        [1, 2]
    );
    // SIGHUP: the server reloads at once and reports key 2.
    let pid = server.child.id().unwrap();
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    let mut retired = false;
    for _ in 0..50 {
        let (ok, _) = xrole(&d, db.url(), &["keys", "retire", "1"]);
        if ok {
            retired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(retired, "{}", std::fs::read_to_string(&server.log).unwrap());
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(log.contains("keyring reloaded"), "{log}");
}
