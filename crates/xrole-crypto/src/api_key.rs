//! API keys: `xrk_<key_id 12 base62>_<secret 43 base62><crc32 6 base62>`.

use std::fmt;

use ring::hmac;
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use crate::encoding::{base62_6_to_u32, is_base62, push_random_base62, u32_to_base62_6};
use crate::secret::REDACTED;
use crate::{Error, Result};

/// The fixed prefix of every API key, recognisable by secret scanners.
pub const API_KEY_PREFIX: &str = "xrk_";
const KEY_ID_LEN: usize = 12;
const SECRET_LEN: usize = 43;
const CRC_LEN: usize = 6;
/// Total length of an API key: `xrk_` + 12 + `_` + 43 + 6.
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + KEY_ID_LEN + 1 + SECRET_LEN + CRC_LEN;
const KEY_ID_START: usize = API_KEY_PREFIX.len();
const SECRET_START: usize = KEY_ID_START + KEY_ID_LEN + 1;
const CRC_START: usize = SECRET_START + SECRET_LEN;

/// An API key. The whole token is secret; its `key_id` part is not (it is the lookup key).
///
/// The 43 base62 characters of the secret carry 256 bits; the trailing CRC-32 (of everything
/// before it) lets [`parse`](ApiKey::parse) reject typos and random strings before any lookup.
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// A fresh random key.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails, which ring treats as fatal too.
    #[expect(
        clippy::expect_used,
        reason = "a failing OS RNG leaves no safe way to continue"
    )]
    pub fn generate() -> ApiKey {
        Self::try_generate().expect("system random number generator failed")
    }

    /// [`generate`](ApiKey::generate), reporting a random-generator failure as an error.
    pub fn try_generate() -> Result<ApiKey> {
        let rng = SystemRandom::new();
        let mut s = String::with_capacity(API_KEY_LEN);
        s.push_str(API_KEY_PREFIX);
        push_random_base62(&rng, &mut s, KEY_ID_LEN)?;
        s.push('_');
        push_random_base62(&rng, &mut s, SECRET_LEN)?;
        let crc = u32_to_base62_6(crc32fast::hash(s.as_bytes()));
        s.extend(crc.iter().map(|&b| char::from(b)));
        Ok(ApiKey(Zeroizing::new(s)))
    }

    /// Checks the shape and the checksum; no I/O.
    pub fn parse(s: &str) -> Result<ApiKey> {
        let b = s.as_bytes();
        let ok = b.len() == API_KEY_LEN
            && b.starts_with(API_KEY_PREFIX.as_bytes())
            && b[KEY_ID_START..SECRET_START - 1]
                .iter()
                .copied()
                .all(is_base62)
            && b[SECRET_START - 1] == b'_'
            && b[SECRET_START..].iter().copied().all(is_base62)
            && base62_6_to_u32(&b[CRC_START..]) == Some(crc32fast::hash(&b[..CRC_START]));
        if ok {
            Ok(ApiKey(Zeroizing::new(s.to_owned())))
        } else {
            Err(Error::InvalidApiKey)
        }
    }

    /// The 12-character key id: not secret, store it in clear to look the key up.
    pub fn key_id(&self) -> &str {
        &self.0[KEY_ID_START..SECRET_START - 1]
    }

    /// The whole `xrk_...` token.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The 43-character secret part (what the hasher MACs).
    fn secret_part(&self) -> &[u8] {
        &self.0.as_bytes()[SECRET_START..CRC_START]
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("key_id", &self.key_id())
            .field("secret", &REDACTED)
            .finish()
    }
}

impl std::str::FromStr for ApiKey {
    type Err = Error;
    fn from_str(s: &str) -> Result<ApiKey> {
        ApiKey::parse(s)
    }
}

/// Hashes and verifies API keys: HMAC-SHA256 over the secret part, keyed by a subkey of the
/// keyring's pepper. Get one from [`Keyring::api_key_hasher`](crate::Keyring::api_key_hasher).
///
/// 256-bit random secrets need no slow hash; a slow hash on every request would be a
/// denial-of-service lever.
pub struct ApiKeyHasher {
    key: hmac::Key,
}

impl ApiKeyHasher {
    pub(crate) fn new(key: hmac::Key) -> Self {
        Self { key }
    }

    /// The value to store next to the key id.
    pub fn hash(&self, key: &ApiKey) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(hmac::sign(&self.key, key.secret_part()).as_ref());
        out
    }

    /// Whether `key` matches the stored hash, compared in constant time.
    pub fn verify(&self, key: &ApiKey, stored: &[u8]) -> bool {
        hmac::verify(&self.key, key.secret_part(), stored).is_ok()
    }
}

impl fmt::Debug for ApiKeyHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKeyHasher(** redacted **)")
    }
}
