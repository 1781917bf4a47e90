//! `IdempotencyKey::parse` (the `Idempotency-Key` header of every POST) on
//! arbitrary bytes: never panics; accepts exactly what the rule allows (1 to
//! 255 visible ASCII characters once spaces, tabs and one pair of double
//! quotes around them are removed); an accepted key sent quoted parses to
//! itself.
//!
//! The parser's source file is compiled in directly: depending on
//! xrole-server would build actix and the AWS SDK with sanitizers.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../crates/xrole-server/src/idempotency_key.rs"]
mod idempotency_key;

use idempotency_key::{IdempotencyKey, MAX_LEN};

/// The rule, written out independently of the parser.
fn expected(raw: &[u8]) -> Option<&[u8]> {
    if raw
        .iter()
        .any(|&b| b != b'\t' && !(0x20..0x7f).contains(&b))
    {
        return None;
    }
    let start = raw.iter().position(|&b| b != b' ' && b != b'\t')?;
    let end = raw.iter().rposition(|&b| b != b' ' && b != b'\t')? + 1;
    let mut key = &raw[start..end];
    if key.len() >= 2 && key[0] == b'"' && key[key.len() - 1] == b'"' {
        key = &key[1..key.len() - 1];
    }
    let ok =
        !key.is_empty() && key.len() <= MAX_LEN && key.iter().all(|b| (0x21..=0x7e).contains(b));
    ok.then_some(key)
}

fuzz_target!(|data: &[u8]| {
    let parsed = IdempotencyKey::parse(data);
    assert_eq!(
        parsed.as_ref().ok().map(|k| k.as_str().as_bytes()),
        expected(data),
        "{data:?}"
    );
    if let Ok(key) = parsed {
        let quoted = format!("\"{}\"", key.as_str());
        assert_eq!(IdempotencyKey::parse(quoted.as_bytes()).as_ref(), Ok(&key));
    }
});
