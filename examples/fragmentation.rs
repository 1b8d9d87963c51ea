//! Why the heap profiler says 1 MiB while the OS says 100: a large
//! temporary structure, about 100 MiB of small blocks, freed again (99% of
//! it), while a few long-lived blocks were allocated in between. The live
//! heap drops back; the process's RSS does not. The allocator can only give
//! memory back to the OS in whole pages at the top of its heap (or, with
//! glibc, when `malloc_trim` is called), and the survivors are scattered
//! across every page the temporary structure used.
//!
//! The example prints the live heap, the RSS, the allocator's free memory
//! and the tracker's own books (its live table lives outside the heap
//! figures, but inside the RSS) at each step, the RSS taken apart, then
//! calls `alloc_track::trim()` and shows what the RSS dropped by. It saves
//! dumps; `report` on `after` puts the live heap beside the RSS and says
//! what the gap is:
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

/// Entries in the temporary index: about 100 MiB with the index itself.
const ENTRIES: usize = 900_000;
/// One audit record is kept for every this many entries: 99% is freed.
const KEEP_EVERY: usize = 100;

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
    let free = snapshot.allocator().map_or("not known".to_string(), |a| {
        Bytes(a.free_bytes()).to_string()
    });
    println!(
        "{moment:<30} live heap {:>10}   RSS {:>10}   allocator free {:>10}   tracker's books {:>10}",
        Bytes(snapshot.live_bytes()).to_string(),
        rss,
        free,
        Bytes(alloc_track::bookkeeping_bytes()).to_string()
    );
}

/// The RSS as a sum, and the advice drawn from it.
fn breakdown(snapshot: &Snapshot) {
    let Some(breakdown) = snapshot.memory_breakdown() else {
        return;
    };
    println!("\nRSS {} is:", Bytes(breakdown.rss_bytes));
    for part in &breakdown.parts {
        println!(
            "  {:>10}  {} ({})",
            Bytes(part.bytes).to_string(),
            part.kind.label(),
            part.source
        );
    }
    if breakdown.overcount_bytes > 0 {
        println!(
            "  the measured parts exceed the RSS by {}: free memory that is not resident",
            Bytes(breakdown.overcount_bytes)
        );
    } else {
        println!(
            "  {:>10}  {}",
            Bytes(breakdown.remainder_bytes).to_string(),
            breakdown.remainder_label()
        );
    }
    for advice in breakdown.advice() {
        println!("- {advice}");
    }
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
    breakdown(&after);

    match alloc_track::trim() {
        Some(trimmed) => {
            let trimmed_snapshot = alloc_track::snapshot();
            println!(
                "\nalloc_track::trim(): RSS {} -> {} (dropped {})",
                trimmed
                    .rss_before
                    .map_or("unknown".to_string(), |b| Bytes(b).to_string()),
                trimmed
                    .rss_after
                    .map_or("unknown".to_string(), |b| Bytes(b).to_string()),
                trimmed
                    .rss_dropped()
                    .map_or("unknown".to_string(), |b| Bytes(b).to_string()),
            );
            line("trimmed", &trimmed_snapshot);
            trimmed_snapshot.save(out_dir.join("fragmentation.trimmed.json"))?;
        }
        None => println!("\nalloc_track::trim(): not known how to trim this allocator"),
    }

    println!(
        "\n{found} entries matched; {} audit records kept. Dumps: fragmentation.before.json, \
         fragmentation.full.json, fragmentation.after.json (and fragmentation.trimmed.json)",
        audit_log.len()
    );
    Ok(())
}
