//! A dump written as it is built (`Snapshot::write_to`, `Snapshot::save`)
//! is byte for byte the dump built whole (`Snapshot::to_dump`) and then
//! serialized: same fields, same order, same sharing of locations, same
//! merging of sites, with scopes, births of several epochs and a peak
//! breakdown in it.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::dump::Dump;
use alloc_track::{reset_peak, scope, snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn in_a_scope() -> Vec<u8> {
    let _job = scope("streamed job");
    black_box(vec![5u8; 3210])
}

#[inline(never)]
fn kept_across_epochs(kept: &mut Vec<Vec<u8>>) {
    kept.push(black_box(vec![6u8; 64]));
}

#[test]
fn a_streamed_dump_is_the_whole_dump_serialized() {
    let scoped = in_a_scope();
    let mut kept = Vec::new();
    // Births in three epochs at one site (a count the compiler cannot
    // see: an unrolled loop would make each round a call site of its own).
    for _ in 0..black_box(3) {
        kept_across_epochs(&mut kept);
        black_box(snapshot());
    }
    reset_peak();
    let peak = black_box(vec![7u8; 1 << 20]);
    drop(peak);

    let snap = snapshot();
    let mut streamed = Vec::new();
    snap.write_to(&mut streamed).unwrap();
    let whole = serde_json::to_vec(&snap.to_dump()).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&streamed),
        String::from_utf8_lossy(&whole)
    );

    let dump = Dump::from_slice(&streamed).unwrap();
    assert!(!dump.scopes.is_empty(), "no scope in the dump");
    assert!(!dump.peak_sites.is_empty(), "no peak breakdown in the dump");
    assert!(
        dump.sites.iter().any(|site| site.births.len() >= 3),
        "no site with births in several epochs"
    );

    // And `save` writes the same document to the file.
    let path = std::env::temp_dir().join(format!("alloc-track-stream-{}.json", std::process::id()));
    snap.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), streamed);
    let _ = std::fs::remove_file(&path);
    black_box((scoped, kept));
}
