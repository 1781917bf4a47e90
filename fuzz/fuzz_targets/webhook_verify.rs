//! `WebhookSecret::verify` with arbitrary headers and bodies.
//!
//! * Never panics.
//! * Accepts only when the signature list holds the exact signature of
//!   (id, timestamp, body) and the timestamp is within tolerance.
//! * A genuine signature hidden among arbitrary entries is found when it is
//!   among the first 16 (the verifier's bound on work); the same headers
//!   over a different body or id are refused.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use xrole_crypto::{WEBHOOK_TOLERANCE_SECS, WebhookSecret};

#[derive(Debug, Arbitrary)]
struct Input {
    msg_id: String,
    timestamp: String,
    signatures: String,
    body: Vec<u8>,
    now: u32,
    /// Seconds between the signed timestamp and the clock, for the genuine case.
    skew: i16,
    before: String,
    after: String,
}

fn secret() -> &'static WebhookSecret {
    static S: OnceLock<WebhookSecret> = OnceLock::new();
    S.get_or_init(|| WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap())
}

fn at(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs.max(0).unsigned_abs())
}

fuzz_target!(|i: Input| {
    let s = secret();
    let now = i64::from(i.now);

    // Arbitrary headers: accepted only with the exact expected signature.
    if s.verify(&i.msg_id, &i.timestamp, &i.signatures, &i.body, at(now))
        .is_ok()
    {
        let ts: i64 = i.timestamp.parse().unwrap();
        assert!((ts - now).abs() <= WEBHOOK_TOLERANCE_SECS);
        let expected = s.sign(&i.msg_id, ts, &i.body);
        assert!(
            i.signatures.split(' ').any(|e| e == expected),
            "accepted a signature list without the genuine signature"
        );
    }

    // A genuine signature among arbitrary entries.
    if i.msg_id.is_empty() || i.msg_id.contains('.') {
        return;
    }
    let ts = now + 40_000;
    let genuine = s.sign(&i.msg_id, ts, &i.body);
    let list = format!("{} {genuine} {}", i.before, i.after);
    let clock = at(ts + i64::from(i.skew));
    // The verifier reads at most 16 non-empty entries (a bound on the work).
    let position = i.before.split(' ').filter(|e| !e.is_empty()).count();
    let within = i64::from(i.skew).abs() <= WEBHOOK_TOLERANCE_SECS && position < 16;
    let r = s.verify(&i.msg_id, &ts.to_string(), &list, &i.body, clock);
    assert_eq!(r.is_ok(), within, "genuine signature: {r:?}");
    let mut other = i.body.clone();
    other.push(0);
    assert!(
        s.verify(&i.msg_id, &ts.to_string(), &list, &other, clock)
            .is_err()
    );
    let other_id = format!("{}x", i.msg_id);
    assert!(
        s.verify(&other_id, &ts.to_string(), &list, &i.body, clock)
            .is_err()
    );
});
