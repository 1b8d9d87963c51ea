//! A saved dump reads back through the same types, agrees with the
//! snapshot it came from, and carries resolved frames.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::dump::{Dump, FORMAT_VERSION};
use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn build_index(count: usize) -> Vec<Vec<u32>> {
    // Never zero: `vec![0; n]` takes a different (alloc_zeroed) path.
    (1..=count).map(|i| vec![i as u32; 16]).collect()
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("alloc-track-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn a_saved_dump_reads_back_equal_to_its_snapshot() {
    let index = build_index(300);
    let snap = snapshot();
    let path = temp_path("roundtrip.json");
    snap.save(&path).unwrap();
    let dump = Dump::load(&path).unwrap();

    assert_eq!(dump.version, FORMAT_VERSION);
    assert_eq!(dump.mode, "full");
    assert_eq!(dump.pid, std::process::id());
    assert!(
        dump.program.starts_with("dump_roundtrip"),
        "{}",
        dump.program
    );
    assert_eq!(dump.totals.live_bytes, snap.live_bytes());
    assert_eq!(dump.totals.live_blocks, snap.live_blocks());
    assert_eq!(dump.totals.total_bytes, snap.total_bytes());
    assert_eq!(dump.totals.total_blocks, snap.total_blocks());
    assert_eq!(dump.totals.peak_bytes, snap.peak_bytes());
    assert_eq!(dump.timestamp_ms, snap.timestamp_ms());
    assert_eq!(&dump.os, snap.os());

    // The 300 inner vectors: sites resolved to the closure by name, with
    // file and line (iterator internals may split them over a few sites).
    let inner: Vec<_> = dump
        .sites
        .iter()
        .filter(|site| {
            dump.stacks[site.stack as usize].locations.iter().any(|&l| {
                dump.locations[l as usize].frames.iter().any(|f| {
                    f.function.contains("build_index::{{closure}}")
                        && f.file.is_some()
                        && f.line.is_some()
                })
            })
        })
        .collect();
    assert!(
        !inner.is_empty(),
        "no resolved site for build_index's vectors"
    );
    assert_eq!(inner.iter().map(|s| s.live_blocks).sum::<u64>(), 300);
    assert_eq!(inner.iter().map(|s| s.live_bytes).sum::<u64>(), 300 * 64);
    let births: u64 = inner.iter().flat_map(|s| &s.births).map(|b| b.blocks).sum();
    assert_eq!(births, 300);

    // Written atomically: nothing but the dump is left beside it.
    let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    black_box(index);
}

#[test]
fn saving_to_an_unwritable_path_is_an_error_naming_it() {
    let error = snapshot().save("/nonexistent-dir/heap.json").unwrap_err();
    let text = error.to_string();
    assert!(text.starts_with("/nonexistent-dir/heap.json: "), "{text}");
}
