//! The crate's one error type.

/// Everything that can go wrong in `xrole-crypto`.
///
/// Cryptographic failures carry no detail an attacker could use: a blob that
/// fails authentication is [`Error::Decrypt`], whatever the reason.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Authentication of a sealed blob failed (wrong key, wrong AAD, tampered or truncated).
    #[error("decryption failed")]
    Decrypt,
    /// Sealing failed (the plaintext exceeds the AES-GCM limit of about 64 GiB).
    #[error("encryption failed")]
    Encrypt,
    /// The blob is too short to hold a header, nonce and tag.
    #[error("sealed blob is malformed")]
    MalformedBlob,
    /// The blob starts with a format version this crate does not know.
    #[error("sealed blob has unsupported format version {0}")]
    UnsupportedBlobVersion(u8),
    /// The blob names a key id that is not in the keyring (retired or never known).
    #[error("sealed blob names key id {0}, which is not in the keyring")]
    UnknownKeyId(u32),
    /// The primary key has sealed as many messages as the configured ceiling allows.
    /// Add and promote a new key (and persist the keyring) to continue sealing.
    #[error("key {key_id} reached its seal limit; rotate the keyring")]
    SealLimitReached {
        /// The exhausted key.
        key_id: u32,
    },
    /// A seal limit above the AES-GCM random-nonce bound of 2^32 was requested.
    #[error("seal limit {0} is above 2^32")]
    SealLimitTooHigh(u64),
    /// A key id passed to `promote`/`retire` is not in the keyring.
    #[error("key id {0} is not in the keyring")]
    KeyNotFound(u32),
    /// The primary key cannot be retired; promote another key first.
    #[error("key id {0} is the primary and cannot be retired")]
    CannotRetirePrimary(u32),
    /// Every `u32` key id has been used.
    #[error("no key id left")]
    KeyIdsExhausted,
    /// The keyring text is malformed (the message never quotes key material).
    #[error("invalid keyring: {0}")]
    KeyringFormat(String),
    /// The environment variable holding the keyring is missing or not UTF-8.
    #[error("environment variable {0} is not set or not valid UTF-8")]
    MissingEnv(String),
    /// The keyring file is readable or writable by group or others.
    #[error(
        "keyring file {path} has mode {mode:o}; it must not be accessible by group or others (chmod 600)"
    )]
    InsecureKeyringFile {
        /// The offending file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Reading or writing a keyring file failed.
    #[error("keyring file {path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The string is not a well-formed API key (shape or checksum).
    #[error("invalid API key")]
    InvalidApiKey,
    /// The string is not a well-formed `whsec_` webhook secret.
    #[error("invalid webhook secret")]
    InvalidWebhookSecret,
    /// A webhook id or timestamp header is malformed (missing, non-numeric, contains `.`).
    #[error("malformed webhook header")]
    WebhookHeader,
    /// The webhook timestamp is outside the tolerance window.
    #[error("webhook timestamp outside the tolerance window")]
    WebhookTimestamp,
    /// No webhook signature matched.
    #[error("no matching webhook signature")]
    WebhookSignature,
    /// The string is not a valid STS External ID.
    #[error("invalid External ID")]
    InvalidExternalId,
    /// The stored password hash is malformed, uses an unknown scheme or out-of-bounds parameters.
    #[error("invalid password hash")]
    InvalidPasswordHash,
    /// Password hashing failed.
    #[error("password hashing failed")]
    PasswordHashing,
    /// An AWS KMS call failed.
    #[cfg(feature = "kms")]
    #[error("AWS KMS: {0}")]
    Kms(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
