//! Base62 and randomness helpers.

use ring::rand::{SecureRandom, SystemRandom};

use crate::{Error, Result};

/// The base62 alphabet: digits, upper case, lower case.
pub(crate) const BASE62: &[u8; 62] =
    b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub(crate) fn is_base62(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

fn base62_value(b: u8) -> Option<u32> {
    match b {
        b'0'..=b'9' => Some(u32::from(b - b'0')),
        b'A'..=b'Z' => Some(u32::from(b - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 36),
        _ => None,
    }
}

/// Fills `out` with bytes from the system generator.
pub(crate) fn fill_random(rng: &SystemRandom, out: &mut [u8]) -> Result<()> {
    rng.fill(out).map_err(|_| Error::Random)
}

/// Appends `n` uniformly random base62 characters (rejection sampling, no modulo bias).
pub(crate) fn push_random_base62(rng: &SystemRandom, out: &mut String, n: usize) -> Result<()> {
    let mut buf = zeroize::Zeroizing::new([0u8; 64]);
    let mut left = n;
    while left > 0 {
        fill_random(rng, &mut buf[..])?;
        for &b in buf.iter() {
            // 248 = 4 * 62: bytes at or above it would bias the result.
            if b < 248 {
                out.push(char::from(BASE62[usize::from(b % 62)]));
                left -= 1;
                if left == 0 {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Encodes `v` as exactly six base62 digits, most significant first (62^6 > 2^32).
pub(crate) fn u32_to_base62_6(mut v: u32) -> [u8; 6] {
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    out
}

/// Decodes six base62 digits; `None` if a digit is invalid or the value exceeds `u32`.
pub(crate) fn base62_6_to_u32(s: &[u8]) -> Option<u32> {
    if s.len() != 6 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        v = v * 62 + u64::from(base62_value(b)?);
    }
    u32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_6_round_trips_edges() {
        for v in [0, 1, 61, 62, 3843, 1 << 31, u32::MAX] {
            assert_eq!(base62_6_to_u32(&u32_to_base62_6(v)), Some(v));
        }
        assert_eq!(&u32_to_base62_6(0), b"000000");
        assert_eq!(&u32_to_base62_6(61), b"00000z");
        assert_eq!(base62_6_to_u32(b"zzzzzz"), None);
        assert_eq!(base62_6_to_u32(b"00000!"), None);
    }

    #[test]
    fn random_base62_has_requested_length_and_charset() {
        let rng = SystemRandom::new();
        let mut s = String::new();
        push_random_base62(&rng, &mut s, 1000).unwrap();
        assert_eq!(s.len(), 1000);
        assert!(s.bytes().all(is_base62));
        // All 62 symbols show up in 1000 draws with overwhelming probability.
        let distinct: std::collections::HashSet<u8> = s.bytes().collect();
        assert_eq!(distinct.len(), 62);
    }
}
