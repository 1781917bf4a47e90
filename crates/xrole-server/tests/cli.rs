//! The `xrole` binary: migrate, org create, keys, and serve's refusal to run
//! without a keyring.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

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
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("organization "));
        let key = stdout
            .lines()
            .find(|l| l.starts_with("xrk_"))
            .expect("the key is printed");
        xrole_crypto::ApiKey::parse(key).unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains(key),
            "the key is printed once, not logged"
        );
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
