//! The broker next to aws-config's `AssumeRoleProvider` with the SDK's default
//! (lazy) identity cache, in one run.
//!
//! `cargo bench -p xrole-assume --bench broker` prints, before criterion's timings:
//! - STS AssumeRole calls for 10,000 requests over 100 links, counted by the
//!   testkit's STS gate in front of moto;
//! - resident memory for 10,000 cached sessions.
//!
//! Criterion then times a cache hit and a whole SDK call whose credentials come from
//! each cache (the HTTP layer answers in memory, so only the SDK and the cache count).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_async::rt::sleep::{SharedAsyncSleep, TokioSleep};
use aws_smithy_async::time::{SharedTimeSource, SystemTimeSource};
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_types::SdkConfig;
use aws_types::region::Region;
use criterion::{Criterion, Throughput};
use futures::StreamExt;
use support::{CannedSts, rss_bytes};
use tokio::runtime::Runtime;
use xrole_assume::{AssumeSpec, Broker, SessionName};
use xrole_crypto::ExternalId;

const LINKS: usize = 100;
const REQUESTS: usize = 10_000;
const SESSIONS: usize = 10_000;
const CONCURRENCY: usize = 64;

fn spec(arn: &str, ext: &ExternalId) -> AssumeSpec {
    AssumeSpec::builder(
        arn.parse().unwrap(),
        ext.clone(),
        SessionName::for_tenant("acme", "bench").unwrap(),
    )
    .build()
    .unwrap()
}

fn arn(i: usize) -> String {
    format!("arn:aws:iam::{:012}:role/xrole-access", 200_000_000_000 + i)
}

async fn assume_role_provider(base: &SdkConfig, arn: &str, ext: &ExternalId) -> AssumeRoleProvider {
    AssumeRoleProvider::builder(arn)
        .external_id(ext.as_str())
        .session_name("xrole-acme-bench")
        .configure(base)
        .build()
        .await
}

/// A client whose credentials come from `config` but whose requests are answered in memory.
fn canned_client(config: &SdkConfig, canned: &CannedSts) -> aws_sdk_sts::Client {
    aws_sdk_sts::Client::new(
        &config
            .to_builder()
            .http_client(SharedHttpClient::new(canned.clone()))
            .build(),
    )
}

fn with_clock(config: SdkConfig) -> SdkConfig {
    config
        .to_builder()
        .time_source(SharedTimeSource::new(SystemTimeSource::new()))
        .sleep_impl(SharedAsyncSleep::new(TokioSleep::new()))
        .build()
}

/// Sends `n` requests, `CONCURRENCY` at a time; request `i` goes to link `i % links`.
async fn drive<F, Fut>(n: usize, make: F) -> Duration
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = ()>,
{
    let t = Instant::now();
    futures::stream::iter(0..n)
        .map(make)
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
    t.elapsed()
}

async fn report_sts_calls() {
    let aws = xrole_testkit::Aws::start().await.unwrap();
    let customer = aws.customer().await.unwrap();
    let ext = ExternalId::generate();
    let mut roles = Vec::new();
    for i in 0..LINKS {
        roles.push(
            customer
                .create_xrole_role(
                    &format!("xrole-{i}"),
                    &aws.saas_principal_arn(),
                    ext.as_str(),
                )
                .await
                .unwrap(),
        );
    }
    let base = with_clock(aws.saas_config());
    let canned = CannedSts::default();
    let region = Region::new("us-east-1");
    let gate = aws.gate();
    println!(
        "STS AssumeRole calls for {REQUESTS} requests over {LINKS} links ({CONCURRENCY} in flight), counted at the gate:"
    );

    // xrole-assume, one long-lived client per link.
    gate.reset_counters();
    let broker = Broker::new(&base);
    let clients: Vec<_> = roles
        .iter()
        .map(|r| canned_client(&broker.sdk_config(&spec(r, &ext), region.clone()), &canned))
        .collect();
    let took = drive(REQUESTS, |i| {
        let c = clients[i % LINKS].clone();
        async move {
            c.get_caller_identity().send().await.unwrap();
        }
    })
    .await;
    println!(
        "  xrole-assume Broker, one client per link:       {:>6} calls in {took:.2?}",
        gate.count("AssumeRole")
    );

    // xrole-assume, a new client for every request (what a request handler does).
    gate.reset_counters();
    let broker = Broker::new(&base);
    let specs: Vec<_> = roles.iter().map(|r| spec(r, &ext)).collect();
    let took = drive(REQUESTS, |i| {
        let c = canned_client(
            &broker.sdk_config(&specs[i % LINKS], region.clone()),
            &canned,
        );
        async move {
            c.get_caller_identity().send().await.unwrap();
        }
    })
    .await;
    println!(
        "  xrole-assume Broker, new client per request:    {:>6} calls in {took:.2?}",
        gate.count("AssumeRole")
    );

    // aws-config, one provider and client (with its lazy identity cache) per link.
    gate.reset_counters();
    let mut clients = Vec::new();
    for r in &roles {
        let provider = assume_role_provider(&base, r, &ext).await;
        let config = base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        clients.push(canned_client(&config, &canned));
    }
    let took = drive(REQUESTS, |i| {
        let c = clients[i % LINKS].clone();
        async move {
            c.get_caller_identity().send().await.unwrap();
        }
    })
    .await;
    println!(
        "  aws-config AssumeRoleProvider, one per link:    {:>6} calls in {took:.2?}",
        gate.count("AssumeRole")
    );

    // aws-config, a new provider and client per request: every request assumes the
    // role. 1,000 requests only, so the run stays short.
    gate.reset_counters();
    let n = REQUESTS / 10;
    let took = drive(n, |i| {
        let (base, r, ext, canned) = (base.clone(), roles[i % LINKS].clone(), &ext, &canned);
        async move {
            let provider = assume_role_provider(&base, &r, ext).await;
            let config = base
                .to_builder()
                .credentials_provider(SharedCredentialsProvider::new(provider))
                .build();
            canned_client(&config, canned)
                .get_caller_identity()
                .send()
                .await
                .unwrap();
        }
    })
    .await;
    println!(
        "  aws-config AssumeRoleProvider, new per request: {:>6} calls in {took:.2?} (for {n} requests)",
        gate.count("AssumeRole")
    );
}

async fn report_memory() {
    let canned = CannedSts::default();
    let base = with_clock(canned.base_config("us-east-1"));
    let ext = ExternalId::generate();
    let specs: Vec<_> = (0..SESSIONS).map(|i| spec(&arn(i), &ext)).collect();
    let arns: Vec<_> = (0..SESSIONS).map(arn).collect();
    println!("Resident memory for {SESSIONS} cached sessions (RSS growth, /proc/self/statm):");

    let broker = Broker::builder(&base)
        .max_sessions(2 * SESSIONS as u64)
        .build();
    broker
        .credentials(&spec(&arn(SESSIONS + 1), &ext))
        .await
        .unwrap(); // warm-up
    let before = rss_bytes();
    for s in &specs {
        broker.credentials(s).await.unwrap();
    }
    broker.run_pending_tasks().await;
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "  xrole-assume Broker:                                 {:>6.1} MiB, {:>5.2} KiB per session ({} entries)",
        grown as f64 / 1048576.0,
        grown as f64 / 1024.0 / SESSIONS as f64,
        broker.metrics().entries
    );

    // aws-config caches a session inside a client's identity cache: one provider
    // (with its STS client) and one client per session.
    let warm = assume_role_provider(&base, &arn(SESSIONS + 2), &ext).await;
    let warm_cfg = base
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(warm))
        .build();
    canned_client(&warm_cfg, &canned)
        .get_caller_identity()
        .send()
        .await
        .unwrap();
    let before = rss_bytes();
    let mut keep = Vec::with_capacity(SESSIONS);
    for a in &arns {
        let provider = assume_role_provider(&base, a, &ext).await;
        let config = base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        let client = canned_client(&config, &canned);
        client.get_caller_identity().send().await.unwrap();
        keep.push(client);
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "  aws-config AssumeRoleProvider + client per session:  {:>6.1} MiB, {:>5.2} KiB per session",
        grown as f64 / 1048576.0,
        grown as f64 / 1024.0 / SESSIONS as f64
    );
    black_box((&broker, &keep));
}

fn bench_hits(c: &mut Criterion, rt: &Runtime) {
    let canned = CannedSts::default();
    let base = with_clock(canned.base_config("us-east-1"));
    let ext = ExternalId::generate();
    let broker = Broker::builder(&base)
        .max_sessions(2 * SESSIONS as u64)
        .build();
    let one = spec(&arn(0), &ext);
    let many: Vec<_> = (0..SESSIONS).map(|i| spec(&arn(i), &ext)).collect();
    rt.block_on(async {
        for s in &many {
            broker.credentials(s).await.unwrap();
        }
    });

    let mut g = c.benchmark_group("cache_hit");
    g.throughput(Throughput::Elements(1));
    g.bench_function("xrole_broker_one_session", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(broker.credentials(black_box(&one)).await.unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("xrole_broker_10k_sessions", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for i in 0..iters as usize {
                    black_box(
                        broker
                            .credentials(black_box(&many[i % SESSIONS]))
                            .await
                            .unwrap(),
                    );
                }
                t.elapsed()
            })
        })
    });
    g.finish();
    // Misses beyond the 10,000 of the warm-up would mean the hit timings include fetches.
    let m = broker.metrics();
    println!(
        "broker after the hit benchmarks: {} misses, {} hits, {} entries",
        m.misses, m.hits, m.entries
    );

    // A whole SDK call (GetCallerIdentity, answered in memory) on cached credentials.
    let ours = canned_client(&broker.sdk_config(&one, Region::new("us-east-1")), &canned);
    let provider = rt.block_on(assume_role_provider(&base, &arn(0), &ext));
    let theirs = canned_client(
        &base
            .to_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build(),
        &canned,
    );
    let mut g = c.benchmark_group("sdk_call_on_cached_credentials");
    g.throughput(Throughput::Elements(1));
    for (name, client) in [
        ("xrole_broker_sdk_config", &ours),
        ("aws_config_assume_role_provider", &theirs),
    ] {
        rt.block_on(client.get_caller_identity().send()).unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let t = Instant::now();
                    for _ in 0..iters {
                        black_box(client.get_caller_identity().send().await.unwrap());
                    }
                    t.elapsed()
                })
            })
        });
    }
    g.finish();
}

fn main() {
    // One core: a current-thread runtime, as the hit-rate target asks.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `cargo bench` passes --bench; `cargo test --benches` does not: keep that quick.
    if std::env::args().any(|a| a == "--bench") {
        rt.block_on(report_memory());
        rt.block_on(report_sts_calls());
    }
    let mut c = Criterion::default().configure_from_args();
    bench_hits(&mut c, &rt);
    c.final_summary();
}
