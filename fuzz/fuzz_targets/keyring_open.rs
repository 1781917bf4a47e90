//! `Keyring::open` on arbitrary bytes and on tampered real blobs.
//!
//! * Arbitrary bytes never open (that would be a forgery) and never panic.
//! * A real sealed blob with any bytes changed never opens; unchanged, it
//!   opens to the original plaintext.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use xrole_crypto::{Aad, Keyring};

#[derive(Debug, Arbitrary)]
enum Input {
    /// Arbitrary bytes as a blob.
    Raw { blob: Vec<u8>, row: String },
    /// A real blob of `plaintext`, XORed with `mask` from `at`, opened with
    /// the original or another row id.
    Tampered {
        plaintext: Vec<u8>,
        at: u16,
        mask: Vec<u8>,
        truncate: Option<u16>,
        other_row: Option<String>,
    },
}

fn keyring() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| {
        let mut k = Keyring::generate().unwrap();
        // Two keys: blobs of the retired primary must still open.
        k.add_key().unwrap();
        k
    })
}

fuzz_target!(|input: Input| {
    let k = keyring();
    match input {
        Input::Raw { blob, row } => {
            let aad = Aad::new("links", "external_id", "org", &row);
            assert!(k.open(&blob, &aad).is_err(), "arbitrary bytes opened");
            assert!(k.reseal(&blob, &aad).is_err());
            let _ = k.needs_reseal(&blob);
        }
        Input::Tampered {
            plaintext,
            at,
            mask,
            truncate,
            other_row,
        } => {
            let aad = Aad::new("links", "external_id", "org", "row-1");
            let Ok(sealed) = k.seal(&plaintext, &aad) else {
                return;
            };
            let mut blob = sealed.clone();
            let start = usize::from(at) % (blob.len() + 1);
            for (b, m) in blob[start..].iter_mut().zip(&mask) {
                *b ^= m;
            }
            if let Some(n) = truncate {
                blob.truncate(usize::from(n) % (blob.len() + 1));
            }
            let aad = match &other_row {
                Some(r) if r != "row-1" => Aad::new("links", "external_id", "org", r),
                _ => aad,
            };
            let same_aad = other_row.as_deref().is_none_or(|r| r == "row-1");
            match k.open(&blob, &aad) {
                Ok(p) => {
                    assert!(blob == sealed && same_aad, "a tampered blob opened");
                    assert_eq!(p.expose_secret(), &plaintext[..]);
                }
                Err(_) => assert!(blob != sealed || !same_aad, "a genuine blob failed"),
            }
        }
    }
});
