//! Secret newtypes: zeroized on drop, redacted in `Debug`, no `Display`/`Clone`/`Serialize`.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

pub(crate) const REDACTED: &str = "** redacted **";

/// Secret bytes (for example an opened blob). Zeroized on drop.
///
/// The secret is a window into a byte buffer that drop clears whole, spare capacity
/// included. For a blob opened with [`Keyring::open_owned`](crate::Keyring::open_owned)
/// the buffer is the blob's own allocation, so its header and tag are cleared with the
/// plaintext. Clearing is [`zeroize`]'s slice zeroization: on x86-64 and aarch64 one bulk
/// fill followed by an optimisation barrier, not a volatile write per byte.
pub struct SecretBytes {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl SecretBytes {
    /// Wraps `bytes` without copying them; they are zeroized when the value is dropped.
    pub fn new(bytes: Vec<u8>) -> Self {
        let end = bytes.len();
        Self {
            buf: bytes,
            start: 0,
            end,
        }
    }

    /// The secret bytes. Every read is explicit.
    pub fn expose_secret(&self) -> &[u8] {
        self.buf.get(self.start..self.end).unwrap_or_default()
    }

    /// The whole buffer, whatever the window, to be written in place.
    pub(crate) fn buffer_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }

    /// Narrows the secret to `len` bytes from `start` of the buffer (clamped to the
    /// buffer). Bytes outside the window stay in the buffer until drop clears it.
    pub(crate) fn set_window(&mut self, start: usize, len: usize) {
        self.start = start.min(self.buf.len());
        self.end = self.start.saturating_add(len).min(self.buf.len());
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.buf.as_mut_slice().zeroize();
        self.buf.spare_capacity_mut().zeroize();
    }
}

impl ZeroizeOnDrop for SecretBytes {}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_is_clamped_to_the_buffer() {
        let mut secret = SecretBytes::new(b"header|plaintext|tag".to_vec());
        assert_eq!(secret.expose_secret(), b"header|plaintext|tag");
        secret.set_window(7, 9);
        assert_eq!(secret.expose_secret(), b"plaintext");
        secret.set_window(17, 100);
        assert_eq!(secret.expose_secret(), b"tag");
        secret.set_window(usize::MAX, usize::MAX);
        assert_eq!(secret.expose_secret(), b"");
        assert_eq!(secret.buffer_mut().len(), 20);
    }
}
