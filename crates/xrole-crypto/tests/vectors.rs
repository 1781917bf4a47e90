//! Published test vectors: AES-256-GCM (McGrew–Viega GCM spec cases 13–16 and Project
//! Wycheproof's 256-bit-key, 96-bit-nonce cases), HMAC-SHA256
//! (RFC 4231), PBKDF2-HMAC-SHA256 (RFC 7914 §11 and the widely published "password"/"salt"
//! vectors), Standard Webhooks, and argon2id PHC strings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, UNIX_EPOCH};

use ring::{aead, hmac, pbkdf2};
use xrole_crypto::{Aad, Keyring, WebhookSecret, password};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s.split_whitespace().collect::<String>()).unwrap()
}

struct GcmCase {
    name: &'static str,
    key: &'static str,
    iv: &'static str,
    aad: &'static str,
    pt: &'static str,
    ct: &'static str,
    tag: &'static str,
}

const K15: &str = "feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308";
const P15: &str = "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
                   1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b391aafd255";
const C15: &str = "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa
                   8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662898015ad";

/// McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 13–16 (256-bit keys).
const GCM_CASES: &[GcmCase] = &[
    GcmCase {
        name: "13",
        key: "00000000000000000000000000000000 00000000000000000000000000000000",
        iv: "000000000000000000000000",
        aad: "",
        pt: "",
        ct: "",
        tag: "530f8afbc74536b9a963b4f1c4cb738b",
    },
    GcmCase {
        name: "14",
        key: "00000000000000000000000000000000 00000000000000000000000000000000",
        iv: "000000000000000000000000",
        aad: "",
        pt: "00000000000000000000000000000000",
        ct: "cea7403d4d606b6e074ec5d3baf39d18",
        tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    GcmCase {
        name: "15",
        key: K15,
        iv: "cafebabefacedbaddecaf888",
        aad: "",
        pt: P15,
        ct: C15,
        tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
    GcmCase {
        name: "16",
        key: K15,
        iv: "cafebabefacedbaddecaf888",
        aad: "feedfacedeadbeeffeedfacedeadbeef abaddad2",
        pt: "d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
             1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b39",
        ct: "522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa
             8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662",
        tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
];

#[test]
fn aes_256_gcm_gcm_spec_cases_13_to_16() {
    for case in GCM_CASES {
        let key = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &h(case.key)).unwrap(),
        );
        let nonce = || aead::Nonce::try_assume_unique_for_key(&h(case.iv)).unwrap();
        let mut buf = h(case.pt);
        let tag = key
            .seal_in_place_separate_tag(nonce(), aead::Aad::from(h(case.aad)), &mut buf)
            .unwrap();
        assert_eq!(
            hex::encode(&buf),
            hex::encode(h(case.ct)),
            "case {} ciphertext",
            case.name
        );
        assert_eq!(
            hex::encode(tag.as_ref()),
            hex::encode(h(case.tag)),
            "case {} tag",
            case.name
        );

        let mut sealed = [h(case.ct), h(case.tag)].concat();
        let opened = key
            .open_in_place(nonce(), aead::Aad::from(h(case.aad)), &mut sealed)
            .unwrap();
        assert_eq!(opened, &h(case.pt)[..], "case {} open", case.name);
    }
}

/// Project Wycheproof's AES-GCM cases with a 256-bit key and a 96-bit nonce
/// (`tests/vectors/wycheproof-aes-256-gcm.json`): every valid case seals to its
/// ciphertext and tag and opens back; every invalid one (modified tags, special cases)
/// fails to open, also when it is put in a keyring blob.
#[test]
fn aes_256_gcm_wycheproof() {
    let file: serde_json::Value =
        serde_json::from_str(include_str!("vectors/wycheproof-aes-256-gcm.json")).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for group in file["testGroups"].as_array().unwrap() {
        assert_eq!(
            (group["keySize"].as_u64(), group["ivSize"].as_u64()),
            (Some(256), Some(96))
        );
        for t in group["tests"].as_array().unwrap() {
            let id = &t["tcId"];
            let field = |k: &str| h(t[k].as_str().unwrap());
            let key = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &field("key")).unwrap(),
            );
            let nonce = || aead::Nonce::try_assume_unique_for_key(&field("iv")).unwrap();
            let aad = || aead::Aad::from(field("aad"));
            let sealed = [field("ct"), field("tag")].concat();
            let mut buf = sealed.clone();
            let opened = key
                .open_in_place(nonce(), aad(), &mut buf)
                .map(|p| p.to_vec());
            match t["result"].as_str().unwrap() {
                "valid" => {
                    valid += 1;
                    assert_eq!(opened.as_deref(), Ok(&field("msg")[..]), "tcId {id} open");
                    let mut out = field("msg");
                    key.seal_in_place_append_tag(nonce(), aad(), &mut out)
                        .unwrap();
                    assert_eq!(hex::encode(&out), hex::encode(&sealed), "tcId {id} seal");
                }
                "invalid" => {
                    invalid += 1;
                    assert!(opened.is_err(), "tcId {id} must not open");
                    // The same bytes as a keyring blob under the AAD the keyring would use
                    // are refused as well.
                    let keyring = keyring_with(&field("key"));
                    let blob = [&[0x01, 0, 0, 0, 7][..], &field("iv"), &sealed].concat();
                    let aad = Aad::new("t", "c", "org", "row");
                    assert!(keyring.open(&blob, &aad).is_err(), "tcId {id} keyring");
                }
                other => panic!("tcId {id}: result {other}"),
            }
        }
    }
    assert_eq!(
        valid + invalid,
        file["numberOfTests"].as_u64().unwrap(),
        "every case ran"
    );
    assert!(
        valid > 30 && invalid > 20,
        "{valid} valid, {invalid} invalid"
    );
}

/// A keyring whose only key, id 7, is `key`.
fn keyring_with(key: &[u8]) -> Keyring {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    Keyring::parse(&format!(
        "xrole-keyring-v1;pepper={};primary=7;key.7={}",
        b64.encode([0u8; 32]),
        b64.encode(key)
    ))
    .unwrap()
}

/// A blob assembled by hand from a published key and nonce, in the documented layout
/// `0x01 | key_id u32 BE | nonce | ciphertext+tag`, opens through the keyring.
#[test]
fn keyring_opens_a_blob_built_from_the_documented_layout() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = h(K15);
    let text = format!(
        "xrole-keyring-v1;pepper={};primary=7;key.7={}",
        b64.encode([0u8; 32]),
        b64.encode(&key)
    );
    let keyring = Keyring::parse(&text).unwrap();
    let aad = Aad::new("t", "c", "org", "row");
    let ring_key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &key).unwrap());
    let iv = h("cafebabefacedbaddecaf888");
    let mut ct = h(P15);
    ring_key
        .seal_in_place_append_tag(
            aead::Nonce::try_assume_unique_for_key(&iv).unwrap(),
            aead::Aad::from(aad.as_bytes()),
            &mut ct,
        )
        .unwrap();
    let blob = [&[0x01, 0, 0, 0, 7][..], &iv, &ct].concat();
    assert_eq!(
        keyring.open(&blob, &aad).unwrap().expose_secret(),
        &h(P15)[..]
    );
    assert_eq!(aad.as_str(), "xrole/v1|t|c|org|row");
    // Blobs the keyring seals use the same layout.
    let sealed = keyring.seal(b"abc", &aad).unwrap();
    assert_eq!(&sealed[..5], &[0x01, 0, 0, 0, 7]);
    assert_eq!(sealed.len(), 5 + 12 + 3 + 16);
}

#[test]
fn hmac_sha256_rfc4231_cases_1_to_7() {
    let cases: Vec<(Vec<u8>, Vec<u8>, &str)> = vec![
        (vec![0x0b; 20], b"Hi There".to_vec(), "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
        (
            b"Jefe".to_vec(),
            b"what do ya want for nothing?".to_vec(),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        ),
        (vec![0xaa; 20], vec![0xdd; 50], "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
        ((1..=25).collect(), vec![0xcd; 50], "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
        // Case 5 is truncated to 128 bits.
        (vec![0x0c; 20], b"Test With Truncation".to_vec(), "a3b6167473100ee06e0c796c2955552b"),
        (
            vec![0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        ),
        (
            vec![0xaa; 131],
            b"This is a test using a larger than block-size key and a larger than block-size data. \
              The key needs to be hashed before being used by the HMAC algorithm."
                .to_vec(),
            "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        ),
    ];
    for (i, (key, data, expected)) in cases.iter().enumerate() {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data);
        let expected = h(expected);
        assert_eq!(
            hex::encode(&tag.as_ref()[..expected.len()]),
            hex::encode(&expected),
            "RFC 4231 case {}",
            i + 1
        );
    }
}

const RFC7914_NACL: &str = "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56
                            a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d";

#[test]
fn pbkdf2_hmac_sha256_published_vectors() {
    let cases: &[(&[u8], &[u8], u32, &str)] = &[
        (
            b"password",
            b"salt",
            1,
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
        ),
        (
            b"password",
            b"salt",
            2,
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
        ),
        (
            b"password",
            b"salt",
            4096,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
        ),
        // RFC 7914 §11.
        (
            b"passwd",
            b"salt",
            1,
            "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc
             49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783",
        ),
        (b"Password", b"NaCl", 80000, RFC7914_NACL),
    ];
    for (password, salt, iterations, expected) in cases {
        let expected = h(expected);
        let mut out = vec![0u8; expected.len()];
        let n = std::num::NonZeroU32::new(*iterations).unwrap();
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, n, salt, password, &mut out);
        assert_eq!(hex::encode(&out), hex::encode(&expected), "c={iterations}");
    }
}

/// The published vectors, written as `$pbkdf2-sha256$` PHC strings, verify through
/// `password::verify`.
#[test]
fn pbkdf2_published_vectors_verify_as_phc_strings() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let phc = |i: u32, salt: &[u8], hash: &str| {
        let hash = h(hash);
        format!(
            "$pbkdf2-sha256$i={i},l={}${}${}",
            hash.len(),
            b64.encode(salt),
            b64.encode(hash)
        )
    };
    let c4096 = phc(
        4096,
        b"salt",
        "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a",
    );
    assert!(password::verify("password", &c4096).unwrap());
    assert!(!password::verify("passwore", &c4096).unwrap());
    let rfc7914 = phc(80000, b"NaCl", RFC7914_NACL);
    assert!(password::verify("Password", &rfc7914).unwrap());
    assert!(!password::verify("password", &rfc7914).unwrap());
}

struct WebhookCase {
    secret: String,
    webhook_id: String,
    webhook_timestamp: i64,
    body: String,
    signature: String,
}

fn webhook_vectors() -> Vec<WebhookCase> {
    let json: serde_json::Value =
        serde_json::from_str(include_str!("vectors/standard-webhooks.json")).unwrap();
    let text = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap().to_owned();
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| WebhookCase {
            secret: text(c, "secret"),
            webhook_id: text(c, "webhook_id"),
            webhook_timestamp: c["webhook_timestamp"].as_i64().unwrap(),
            body: text(c, "body"),
            signature: text(c, "signature"),
        })
        .collect()
}

#[test]
fn standard_webhooks_vector_signs_and_verifies() {
    let cases = webhook_vectors();
    assert!(!cases.is_empty());
    for case in cases {
        let secret = WebhookSecret::parse(&case.secret).unwrap();
        let sig = secret.sign(
            &case.webhook_id,
            case.webhook_timestamp,
            case.body.as_bytes(),
        );
        assert_eq!(sig, case.signature);
        let now = UNIX_EPOCH + Duration::from_secs(case.webhook_timestamp as u64);
        let ts = case.webhook_timestamp.to_string();
        secret
            .verify(
                &case.webhook_id,
                &ts,
                &case.signature,
                case.body.as_bytes(),
                now,
            )
            .unwrap();
        // The same vector fails on a one-bit body change.
        let mut body = case.body.into_bytes();
        body[0] ^= 1;
        assert!(
            secret
                .verify(&case.webhook_id, &ts, &case.signature, &body, now)
                .is_err()
        );
    }
}

/// An argon2id PHC string for "password" / salt "somesalt" as produced by the Argon2 reference
/// implementation (also used by the RustCrypto `argon2` tests).
#[test]
fn argon2id_reference_phc_string_verifies() {
    let phc =
        "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$CTFhFdXPJO1aFaMaO6Mm5c8y7cJHAph8ArZWb2GRPPc";
    assert!(password::verify("password", phc).unwrap());
    assert!(!password::verify("sassword", phc).unwrap());
    assert!(
        password::needs_rehash(phc),
        "m=65536 differs from the current parameters"
    );
}
