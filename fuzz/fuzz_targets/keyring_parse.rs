//! `Keyring::parse` on arbitrary text: never panics; an accepted keyring
//! serializes back to text that parses to a keyring with the same keys.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xrole_crypto::{Aad, Keyring};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(k) = Keyring::parse(s) else {
        return;
    };
    let text = k.to_text();
    let k2 = Keyring::parse(text.expose_secret()).expect("to_text output must parse");
    assert_eq!(k.key_ids(), k2.key_ids());
    assert_eq!(k.primary_key_id(), k2.primary_key_id());
    // The Debug output never prints key material.
    let dbg = format!("{k:?}");
    assert!(!dbg.contains(text.expose_secret()));
    let aad = Aad::new("t", "c", "o", "r");
    if let Ok(blob) = k.seal(b"fuzz", &aad) {
        assert_eq!(k2.open(&blob, &aad).unwrap().expose_secret(), b"fuzz");
    }
});
