//! A dump's size grows with the number of distinct call sites, never with
//! the number of allocations: a long-running service that allocates a
//! billion times from a thousand places writes a dump of a thousand sites.
//!
//! A plain `main` (`harness = false`): the test harness's own threads would
//! add sites of their own between two dumps.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Allocates `count` boxes from one call site: one allocation each, which
/// is the point (hence a vector of boxes).
#[allow(clippy::vec_box)]
#[inline(never)]
fn boxes(count: u64) -> Vec<Box<u64>> {
    (0..count).map(|i| black_box(Box::new(i))).collect()
}

/// One distinct stack per `depth`: the allocation sits below `depth`
/// frames of this function.
#[inline(never)]
fn at_depth(depth: u32) -> Box<u64> {
    if depth == 0 {
        return black_box(Box::new(7));
    }
    let block = at_depth(black_box(depth - 1));
    black_box(&block);
    block
}

/// Counts the bytes written to it, and keeps none: a growing buffer would
/// allocate from new sites as the dump grows.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The dump's size in bytes, and its number of sites. Writing it allocates
/// a buffer from a site of its own (below the caller's frames): call this
/// from the same place once before the figures that matter, so that the
/// site is in every dump compared.
fn dump_size() -> (usize, usize) {
    let dump = snapshot().to_dump();
    let mut bytes = ByteCount(0);
    dump.write_to(&mut bytes).unwrap();
    (bytes.0, dump.sites.len())
}

fn many_allocations_from_one_site_add_no_size() {
    let mut kept = Vec::with_capacity(4);
    let mut sizes = Vec::with_capacity(4);
    // The same call sites every round. The first puts the site of
    // `dump_size` itself in the later dumps, the second gives the sites
    // their peak figures (the heap passes 64 KiB); the last two compare.
    // The rounds' count is hidden from the compiler: a loop of four known
    // rounds may be unrolled, and each copy would be a call site of its
    // own.
    for &count in black_box(&[10, 100_000, 10_000, 1_000_000][..]) {
        kept.push(boxes(count));
        sizes.push(dump_size());
    }
    let [_, (first, first_sites), (second, second_sites), (third, third_sites)] = sizes[..] else {
        unreachable!("four rounds")
    };
    assert_eq!(second_sites, first_sites, "no new site");
    assert_eq!(third_sites, first_sites, "no new site");
    // Each round also opens a snapshot epoch (a site's live blocks are
    // listed by the epoch they were born in) and raises the peak: both
    // rounds add the same entries, and only the figures' digits differ,
    // whether the round allocated 10,000 blocks or 1,000,000.
    let (grown_by_10_000, grown_by_1_000_000) = (second - first, third - second);
    assert!(
        grown_by_1_000_000.abs_diff(grown_by_10_000) < 64,
        "10,000 allocations grew the dump by {grown_by_10_000} bytes, 1,000,000 by {grown_by_1_000_000}"
    );
    drop(kept);
}

fn every_distinct_site_adds_to_the_dump() {
    let mut sizes = Vec::with_capacity(3);
    let mut kept = Vec::with_capacity(2);
    // As above: a first round for `dump_size`'s own site, then 40 stacks.
    for depths in [0..0, 0..40] {
        sizes.push(dump_size());
        kept.push(depths.map(at_depth).collect::<Vec<Box<u64>>>());
    }
    sizes.push(dump_size());
    let ((before, before_sites), (after, after_sites)) = (sizes[1], sizes[2]);
    // Forty stacks (one per depth), plus the vector that holds them.
    assert!(
        after_sites >= before_sites + 40,
        "{before_sites} -> {after_sites} sites"
    );
    // Each site costs its own entry, at least its figures.
    assert!(
        after - before > 40 * 50,
        "40 more sites grew the dump from {before} to {after} bytes"
    );
    drop(kept);
}

fn main() {
    many_allocations_from_one_site_add_no_size();
    every_distinct_site_adds_to_the_dump();
    println!("dump_size: 2 passed, 0 failed");
}
