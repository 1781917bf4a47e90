//! API keys, webhook signatures, External IDs, password hashes, and `Debug` redaction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use xrole_crypto::{
    Aad, ApiKey, ApiKeyHasher, Error, ExternalId, Keyring, SecretBytes, SecretString,
    WebhookSecret, constant_time_eq, password,
};

// ---------------------------------------------------------------- API keys

#[test]
fn api_key_has_the_documented_shape() {
    let key = ApiKey::generate();
    let s = key.expose_secret();
    assert_eq!(s.len(), 4 + 12 + 1 + 43 + 6);
    assert!(s.starts_with("xrk_"));
    assert_eq!(&s[16..17], "_");
    assert_eq!(key.key_id(), &s[4..16]);
    assert!(
        s[4..16]
            .bytes()
            .chain(s[17..].bytes())
            .all(|b| b.is_ascii_alphanumeric())
    );
    let parsed = ApiKey::parse(s).unwrap();
    assert_eq!(parsed.expose_secret(), s);
    assert_eq!(parsed.key_id(), key.key_id());
    assert_ne!(ApiKey::generate().expose_secret(), s);
}

#[test]
fn api_key_checksum_is_crc32_of_the_prefix_in_base62() {
    let key = ApiKey::generate();
    let s = key.expose_secret();
    let crc = crc32fast::hash(&s.as_bytes()[..60]) as u64;
    let digits = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let value = s[60..].bytes().fold(0u64, |acc, b| {
        acc * 62 + digits.iter().position(|&d| d == b).unwrap() as u64
    });
    assert_eq!(value, crc);
}

#[test]
fn api_key_parse_rejects_every_single_character_typo() {
    let key = ApiKey::generate();
    let s = key.expose_secret().to_owned();
    let mut rejected = 0;
    for i in 0..s.len() {
        for replacement in ['0', 'a', 'Z', '_', '-'] {
            let mut t = s.clone().into_bytes();
            if t[i] == replacement as u8 {
                continue;
            }
            t[i] = replacement as u8;
            let t = String::from_utf8(t).unwrap();
            assert!(
                matches!(ApiKey::parse(&t), Err(Error::InvalidApiKey)),
                "{i} {replacement}"
            );
            rejected += 1;
        }
    }
    assert!(rejected > 250);
    // Transposition of two adjacent different characters in the secret.
    let mut t = s.clone().into_bytes();
    let i = (20..58).find(|&i| t[i] != t[i + 1]).unwrap();
    t.swap(i, i + 1);
    assert!(ApiKey::parse(std::str::from_utf8(&t).unwrap()).is_err());
    for bad in [
        "",
        "xrk_",
        &s[..s.len() - 1],
        &format!("{s}0"),
        &s.replacen("xrk_", "xrx_", 1),
        &format!(" {}", &s[1..]),
    ] {
        assert!(ApiKey::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn api_key_hasher_verifies_only_the_matching_key_and_pepper() {
    let keyring = Keyring::generate().unwrap();
    let hasher = keyring.api_key_hasher();
    let key = ApiKey::generate();
    let stored = hasher.hash(&key);
    assert!(hasher.verify(&key, &stored));
    assert!(hasher.verify(&ApiKey::parse(key.expose_secret()).unwrap(), &stored));
    assert!(!hasher.verify(&ApiKey::generate(), &stored));
    let mut flipped = stored;
    flipped[31] ^= 1;
    assert!(!hasher.verify(&key, &flipped));
    assert!(!hasher.verify(&key, &stored[..31]));
    assert!(!hasher.verify(&key, &[]));
    // Another pepper gives another hash.
    assert!(
        !Keyring::generate()
            .unwrap()
            .api_key_hasher()
            .verify(&key, &stored)
    );
    // The hash is not a plain SHA-256 or an unkeyed function of the key.
    assert_ne!(
        &stored[..],
        ring::digest::digest(&ring::digest::SHA256, key.expose_secret().as_bytes()).as_ref()
    );
}

// ---------------------------------------------------------------- webhooks

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn webhook_secret_generate_and_parse() {
    let secret = WebhookSecret::generate();
    let text = secret.expose_secret().to_owned();
    assert!(text.starts_with("whsec_"));
    assert_eq!(text.len(), 6 + 44);
    let parsed = WebhookSecret::parse(&text).unwrap();
    assert_eq!(
        parsed.sign("msg_1", 1_700_000_000, b"{}"),
        secret.sign("msg_1", 1_700_000_000, b"{}")
    );
    assert_ne!(WebhookSecret::generate().expose_secret(), text);
    for bad in [
        "",
        "whsec_",
        "whsec_!!!!",
        "wh_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        // 23 bytes: below the Standard Webhooks minimum of 24.
        "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        &format!("whsec_{}", "A".repeat(88)),
    ] {
        assert!(
            matches!(WebhookSecret::parse(bad), Err(Error::InvalidWebhookSecret)),
            "{bad:?}"
        );
    }
}

#[test]
fn webhook_verify_accepts_any_listed_signature_for_rotation() {
    let old = WebhookSecret::generate();
    let new = WebhookSecret::generate();
    let (id, ts, body) = ("msg_1", 1_700_000_000i64, b"{\"a\":1}".as_slice());
    let header = format!("{} {}", old.sign(id, ts, body), new.sign(id, ts, body));
    let now = at(1_700_000_000);
    old.verify(id, "1700000000", &header, body, now).unwrap();
    new.verify(id, "1700000000", &header, body, now).unwrap();
    // Unknown versions and garbage entries are skipped, not fatal.
    let noisy = format!("v2,abc v1,!!!notbase64 v1a,xyz {}", new.sign(id, ts, body));
    new.verify(id, "1700000000", &noisy, body, now).unwrap();
    assert!(matches!(
        WebhookSecret::generate().verify(id, "1700000000", &header, body, now),
        Err(Error::WebhookSignature)
    ));
}

#[test]
fn webhook_verify_rejects_bad_input() {
    let secret = WebhookSecret::generate();
    let (id, ts, body) = ("msg_1", 1_700_000_000i64, b"body".as_slice());
    let sig = secret.sign(id, ts, body);
    let now = at(1_700_000_000);
    let verify =
        |id: &str, ts: &str, sig: &str, body: &[u8], now| secret.verify(id, ts, sig, body, now);
    verify(id, "1700000000", &sig, body, now).unwrap();
    // ±300 s tolerance, inclusive, with an injected clock.
    verify(id, "1700000000", &sig, body, at(1_700_000_300)).unwrap();
    verify(id, "1700000000", &sig, body, at(1_699_999_700)).unwrap();
    assert!(matches!(
        verify(id, "1700000000", &sig, body, at(1_700_000_301)),
        Err(Error::WebhookTimestamp)
    ));
    assert!(matches!(
        verify(id, "1700000000", &sig, body, at(1_699_999_699)),
        Err(Error::WebhookTimestamp)
    ));
    // A `.` in id or timestamp would make `id.timestamp.body` ambiguous.
    assert!(matches!(
        verify("msg.1", "1700000000", &sig, body, now),
        Err(Error::WebhookHeader)
    ));
    assert!(matches!(
        verify(id, "1700000000.0", &sig, body, now),
        Err(Error::WebhookHeader)
    ));
    for ts in [
        "",
        "-1",
        "+1700000000",
        "17e8",
        " 1700000000",
        "99999999999999999999999",
    ] {
        assert!(
            matches!(verify(id, ts, &sig, body, now), Err(Error::WebhookHeader)),
            "{ts:?}"
        );
    }
    assert!(matches!(
        verify("", "1700000000", &sig, body, now),
        Err(Error::WebhookHeader)
    ));
    // Bad base64, truncated, empty, wrong body, wrong id, wrong timestamp.
    for bad in [
        "v1,%%%%",
        "v1,",
        "",
        &sig[..sig.len() - 4],
        &sig.replace("v1,", "v1a,"),
    ] {
        assert!(
            matches!(
                verify(id, "1700000000", bad, body, now),
                Err(Error::WebhookSignature)
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        verify(id, "1700000000", &sig, b"bodY", now),
        Err(Error::WebhookSignature)
    ));
    assert!(matches!(
        verify("msg_2", "1700000000", &sig, body, now),
        Err(Error::WebhookSignature)
    ));
    assert!(matches!(
        verify(id, "1700000001", &sig, body, now),
        Err(Error::WebhookSignature)
    ));
}

// ---------------------------------------------------------------- External IDs

#[test]
fn external_id_generation() {
    let a = ExternalId::generate();
    let b = ExternalId::generate();
    assert_ne!(a, b);
    assert!(a.as_str().starts_with("xrx-"));
    assert_eq!(a.as_str().len(), 4 + 32);
    // 32 base62 characters carry more than 128 bits.
    assert!(32.0 * 62f64.log2() >= 128.0);
    assert!(a.as_str()[4..].bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(ExternalId::parse(a.as_str()).unwrap(), a);
}

#[test]
fn external_id_parse_follows_sts_rules() {
    for good in ["ab", "xrx-1", "a_b+c=d,e.f@g:h/i-j", &"a".repeat(1224)] {
        assert_eq!(ExternalId::parse(good).unwrap().as_str(), good);
    }
    for bad in [
        "",
        "a",
        &"a".repeat(1225),
        "has space",
        "semi;colon",
        "ünï",
        "quote\"",
        "star*",
        "new\nline",
    ] {
        assert!(
            matches!(ExternalId::parse(bad), Err(Error::InvalidExternalId)),
            "{bad:?}"
        );
    }
}

// ---------------------------------------------------------------- passwords

#[test]
fn argon2id_hash_verify_and_parameters() {
    let phc = password::hash("correct horse").unwrap();
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert!(password::verify("correct horse", &phc).unwrap());
    assert!(!password::verify("correct horsE", &phc).unwrap());
    assert!(!password::needs_rehash(&phc));
    assert_ne!(
        password::hash("correct horse").unwrap(),
        phc,
        "salts are random"
    );
}

#[test]
fn pbkdf2_hash_verify_and_rehash_policy() {
    let phc = password::hash_pbkdf2("correct horse").unwrap();
    assert!(phc.starts_with("$pbkdf2-sha256$i=600000,l=32$"), "{phc}");
    assert_eq!(phc.split('$').count(), 5);
    assert!(password::verify("correct horse", &phc).unwrap());
    assert!(!password::verify("correct horsE", &phc).unwrap());
    // Default policy upgrades PBKDF2 to argon2id; a FIPS deployment keeps it.
    assert!(password::needs_rehash(&phc));
    assert!(!password::needs_rehash_for(
        &phc,
        password::Scheme::Pbkdf2Sha256
    ));
    let weaker = phc.replace("i=600000", "i=1000");
    assert!(password::needs_rehash_for(
        &weaker,
        password::Scheme::Pbkdf2Sha256
    ));
    // The stored hash is bound to its iteration count.
    assert!(!password::verify("correct horse", &weaker).unwrap());
}

#[test]
fn needs_rehash_flags_weaker_or_other_argon2_parameters() {
    let phc = password::hash("pw").unwrap();
    for (from, to) in [
        ("m=19456", "m=8192"),
        ("t=2", "t=1"),
        ("argon2id", "argon2i"),
        ("v=19", "v=16"),
    ] {
        assert!(password::needs_rehash(&phc.replace(from, to)), "{to}");
    }
    assert!(password::needs_rehash("not a hash"));
    assert!(password::needs_rehash_for(
        "not a hash",
        password::Scheme::Pbkdf2Sha256
    ));
}

#[test]
fn malformed_or_hostile_password_hashes_are_errors() {
    let good = password::hash_pbkdf2("pw").unwrap();
    let cases = [
        "".to_owned(),
        "plaintext".to_owned(),
        "$md5$abc".to_owned(),
        "$pbkdf2-sha256$i=600000,l=32$c2FsdHNhbHQ".to_owned(),
        good.replace("i=600000", "i=0"),
        good.replace("i=600000", "i=99999999"),
        good.replace("i=600000", "i=abc"),
        good.replace("l=32", "l=31"),
        good.replace("i=600000,", "i=600000,i=1,"),
        good.replace("l=32", "x=32"),
        format!("{good}$extra"),
        // Memory cost far above the accepted bound: refused before allocating.
        "$argon2id$v=19$m=4194304,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
            .to_owned(),
        "$argon2id$v=19$m=65536,t=1000,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc"
            .to_owned(),
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ".to_owned(),
        "$scrypt$ln=16,r=8,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc".to_owned(),
    ];
    for phc in cases {
        assert!(
            matches!(
                password::verify("pw", &phc),
                Err(Error::InvalidPasswordHash)
            ),
            "{phc}"
        );
    }
}

#[test]
fn dummy_verify_runs_without_panicking() {
    // It must cost what a real verification costs; the benchmark measures that, tests do not time.
    password::dummy_verify("whatever");
    password::dummy_verify("");
}

// ---------------------------------------------------------------- Debug redaction

#[test]
fn no_secret_appears_in_debug_output() {
    let mut keyring = Keyring::generate().unwrap();
    keyring.add_key().unwrap();
    let text = keyring.to_text();
    let aad = Aad::new("t", "c", "o", "r");
    let blob = keyring.seal(b"plaintext-secret-value", &aad).unwrap();
    let opened = keyring.open(&blob, &aad).unwrap();
    let opened_owned = keyring.open_owned(blob.clone(), &aad).unwrap();
    assert_eq!(opened_owned.expose_secret(), b"plaintext-secret-value");
    let api_key = ApiKey::generate();
    let webhook = WebhookSecret::generate();
    let external_id = ExternalId::generate();
    let secret_bytes = SecretBytes::new(b"raw-secret-bytes".to_vec());
    let secret_string = SecretString::new("raw-secret-string".to_owned());

    let debug = [
        format!("{keyring:?}"),
        format!("{keyring:#?}"),
        format!("{text:?}"),
        format!("{opened:?}"),
        format!("{opened_owned:?}"),
        format!("{opened_owned:#?}"),
        format!("{api_key:?}"),
        format!("{:?}", keyring.api_key_hasher()),
        format!("{webhook:?}"),
        format!("{external_id:?}"),
        format!("{secret_bytes:?}"),
        format!("{secret_string:?}"),
        format!(
            "{:?}",
            Keyring::parse("xrole-keyring-v1;pepper=AAAA").unwrap_err()
        ),
    ]
    .join("\n");

    // Every base64 key value of the keyring text, and every other secret.
    let mut secrets: Vec<String> = text
        .expose_secret()
        .split(';')
        .filter_map(|item| item.split_once('=').map(|(_, v)| v.to_owned()))
        .filter(|v| v.len() > 20)
        .collect();
    assert_eq!(secrets.len(), 3, "pepper and two keys");
    secrets.extend([
        "plaintext-secret-value".to_owned(),
        "raw-secret-bytes".to_owned(),
        "raw-secret-string".to_owned(),
        api_key.expose_secret()[17..].to_owned(),
        webhook.expose_secret()[6..].to_owned(),
        external_id.as_str().to_owned(),
        external_id.as_str()[4..].to_owned(),
    ]);
    // Byte-array renderings of the plaintext as well.
    secrets.push(format!("{:?}", b"plaintext-secret-value"));
    for secret in &secrets {
        assert!(
            !debug.contains(secret.as_str()),
            "{secret} leaked into Debug output:\n{debug}"
        );
    }
    assert!(debug.contains("** redacted **"));
    // The non-secret key id stays visible for support.
    assert!(debug.contains(api_key.key_id()));
}

// ---------------------------------------------------------------- secret types' traits

/// Stops the build if `$t` implements any of the traits: with the trait, the second
/// blanket impl applies too and `<$t as AmbiguousIfImpl<_>>` becomes ambiguous.
macro_rules! assert_not_impl {
    ($t:ty: $($tr:path),+ $(,)?) => {$(
        const _: fn() = || {
            trait AmbiguousIfImpl<A> {
                fn some_item() {}
            }
            impl<T: ?Sized> AmbiguousIfImpl<()> for T {}
            #[allow(dead_code)]
            struct Invalid;
            impl<T: ?Sized + $tr> AmbiguousIfImpl<Invalid> for T {}
            let _ = <$t as AmbiguousIfImpl<_>>::some_item;
        };
    )+};
}

// Keys (the keyring and the API-key hasher hold them), plaintext secrets, API keys and
// webhook secrets can be neither copied, printed nor serialized by accident.
assert_not_impl!(Keyring: Clone, std::fmt::Display, serde::Serialize);
assert_not_impl!(ApiKeyHasher: Clone, std::fmt::Display, serde::Serialize);
assert_not_impl!(SecretBytes: Clone, std::fmt::Display, serde::Serialize);
assert_not_impl!(SecretString: Clone, std::fmt::Display, serde::Serialize);
assert_not_impl!(ApiKey: Clone, std::fmt::Display, serde::Serialize);
assert_not_impl!(WebhookSecret: Clone, std::fmt::Display, serde::Serialize);

#[test]
fn constant_time_eq_compares_correctly() {
    assert!(constant_time_eq(b"", b""));
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"ab"));
    assert!(!constant_time_eq(b"\x80bc", b"abc"));
}
