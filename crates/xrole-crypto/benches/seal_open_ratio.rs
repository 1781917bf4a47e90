//! seal+open through the keyring next to raw ring, interleaved.
//!
//! Criterion measures one case after another, so on a shared machine a change of load
//! between two cases moves their ratio by tens of percent. Here the three cases of
//! `support/mod.rs` take turns in batches of 200 seal+opens (the case going first rotates),
//! so load falls on all of them alike. Prints, per size, the median and the minimum time of
//! a seal+open over all batches and the overhead against raw ring (target: at most 10%).
//!
//! `cargo bench -p xrole-crypto --bench seal_open_ratio [-- SECONDS]`, 5 s per size by default.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Instant;

mod support;
use support::SealOpen;

const BATCH: u32 = 200;
const CASES: [&str; 3] = ["ring_less_safe_key", "xrole_keyring", "xrole_keyring_owned"];

fn run(case: &SealOpen, which: usize) {
    match which {
        0 => case.ring_less_safe_key(),
        1 => case.xrole_keyring(),
        _ => case.xrole_keyring_owned(),
    }
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1000.0 {
        format!("{:.2} µs", ns / 1000.0)
    } else {
        format!("{ns:.0} ns")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not: then only check
    // that every case runs, as criterion does.
    if !args.iter().any(|a| a == "--bench") {
        for size in [64usize, 4096] {
            let case = SealOpen::new(size);
            for which in 0..CASES.len() {
                run(&case, which);
            }
        }
        return;
    }
    // The first number is the time per size in seconds.
    let seconds = args
        .iter()
        .find_map(|a| a.parse::<f64>().ok())
        .unwrap_or(5.0);
    for size in [64usize, 4096] {
        let case = SealOpen::new(size);
        for which in 0..CASES.len() {
            for _ in 0..10 * BATCH {
                run(&case, which);
            }
        }
        let mut samples: [Vec<f64>; 3] = Default::default();
        let start = Instant::now();
        let mut rounds = 0usize;
        while start.elapsed().as_secs_f64() < seconds {
            for k in 0..CASES.len() {
                let which = (k + rounds) % CASES.len();
                let t = Instant::now();
                for _ in 0..BATCH {
                    run(&case, which);
                }
                samples[which].push(t.elapsed().as_secs_f64() * 1e9 / f64::from(BATCH));
            }
            rounds += 1;
        }
        for s in &mut samples {
            s.sort_by(f64::total_cmp);
        }
        let median = |s: &[f64]| s[s.len() / 2];
        let (base_median, base_min) = (median(&samples[0]), samples[0][0]);
        println!("seal_open_ratio/{size}B: {rounds} rounds of {BATCH} per case");
        for (which, s) in samples.iter().enumerate() {
            let note = if which == 0 {
                "baseline".to_owned()
            } else {
                let over = (median(s) / base_median - 1.0) * 100.0;
                let over_min = (s[0] / base_min - 1.0) * 100.0;
                let verdict = if over <= 10.0 { "met" } else { "NOT met" };
                format!("median {over:+.1}%, min {over_min:+.1}% (target <= +10%: {verdict})")
            };
            println!(
                "  {:<20} median {:>9}  min {:>9}  {note}",
                CASES[which],
                fmt_ns(median(s)),
                fmt_ns(s[0])
            );
        }
    }
}
