//! `alloc_track::limits()`: each bound passes at its value and fails one
//! below it, the failure names every exceeded bound and the sites, and the
//! figures stay exact while other threads allocate.

use std::alloc::System;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// 10 blocks of 1 KiB, all kept: 10 allocations, 10 KiB, and the vector.
#[inline(never)]
fn keep_ten() -> Vec<Vec<u8>> {
    (0..10).map(|_| vec![0u8; 1024]).collect()
}

/// 10 blocks of 1 KiB allocated and freed one by one: peak 1 KiB.
#[inline(never)]
fn churn_ten() -> usize {
    (0..10)
        .map(|i| std::hint::black_box(vec![i as u8; 1024]).len())
        .sum()
}

fn message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let failure = std::panic::catch_unwind(f).expect_err("the limit must fail");
    failure
        .downcast_ref::<String>()
        .cloned()
        .expect("a formatted message")
}

#[test]
fn every_bound_passes_at_its_value_and_fails_above() {
    let vec_bytes = 10 * std::mem::size_of::<Vec<u8>>() as u64;
    let kept = alloc_track::limits()
        .max_blocks(11)
        .max_bytes(10 * 1024 + vec_bytes)
        .max_retained_blocks(11)
        .max_retained_bytes(10 * 1024 + vec_bytes)
        .max_peak_bytes(10 * 1024 + vec_bytes)
        .check(keep_ten);
    assert_eq!(kept.len(), 10);

    let text = message(|| {
        alloc_track::limits().max_blocks(10).check(keep_ten);
    });
    assert!(
        text.starts_with("alloc-track limits exceeded:\n  allocations: 11, limit 10\n"),
        "{text}"
    );
    assert!(
        text.contains("keep_ten"),
        "the table names the site: {text}"
    );

    let text = message(|| {
        alloc_track::limits().max_retained_bytes(0).check(keep_ten);
    });
    assert!(
        text.contains("retained bytes: 10.2 KiB, limit 0 B"),
        "{text}"
    );

    // Churn: ten allocations, nothing retained, a peak of one block.
    assert_eq!(
        alloc_track::limits()
            .max_retained_bytes(0)
            .max_peak_bytes(1024)
            .check(churn_ten),
        10 * 1024
    );
    let text = message(|| {
        alloc_track::limits()
            .max_peak_bytes(1023)
            .max_bytes(1024)
            .check(churn_ten);
    });
    // Both exceeded bounds are listed, in a fixed order.
    assert!(
        text.contains(
            "  bytes allocated: 10.0 KiB, limit 1.0 KiB\n  peak bytes: 1.0 KiB, limit 1023 B\n"
        ),
        "{text}"
    );
}

#[test]
fn no_bounds_always_pass_and_a_snapshot_diff_has_no_peak() {
    assert_eq!(alloc_track::limits().check(keep_ten).len(), 10);

    let before = alloc_track::snapshot();
    let kept = keep_ten();
    let diff = alloc_track::snapshot().diff(&before);
    let exceeded = alloc_track::limits()
        .max_peak_bytes(u64::MAX)
        .verify(&diff)
        .expect_err("a snapshot diff has no peak to check");
    assert!(
        exceeded.to_string().contains("peak bytes: not measured"),
        "{exceeded}"
    );
    drop(kept);
}

#[test]
fn other_threads_allocating_do_not_count() {
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| {
                let mut held = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    held.push(vec![0u8; 4096]);
                    if held.len() > 100 {
                        held.clear();
                    }
                }
            });
        }
        for _ in 0..50 {
            let kept = alloc_track::limits()
                .max_blocks(11)
                .max_retained_blocks(11)
                .check(keep_ten);
            assert_eq!(kept.len(), 10);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}
