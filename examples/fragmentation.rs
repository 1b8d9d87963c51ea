//! Why the heap profiler says 40 MiB while the OS says 100: a large
//! temporary structure, built from small blocks, freed again, while a few
//! long-lived blocks were allocated in between. The live heap drops back;
//! the process's RSS does not. The allocator can only give memory back to
//! the OS in whole pages at the top of its heap (or, with glibc, when
//! `malloc_trim` is called), and the survivors are scattered across every
//! page the temporary structure used.
//!
//! The example prints the live heap, the RSS and the tracker's own books
//! (its live table lives outside the heap figures, but inside the RSS) at
//! each step, and saves dumps; `report` on the last one puts the live
//! heap beside the RSS and says what the gap is:
//!
//! ```text
//! cargo run --release --example fragmentation
//! cargo run --release -p alloc-track-cli -- report fragmentation.after.json
//! cargo run --release -p alloc-track-cli -- diff fragmentation.before.json fragmentation.after.json
//! ```
//!
//! Pass a directory as the first argument to write the dumps there.

use std::alloc::System;
use std::path::PathBuf;

use alloc_track::human::Bytes;
use alloc_track::Snapshot;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// Entries in the temporary index.
const ENTRIES: usize = 400_000;
/// One audit record is kept for every this many entries.
const KEEP_EVERY: usize = 32;

/// Builds a temporary index of small strings (think: a parsed batch, a
/// de-duplication set) and, with an audit log, appends a record now and
/// then to the log, which outlives the index.
#[inline(never)]
fn build_index(mut audit_log: Option<&mut Vec<String>>) -> Vec<String> {
    let mut index = Vec::with_capacity(ENTRIES);
    for i in 0..ENTRIES {
        index.push(format!("{i:>12}: {}", "payload ".repeat(10)));
        if let Some(log) = audit_log.as_deref_mut() {
            if i % KEEP_EVERY == 0 {
                log.push(audit_record(i));
            }
        }
    }
    index
}

/// A small record that lands between the index's strings in memory.
#[inline(never)]
fn audit_record(i: usize) -> String {
    format!("indexed entry {i}")
}

fn line(moment: &str, snapshot: &Snapshot) {
    let rss = snapshot
        .os()
        .rss_bytes
        .map_or("unknown".to_string(), |r| Bytes(r).to_string());
    println!(
        "{moment:<34} live heap {:>10}   RSS {:>10}   tracker's books {:>10}",
        Bytes(snapshot.live_bytes()).to_string(),
        rss,
        Bytes(alloc_track::bookkeeping_bytes()).to_string()
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut audit_log = Vec::new();

    let before = alloc_track::snapshot();
    line("before", &before);
    before.save(out_dir.join("fragmentation.before.json"))?;

    // An audit record kept every 32 entries: every page the index used
    // keeps a live block, so no page can be handed back.
    let index = build_index(Some(&mut audit_log));
    let full = alloc_track::snapshot();
    line("index built, audit log kept", &full);
    full.save(out_dir.join("fragmentation.full.json"))?;
    let found = index.iter().filter(|s| s.contains("999")).count();
    drop(index);
    let after = alloc_track::snapshot();
    line("index freed, audit log kept", &after);
    after.save(out_dir.join("fragmentation.after.json"))?;

    println!(
        "\n{found} entries matched; {} audit records kept. Dumps: fragmentation.before.json, \
         fragmentation.full.json, fragmentation.after.json",
        audit_log.len()
    );
    Ok(())
}
