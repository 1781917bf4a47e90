//! Sealing, opening, rotation, the seal ceiling, and keyring loading/saving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use xrole_crypto::{Aad, BLOB_OVERHEAD, Error, Keyring};

fn aad() -> Aad {
    Aad::new("aws_links", "external_id", "org_1", "link_1")
}

#[test]
fn round_trip_for_many_lengths() {
    let keyring = Keyring::generate().unwrap();
    for len in [0usize, 1, 15, 16, 17, 64, 1000, 4096, 65_537] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let blob = keyring.seal(&plaintext, &aad()).unwrap();
        assert_eq!(blob.len(), plaintext.len() + BLOB_OVERHEAD);
        assert_eq!(blob[0], 0x01);
        assert_eq!(&blob[1..5], &keyring.primary_key_id().to_be_bytes());
        if len >= 16 {
            assert!(
                !blob.windows(16).any(|w| w == &plaintext[..16]),
                "plaintext visible in the blob"
            );
        }
        assert_eq!(
            keyring.open(&blob, &aad()).unwrap().expose_secret(),
            &plaintext[..]
        );
    }
}

#[test]
fn hundred_thousand_seals_of_one_plaintext_have_distinct_nonces() {
    let keyring = Keyring::generate().unwrap();
    let mut nonces = HashSet::with_capacity(100_000);
    let mut blobs = HashSet::with_capacity(100_000);
    for _ in 0..100_000 {
        let blob = keyring.seal(b"same plaintext", &aad()).unwrap();
        let nonce: [u8; 12] = blob[5..17].try_into().unwrap();
        assert!(nonces.insert(nonce), "nonce reused");
        blobs.insert(blob);
    }
    assert_eq!(nonces.len(), 100_000);
    assert_eq!(blobs.len(), 100_000);
    assert_eq!(keyring.seal_count(keyring.primary_key_id()), Some(100_000));
}

#[test]
fn another_keyring_with_the_same_key_id_cannot_open() {
    let a = Keyring::generate().unwrap();
    let b = Keyring::generate().unwrap();
    assert_eq!(a.primary_key_id(), b.primary_key_id());
    let blob = a.seal(b"secret", &aad()).unwrap();
    assert!(matches!(b.open(&blob, &aad()), Err(Error::Decrypt)));
}

#[test]
fn every_truncation_fails() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"a secret of some length", &aad()).unwrap();
    for len in 0..blob.len() {
        let err = keyring.open(&blob[..len], &aad()).unwrap_err();
        assert!(
            matches!(err, Error::Decrypt | Error::MalformedBlob),
            "len {len}: {err:?}"
        );
    }
    // Trailing garbage fails too.
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(keyring.open(&longer, &aad()), Err(Error::Decrypt)));
}

#[test]
fn every_single_bit_flip_fails() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"flip me", &aad()).unwrap();
    for byte in 0..blob.len() {
        for bit in 0..8 {
            let mut bad = blob.clone();
            bad[byte] ^= 1 << bit;
            let err = keyring.open(&bad, &aad()).unwrap_err();
            let expected = match byte {
                0 => matches!(err, Error::UnsupportedBlobVersion(_)),
                1..=4 => matches!(err, Error::UnknownKeyId(_)),
                _ => matches!(err, Error::Decrypt),
            };
            assert!(expected, "byte {byte} bit {bit}: {err:?}");
        }
    }
}

#[test]
fn ciphertext_moved_to_another_place_fails() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring
        .seal(b"secret", &Aad::new("links", "secret", "org_1", "row_1"))
        .unwrap();
    for other in [
        Aad::new("links", "secret", "org_1", "row_2"),
        Aad::new("links", "secret", "org_2", "row_1"),
        Aad::new("links", "other", "org_1", "row_1"),
        Aad::new("users", "secret", "org_1", "row_1"),
        // Separator injection cannot forge another place.
        Aad::new("links|secret", "org_1", "row_1", ""),
    ] {
        assert!(
            matches!(keyring.open(&blob, &other), Err(Error::Decrypt)),
            "{other:?}"
        );
    }
    keyring
        .open(&blob, &Aad::new("links", "secret", "org_1", "row_1"))
        .unwrap();
}

#[test]
fn aad_components_are_escaped_unambiguously() {
    assert_eq!(Aad::new("a", "b", "c", "d").as_str(), "xrole/v1|a|b|c|d");
    assert_ne!(
        Aad::new("a|b", "c", "d", "e"),
        Aad::new("a", "b|c", "d", "e")
    );
    assert_eq!(
        Aad::new("a|b%", "c", "d", "e").as_str(),
        "xrole/v1|a%7Cb%25|c|d|e"
    );
    assert_ne!(Aad::new("a%7C", "", "", ""), Aad::new("a|", "", "", ""));
}

#[test]
fn unknown_key_id_and_version_are_typed_errors() {
    let keyring = Keyring::generate().unwrap();
    let mut blob = keyring.seal(b"secret", &aad()).unwrap();
    blob[1..5].copy_from_slice(&99u32.to_be_bytes());
    assert!(matches!(
        keyring.open(&blob, &aad()),
        Err(Error::UnknownKeyId(99))
    ));
    blob[0] = 0x02;
    assert!(matches!(
        keyring.open(&blob, &aad()),
        Err(Error::UnsupportedBlobVersion(2))
    ));
    assert!(matches!(
        keyring.open(&[], &aad()),
        Err(Error::MalformedBlob)
    ));
}

// ------------------------------------------------- open_owned: the same checks, no copy

#[test]
fn open_owned_round_trip_for_many_lengths() {
    let keyring = Keyring::generate().unwrap();
    for len in [0usize, 1, 15, 16, 17, 64, 1000, 4096, 65_537] {
        let plaintext: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
        let blob = keyring.seal(&plaintext, &aad()).unwrap();
        assert_eq!(
            keyring.open(&blob, &aad()).unwrap().expose_secret(),
            &plaintext[..]
        );
        let opened = keyring.open_owned(blob, &aad()).unwrap();
        assert_eq!(opened.expose_secret(), &plaintext[..], "len {len}");
    }
}

#[test]
fn open_owned_accepts_a_blob_with_spare_capacity() {
    let keyring = Keyring::generate().unwrap();
    let sealed = keyring.seal(b"read from a row", &aad()).unwrap();
    let mut blob = Vec::with_capacity(sealed.len() + 100);
    blob.extend_from_slice(&sealed);
    let opened = keyring.open_owned(blob, &aad()).unwrap();
    assert_eq!(opened.expose_secret(), b"read from a row");
}

#[test]
fn open_owned_fails_under_another_place_or_keyring() {
    let keyring = Keyring::generate().unwrap();
    let place = Aad::new("links", "secret", "org_1", "row_1");
    let blob = keyring.seal(b"secret", &place).unwrap();
    for other in [
        Aad::new("links", "secret", "org_1", "row_2"),
        Aad::new("links", "secret", "org_2", "row_1"),
        Aad::new("links", "other", "org_1", "row_1"),
        Aad::new("users", "secret", "org_1", "row_1"),
        Aad::new("links|secret", "org_1", "row_1", ""),
    ] {
        assert!(
            matches!(
                keyring.open_owned(blob.clone(), &other),
                Err(Error::Decrypt)
            ),
            "{other:?}"
        );
    }
    let stranger = Keyring::generate().unwrap();
    assert!(matches!(
        stranger.open_owned(blob.clone(), &place),
        Err(Error::Decrypt)
    ));
    keyring.open_owned(blob, &place).unwrap();
}

#[test]
fn open_owned_every_truncation_fails() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"a secret of some length", &aad()).unwrap();
    for len in 0..blob.len() {
        let err = keyring
            .open_owned(blob[..len].to_vec(), &aad())
            .unwrap_err();
        assert!(
            matches!(err, Error::Decrypt | Error::MalformedBlob),
            "len {len}: {err:?}"
        );
        // The same error as the borrowing `open`.
        let borrowed = keyring.open(&blob[..len], &aad()).unwrap_err();
        assert_eq!(format!("{err:?}"), format!("{borrowed:?}"), "len {len}");
    }
    let mut longer = blob.clone();
    longer.push(0);
    assert!(matches!(
        keyring.open_owned(longer, &aad()),
        Err(Error::Decrypt)
    ));
}

#[test]
fn open_owned_every_single_bit_flip_fails() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"flip me", &aad()).unwrap();
    for byte in 0..blob.len() {
        for bit in 0..8 {
            let mut bad = blob.clone();
            bad[byte] ^= 1 << bit;
            let err = keyring.open_owned(bad, &aad()).unwrap_err();
            let expected = match byte {
                0 => matches!(err, Error::UnsupportedBlobVersion(_)),
                1..=4 => matches!(err, Error::UnknownKeyId(_)),
                _ => matches!(err, Error::Decrypt),
            };
            assert!(expected, "byte {byte} bit {bit}: {err:?}");
        }
    }
}

#[test]
fn open_owned_unknown_key_id_and_version_are_typed_errors() {
    let keyring = Keyring::generate().unwrap();
    let mut blob = keyring.seal(b"secret", &aad()).unwrap();
    blob[1..5].copy_from_slice(&99u32.to_be_bytes());
    assert!(matches!(
        keyring.open_owned(blob.clone(), &aad()),
        Err(Error::UnknownKeyId(99))
    ));
    blob[0] = 0x02;
    assert!(matches!(
        keyring.open_owned(blob, &aad()),
        Err(Error::UnsupportedBlobVersion(2))
    ));
    assert!(matches!(
        keyring.open_owned(Vec::new(), &aad()),
        Err(Error::MalformedBlob)
    ));
}

#[test]
fn open_owned_uses_the_key_the_blob_names_across_rotation() {
    let mut keyring = Keyring::generate().unwrap();
    let old = keyring.seal(b"under key 1", &aad()).unwrap();
    let id = keyring.add_key().unwrap();
    keyring.promote(id).unwrap();
    assert_eq!(
        keyring
            .open_owned(old.clone(), &aad())
            .unwrap()
            .expose_secret(),
        b"under key 1"
    );
    keyring.retire(1).unwrap();
    assert!(matches!(
        keyring.open_owned(old, &aad()),
        Err(Error::UnknownKeyId(1))
    ));
}

#[test]
fn rotation_add_promote_reseal_retire() {
    let mut keyring = Keyring::generate().unwrap();
    let old_id = keyring.primary_key_id();
    let old_blob = keyring.seal(b"rotate me", &aad()).unwrap();
    assert!(!keyring.needs_reseal(&old_blob));
    // Re-sealing under the current primary is a checked, unchanged copy.
    assert_eq!(keyring.reseal(&old_blob, &aad()).unwrap(), old_blob);

    let new_id = keyring.add_key().unwrap();
    assert_ne!(new_id, old_id);
    assert_eq!(keyring.primary_key_id(), old_id, "add_key does not promote");
    assert_eq!(keyring.key_ids(), vec![old_id, new_id]);
    keyring.promote(new_id).unwrap();
    assert_eq!(keyring.primary_key_id(), new_id);

    // Old blobs still open; new blobs carry the new id.
    assert_eq!(
        keyring.open(&old_blob, &aad()).unwrap().expose_secret(),
        b"rotate me"
    );
    let new_blob = keyring.seal(b"fresh", &aad()).unwrap();
    assert_eq!(&new_blob[1..5], &new_id.to_be_bytes());
    assert!(keyring.needs_reseal(&old_blob));
    assert!(!keyring.needs_reseal(&new_blob));

    // Re-seal moves the old blob to the new key.
    let moved = keyring.reseal(&old_blob, &aad()).unwrap();
    assert_eq!(&moved[1..5], &new_id.to_be_bytes());
    assert!(!keyring.needs_reseal(&moved));
    // Re-seal checks the AAD: a blob cannot be moved to another place this way.
    assert!(matches!(
        keyring.reseal(&old_blob, &Aad::new("x", "y", "z", "w")),
        Err(Error::Decrypt)
    ));

    // The primary cannot be retired; the old key can, after which its blobs are unknown.
    assert!(matches!(keyring.retire(new_id), Err(Error::CannotRetirePrimary(id)) if id == new_id));
    keyring.retire(old_id).unwrap();
    assert!(matches!(keyring.retire(old_id), Err(Error::KeyNotFound(_))));
    assert!(matches!(
        keyring.promote(old_id),
        Err(Error::KeyNotFound(_))
    ));
    assert!(
        matches!(keyring.open(&old_blob, &aad()), Err(Error::UnknownKeyId(id)) if id == old_id)
    );
    assert_eq!(
        keyring.open(&moved, &aad()).unwrap().expose_secret(),
        b"rotate me"
    );

    // Retired ids are never reissued, also after a save and reload.
    let reloaded = Keyring::parse(keyring.to_text().expose_secret()).unwrap();
    let mut reloaded = reloaded;
    let third = reloaded.add_key().unwrap();
    assert!(third > new_id);
    assert_eq!(
        reloaded.open(&moved, &aad()).unwrap().expose_secret(),
        b"rotate me"
    );
}

#[test]
fn seal_ceiling_refuses_then_rotation_continues() {
    let mut keyring = Keyring::generate().unwrap().with_seal_limit(3).unwrap();
    let first = keyring.primary_key_id();
    for _ in 0..3 {
        keyring.seal(b"x", &aad()).unwrap();
    }
    for _ in 0..2 {
        assert!(matches!(
            keyring.seal(b"x", &aad()),
            Err(Error::SealLimitReached { key_id }) if key_id == first
        ));
    }
    assert_eq!(keyring.seal_count(first), Some(3));
    // Opening is not limited.
    let blob_before = {
        let mut k = Keyring::parse(keyring.to_text().expose_secret()).unwrap();
        k.set_seal_limit(10).unwrap();
        k.seal(b"y", &aad()).unwrap()
    };
    keyring.open(&blob_before, &aad()).unwrap();
    // Rotating gives a fresh counter.
    let next = keyring.add_key().unwrap();
    keyring.promote(next).unwrap();
    keyring.seal(b"x", &aad()).unwrap();
    assert_eq!(keyring.seal_count(next), Some(1));
}

#[test]
fn seal_limit_bounds() {
    let mut keyring = Keyring::generate().unwrap();
    assert_eq!(keyring.seal_limit(), xrole_crypto::DEFAULT_SEAL_LIMIT);
    assert_eq!(xrole_crypto::DEFAULT_SEAL_LIMIT, 1 << 31);
    keyring.set_seal_limit(1 << 32).unwrap();
    assert!(matches!(
        keyring.set_seal_limit((1 << 32) + 1),
        Err(Error::SealLimitTooHigh(_))
    ));
    keyring.set_seal_limit(0).unwrap();
    assert!(matches!(
        keyring.seal(b"", &aad()),
        Err(Error::SealLimitReached { .. })
    ));
}

#[test]
fn text_round_trip_keeps_keys_primary_and_pepper() {
    let mut keyring = Keyring::generate().unwrap();
    let a = keyring.seal(b"one", &aad()).unwrap();
    let id = keyring.add_key().unwrap();
    keyring.promote(id).unwrap();
    let b = keyring.seal(b"two", &aad()).unwrap();
    let text = keyring.to_text();
    assert!(text.expose_secret().starts_with("xrole-keyring-v1;"));
    let copy = Keyring::parse(text.expose_secret()).unwrap();
    assert_eq!(copy.primary_key_id(), id);
    assert_eq!(copy.key_ids(), keyring.key_ids());
    assert_eq!(copy.open(&a, &aad()).unwrap().expose_secret(), b"one");
    assert_eq!(copy.open(&b, &aad()).unwrap().expose_secret(), b"two");
    assert_eq!(
        copy.blind_index("external_id", b"v"),
        keyring.blind_index("external_id", b"v")
    );
    let key = xrole_crypto::ApiKey::generate();
    assert_eq!(
        copy.api_key_hasher().hash(&key),
        keyring.api_key_hasher().hash(&key)
    );

    // The multi-line form with comments parses too.
    let multiline = format!(
        "# production keyring\n{}\n",
        text.expose_secret().replace(';', "\n  ")
    );
    let copy = Keyring::parse(&multiline).unwrap();
    assert_eq!(copy.open(&b, &aad()).unwrap().expose_secret(), b"two");
}

#[test]
fn malformed_keyring_text_is_rejected_without_quoting_key_material() {
    let good = Keyring::generate().unwrap().to_text();
    let good = good.expose_secret();
    let pepper = good
        .split(';')
        .find_map(|i| i.strip_prefix("pepper="))
        .unwrap()
        .to_owned();
    let key = good
        .split(';')
        .find_map(|i| {
            i.split_once('=')
                .filter(|(n, _)| n.starts_with("key."))
                .map(|(_, v)| v)
        })
        .unwrap()
        .to_owned();
    let short_key = &key[..20];
    let cases = [
        String::new(),
        "xrole-keyring-v2;pepper=AAAA".to_owned(),
        good.replace("primary=1", "primary=2"),
        good.replace(&format!("pepper={pepper}"), ""),
        good.replace(";primary=1", ""),
        good.replace(&key, short_key),
        good.replace(&key, &format!("{key}!")),
        format!("{good};key.1={key}"),
        format!("{good};pepper={pepper}"),
        format!("{good};key.0={key}"),
        format!("{good};key.x={key}"),
        format!("{good};unknown={key}"),
        format!("{good};{key}"),
        "xrole-keyring-v1;pepper=".to_owned() + &pepper + ";primary=1",
    ];
    for text in cases {
        let err = Keyring::parse(&text).expect_err(&text.len().to_string());
        assert!(matches!(err, Error::KeyringFormat(_)), "{err:?}");
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(&pepper) && !shown.contains(short_key),
            "{shown}"
        );
    }
}

#[test]
fn blind_index_is_keyed_deterministic_and_domain_separated() {
    let keyring = Keyring::generate().unwrap();
    let other = Keyring::generate().unwrap();
    let v = b"xrx-abc";
    assert_eq!(
        keyring.blind_index("external_id", v),
        keyring.blind_index("external_id", v)
    );
    assert_ne!(
        keyring.blind_index("external_id", v),
        other.blind_index("external_id", v)
    );
    assert_ne!(
        keyring.blind_index("external_id", v),
        keyring.blind_index("email", v)
    );
    assert_ne!(
        keyring.blind_index("external_id", v),
        keyring.blind_index("external_id", b"xrx-abd")
    );
    // The purpose/value boundary is unambiguous.
    assert_ne!(
        keyring.blind_index("ab", b"c"),
        keyring.blind_index("a", b"bc")
    );
}

#[test]
fn blind_index_and_api_key_hashes_survive_aead_rotation() {
    let mut keyring = Keyring::generate().unwrap();
    let key = xrole_crypto::ApiKey::generate();
    let stored = keyring.api_key_hasher().hash(&key);
    let index = keyring.blind_index("external_id", b"v");
    let old = keyring.primary_key_id();
    let id = keyring.add_key().unwrap();
    keyring.promote(id).unwrap();
    keyring.retire(old).unwrap();
    assert!(keyring.api_key_hasher().verify(&key, &stored));
    assert_eq!(keyring.blind_index("external_id", b"v"), index);
}

#[test]
fn from_env_reads_the_variable() {
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"env", &aad()).unwrap();
    let var = "XROLE_CRYPTO_TEST_KEYRING_FROM_ENV";
    // `std::env::set_var` is unsafe in a multi-threaded test process (and the crate forbids
    // unsafe code), so the variable is set for a child process running `from_env_child`.
    assert!(
        matches!(Keyring::from_env("XROLE_CRYPTO_TEST_KEYRING_UNSET"), Err(Error::MissingEnv(v)) if v == "XROLE_CRYPTO_TEST_KEYRING_UNSET")
    );
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "from_env_child",
            "--nocapture",
            "--include-ignored",
        ])
        .env(var, keyring.to_text().expose_secret())
        .env("XROLE_CRYPTO_TEST_BLOB", hex::encode(&blob))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("opened: env"), "{stdout}");
}

/// Runs inside the child process started by `from_env_reads_the_variable`.
#[test]
#[ignore = "run by from_env_reads_the_variable in a child process"]
fn from_env_child() {
    let keyring = Keyring::from_env("XROLE_CRYPTO_TEST_KEYRING_FROM_ENV").unwrap();
    let blob = hex::decode(std::env::var("XROLE_CRYPTO_TEST_BLOB").unwrap()).unwrap();
    let opened = keyring.open(&blob, &aad()).unwrap();
    println!(
        "opened: {}",
        std::str::from_utf8(opened.expose_secret()).unwrap()
    );
}

#[cfg(unix)]
#[test]
fn write_file_uses_mode_0600_and_from_file_reads_it_back() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    let keyring = Keyring::generate().unwrap();
    let blob = keyring.seal(b"file", &aad()).unwrap();
    keyring.write_file(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let loaded = Keyring::from_file(&path).unwrap();
    assert_eq!(loaded.open(&blob, &aad()).unwrap().expose_secret(), b"file");

    // Overwriting keeps 0600 and leaves no temporary file behind.
    let mut rotated = loaded;
    let id = rotated.add_key().unwrap();
    rotated.promote(id).unwrap();
    rotated.write_file(&path).unwrap();
    assert_eq!(Keyring::from_file(&path).unwrap().primary_key_id(), id);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[cfg(unix)]
#[test]
fn from_file_refuses_group_or_world_accessible_files() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyring");
    Keyring::generate().unwrap().write_file(&path).unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        match Keyring::from_file(&path) {
            Err(Error::InsecureKeyringFile { mode: m, .. }) => assert_eq!(m & 0o777, mode),
            other => panic!("mode {mode:o}: {other:?}"),
        }
    }
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    Keyring::from_file(&path).unwrap();
    assert!(matches!(
        Keyring::from_file(&dir.path().join("missing")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn keyring_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Keyring>();
    assert_send_sync::<xrole_crypto::ApiKeyHasher>();
    assert_send_sync::<xrole_crypto::WebhookSecret>();
}

#[test]
fn concurrent_sealing_counts_every_seal() {
    let keyring = std::sync::Arc::new(Keyring::generate().unwrap().with_seal_limit(1000).unwrap());
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let k = keyring.clone();
            std::thread::spawn(move || (0..400).filter(|_| k.seal(b"x", &aad()).is_ok()).count())
        })
        .collect();
    let ok: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(ok, 1000, "exactly the ceiling succeeds across threads");
}
