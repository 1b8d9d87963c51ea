//! Snapshots and heapy-style diffs: retained versus net change, site
//! labels naming the allocating function, the peak, the OS figures and the
//! printed tables.

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{snapshot, Tracker};
use common::{diff_figures, figures};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Exactly one allocation of exactly 32 bytes (`format!` may grow its
/// buffer more than once).
fn thirty_two_bytes(value: usize) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(32);
    write!(text, "{value:032}").unwrap();
    text
}

#[inline(never)]
fn fill_cache(cache: &mut Vec<String>, count: usize) {
    for i in 0..count {
        cache.push(thirty_two_bytes(i));
    }
}

#[inline(never)]
fn churn_cache(cache: &mut [String]) {
    for entry in cache.iter_mut() {
        *entry = thirty_two_bytes(entry.len());
    }
}

#[test]
fn net_change_hides_churn_that_the_retained_set_shows() {
    let mut cache = Vec::with_capacity(100);
    fill_cache(&mut cache, 100);
    let before = snapshot();
    churn_cache(&mut cache);
    let after = snapshot();
    let diff = after.diff(&before);
    let (live_bytes, live_blocks, total_bytes, total_blocks, retained_bytes, retained_blocks) =
        diff_figures(&diff, "churn_cache");
    // 100 new strings of 32 bytes replaced 100 old ones: net zero at the
    // fill site, +100 blocks at the churn site.
    assert_eq!((total_blocks, total_bytes), (100, 3200), "{diff}");
    assert_eq!((retained_blocks, retained_bytes), (100, 3200), "{diff}");
    assert_eq!((live_blocks, live_bytes), (100, 3200), "{diff}");
    let (fill_live_bytes, fill_live_blocks, fill_total, ..) = diff_figures(&diff, "fill_cache");
    assert_eq!(
        (fill_live_blocks, fill_live_bytes, fill_total),
        (-100, -3200, 0),
        "{diff}"
    );
    // Across both sites the net change is zero: only the retained set
    // reveals that the whole cache was replaced.
    assert_eq!(live_bytes + fill_live_bytes, 0);
    black_box(cache);
}

#[inline(never)]
fn leaky_task(store: &mut Vec<Vec<u8>>) {
    store.push(vec![0u8; 10_000]);
}

#[inline(never)]
fn tidy_task() -> usize {
    black_box(vec![0u8; 10_000]).len()
}

#[test]
fn the_top_row_of_a_diff_names_the_leaking_function() {
    let mut store = Vec::with_capacity(64);
    let before = snapshot();
    for _ in 0..50 {
        leaky_task(&mut store);
        tidy_task();
    }
    let diff = snapshot().diff(&before);
    let top = &diff.sites()[0];
    let label = top.stack().label();
    assert!(label.contains("leaky_task"), "top site is {label}:\n{diff}");
    assert!(
        label.contains("snapshot_diff.rs:"),
        "label lacks file:line: {label}"
    );
    assert_eq!(top.retained_bytes(), 500_000);
    let table = diff.to_string();
    assert!(table.contains("Retained"), "{table}");
    assert!(
        table.lines().nth(2).unwrap().contains("leaky_task"),
        "{table}"
    );
    let (.., tidy_total, tidy_blocks, tidy_retained, _) = diff_figures(&diff, "tidy_task");
    assert_eq!(
        (tidy_total, tidy_blocks, tidy_retained),
        (500_000, 50, 0),
        "{diff}"
    );
}

#[inline(never)]
fn transient_spike() -> usize {
    black_box(vec![1u8; 8 << 20]).len()
}

#[test]
fn peak_covers_a_freed_spike_and_snapshot_figures_add_up() {
    let before = snapshot();
    transient_spike();
    let after = snapshot();
    assert!(
        after.peak_bytes() >= before.live_bytes() + (8 << 20) - (1 << 20),
        "peak {} misses an 8 MiB spike over {} live",
        after.peak_bytes(),
        before.live_bytes()
    );
    assert!(after.peak_bytes() >= after.live_bytes());
    let sum = after.sites().iter().fold((0, 0, 0, 0), |a, s| {
        (
            a.0 + s.live_bytes(),
            a.1 + s.live_blocks(),
            a.2 + s.total_bytes(),
            a.3 + s.total_blocks(),
        )
    });
    assert_eq!(
        sum,
        (
            after.live_bytes(),
            after.live_blocks(),
            after.total_bytes(),
            after.total_blocks()
        )
    );
    let spike = figures(&after, "transient_spike");
    assert_eq!(
        (spike.live_bytes, spike.total_bytes, spike.total_blocks),
        (0, 8 << 20, 1)
    );
}

#[test]
fn snapshots_carry_the_operating_systems_view() {
    let snap = snapshot();
    if cfg!(target_os = "linux") {
        let os = snap.os();
        let rss = os.rss_bytes.expect("RSS on Linux");
        assert!(rss > 0 && os.virtual_bytes.unwrap() >= rss);
        assert_eq!(
            os.rss_anon_bytes.unwrap() + os.rss_file_bytes.unwrap() + os.rss_shmem_bytes.unwrap(),
            rss
        );
        let text = snap.to_string();
        assert!(text.contains("OS: RSS "), "{text}");
    }
    assert!(snap.timestamp_ms() > 1_600_000_000_000);
    let text = snap.to_string();
    assert!(text.starts_with("Heap: "), "{text}");
    assert!(text.contains("Cumul %"), "{text}");
}

#[test]
fn a_stack_starts_at_the_code_that_allocated() {
    let mut store = Vec::new();
    let before = snapshot();
    leaky_task(&mut store);
    let diff = snapshot().diff(&before);
    let site = diff
        .sites()
        .iter()
        .find(|s| {
            s.stack()
                .frames()
                .iter()
                .any(|f| f.function.contains("leaky_task"))
        })
        .expect("a site for leaky_task");
    let frames = site.stack().frames();
    let first = &frames[0].function;
    assert!(
        !first.contains("alloc_track") && !first.contains("__rust") && !first.contains("backtrace"),
        "allocator machinery left on top of the stack: {frames:#?}"
    );
    assert!(
        frames.iter().all(|f| !f.function.contains("lang_start")),
        "runtime start-up frames left at the bottom: {frames:#?}"
    );
    assert!(site.stack().addresses().len() > frames.len() / 2);
}
