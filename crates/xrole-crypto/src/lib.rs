#![doc = include_str!("../README.md")]

mod api_key;
mod encoding;
mod error;
mod external_id;
mod keyring;
#[cfg(feature = "kms")]
pub mod kms;
pub mod password;
mod secret;
mod webhook;

pub use api_key::{API_KEY_LEN, API_KEY_PREFIX, ApiKey, ApiKeyHasher};
pub use error::{Error, Result};
pub use external_id::{EXTERNAL_ID_PREFIX, ExternalId};
pub use keyring::{
    Aad, BLOB_OVERHEAD, BLOB_VERSION, DEFAULT_SEAL_LIMIT, KEY_LEN, Keyring, MAX_SEAL_LIMIT,
};
pub use secret::{SecretBytes, SecretString, constant_time_eq};
pub use webhook::{WEBHOOK_SECRET_PREFIX, WEBHOOK_TOLERANCE_SECS, WebhookSecret};
