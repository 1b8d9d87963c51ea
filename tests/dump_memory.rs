//! Writing a dump must not cost memory in proportion to a whole dump: a
//! periodic dump of a service with hundreds of thousands of call sites
//! would otherwise double or triple its RSS for a moment, an OOM risk.
//! The dump is streamed; this holds writing, and the whole of
//! `alloc_track::dump` (snapshot and write), to at most 200 bytes of
//! transient memory per site, measured as the peak RSS (`VmHWM`, reset
//! through `/proc/self/clear_refs`) above the RSS before.
//!
//! `ALLOC_TRACK_TEST_SITES=600000 cargo test --release --test dump_memory
//! -- --nocapture` prints the figures for a bigger table.
//!
//! One test in this file: the figures are the process's, and another test
//! running beside it would move them.

use std::alloc::System;
use std::hint::black_box;
use std::io::{self, Write};

use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Every level of the call tree has four distinct functions, so `depth`
/// levels give `4^depth` distinct stacks; `code` picks the path. Each leaf
/// keeps one block (hence boxes: one allocation each, which is the point).
#[allow(clippy::vec_box)]
#[inline(never)]
fn level<const BRANCH: usize>(depth: u32, code: usize, kept: &mut Vec<Box<u64>>) {
    if depth == 0 {
        kept.push(black_box(Box::new(code as u64)));
    } else {
        dispatch(depth - 1, code, kept);
    }
    // Used after the call, so that the call is not a tail call and every
    // level keeps its frame; `BRANCH` used, so that the four functions
    // are not folded into one.
    black_box((&kept, BRANCH));
}

#[allow(clippy::vec_box)]
#[inline(never)]
fn dispatch(depth: u32, code: usize, kept: &mut Vec<Box<u64>>) {
    match code % 4 {
        0 => level::<0>(depth, code / 4, kept),
        1 => level::<1>(depth, code / 4, kept),
        2 => level::<2>(depth, code / 4, kept),
        _ => level::<3>(depth, code / 4, kept),
    }
    black_box(&kept);
}

/// Counts what is written and keeps nothing.
struct Discard(u64);

impl Write for Discard {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// `VmRSS` or `VmHWM` of this process, in bytes.
fn status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"));
    let kib: u64 = line[field.len() + 1..]
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    kib * 1024
}

/// Returns freed memory to the system and restarts the peak at the RSS of
/// now; the RSS then.
fn settle() -> u64 {
    // SAFETY: `malloc_trim` only releases free memory of glibc's heap.
    unsafe { libc::malloc_trim(0) };
    // Writing 5 resets VmHWM to the current RSS (Linux 4.0 and later).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_bytes("VmRSS:")
}

/// Bytes of peak RSS per site above `before`, while running `work`.
fn transient_per_site(sites: usize, work: impl FnOnce()) -> f64 {
    let before = settle();
    work();
    let peak = status_bytes("VmHWM:");
    peak.saturating_sub(before) as f64 / sites as f64
}

#[test]
#[cfg_attr(
    not(all(target_os = "linux", target_env = "gnu")),
    ignore = "reads /proc and calls glibc's malloc_trim"
)]
fn writing_a_dump_takes_at_most_200_bytes_per_site() {
    let wanted: usize = std::env::var("ALLOC_TRACK_TEST_SITES")
        .ok()
        .and_then(|v| v.parse().ok())
        // A debug build resolves stacks about 15 times slower.
        .unwrap_or(if cfg!(debug_assertions) {
            16_384
        } else {
            100_000
        });
    let depth = (1..).find(|d| 4usize.pow(*d) >= wanted).unwrap();
    let mut kept = Vec::with_capacity(wanted);
    for code in 0..wanted {
        dispatch(depth, code, &mut kept);
    }
    // Resolve every code address once before measuring: the symbol cache
    // and the debug info are per address and per binary, not per site.
    let warm = snapshot();
    let mut sink = Discard(0);
    warm.write_to(&mut sink).unwrap();
    drop(warm);

    let snap = snapshot();
    let sites = snap.sites().len();
    assert!(sites >= wanted, "only {sites} sites for {wanted} stacks");

    let mut streamed = Discard(0);
    let writing = transient_per_site(sites, || snap.write_to(&mut streamed).unwrap());
    let mut whole = Discard(0);
    let whole_dump = transient_per_site(sites, || {
        snap.to_dump().write_to(&mut whole).unwrap();
    });
    assert_eq!(streamed.0, whole.0, "the two ways write different dumps");
    drop(snap);
    let path = std::env::temp_dir().join(format!(
        "alloc-track-dump-memory-{}.json",
        std::process::id()
    ));
    let snapshot_and_save = transient_per_site(sites, || alloc_track::dump(&path).unwrap());
    let _ = std::fs::remove_file(&path);

    println!(
        "{sites} sites, dump {} bytes: streamed write {writing:.0} B/site; \
         snapshot + streamed save (alloc_track::dump) {snapshot_and_save:.0} B/site; \
         a whole Dump value then written {whole_dump:.0} B/site",
        streamed.0
    );
    assert!(
        writing <= 200.0,
        "writing a dump took {writing:.0} bytes per site (at most 200)"
    );
    // The whole of a periodic dump, the snapshot included: about 190 bytes
    // a site at 100,000 to 600,000 sites in a release build (269 before
    // the snapshot kept one birth epoch inline and sized its tables once).
    assert!(
        snapshot_and_save <= 200.0,
        "alloc_track::dump took {snapshot_and_save:.0} bytes per site (at most 200)"
    );
    black_box(kept);
}
