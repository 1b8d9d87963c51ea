//! What the peak consisted of: per-site figures at the high-water mark,
//! kept after the memory is freed, and restarted by `reset_peak`.

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Materialises every row at once: the peak is all rows.
#[inline(never)]
fn collect_all_rows(rows: usize) -> Vec<Vec<u8>> {
    // Through `black_box`: an optimised build may otherwise make the
    // `collect` a tail call, and this function would not be on its stack.
    black_box((0..rows).map(|_| vec![7u8; 1000]).collect())
}

fn peak_of(snapshot: &alloc_track::Snapshot, function: &str) -> (u64, u64) {
    snapshot
        .sites()
        .iter()
        .filter(|s| common::passes_through(&s.stack(), function))
        .fold((0, 0), |(b, n), s| {
            (b + s.peak_bytes(), n + s.peak_blocks())
        })
}

// One test function: the peak is process-wide, so phases must not
// interleave with another test's.
#[test]
fn the_peak_breakdown_names_what_was_alive_at_the_high_water_mark() {
    let rows = black_box(collect_all_rows(20_000));
    drop(rows);
    let after_job = snapshot();
    let (peak_bytes, peak_blocks) = peak_of(&after_job, "collect_all_rows");
    // 20,000 rows of 1000 bytes were alive at once, plus the outer vector;
    // the breakdown may be taken up to the 2% margin before the very top.
    let all = 20_000 * 1000 + 20_000 * 24;
    assert!(peak_bytes <= all, "{peak_bytes} > {all}");
    assert!(
        peak_bytes >= all * 97 / 100,
        "breakdown shows {peak_bytes} of {all} bytes"
    );
    assert!(peak_blocks >= 19_000, "{peak_blocks}");
    assert_eq!(
        common::figures(&after_job, "collect_all_rows").live_bytes,
        0
    );
    assert!(after_job.peak_bytes() >= all);

    // The dump carries the breakdown, and it validates.
    let dump = after_job.to_dump();
    let dumped: u64 = dump.peak_sites.iter().map(|p| p.bytes).sum();
    assert!(dumped >= peak_bytes && dumped <= dump.totals.peak_bytes);
    dump.validate().unwrap();

    // After a reset, the peak is today's heap and the old rows are gone
    // from the breakdown.
    alloc_track::reset_peak();
    let reset = snapshot();
    assert!(
        reset.peak_bytes() < after_job.peak_bytes() / 2,
        "{} vs {}",
        reset.peak_bytes(),
        after_job.peak_bytes()
    );
    assert_eq!(peak_of(&reset, "collect_all_rows"), (0, 0));

    // A smaller second phase has its own, smaller peak.
    let rows = black_box(collect_all_rows(2_000));
    drop(rows);
    let second = snapshot();
    let (second_peak, _) = peak_of(&second, "collect_all_rows");
    assert!(
        (2_000 * 1000 * 90 / 100..=2_000 * 1024).contains(&second_peak),
        "{second_peak}"
    );
}
