//! Heap vs RSS on glibc: after freeing 99% of about 100 MiB of small
//! blocks, the snapshot names the allocator's free memory (as glibc counts
//! it), says what trimming would return, and `alloc_track::trim()` then
//! gives most of the freed pages back to the OS.

use std::alloc::System;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

const BLOCKS: usize = 1_000_000;
const BLOCK_BYTES: usize = 100;
const KEEP_EVERY: usize = 100;
const MIB: f64 = 1024.0 * 1024.0;

/// The first "… N MiB" after `marker` in `text`, in MiB.
fn mib_after(text: &str, marker: &str) -> f64 {
    let rest = &text[text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker:?} in {text}"))
        + marker.len()..];
    let number = rest.split_whitespace().next().unwrap();
    assert!(
        rest.trim_start()[number.len()..]
            .trim_start()
            .starts_with("MiB"),
        "{text}"
    );
    number.parse().unwrap()
}

#[test]
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu")),
    ignore = "glibc only"
)]
fn the_allocator_keeps_the_freed_memory_and_trim_returns_it() {
    let mut kept = Vec::with_capacity(BLOCKS / KEEP_EVERY);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        blocks.push(vec![i as u8; BLOCK_BYTES]);
        if i % KEEP_EVERY == 0 {
            kept.push(vec![1u8; BLOCK_BYTES]);
        }
    }
    drop(blocks);
    let freed_bytes = (BLOCKS * BLOCK_BYTES) as f64;

    let snapshot = alloc_track::snapshot();
    let stats = *snapshot
        .allocator()
        .and_then(|a| a.glibc())
        .expect("the System allocator on linux-gnu is glibc's malloc");
    // SAFETY: glibc's mallinfo2 has no preconditions.
    let glibc_free = unsafe { libc::mallinfo2() }.fordblks as f64;
    assert!(stats.free_bytes as f64 >= freed_bytes * 0.9, "{stats:?}");
    assert!(stats.arenas.is_some_and(|n| n >= 1), "{stats:?}");

    let breakdown = snapshot.memory_breakdown().expect("Linux reports VmRSS");
    let advice = breakdown.advice().join("\n");
    let named_free = mib_after(&advice, "The allocator keeps");
    let glibc_free_mib = glibc_free / MIB;
    assert!(
        (named_free - glibc_free_mib).abs() <= glibc_free_mib * 0.2,
        "named {named_free} MiB, glibc says {glibc_free_mib} MiB: {advice}"
    );
    let trimmable = mib_after(&advice, "would return up to");
    assert!(trimmable > 0.0 && trimmable <= named_free, "{advice}");

    let trimmed = alloc_track::trim().expect("glibc's malloc can be trimmed");
    let dropped = trimmed.rss_dropped().expect("Linux reports VmRSS") as f64;
    assert!(
        dropped > freed_bytes * 0.5,
        "trim dropped the RSS by {:.1} MiB of {:.1} MiB freed ({trimmed:?}); advice: {advice}",
        dropped / MIB,
        freed_bytes / MIB
    );
    assert_eq!(kept.len(), BLOCKS / KEEP_EVERY);
}
