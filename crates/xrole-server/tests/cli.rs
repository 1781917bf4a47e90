//! The `xrole` binary: migrate, org create, keys, and serve's refusal to run
//! without a keyring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use xrole_testkit::TestDb;

fn xrole(dir: &std::path::Path, db: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xrole"));
    c.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("XROLE_DATABASE_URL", db)
        .env("RUST_LOG", "warn");
    c
}

#[test]
fn serve_refuses_to_start_without_a_keyring() {
    let dir = tempfile::tempdir().unwrap();
    let out = xrole(dir.path(), "./x.db")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no keyring configured"), "{err}");
    assert!(err.contains("--dev"));
    assert!(
        !dir.path().join("x.db").exists(),
        "nothing is created before the keyring check"
    );
}

#[test]
fn keys_generate_writes_a_private_file_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let out = xrole(dir.path(), "./x.db")
        .args(["keys", "generate", "--out", "k"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(dir.path().join("k"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = std::fs::read(dir.path().join("k")).unwrap();
    let out = xrole(dir.path(), "./x.db")
        .args(["keys", "generate", "--out", "k"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(std::fs::read(dir.path().join("k")).unwrap(), before);
}

#[test]
fn migrate_org_create_and_rotate_on_each_backend() {
    for db in TestDb::all().unwrap() {
        let dir = tempfile::tempdir().unwrap();
        let out = xrole(dir.path(), db.url()).arg("migrate").output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("applied migration"));
        let out = xrole(dir.path(), db.url()).arg("migrate").output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("up to date"));

        let out = xrole(dir.path(), db.url())
            .args(["keys", "generate", "--out", "keyring"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let with_keys = |args: &[&str]| {
            xrole(dir.path(), db.url())
                .env("XROLE_KEYRING_FILE", "keyring")
                .args(args)
                .output()
                .unwrap()
        };
        let out = with_keys(&[
            "org",
            "create",
            "--name",
            "Acme",
            "--admin-email",
            "admin@acme.example.com",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The key alone on stdout (`KEY=$(xrole org create …)`), the rest
        // on stderr.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let key = stdout.trim_end();
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        xrole_crypto::ApiKey::parse(key).unwrap();
        assert!(stderr.contains("organization "), "{stderr}");
        assert!(!stderr.contains(key), "the key is printed once, not logged");
        // Bad input is refused.
        let out = with_keys(&[
            "org",
            "create",
            "--name",
            "",
            "--admin-email",
            "a@b.example.com",
        ]);
        assert!(!out.status.success());

        let out = with_keys(&["keys", "rotate", "--retire-old"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("key 2 added and promoted"), "{stdout}");
        assert!(stdout.contains("re-sealed"), "{stdout}");
        assert!(stdout.contains("retired key 1"), "{stdout}");
        let out = with_keys(&["keys", "reseal"]);
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("re-sealed 0 value(s) under key 2"));
    }
}

#[test]
fn keys_add_promote_retire_step_by_step() {
    let db = TestDb::sqlite().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = xrole(dir.path(), db.url())
            .env("XROLE_KEYRING_FILE", "keyring")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let ids = || {
        let text = std::fs::read_to_string(dir.path().join("keyring")).unwrap();
        let k = xrole_crypto::Keyring::parse(&text).unwrap();
        (k.key_ids(), k.primary_key_id())
    };
    assert!(run(&["keys", "generate"]).0);
    assert!(run(&["migrate"]).0);
    assert_eq!(ids(), (vec![1], 1));

    let (ok, out, err) = run(&["keys", "add"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("key 2 added (primary is still key 1)"),
        "{out}"
    );
    assert_eq!(ids(), (vec![1, 2], 1), "added, not promoted");

    let (ok, _, err) = run(&["keys", "promote", "7"]);
    assert!(!ok);
    assert!(err.contains('7'), "{err}");
    let (ok, out, err) = run(&["keys", "promote", "2"]);
    assert!(ok, "{err}");
    assert!(out.contains("key 2 is now primary"), "{out}");
    assert_eq!(ids(), (vec![1, 2], 2));

    let (ok, _, err) = run(&["keys", "retire", "2"]);
    assert!(!ok, "the primary cannot be retired");
    assert!(err.contains("primary"), "{err}");
    let (ok, _, err) = run(&["keys", "retire", "9"]);
    assert!(!ok);
    assert!(err.contains("not in"), "{err}");
    assert_eq!(ids(), (vec![1, 2], 2), "refusals change nothing");

    let (ok, out, err) = run(&["keys", "retire", "1"]);
    assert!(ok, "{err}");
    assert!(out.contains("re-sealed 0 value(s) under key 2"), "{out}");
    assert!(out.contains("retired key 1"), "{out}");
    assert_eq!(ids(), (vec![2], 2));
}

/// `xrole` as on a newcomer's machine: no AWS credentials or profile (HOME
/// is the scratch directory), no xrole settings.
fn fresh(dir: &std::path::Path) -> Command {
    let mut c = xrole(dir, "./xrole.db");
    c.env("HOME", dir)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info");
    c
}

/// A running `xrole serve`, its stderr lines arriving on a channel.
struct Served {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(mut cmd: Command) -> Served {
        let mut child = cmd
            .args(["serve", "--dev", "--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Served {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| panic!("no line with {needle:?} in {:#?}", self.seen));
            self.seen.push(line.clone());
            if line.contains(needle) {
                return line;
            }
        }
    }

    /// The base URL, from the `xrole listening` line.
    fn base(&mut self) -> String {
        let line = self.wait_for("xrole listening");
        let at = line.find("listen=").unwrap() + "listen=".len();
        let addr = line[at..].split_whitespace().next().unwrap();
        format!("http://{addr}")
    }

    /// Stops the server; every line it wrote.
    fn stop(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        self.seen
    }
}

#[tokio::test]
async fn a_newcomer_without_aws_gets_a_calm_server_and_a_working_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Served::start(fresh(dir.path()));
    let base = server.base();
    let calm = server.wait_for("AWS");
    assert!(
        calm.contains(
            "no AWS credentials: AWS account routes answer 503; run scripts/demo to try \
             the whole flow against a local AWS emulator"
        ),
        "{calm}"
    );

    // `--dev` finds the keyring `serve --dev` made, and the key works.
    let out = fresh(dir.path())
        .args(["org", "create", "--dev", "--name", "Acme"])
        .args(["--admin-email", "admin@acme.example.com"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let client = reqwest::Client::new();
    let whoami = client
        .get(format!("{base}/v1/whoami"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(whoami.status(), 200);
    let ready: serde_json::Value = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["aws"], "unavailable", "{ready}");
    assert!(
        ready["aws_detail"]
            .as_str()
            .unwrap()
            .starts_with("no AWS credentials")
    );
    let link = client
        .post(format!("{base}/v1/aws-accounts"))
        .bearer_auth(&key)
        .header("idempotency-key", "first")
        .json(&serde_json::json!({"name": "x", "access_level": "read_only"}))
        .send()
        .await
        .unwrap();
    assert_eq!(link.status(), 503);

    let lines = server.stop();
    let about_aws: Vec<&String> = lines.iter().filter(|l| l.contains("AWS")).collect();
    assert_eq!(about_aws.len(), 1, "one line about AWS: {about_aws:#?}");
    for l in &lines {
        let lower = l.to_lowercase();
        assert!(
            !lower.contains("imds") && !lower.contains("169.254.169.254"),
            "instance metadata was probed: {l}"
        );
        assert!(!l.contains(&key), "the key was logged");
    }
}

#[test]
fn user_errors_are_one_line_whatever_rust_backtrace_says() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[
            "org",
            "create",
            "--name",
            "Acme",
            "--admin-email",
            "a@b.example.com",
        ][..],
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["keys", "add"][..],
    ] {
        let out = fresh(dir.path())
            .env("RUST_BACKTRACE", "full")
            .env("RUST_LIB_BACKTRACE", "1")
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(!err.to_lowercase().contains("backtrace"), "{err}");
    }
    let out = fresh(dir.path())
        .env("XROLE_LOG_FORMAT", "yaml")
        .arg("migrate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim() == "error: invalid value for XROLE_LOG_FORMAT: expected text or json",
        "{err}"
    );
}

#[test]
fn logs_are_json_lines_with_xrole_log_format_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = fresh(dir.path());
    cmd.env("XROLE_LOG_FORMAT", "json");
    let mut server = Served::start(cmd);
    server.wait_for("xrole listening");
    server.wait_for("no AWS credentials");
    let lines = server.stop();
    assert!(lines.len() >= 3, "{lines:#?}");
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
    // Plain text otherwise, uncoloured when not on a terminal.
    let mut server = Served::start(fresh(dir.path()));
    let line = server.wait_for("xrole listening");
    server.stop();
    assert!(line.contains(" INFO xrole: xrole listening"), "{line}");
    assert!(!line.contains('\u{1b}'), "{line}");
}
