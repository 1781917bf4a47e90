//! `ApiKey::parse` on arbitrary text: never panics, and whatever it accepts
//! has the documented shape and survives a second parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrole_crypto::{API_KEY_LEN, API_KEY_PREFIX, ApiKey};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(key) = ApiKey::parse(s) else {
        return;
    };
    assert_eq!(key.expose_secret(), s);
    assert_eq!(s.len(), API_KEY_LEN);
    assert!(s.starts_with(API_KEY_PREFIX));
    assert!(s.is_ascii());
    assert!(s.contains(key.key_id()));
    // The Debug output never shows the secret part.
    let secret_tail = &s[s.len() - 8..];
    assert!(!format!("{key:?}").contains(secret_tail));
    let again = ApiKey::parse(key.expose_secret()).map(|k| k.expose_secret().to_owned());
    assert_eq!(again.ok().as_deref(), Some(s));
    // One flipped character in an accepted key is caught by the checksum
    // (or the shape), never accepted as another key.
    let mut bytes = s.as_bytes().to_vec();
    let i = usize::from(bytes[API_KEY_LEN - 1]) % API_KEY_LEN;
    bytes[i] = if bytes[i] == b'Z' { b'Y' } else { b'Z' };
    if let Ok(flipped) = std::str::from_utf8(&bytes) {
        assert!(ApiKey::parse(flipped).is_err() || flipped == s);
    }
});
