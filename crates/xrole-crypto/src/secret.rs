//! Secret newtypes: zeroized on drop, redacted in `Debug`, no `Display`/`Clone`/`Serialize`.

use zerocopy::IntoBytes;
use zeroize::Zeroizing;

pub(crate) const REDACTED: &str = "** redacted **";

/// Secret bytes (for example an opened blob). Zeroized on drop.
///
/// The bytes live in a buffer of 64-bit words: zeroizing clears it a word at a time
/// instead of a byte at a time, which keeps opening a 4 KiB blob close to raw AES-GCM.
pub struct SecretBytes {
    words: Zeroizing<Vec<u64>>,
    len: usize,
}

impl SecretBytes {
    /// Wraps `bytes`; they are zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mut secret = Self::zeroed(bytes.len());
        secret.bytes_mut().copy_from_slice(&bytes);
        secret
    }

    /// A zero-filled secret of `len` bytes, to be written in place.
    pub(crate) fn zeroed(len: usize) -> Self {
        Self {
            words: Zeroizing::new(vec![0u64; len.div_ceil(8)]),
            len,
        }
    }

    /// The secret bytes. Every read is explicit.
    pub fn expose_secret(&self) -> &[u8] {
        self.words.as_bytes().get(..self.len).unwrap_or_default()
    }

    /// The whole writable buffer (its length is the current length).
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        self.words.as_mut_bytes().get_mut(..len).unwrap_or_default()
    }

    /// Shortens the secret to `len` bytes; the bytes cut off stay in the buffer until
    /// drop zeroizes it.
    pub(crate) fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

impl std::fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Secret text (for example a serialized keyring). Zeroized on drop.
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps `text`; it is zeroized when the value is dropped.
    pub fn new(text: String) -> Self {
        Self(Zeroizing::new(text))
    }

    /// The secret text. Every read is explicit.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}
