//! The AES-256-GCM keyring: sealing, opening, rotation, loading and saving.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::aead::{self, AES_256_GCM, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use crate::api_key::ApiKeyHasher;
use crate::encoding::fill_random;
use crate::secret::{SecretBytes, SecretString};
use crate::{Error, Result};

/// Format version byte at the start of every sealed blob.
pub const BLOB_VERSION: u8 = 0x01;
/// Header length: version byte + key id.
const HEADER_LEN: usize = 1 + 4;
/// Bytes a sealed blob adds to its plaintext: header, nonce, tag.
pub const BLOB_OVERHEAD: usize = HEADER_LEN + NONCE_LEN + TAG_LEN;
const TAG_LEN: usize = 16;
/// Length of AEAD keys and the pepper, in bytes.
pub const KEY_LEN: usize = 32;
/// Default per-key seal ceiling (2^31), well under the 2^32 random-nonce bound of AES-GCM.
pub const DEFAULT_SEAL_LIMIT: u64 = 1 << 31;
/// The highest seal ceiling [`Keyring::set_seal_limit`] accepts (2^32, NIST SP 800-38D §8.3).
pub const MAX_SEAL_LIMIT: u64 = 1 << 32;

pub(crate) const TEXT_HEADER: &str = "xrole-keyring-v1";

/// Associated data binding a sealed value to its place:
/// `xrole/v1|<table>|<column>|<org_id>|<row_id>`.
///
/// A blob sealed for one row, column or tenant fails to open under another.
/// `%` and `|` inside a component are percent-escaped so that two different
/// places can never produce the same AAD.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Aad(String);

impl Aad {
    /// Builds the AAD for `table.column` of row `row_id` owned by `org_id`.
    pub fn new(table: &str, column: &str, org_id: &str, row_id: &str) -> Aad {
        let mut s =
            String::with_capacity(9 + table.len() + column.len() + org_id.len() + row_id.len() + 4);
        s.push_str("xrole/v1");
        for part in [table, column, org_id, row_id] {
            s.push('|');
            for c in part.chars() {
                match c {
                    '%' => s.push_str("%25"),
                    '|' => s.push_str("%7C"),
                    c => s.push(c),
                }
            }
        }
        Aad(s)
    }

    /// The AAD bytes fed to AES-GCM.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The AAD as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Aad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Aad").field(&self.0).finish()
    }
}

struct KeyEntry {
    raw: Zeroizing<[u8; KEY_LEN]>,
    aead: LessSafeKey,
    sealed: AtomicU64,
}

impl KeyEntry {
    fn new(raw: Zeroizing<[u8; KEY_LEN]>) -> Result<Self> {
        let unbound = UnboundKey::new(&AES_256_GCM, &raw[..])
            .map_err(|_| Error::KeyringFormat("invalid AES-256 key".into()))?;
        Ok(KeyEntry {
            raw,
            aead: LessSafeKey::new(unbound),
            sealed: AtomicU64::new(0),
        })
    }
}

/// A set of AES-256-GCM keys with `u32` ids, one of them primary, plus a stable pepper.
///
/// * [`seal`](Keyring::seal) always uses the primary key and a fresh 96-bit nonce from
///   the system generator; [`open`](Keyring::open) uses the key the blob names.
/// * The pepper keys API-key hashes and blind indexes. It is not rotated with the
///   AEAD keys, because rotating it would invalidate every stored hash.
///
/// `Keyring` is `Send + Sync`; share it as `Arc<Keyring>`.
pub struct Keyring {
    keys: BTreeMap<u32, KeyEntry>,
    primary: u32,
    /// Highest key id ever issued, so retired ids are never reused.
    last_key_id: u32,
    pepper: Zeroizing<[u8; KEY_LEN]>,
    api_key_hmac: hmac::Key,
    blind_index_hmac: hmac::Key,
    seal_limit: u64,
    rng: SystemRandom,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.key_ids())
            .field("primary", &self.primary)
            .field("seal_limit", &self.seal_limit)
            .field("keys", &crate::secret::REDACTED)
            .field("pepper", &crate::secret::REDACTED)
            .finish()
    }
}

/// Derives a purpose-specific HMAC key from the pepper, so that API-key hashes and blind
/// indexes can never collide with each other.
fn pepper_subkey(pepper: &[u8; KEY_LEN], label: &str) -> hmac::Key {
    let root = hmac::Key::new(hmac::HMAC_SHA256, pepper);
    let derived = hmac::sign(&root, label.as_bytes());
    hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
}

impl Keyring {
    /// Assembles a keyring from raw parts. `keys` must contain `primary`.
    pub(crate) fn from_parts(
        pepper: Zeroizing<[u8; KEY_LEN]>,
        keys: Vec<(u32, Zeroizing<[u8; KEY_LEN]>)>,
        primary: u32,
        last_key_id: Option<u32>,
    ) -> Result<Keyring> {
        let mut map = BTreeMap::new();
        for (id, raw) in keys {
            if id == 0 {
                return Err(Error::KeyringFormat("key id 0 is reserved".into()));
            }
            if map.insert(id, KeyEntry::new(raw)?).is_some() {
                return Err(Error::KeyringFormat(format!("key id {id} appears twice")));
            }
        }
        if !map.contains_key(&primary) {
            return Err(Error::KeyringFormat(format!(
                "primary key id {primary} is not in the keyring"
            )));
        }
        let max_id = map.keys().next_back().copied().unwrap_or(0);
        let last_key_id = last_key_id.unwrap_or(max_id).max(max_id);
        Ok(Keyring {
            api_key_hmac: pepper_subkey(&pepper, "xrole/v1|api-key"),
            blind_index_hmac: pepper_subkey(&pepper, "xrole/v1|blind-index"),
            keys: map,
            primary,
            last_key_id,
            pepper,
            seal_limit: DEFAULT_SEAL_LIMIT,
            rng: SystemRandom::new(),
        })
    }

    fn random_key(rng: &SystemRandom) -> Result<Zeroizing<[u8; KEY_LEN]>> {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        fill_random(rng, &mut k[..])?;
        Ok(k)
    }

    /// A new keyring with one fresh primary key (id 1) and a fresh pepper.
    pub fn generate() -> Result<Keyring> {
        let rng = SystemRandom::new();
        let pepper = Self::random_key(&rng)?;
        let key = Self::random_key(&rng)?;
        Self::from_parts(pepper, vec![(1, key)], 1, None)
    }

    /// Loads the keyring text (see the crate README for the format) from environment variable `var`.
    pub fn from_env(var: &str) -> Result<Keyring> {
        let text =
            Zeroizing::new(std::env::var(var).map_err(|_| Error::MissingEnv(var.to_owned()))?);
        Self::parse(&text)
    }

    /// Loads the keyring text from `path`, refusing a file that group or others may access.
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(Error::InsecureKeyringFile {
                    path: path.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        let mut text = Zeroizing::new(String::new());
        std::io::Read::read_to_string(&mut &file, &mut text).map_err(io)?;
        Self::parse(&text)
    }

    /// Writes the keyring text to `path` with mode 0600, atomically (temporary file + rename).
    pub fn write_file(&self, path: &Path) -> Result<()> {
        let io = |source| Error::Io {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file_name = path.file_name().ok_or_else(|| {
            io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "no file name",
            ))
        })?;
        let mut suffix = [0u8; 8];
        fill_random(&self.rng, &mut suffix)?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}", u64::from_be_bytes(suffix)));
        let tmp = dir.join(tmp_name);
        let text = self.to_text();
        let result = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp)?;
            std::io::Write::write_all(&mut file, text.expose_secret().as_bytes())?;
            std::io::Write::write_all(&mut file, b"\n")?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Serializes the keyring (the format [`parse`](Keyring::parse), [`from_env`](Keyring::from_env)
    /// and [`from_file`](Keyring::from_file) read).
    pub fn to_text(&self) -> SecretString {
        let mut s = String::with_capacity(64 + self.keys.len() * 64);
        s.push_str(TEXT_HEADER);
        s.push_str(";pepper=");
        s.push_str(&B64.encode(&self.pepper[..]));
        s.push_str(&format!(
            ";primary={};last_key_id={}",
            self.primary, self.last_key_id
        ));
        for (id, entry) in &self.keys {
            s.push_str(&format!(";key.{id}="));
            s.push_str(&B64.encode(&entry.raw[..]));
        }
        SecretString::new(s)
    }

    /// Parses keyring text. Error messages never quote key material.
    pub fn parse(text: &str) -> Result<Keyring> {
        let fields = parse_fields(text, TEXT_HEADER)?;
        if let Some((name, _)) = fields.extra.first() {
            return Err(Error::KeyringFormat(format!("unknown item `{name}`")));
        }
        let pepper = decode_key(fields.pepper.ok_or_else(|| missing("pepper"))?, "pepper")?;
        let mut keys = Vec::with_capacity(fields.keys.len());
        for (id, value) in fields.keys {
            keys.push((id, decode_key(value, "key")?));
        }
        if keys.is_empty() {
            return Err(missing("key.<id>"));
        }
        let primary = fields.primary.ok_or_else(|| missing("primary"))?;
        Self::from_parts(pepper, keys, primary, fields.last_key_id)
    }

    /// Sets the per-key seal ceiling (default [`DEFAULT_SEAL_LIMIT`], at most [`MAX_SEAL_LIMIT`]).
    ///
    /// Counters live in memory: each process counts its own seals from zero.
    pub fn set_seal_limit(&mut self, limit: u64) -> Result<()> {
        if limit > MAX_SEAL_LIMIT {
            return Err(Error::SealLimitTooHigh(limit));
        }
        self.seal_limit = limit;
        Ok(())
    }

    /// Builder form of [`set_seal_limit`](Keyring::set_seal_limit).
    pub fn with_seal_limit(mut self, limit: u64) -> Result<Keyring> {
        self.set_seal_limit(limit)?;
        Ok(self)
    }

    /// The per-key seal ceiling.
    pub fn seal_limit(&self) -> u64 {
        self.seal_limit
    }

    /// How many blobs this process has sealed with `key_id`.
    pub fn seal_count(&self, key_id: u32) -> Option<u64> {
        self.keys
            .get(&key_id)
            .map(|e| e.sealed.load(Ordering::Relaxed).min(self.seal_limit))
    }

    /// Seals `plaintext` under the primary key:
    /// `0x01 | key_id u32 BE | nonce 12 B | ciphertext + 16 B tag`.
    ///
    /// Fails with [`Error::SealLimitReached`] once the primary key has sealed
    /// [`seal_limit`](Keyring::seal_limit) blobs in this process.
    pub fn seal(&self, plaintext: &[u8], aad: &Aad) -> Result<Vec<u8>> {
        let id = self.primary;
        // `let else` rather than `ok_or`: no error value is built and dropped on success.
        let Some(entry) = self.keys.get(&id) else {
            return Err(Error::UnknownKeyId(id));
        };
        if entry.sealed.fetch_add(1, Ordering::Relaxed) >= self.seal_limit {
            return Err(Error::SealLimitReached { key_id: id });
        }
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&self.rng, &mut nonce)?;
        let mut out = Vec::with_capacity(BLOB_OVERHEAD + plaintext.len());
        out.push(BLOB_VERSION);
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = entry
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_bytes()),
                &mut out[HEADER_LEN + NONCE_LEN..],
            )
            .map_err(|_| Error::Encrypt)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Reads a blob's header: its key id. Never tries other keys.
    fn blob_key_id(blob: &[u8]) -> Result<u32> {
        match *blob {
            [version, ..] if version != BLOB_VERSION => Err(Error::UnsupportedBlobVersion(version)),
            [_, a, b, c, d, ..] if blob.len() >= BLOB_OVERHEAD => {
                Ok(u32::from_be_bytes([a, b, c, d]))
            }
            _ => Err(Error::MalformedBlob),
        }
    }

    /// Opens a blob sealed by any key of this keyring, checking it against `aad`.
    ///
    /// The blob is borrowed, so it is copied into a new buffer that is decrypted in place.
    /// A caller that owns the blob (a row just read, for example) saves the allocation and
    /// the copy with [`open_owned`](Keyring::open_owned).
    pub fn open(&self, blob: &[u8], aad: &Aad) -> Result<SecretBytes> {
        self.open_owned(blob.to_vec(), aad)
    }

    /// Opens a blob the caller owns, checking it against `aad`: the same checks and errors
    /// as [`open`](Keyring::open), without the copy.
    ///
    /// The ciphertext is decrypted in place in the blob's own allocation, which becomes the
    /// returned [`SecretBytes`]; dropping it clears the whole allocation, header and tag
    /// included. On an error the blob is cleared before it is freed.
    pub fn open_owned(&self, blob: Vec<u8>, aad: &Aad) -> Result<SecretBytes> {
        // From here on every path, errors included, clears the buffer on drop.
        let mut secret = SecretBytes::new(blob);
        let buf = secret.buffer_mut();
        let id = Self::blob_key_id(buf)?;
        let Some(entry) = self.keys.get(&id) else {
            return Err(Error::UnknownKeyId(id));
        };
        // `blob_key_id` checked the length: the nonce and the tag are there.
        let Some((header, sealed)) = buf.split_at_mut_checked(HEADER_LEN + NONCE_LEN) else {
            return Err(Error::MalformedBlob);
        };
        let Some(&nonce) = header.last_chunk::<NONCE_LEN>() else {
            return Err(Error::MalformedBlob);
        };
        let len = entry
            .aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                aead::Aad::from(aad.as_bytes()),
                sealed,
            )
            .map_err(|_| Error::Decrypt)?
            .len();
        secret.set_window(HEADER_LEN + NONCE_LEN, len);
        Ok(secret)
    }

    /// Re-seals `blob` under the primary key. A blob already sealed under the primary is
    /// checked (opened) and returned as an unchanged copy.
    pub fn reseal(&self, blob: &[u8], aad: &Aad) -> Result<Vec<u8>> {
        let plaintext = self.open(blob, aad)?;
        if !self.needs_reseal(blob) {
            return Ok(blob.to_vec());
        }
        self.seal(plaintext.expose_secret(), aad)
    }

    /// Whether `blob` is not sealed under the primary key (also true for a malformed blob).
    pub fn needs_reseal(&self, blob: &[u8]) -> bool {
        Self::blob_key_id(blob).map_or(true, |id| id != self.primary)
    }

    /// The key id [`seal`](Keyring::seal) uses.
    pub fn primary_key_id(&self) -> u32 {
        self.primary
    }

    /// Adds a fresh random key (not primary) and returns its id. Ids are never reused.
    pub fn add_key(&mut self) -> Result<u32> {
        let id = self
            .last_key_id
            .checked_add(1)
            .ok_or(Error::KeyIdsExhausted)?;
        let raw = Self::random_key(&self.rng)?;
        self.keys.insert(id, KeyEntry::new(raw)?);
        self.last_key_id = id;
        Ok(id)
    }

    /// Makes `key_id` the key new blobs are sealed with.
    pub fn promote(&mut self, key_id: u32) -> Result<()> {
        if !self.keys.contains_key(&key_id) {
            return Err(Error::KeyNotFound(key_id));
        }
        self.primary = key_id;
        Ok(())
    }

    /// Removes `key_id`; blobs sealed under it no longer open. The primary cannot be retired.
    pub fn retire(&mut self, key_id: u32) -> Result<()> {
        if key_id == self.primary {
            return Err(Error::CannotRetirePrimary(key_id));
        }
        self.keys
            .remove(&key_id)
            .map(drop)
            .ok_or(Error::KeyNotFound(key_id))
    }

    /// All key ids, ascending.
    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Keyed HMAC-SHA256 for uniqueness lookups of secret values (External ID index).
    ///
    /// Uses the keyring's pepper (stable across AEAD key rotation), domain-separated by
    /// `purpose`: the MAC input is `len(purpose) u32 BE | purpose | value`.
    pub fn blind_index(&self, purpose: &str, value: &[u8]) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.blind_index_hmac);
        let len = u32::try_from(purpose.len()).unwrap_or(u32::MAX);
        ctx.update(&len.to_be_bytes());
        ctx.update(purpose.as_bytes());
        ctx.update(value);
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// The API-key hasher keyed by this keyring's pepper.
    pub fn api_key_hasher(&self) -> ApiKeyHasher {
        ApiKeyHasher::new(self.api_key_hmac.clone())
    }

    /// Raw key material, for wrapping under KMS.
    #[cfg(feature = "kms")]
    pub(crate) fn raw_parts(&self) -> (&[u8; KEY_LEN], Vec<(u32, &[u8; KEY_LEN])>) {
        (
            &self.pepper,
            self.keys.iter().map(|(id, e)| (*id, &*e.raw)).collect(),
        )
    }

    #[cfg(feature = "kms")]
    pub(crate) fn last_key_id(&self) -> u32 {
        self.last_key_id
    }
}

fn missing(field: &str) -> Error {
    Error::KeyringFormat(format!("missing `{field}`"))
}

/// The fields of a keyring text, values still encoded.
pub(crate) struct Fields<'a> {
    pub(crate) pepper: Option<&'a str>,
    pub(crate) primary: Option<u32>,
    pub(crate) last_key_id: Option<u32>,
    pub(crate) keys: Vec<(u32, &'a str)>,
    pub(crate) extra: Vec<(&'a str, &'a str)>,
}

/// Splits keyring text into fields. Items are separated by `;` or newlines; blank items and
/// lines starting with `#` are ignored; the first item must be `header`.
pub(crate) fn parse_fields<'a>(text: &'a str, header: &str) -> Result<Fields<'a>> {
    let mut items = text
        .split(['\n', ';'])
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    if items.next() != Some(header) {
        return Err(Error::KeyringFormat(format!(
            "text must start with `{header}`"
        )));
    }
    let mut fields = Fields {
        pepper: None,
        primary: None,
        last_key_id: None,
        keys: Vec::new(),
        extra: Vec::new(),
    };
    for item in items {
        let (name, value) = item
            .split_once('=')
            .map(|(n, v)| (n.trim(), v.trim()))
            .ok_or_else(|| Error::KeyringFormat("every item must be `name=value`".into()))?;
        let dup = || Error::KeyringFormat(format!("`{name}` appears twice"));
        match name {
            "pepper" => {
                if fields.pepper.replace(value).is_some() {
                    return Err(dup());
                }
            }
            "primary" => {
                if fields
                    .primary
                    .replace(parse_id(value, "primary")?)
                    .is_some()
                {
                    return Err(dup());
                }
            }
            "last_key_id" => {
                if fields
                    .last_key_id
                    .replace(parse_id(value, "last_key_id")?)
                    .is_some()
                {
                    return Err(dup());
                }
            }
            _ => {
                if let Some(id) = name.strip_prefix("key.") {
                    fields.keys.push((parse_id(id, "key.<id>")?, value));
                } else if name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    && !name.is_empty()
                {
                    fields.extra.push((name, value));
                } else {
                    return Err(Error::KeyringFormat("unknown item name".into()));
                }
            }
        }
    }
    Ok(fields)
}

fn parse_id(s: &str, what: &str) -> Result<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::KeyringFormat(format!(
            "`{what}` must be a decimal u32"
        )));
    }
    s.parse()
        .map_err(|_| Error::KeyringFormat(format!("`{what}` must be a decimal u32")))
}

fn decode_key(value: &str, what: &str) -> Result<Zeroizing<[u8; KEY_LEN]>> {
    let bytes = Zeroizing::new(
        B64.decode(value)
            .map_err(|_| Error::KeyringFormat(format!("`{what}` is not valid base64")))?,
    );
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(Error::KeyringFormat(format!(
            "`{what}` must decode to {KEY_LEN} bytes"
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}
