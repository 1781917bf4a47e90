//! Standard Webhooks v1 signatures (HMAC-SHA256 over `id.timestamp.body`).

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ring::hmac;
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

use crate::encoding::fill_random;
use crate::secret::{REDACTED, constant_time_eq};
use crate::{Error, Result};

/// The prefix of every webhook secret.
pub const WEBHOOK_SECRET_PREFIX: &str = "whsec_";
/// How far a webhook timestamp may be from `now`, in seconds, either way.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;
/// Secret length produced by [`WebhookSecret::generate`].
const GENERATED_LEN: usize = 32;
/// Secret lengths [`WebhookSecret::parse`] accepts (the Standard Webhooks range).
const MIN_LEN: usize = 24;
const MAX_LEN: usize = 64;
/// At most this many entries of a signature header are examined.
const MAX_SIGNATURES: usize = 16;

/// A Standard Webhooks signing secret: `whsec_` + base64 of 24..=64 random bytes.
pub struct WebhookSecret {
    text: Zeroizing<String>,
    key: hmac::Key,
}

impl WebhookSecret {
    /// A fresh secret of 32 random bytes.
    ///
    /// # Panics
    /// Only if the operating system's random generator fails.
    #[expect(
        clippy::expect_used,
        reason = "a failing OS RNG leaves no safe way to continue"
    )]
    pub fn generate() -> WebhookSecret {
        Self::try_generate().expect("system random number generator failed")
    }

    /// [`generate`](WebhookSecret::generate), reporting a random-generator failure as an error.
    pub fn try_generate() -> Result<WebhookSecret> {
        let mut raw = Zeroizing::new([0u8; GENERATED_LEN]);
        fill_random(&SystemRandom::new(), &mut raw[..])?;
        let mut text = Zeroizing::new(String::with_capacity(WEBHOOK_SECRET_PREFIX.len() + 44));
        text.push_str(WEBHOOK_SECRET_PREFIX);
        B64.encode_string(&raw[..], &mut text);
        Ok(WebhookSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw[..]),
            text,
        })
    }

    /// Parses `whsec_<base64>` (standard alphabet, padded) of 24..=64 bytes.
    pub fn parse(s: &str) -> Result<WebhookSecret> {
        let b64 = s
            .strip_prefix(WEBHOOK_SECRET_PREFIX)
            .ok_or(Error::InvalidWebhookSecret)?;
        // Bound the work before decoding anything.
        if b64.len() > 4 * MAX_LEN.div_ceil(3) {
            return Err(Error::InvalidWebhookSecret);
        }
        let raw = Zeroizing::new(B64.decode(b64).map_err(|_| Error::InvalidWebhookSecret)?);
        if !(MIN_LEN..=MAX_LEN).contains(&raw.len()) {
            return Err(Error::InvalidWebhookSecret);
        }
        Ok(WebhookSecret {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
            text: Zeroizing::new(s.to_owned()),
        })
    }

    /// The `whsec_...` text.
    pub fn expose_secret(&self) -> &str {
        &self.text
    }

    fn tag(&self, msg_id: &str, timestamp: &str, body: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(msg_id.as_bytes());
        ctx.update(b".");
        ctx.update(timestamp.as_bytes());
        ctx.update(b".");
        ctx.update(body);
        ctx.sign()
    }

    /// The `webhook-signature` header value: `v1,<base64 HMAC-SHA256(id.timestamp.body)>`.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.tag(msg_id, &timestamp.to_string(), body);
        let mut out = String::with_capacity(3 + 44);
        out.push_str("v1,");
        B64.encode_string(tag.as_ref(), &mut out);
        out
    }

    /// Verifies the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers.
    ///
    /// * `msg_id` must be non-empty and contain no `.`; `timestamp` must be decimal digits
    ///   within ±[`WEBHOOK_TOLERANCE_SECS`] of `now` (an injected clock).
    /// * `signatures` is a space-separated list (several during secret rotation); entries
    ///   other than `v1,<base64>` and entries with bad base64 never match. Comparison is
    ///   constant time.
    pub fn verify(
        &self,
        msg_id: &str,
        timestamp: &str,
        signatures: &str,
        body: &[u8],
        now: SystemTime,
    ) -> Result<()> {
        if msg_id.is_empty() || msg_id.contains('.') {
            return Err(Error::WebhookHeader);
        }
        if timestamp.is_empty()
            || timestamp.len() > 18
            || !timestamp.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(Error::WebhookHeader);
        }
        let ts: i64 = timestamp.parse().map_err(|_| Error::WebhookHeader)?;
        let now = unix_seconds(now);
        if ts.abs_diff(now) > WEBHOOK_TOLERANCE_SECS.unsigned_abs() {
            return Err(Error::WebhookTimestamp);
        }
        let expected = self.tag(msg_id, timestamp, body);
        let mut decoded = [0u8; 33];
        let mut matched = false;
        for entry in signatures
            .split(' ')
            .filter(|e| !e.is_empty())
            .take(MAX_SIGNATURES)
        {
            let Some(sig) = entry.strip_prefix("v1,") else {
                continue;
            };
            // A 32-byte MAC is 44 base64 characters; anything longer cannot match.
            if sig.len() > 44 {
                continue;
            }
            if let Ok(n) = B64.decode_slice(sig, &mut decoded) {
                // No early exit: every entry is compared.
                matched |= constant_time_eq(&decoded[..n], expected.as_ref());
            }
        }
        if matched {
            Ok(())
        } else {
            Err(Error::WebhookSignature)
        }
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl std::str::FromStr for WebhookSecret {
    type Err = Error;
    fn from_str(s: &str) -> Result<WebhookSecret> {
        WebhookSecret::parse(s)
    }
}
