//! Heap vs RSS with jemalloc as the tracker's inner allocator (alloc-track's
//! `jemalloc` feature): after freeing 99% of about 50 MiB of small blocks,
//! the snapshot carries jemalloc's own figures, its `allocated` agrees with
//! the live heap, its `active` and `resident` hold what the freed blocks
//! left behind, the CLI's report on the saved dump names them, and
//! `alloc_track::trim()` purges jemalloc's dirty pages.
//!
//! A plain program (`harness = false`): no libtest threads allocating
//! beside it.

use alloc_track::dump::{AllocatorStats, Dump};
use alloc_track::MemoryKind;
use clap::Parser;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<tikv_jemallocator::Jemalloc> =
    alloc_track::Tracker::new(tikv_jemallocator::Jemalloc);

/// A jemalloc size class: no rounding between the tracker's bytes and
/// jemalloc's.
const BLOCK_BYTES: usize = 128;
const BLOCKS: usize = 50 * 1024 * 1024 / BLOCK_BYTES;
const KEEP_EVERY: usize = 100;
const MIB: u64 = 1024 * 1024;

fn main() {
    // jemalloc counts blocks the tracker never saw (allocated untracked,
    // about 300 KiB before the workload): the workload's share is the rise
    // since this snapshot.
    let (live_before, allocated_before) = {
        let before = alloc_track::snapshot();
        let stats = before.allocator().and_then(AllocatorStats::jemalloc);
        let stats = stats.expect("the tracker wraps tikv_jemallocator::Jemalloc");
        (before.live_bytes(), stats.allocated_bytes)
    };
    let mut kept = Vec::with_capacity(BLOCKS / KEEP_EVERY + 1);
    let mut blocks: Vec<Vec<u8>> = Vec::with_capacity(BLOCKS);
    for i in 0..BLOCKS {
        let block = vec![i as u8; BLOCK_BYTES];
        if i % KEEP_EVERY == 0 {
            kept.push(block);
        } else {
            blocks.push(block);
        }
    }
    drop(blocks);

    let snapshot = alloc_track::snapshot();
    let live = snapshot.live_bytes();
    let stats = *snapshot
        .allocator()
        .and_then(AllocatorStats::jemalloc)
        .expect("the tracker wraps tikv_jemallocator::Jemalloc: its figures are jemalloc's");
    eprintln!("live heap {live} bytes, jemalloc {stats:?}");
    assert!(stats.allocated_bytes >= live, "{stats:?}");
    let allocated_rise = stats.allocated_bytes.saturating_sub(allocated_before) as f64;
    let live_rise = live.saturating_sub(live_before) as f64;
    assert!(
        (allocated_rise - live_rise).abs() <= live_rise * 0.2,
        "jemalloc's allocated rose {allocated_rise}, not within 20% of the live heap's rise {live_rise}"
    );
    // The kept blocks hold a page in three: the freed blocks' pages stay
    // active around them, and their emptied pages stay dirty.
    assert!(stats.active_bytes > 4 * stats.allocated_bytes, "{stats:?}");
    assert!(stats.resident_bytes > stats.active_bytes, "{stats:?}");
    assert!(
        stats.metadata_bytes > 0 && stats.mapped_bytes >= stats.active_bytes,
        "{stats:?}"
    );
    assert!(stats.arenas >= 1, "{stats:?}");

    let breakdown = snapshot.memory_breakdown().expect("Linux reports VmRSS");
    assert_eq!(
        breakdown.part(MemoryKind::AllocatorFree),
        stats.free_bytes()
    );
    assert_eq!(
        breakdown.part(MemoryKind::AllocatorMetadata),
        stats.metadata_bytes
    );
    assert!(stats.free_bytes() > 10 * MIB, "{stats:?}");

    let dir = std::env::temp_dir().join(format!("alloc-track-jemalloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jemalloc.json");
    snapshot.save(&path).unwrap();
    let dump = Dump::load(&path).unwrap();
    assert_eq!(dump.allocator, Some(AllocatorStats::Jemalloc(stats)));

    let report = report(&path);
    for figure in [
        "jemalloc",
        "allocated",
        "active",
        "metadata",
        "resident",
        "mapped",
        "retained",
    ] {
        assert!(report.contains(figure), "{figure} in {report}");
    }
    assert!(
        report.contains("measured: jemalloc stats.resident - allocated - metadata"),
        "{report}"
    );
    assert!(report.contains("arena.<all>.purge"), "{report}");
    assert!(!report.contains("glibc"), "{report}");

    // The report (symbols, the flamegraph) used and freed memory: purge
    // from the figures of just before.
    let before = jemalloc_now();
    let trimmed = alloc_track::trim().expect("jemalloc's arenas can be purged");
    let after = jemalloc_now();
    eprintln!(
        "trim: RSS {:?} -> {:?}, jemalloc resident {} -> {} (dirty {} before)",
        trimmed.rss_before,
        trimmed.rss_after,
        before.resident_bytes,
        after.resident_bytes,
        before.dirty_bytes()
    );
    assert!(trimmed.returned_memory, "{trimmed:?}");
    assert!(before.dirty_bytes() > 10 * MIB, "{before:?}");
    assert!(
        after.resident_bytes + before.dirty_bytes() / 2 < before.resident_bytes,
        "purging left jemalloc's resident at {} of {}",
        after.resident_bytes,
        before.resident_bytes
    );
    let dropped = trimmed.rss_dropped().expect("Linux reports VmRSS");
    assert!(dropped > before.dirty_bytes() / 2, "{trimmed:?}");

    assert_eq!(kept.len(), BLOCKS.div_ceil(KEEP_EVERY));
    std::fs::remove_dir_all(&dir).unwrap();
    println!("jemalloc_stats: ok");
}

fn jemalloc_now() -> alloc_track::dump::JemallocStats {
    let snapshot = alloc_track::snapshot();
    *snapshot
        .allocator()
        .and_then(AllocatorStats::jemalloc)
        .unwrap()
}

/// `alloc-track report PATH`'s text.
fn report(path: &std::path::Path) -> String {
    let cli = alloc_track_cli::cli::Cli::try_parse_from([
        "alloc-track".as_ref(),
        "report".as_ref(),
        path.as_os_str(),
    ])
    .unwrap();
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = alloc_track_cli::run(cli, None, &mut out, &mut err).unwrap();
    assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
    String::from_utf8(out).unwrap()
}
