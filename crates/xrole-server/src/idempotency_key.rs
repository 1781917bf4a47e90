//! The `Idempotency-Key` header's value: 1 to 255 visible ASCII characters,
//! optionally sent as a quoted structured-field string (`"abc"` is the key
//! `abc`).
//!
//! Kept free of actix and of the rest of the crate: the cargo-fuzz target
//! `idempotency_key` compiles this file on its own.

use std::fmt;

/// The longest key accepted, in bytes.
pub const MAX_LEN: usize = 255;

/// A parsed `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

/// A header value that is not a valid `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidIdempotencyKey;

impl fmt::Display for InvalidIdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Idempotency-Key must be 1 to 255 visible ASCII characters")
    }
}

impl std::error::Error for InvalidIdempotencyKey {}

impl IdempotencyKey {
    /// Parses the raw bytes of the header's value. Spaces and tabs around
    /// the value are ignored; one pair of surrounding double quotes is
    /// removed; what remains must be 1 to [`MAX_LEN`] characters in
    /// `!`..=`~`.
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidIdempotencyKey> {
        // A header value is visible ASCII, spaces and tabs (obs-text and
        // control characters are refused).
        if !raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(InvalidIdempotencyKey);
        }
        let s = std::str::from_utf8(raw).map_err(|_| InvalidIdempotencyKey)?;
        let s = s.trim_matches([' ', '\t']);
        let s = s
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(s);
        if s.is_empty() || s.len() > MAX_LEN || !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(InvalidIdempotencyKey);
        }
        Ok(IdempotencyKey(s.to_owned()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_and_quoted_keys() {
        for (raw, key) in [
            ("abc-123", "abc-123"),
            ("\"abc-123\"", "abc-123"),
            ("  \tabc\t ", "abc"),
            (" \"a\" ", "a"),
            ("\"\"x\"\"", "\"x\""),
            ("\"abc", "\"abc"),
            ("!~", "!~"),
        ] {
            assert_eq!(
                IdempotencyKey::parse(raw.as_bytes()).unwrap().as_str(),
                key,
                "{raw:?}"
            );
        }
        let longest = "k".repeat(MAX_LEN);
        assert_eq!(
            IdempotencyKey::parse(longest.as_bytes()).unwrap().as_str(),
            longest
        );
        let quoted = format!("\"{longest}\"");
        assert!(IdempotencyKey::parse(quoted.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_empty_long_spaced_and_non_ascii_keys() {
        let long = "k".repeat(MAX_LEN + 1);
        for raw in [
            &b""[..],
            b"   ",
            b"\"\"",
            b"\" \"",
            b"a b",
            b"a\tb",
            long.as_bytes(),
            b"caf\xc3\xa9",
            b"\xff",
            b"a\nb",
            b"a\rb",
            b"\x00",
            b"a\x7f",
        ] {
            assert_eq!(
                IdempotencyKey::parse(raw),
                Err(InvalidIdempotencyKey),
                "{raw:?}"
            );
        }
    }
}
