//! A raw dump of the database (the SQLite file, its WAL and shared-memory
//! files; `pg_dump`) holds none of the sealed plaintexts in raw, hex or
//! base64 form.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use xrole_crypto::Keyring;
use xrole_store::links;
use xrole_testkit::Backend;

use crate::crud::new_link;
use crate::{each_backend, org};

/// Every encoding of `secret` a careless column could hold: raw, hex (both
/// cases), base64 (standard, unpadded, URL-safe) at the three alignments.
fn encodings(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
    ];
    for skip in 0..3 {
        let part = &secret[skip..];
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let enc = engine.encode(part);
            // Drop the last characters, which depend on what follows.
            let stable = enc.trim_end_matches('=');
            out.push(stable.as_bytes()[..stable.len().saturating_sub(3)].to_vec());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn dump(db: &xrole_testkit::TestDb) -> Vec<u8> {
    match db.backend() {
        Backend::Sqlite => {
            let path = db.sqlite_path().unwrap();
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                let file = format!("{}{suffix}", path.display());
                if let Ok(b) = std::fs::read(&file) {
                    bytes.extend(b);
                }
            }
            bytes
        }
        Backend::Postgres => {
            let out = std::process::Command::new("pg_dump")
                .arg("--no-owner")
                .arg(db.url())
                .output()
                .expect("pg_dump (apt postgresql-client)");
            assert!(
                out.status.success(),
                "pg_dump: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }
    }
}

#[test]
fn raw_dump_holds_no_plaintext_secret() {
    each_backend(|db, conn| {
        let org = org(conn, "acme");
        let keyring = Keyring::generate()?;
        let mut secrets: Vec<Vec<u8>> = Vec::new();
        for i in 0..5 {
            let (_, external_id, secret) =
                new_link(conn, &keyring, org, &format!("dump-canary-{i}"));
            secrets.push(external_id.as_str().as_bytes().to_vec());
            // The random part alone too, without the well-known prefixes.
            secrets.push(external_id.as_str().as_bytes()[4..].to_vec());
            secrets.push(secret.expose_secret().as_bytes().to_vec());
            let key_b64 = secret.expose_secret().trim_start_matches("whsec_");
            secrets.push(key_b64.as_bytes().to_vec());
            secrets.push(STANDARD.decode(key_b64)?);
        }
        // A control value stored carelessly (base64, shifted by one byte, in a
        // clear column) must be caught, or the check below proves nothing.
        let control = b"control value that is not sealed at all";
        let (control_link, _, _) = new_link(conn, &keyring, org, "control");
        links::rename(
            conn,
            org,
            control_link,
            &STANDARD.encode(&control[1..]),
            crate::T0,
        )?;
        let bytes = dump(db);
        assert!(
            encodings(control).iter().any(|f| contains(&bytes, f)),
            "{:?}: the control went unnoticed",
            db.backend()
        );
        // The dump is real: the link names are in it, in clear.
        assert!(
            contains(&bytes, b"dump-canary-4"),
            "{:?}: dump lacks the link rows",
            db.backend()
        );
        for s in &secrets {
            for (n, form) in encodings(s).iter().enumerate() {
                assert!(form.len() >= 16);
                assert!(
                    !contains(&bytes, form),
                    "{:?}: a secret appears in the dump (encoding #{n})",
                    db.backend()
                );
            }
        }
        // And the store still opens every value.
        assert_eq!(links::list(conn, org, &Default::default())?.items.len(), 6);
        Ok(())
    });
}
