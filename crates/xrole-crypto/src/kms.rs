//! AWS KMS wrapping of the keyring's data keys (cargo feature `kms`).
//!
//! The wrapped keyring text has the same shape as the plain one, with header
//! `xrole-keyring-kms-v1`, a `kms_key=` item, and each key and the pepper replaced by the
//! base64 KMS ciphertext of that key. It is not secret: only the KMS key can unwrap it.
//! Each key is encrypted with the encryption context
//! `{"xrole:keyring": "v1", "xrole:slot": "pepper" | "key.<id>"}`, so a wrapped key cannot be
//! moved to another slot.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_kms::Client;
use aws_sdk_kms::error::DisplayErrorContext;
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use zeroize::Zeroizing;

use crate::keyring::{KEY_LEN, parse_fields};
use crate::{Error, Keyring, Result};

/// Header of the KMS-wrapped keyring text.
pub const KMS_TEXT_HEADER: &str = "xrole-keyring-kms-v1";

/// Wraps and unwraps keyrings with one AWS KMS key (symmetric, `ENCRYPT_DECRYPT`).
pub struct KmsKeyring {
    client: Client,
    kms_key_id: String,
}

impl fmt::Debug for KmsKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KmsKeyring")
            .field("kms_key_id", &self.kms_key_id)
            .finish_non_exhaustive()
    }
}

fn context(slot: &str) -> HashMap<String, String> {
    HashMap::from([
        ("xrole:keyring".to_owned(), "v1".to_owned()),
        ("xrole:slot".to_owned(), slot.to_owned()),
    ])
}

fn kms_error<E: std::error::Error>(e: E) -> Error {
    Error::Kms(DisplayErrorContext(e).to_string())
}

fn to_key(bytes: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(Error::Kms(format!(
            "KMS returned {} bytes, expected {KEY_LEN}",
            bytes.len()
        )));
    }
    key.copy_from_slice(bytes);
    Ok(key)
}

impl KmsKeyring {
    /// Uses `kms_key_id` (key id, ARN, or `alias/...`) through `client`.
    pub fn new(client: Client, kms_key_id: impl Into<String>) -> Self {
        Self {
            client,
            kms_key_id: kms_key_id.into(),
        }
    }

    /// Builds the client from an `aws-config` [`SdkConfig`](aws_config::SdkConfig).
    pub fn from_sdk_config(config: &aws_config::SdkConfig, kms_key_id: impl Into<String>) -> Self {
        Self::new(Client::new(config), kms_key_id)
    }

    /// A fresh keyring whose key (id 1) and pepper are KMS data keys (`GenerateDataKey`),
    /// together with its wrapped text to store.
    pub async fn generate(&self) -> Result<(Keyring, String)> {
        let mut slots = Vec::with_capacity(2);
        for slot in ["pepper", "key.1"] {
            let out = self
                .client
                .generate_data_key()
                .key_id(&self.kms_key_id)
                .key_spec(DataKeySpec::Aes256)
                .set_encryption_context(Some(context(slot)))
                .send()
                .await
                .map_err(kms_error)?;
            let plaintext = out
                .plaintext
                .ok_or_else(|| Error::Kms("no plaintext in GenerateDataKey".into()))?;
            let key = to_key(plaintext.as_ref())?;
            // The SDK's buffer is not zeroized by the SDK; scrub our copy of it.
            let mut raw = plaintext.into_inner();
            zeroize::Zeroize::zeroize(&mut raw);
            let ciphertext = out
                .ciphertext_blob
                .ok_or_else(|| Error::Kms("no ciphertext in GenerateDataKey".into()))?;
            slots.push((key, B64.encode(ciphertext.as_ref())));
        }
        let (key, key_ct) = slots.pop().ok_or(Error::Random)?;
        let (pepper, pepper_ct) = slots.pop().ok_or(Error::Random)?;
        let keyring = Keyring::from_parts(pepper, vec![(1, key)], 1, None)?;
        let text = format!(
            "{KMS_TEXT_HEADER};kms_key={};pepper={pepper_ct};primary=1;last_key_id=1;key.1={key_ct}",
            self.kms_key_id
        );
        Ok((keyring, text))
    }

    async fn encrypt(&self, slot: &str, key: &[u8; KEY_LEN]) -> Result<String> {
        let out = self
            .client
            .encrypt()
            .key_id(&self.kms_key_id)
            .plaintext(Blob::new(key.to_vec()))
            .set_encryption_context(Some(context(slot)))
            .send()
            .await
            .map_err(kms_error)?;
        let ciphertext = out
            .ciphertext_blob
            .ok_or_else(|| Error::Kms("no ciphertext in Encrypt".into()))?;
        Ok(B64.encode(ciphertext.as_ref()))
    }

    async fn decrypt(&self, slot: &str, b64: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let ciphertext = B64
            .decode(b64)
            .map_err(|_| Error::KeyringFormat(format!("`{slot}` is not valid base64")))?;
        let out = self
            .client
            .decrypt()
            .key_id(&self.kms_key_id)
            .ciphertext_blob(Blob::new(ciphertext))
            .set_encryption_context(Some(context(slot)))
            .send()
            .await
            .map_err(kms_error)?;
        let plaintext = out
            .plaintext
            .ok_or_else(|| Error::Kms("no plaintext in Decrypt".into()))?;
        let key = to_key(plaintext.as_ref());
        let mut raw = plaintext.into_inner();
        zeroize::Zeroize::zeroize(&mut raw);
        key
    }

    /// The wrapped text of `keyring`: every key and the pepper encrypted under the KMS key
    /// (one `Encrypt` call each). Store it after every rotation step.
    pub async fn wrap(&self, keyring: &Keyring) -> Result<String> {
        let (pepper, keys) = keyring.raw_parts();
        let mut text = format!(
            "{KMS_TEXT_HEADER};kms_key={};pepper={};primary={};last_key_id={}",
            self.kms_key_id,
            self.encrypt("pepper", pepper).await?,
            keyring.primary_key_id(),
            keyring.last_key_id(),
        );
        for (id, key) in keys {
            let slot = format!("key.{id}");
            let wrapped = self.encrypt(&slot, key).await?;
            text.push_str(&format!(";{slot}={wrapped}"));
        }
        Ok(text)
    }

    /// Unwraps text produced by [`wrap`](KmsKeyring::wrap) or [`generate`](KmsKeyring::generate)
    /// (one `Decrypt` call per key).
    pub async fn unwrap(&self, wrapped: &str) -> Result<Keyring> {
        let fields = parse_fields(wrapped, KMS_TEXT_HEADER)?;
        for (name, _) in &fields.extra {
            if *name != "kms_key" {
                return Err(Error::KeyringFormat(format!("unknown item `{name}`")));
            }
        }
        let pepper_ct = fields
            .pepper
            .ok_or_else(|| Error::KeyringFormat("missing `pepper`".into()))?;
        let pepper = self.decrypt("pepper", pepper_ct).await?;
        let mut keys = Vec::with_capacity(fields.keys.len());
        for (id, ct) in fields.keys {
            keys.push((id, self.decrypt(&format!("key.{id}"), ct).await?));
        }
        if keys.is_empty() {
            return Err(Error::KeyringFormat("missing `key.<id>`".into()));
        }
        let primary = fields
            .primary
            .ok_or_else(|| Error::KeyringFormat("missing `primary`".into()))?;
        Keyring::from_parts(pepper, keys, primary, fields.last_key_id)
    }

    /// [`unwrap`](KmsKeyring::unwrap) the text held by environment variable `var`.
    pub async fn unwrap_env(&self, var: &str) -> Result<Keyring> {
        let text = std::env::var(var).map_err(|_| Error::MissingEnv(var.to_owned()))?;
        self.unwrap(&text).await
    }
}
