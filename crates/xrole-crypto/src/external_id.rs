//! External IDs for `sts:AssumeRole`.

use std::fmt;

use ring::rand::SystemRandom;

use crate::encoding::push_random_base62;
use crate::secret::REDACTED;
use crate::{Error, Result};

/// The prefix of every generated External ID.
pub const EXTERNAL_ID_PREFIX: &str = "xrx-";
/// Random base62 characters after the prefix: 32 × log2(62) ≈ 190 bits.
const RANDOM_LEN: usize = 32;
const MIN_LEN: usize = 2;
const MAX_LEN: usize = 1224;

/// An External ID as STS accepts it: 2..=1224 characters of `[A-Za-z0-9_+=,.@:/-]`.
///
/// Generated ones are `xrx-` + 32 random base62 characters. AWS does not treat External IDs
/// as secrets, but xrole stores them sealed and `Debug` redacts them anyway.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ExternalId(String);

impl ExternalId {
    /// A fresh External ID with about 190 bits of randomness.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails.
    #[expect(
        clippy::expect_used,
        reason = "a failing OS RNG leaves no safe way to continue"
    )]
    pub fn generate() -> ExternalId {
        Self::try_generate().expect("system random number generator failed")
    }

    /// [`generate`](ExternalId::generate), reporting a random-generator failure as an error.
    pub fn try_generate() -> Result<ExternalId> {
        let mut s = String::with_capacity(EXTERNAL_ID_PREFIX.len() + RANDOM_LEN);
        s.push_str(EXTERNAL_ID_PREFIX);
        push_random_base62(&SystemRandom::new(), &mut s, RANDOM_LEN)?;
        Ok(ExternalId(s))
    }

    /// Checks the STS rules: 2..=1224 characters of `[\w+=,.@:/-]` (ASCII `\w`).
    pub fn parse(s: &str) -> Result<ExternalId> {
        let ok = (MIN_LEN..=MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@:/-".contains(&b));
        if ok {
            Ok(ExternalId(s.to_owned()))
        } else {
            Err(Error::InvalidExternalId)
        }
    }

    /// The External ID text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ExternalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExternalId({REDACTED})")
    }
}

impl std::str::FromStr for ExternalId {
    type Err = Error;
    fn from_str(s: &str) -> Result<ExternalId> {
        ExternalId::parse(s)
    }
}

impl Drop for ExternalId {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}
