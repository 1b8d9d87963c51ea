//! Sampled mode: exact totals and peak, unbiased per-site estimates (each
//! sample weighted by 1 / (1 - exp(-size / mean))), exact `measure`.

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{measure, snapshot, Mode, Tracker};

const MEAN: u64 = 64 * 1024;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).sampled(MEAN);

#[inline(never)]
fn many_small_blocks(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|_| vec![1u8; 1000]).collect()
}

#[inline(never)]
fn few_large_blocks(count: usize) -> Vec<Vec<u8>> {
    (0..count).map(|_| vec![2u8; 256 * 1024]).collect()
}

#[inline(never)]
fn churn(count: usize) {
    for _ in 0..count {
        black_box(vec![3u8; 200]);
    }
}

/// Estimated (live bytes, total bytes) of the sites through `function`.
fn estimate(snapshot: &alloc_track::Snapshot, function: &str) -> (u64, u64) {
    let f = common::figures(snapshot, function);
    (f.live_bytes, f.total_bytes)
}

fn within(estimate: u64, truth: u64, tolerance: f64) -> bool {
    (estimate as f64 - truth as f64).abs() <= truth as f64 * tolerance
}

fn sampled_mode_estimates_sites_and_keeps_totals_exact() {
    assert_eq!(alloc_track::mode(), Mode::Sampled { mean_bytes: MEAN });
    alloc_track::seed_sampler(42);

    let before = snapshot();
    let small = many_small_blocks(100_000);
    let large = few_large_blocks(200);
    churn(100_000);
    let after = snapshot();

    // Totals are exact: counted for every block, sampled or not.
    let small_truth = 100_000 * 1000 + 100_000 * 24;
    let large_truth = 200 * 256 * 1024 + 200 * 24;
    let churn_truth = 100_000 * 200;
    let allocated = after.total_bytes() - before.total_bytes();
    assert_eq!(allocated, small_truth + large_truth + churn_truth);
    assert_eq!(
        after.total_blocks() - before.total_blocks(),
        100_001 + 201 + 100_000
    );
    assert_eq!(
        after.live_bytes() - before.live_bytes(),
        small_truth + large_truth
    );

    // Per-site figures are estimates. About 1,600 samples fall in the small
    // blocks (100 MB / 64 KiB), so their relative error is about 2.5%; 10%
    // is four standard deviations. Large blocks are nearly always sampled.
    let (small_live, small_total) = estimate(&after, "many_small_blocks");
    assert!(
        within(small_live, small_truth, 0.10),
        "small: {small_live} vs {small_truth}"
    );
    assert!(
        within(small_total, small_truth, 0.10),
        "small total: {small_total}"
    );
    let (large_live, _) = estimate(&after, "few_large_blocks");
    assert!(
        within(large_live, large_truth, 0.05),
        "large: {large_live} vs {large_truth}"
    );
    // Churn: the estimate of what was allocated is near the truth, and
    // every sample's weight left again with its block.
    let (churn_live, churn_total) = estimate(&after, "churn");
    assert_eq!(churn_live, 0);
    assert!(
        within(churn_total, churn_truth, 0.15),
        "churn: {churn_total} vs {churn_truth}"
    );

    // The dump says what it is, and validates.
    let dump = after.to_dump();
    assert_eq!(dump.mode, "sampled");
    assert_eq!(dump.sample_mean_bytes, Some(MEAN));
    dump.validate().unwrap();

    // measure stays exact in sampled mode.
    let (_, diff) = measure(|| {
        for _ in 0..50 {
            black_box(vec![0u8; 100]);
        }
        black_box(Box::new([0u64; 4]))
    });
    assert_eq!(
        (diff.total_blocks(), diff.total_bytes()),
        (51, 50 * 100 + 32),
        "{diff}"
    );
    assert_eq!(
        (diff.retained_blocks(), diff.retained_bytes()),
        (1, 32),
        "{diff}"
    );

    drop(small);
    drop(large);
    let freed = snapshot();
    assert_eq!(freed.live_bytes(), before.live_bytes());
    assert_eq!(estimate(&freed, "many_small_blocks").0, 0);
}

// A plain `main` (the test has `harness = false`): process-wide totals
// are only exact to the byte when no other thread allocates, and the
// libtest harness keeps threads of its own.
fn main() {
    sampled_mode_estimates_sites_and_keeps_totals_exact();
    println!("mode_sampled: 1 passed, 0 failed");
}
