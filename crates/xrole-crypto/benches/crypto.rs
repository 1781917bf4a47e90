//! Criterion benchmarks: keyring sealing next to raw ring in the same run (the cases are in
//! `support/mod.rs`, shared with the interleaved `seal_open_ratio`), API-key and webhook
//! verification, and password hashing at the production parameters.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use xrole_crypto::{ApiKey, Keyring, WebhookSecret, password};

mod support;
use support::SealOpen;

fn seal_open(c: &mut Criterion) {
    for size in [64usize, 4096] {
        let case = SealOpen::new(size);
        let mut group = c.benchmark_group(format!("seal_open/{size}B"));
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_function("ring_less_safe_key", |b| {
            b.iter(|| case.ring_less_safe_key())
        });
        group.bench_function("xrole_keyring", |b| b.iter(|| case.xrole_keyring()));
        group.bench_function("xrole_keyring_owned", |b| {
            b.iter(|| case.xrole_keyring_owned())
        });
        group.finish();
    }
}

fn api_keys(c: &mut Criterion) {
    let keyring = Keyring::generate().unwrap();
    let hasher = keyring.api_key_hasher();
    let key = ApiKey::generate();
    let stored = hasher.hash(&key);
    let token = key.expose_secret().to_owned();
    let mut group = c.benchmark_group("api_key");
    group.bench_function("verify", |b| {
        b.iter(|| assert!(hasher.verify(black_box(&key), black_box(&stored))))
    });
    group.bench_function("parse_and_verify", |b| {
        b.iter(|| {
            let parsed = ApiKey::parse(black_box(&token)).unwrap();
            assert!(hasher.verify(&parsed, black_box(&stored)));
        })
    });
    group.bench_function("reject_bad_checksum", |b| {
        let mut bad = token.clone().into_bytes();
        bad[30] = if bad[30] == b'a' { b'b' } else { b'a' };
        let bad = String::from_utf8(bad).unwrap();
        b.iter(|| assert!(ApiKey::parse(black_box(&bad)).is_err()))
    });
    group.finish();
}

fn webhooks(c: &mut Criterion) {
    let secret = WebhookSecret::generate();
    let body = vec![b'x'; 1024];
    let ts = 1_700_000_000i64;
    let sig = secret.sign("msg_2Lb1dmrwbB3gNEpLsuSjqX7W1hU", ts, &body);
    let now = UNIX_EPOCH + Duration::from_secs(ts as u64);
    let mut group = c.benchmark_group("webhook");
    group.throughput(Throughput::Bytes(1024));
    group.bench_function("verify_1KiB", |b| {
        b.iter(|| {
            secret
                .verify(
                    "msg_2Lb1dmrwbB3gNEpLsuSjqX7W1hU",
                    "1700000000",
                    black_box(&sig),
                    black_box(&body),
                    now,
                )
                .unwrap()
        })
    });
    group.bench_function("sign_1KiB", |b| {
        b.iter(|| black_box(secret.sign("msg_1", ts, black_box(&body))))
    });
    group.finish();
}

fn passwords(c: &mut Criterion) {
    let mut group = c.benchmark_group("password");
    group.sample_size(10);
    group.bench_function("argon2id_hash_m19456_t2_p1", |b| {
        b.iter(|| password::hash(black_box("correct horse battery")).unwrap())
    });
    let phc = password::hash("correct horse battery").unwrap();
    group.bench_function("argon2id_verify", |b| {
        b.iter(|| assert!(password::verify(black_box("correct horse battery"), &phc).unwrap()))
    });
    group.bench_function("dummy_verify", |b| {
        b.iter(|| password::dummy_verify(black_box("unknown user")))
    });
    group.finish();
}

criterion_group!(benches, seal_open, api_keys, webhooks, passwords);
criterion_main!(benches);
