//! Password hashing for humans: argon2id PHC strings, and PBKDF2-HMAC-SHA256 for FIPS-minded
//! deployments and imports.
//!
//! Every function here costs tens (argon2id) to hundreds (PBKDF2) of milliseconds of CPU:
//! call them on a blocking thread (`tokio::task::spawn_blocking`, `actix_web::web::block`),
//! never directly on an async executor.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use ring::pbkdf2;
use ring::rand::SystemRandom;

use crate::encoding::fill_random;
use crate::{Error, Result};

/// argon2id memory cost in KiB (OWASP's minimum recommendation).
pub const ARGON2_M_COST: u32 = 19_456;
/// argon2id iterations.
pub const ARGON2_T_COST: u32 = 2;
/// argon2id parallelism.
pub const ARGON2_P_COST: u32 = 1;
/// PBKDF2-HMAC-SHA256 iterations (OWASP 2023).
pub const PBKDF2_ITERATIONS: u32 = 600_000;
const SALT_LEN: usize = 16;
const HASH_LEN: usize = 32;
const PBKDF2_PREFIX: &str = "$pbkdf2-sha256$";

// Upper bounds on parameters read from stored hashes, so a corrupted or hostile row cannot
// make one verification allocate gigabytes or run for minutes.
const MAX_ARGON2_M_COST: u32 = 1 << 18;
const MAX_ARGON2_T_COST: u32 = 32;
const MAX_ARGON2_P_COST: u32 = 16;
const MAX_PBKDF2_ITERATIONS: u32 = 10_000_000;

/// The scheme new hashes should use, for [`needs_rehash_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// argon2id, m=19456 KiB, t=2, p=1 (the default).
    Argon2id,
    /// PBKDF2-HMAC-SHA256, 600,000 iterations.
    Pbkdf2Sha256,
}

fn argon2() -> Result<Argon2<'static>> {
    let params = Params::new(ARGON2_M_COST, ARGON2_T_COST, ARGON2_P_COST, Some(HASH_LEN))
        .map_err(|_| Error::PasswordHashing)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn salt() -> Result<[u8; SALT_LEN]> {
    let mut salt = [0u8; SALT_LEN];
    fill_random(&SystemRandom::new(), &mut salt)?;
    Ok(salt)
}

/// Hashes `password` with argon2id (m=19456 KiB, t=2, p=1) and a random 16-byte salt,
/// returning a PHC string `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
pub fn hash(password: &str) -> Result<String> {
    let hash = argon2()?
        .hash_password_with_salt(password.as_bytes(), &salt()?)
        .map_err(|_| Error::PasswordHashing)?;
    Ok(hash.to_string())
}

/// Hashes `password` with PBKDF2-HMAC-SHA256 (600,000 iterations, 16-byte salt), returning
/// `$pbkdf2-sha256$i=600000,l=32$<salt>$<hash>` (unpadded standard base64).
pub fn hash_pbkdf2(password: &str) -> Result<String> {
    let salt = salt()?;
    let mut out = [0u8; HASH_LEN];
    let iterations = NonZeroU32::new(PBKDF2_ITERATIONS).ok_or(Error::PasswordHashing)?;
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "{PBKDF2_PREFIX}i={PBKDF2_ITERATIONS},l={HASH_LEN}${}${}",
        B64.encode(salt),
        B64.encode(out)
    ))
}

/// A parsed `$pbkdf2-sha256$i=<n>,l=<len>$<salt>$<hash>` string.
struct Pbkdf2Hash {
    iterations: NonZeroU32,
    salt: Vec<u8>,
    hash: Vec<u8>,
}

fn parse_pbkdf2(phc: &str) -> Result<Pbkdf2Hash> {
    let bad = || Error::InvalidPasswordHash;
    let rest = phc.strip_prefix(PBKDF2_PREFIX).ok_or_else(bad)?;
    let mut parts = rest.split('$');
    let (params, salt, hash) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(p), Some(s), Some(h), None) => (p, s, h),
        _ => return Err(bad()),
    };
    let mut iterations = None;
    let mut len = None;
    for param in params.split(',') {
        let (name, value) = param.split_once('=').ok_or_else(bad)?;
        if value.is_empty() || value.len() > 10 || !value.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let value: u32 = value.parse().map_err(|_| bad())?;
        let slot = match name {
            "i" => &mut iterations,
            "l" => &mut len,
            _ => return Err(bad()),
        };
        if slot.replace(value).is_some() {
            return Err(bad());
        }
    }
    let iterations = iterations
        .filter(|&i| i <= MAX_PBKDF2_ITERATIONS)
        .and_then(NonZeroU32::new)
        .ok_or_else(bad)?;
    if salt.len() > 256 || hash.len() > 256 {
        return Err(bad());
    }
    let salt = B64.decode(salt).map_err(|_| bad())?;
    let hash = B64.decode(hash).map_err(|_| bad())?;
    // `l` is optional; when present it must match the hash.
    if salt.len() < 4
        || !(16..=64).contains(&hash.len())
        || len.is_some_and(|l| l as usize != hash.len())
    {
        return Err(bad());
    }
    Ok(Pbkdf2Hash {
        iterations,
        salt,
        hash,
    })
}

/// Parses an argon2 PHC string and checks its parameters against the bounds above.
fn parse_argon2(phc: &str) -> Result<(PasswordHash, Params, Algorithm)> {
    let hash = PasswordHash::new(phc).map_err(|_| Error::InvalidPasswordHash)?;
    let algorithm =
        Algorithm::try_from(hash.algorithm.as_str()).map_err(|_| Error::InvalidPasswordHash)?;
    let params = Params::try_from(&hash).map_err(|_| Error::InvalidPasswordHash)?;
    if params.m_cost() > MAX_ARGON2_M_COST
        || params.t_cost() > MAX_ARGON2_T_COST
        || params.p_cost() > MAX_ARGON2_P_COST
    {
        return Err(Error::InvalidPasswordHash);
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(Error::InvalidPasswordHash);
    }
    Ok((hash, params, algorithm))
}

/// Checks `password` against a stored PHC string of either scheme.
///
/// `Ok(false)` means the password is wrong; `Err` means the stored string is malformed,
/// uses an unknown scheme, or has out-of-bounds parameters.
pub fn verify(password: &str, phc: &str) -> Result<bool> {
    if phc.starts_with(PBKDF2_PREFIX) {
        let h = parse_pbkdf2(phc)?;
        // ring compares in constant time.
        return Ok(pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            h.iterations,
            &h.salt,
            password.as_bytes(),
            &h.hash,
        )
        .is_ok());
    }
    let (hash, params, algorithm) = parse_argon2(phc)?;
    let version = hash
        .version
        .map_or(Ok(Version::V0x13), Version::try_from)
        .map_err(|_| Error::InvalidPasswordHash)?;
    match Argon2::new(algorithm, version, params).verify_password(password.as_bytes(), &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::PasswordInvalid) => Ok(false),
        Err(_) => Err(Error::InvalidPasswordHash),
    }
}

/// Whether a stored hash should be replaced by a fresh argon2id hash at the current
/// parameters (after a successful login). Malformed strings need a rehash too.
pub fn needs_rehash(phc: &str) -> bool {
    needs_rehash_for(phc, Scheme::Argon2id)
}

/// [`needs_rehash`] for deployments that standardise on `scheme` (for example PBKDF2 under FIPS).
pub fn needs_rehash_for(phc: &str, scheme: Scheme) -> bool {
    match scheme {
        Scheme::Argon2id => match parse_argon2(phc) {
            Ok((hash, params, algorithm)) => {
                algorithm != Algorithm::Argon2id
                    || hash.version != Some(Version::V0x13.into())
                    || params.m_cost() != ARGON2_M_COST
                    || params.t_cost() != ARGON2_T_COST
                    || params.p_cost() != ARGON2_P_COST
                    || hash.hash.is_none_or(|h| h.len() != HASH_LEN)
            }
            Err(_) => true,
        },
        Scheme::Pbkdf2Sha256 => match parse_pbkdf2(phc) {
            Ok(h) => h.iterations.get() != PBKDF2_ITERATIONS || h.hash.len() != HASH_LEN,
            Err(_) => true,
        },
    }
}

/// Spends the same CPU as a real [`verify`] of an argon2id hash, for logins naming an
/// unknown user, so response time does not reveal which accounts exist.
pub fn dummy_verify(password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let phc = DUMMY.get_or_init(|| hash("xrole dummy password").unwrap_or_default());
    let _ = std::hint::black_box(verify(password, phc));
}
