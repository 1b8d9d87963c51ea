//! More distinct stacks than the configured capacity: the stack table
//! stops growing at its limit, every further allocation is counted,
//! exactly, against the one "other" site, and snapshots and dumps report
//! how many there were. Never a crash, never unbounded growth.
//!
//! A plain program (`harness = false`): the overflow count is process-wide,
//! and libtest's own threads, allocating from stacks of their own while the
//! table is full, would add to it.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{snapshot, Site, Snapshot, Tracker};

/// Small enough that the test fills it many times over; the test harness
/// itself uses some dozens of sites before the test starts.
const MAX_SITES: u32 = 256;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).max_sites(MAX_SITES);

type Block = Box<[u8; 32]>;

/// `zero` and `one` call `step` from different places, so a path of
/// `depth` choices gives `2^depth` distinct stacks.
#[inline(never)]
fn zero(path: u32, depth: u32, out: &mut Vec<Block>) {
    step(path, depth, out);
    // No tail call: the frame stays on the stack. And a value of its own:
    // an optimised build folds identical functions into one, which would
    // make `zero` and `one` the same frames.
    black_box(0u32);
}

#[inline(never)]
fn one(path: u32, depth: u32, out: &mut Vec<Block>) {
    step(path, depth, out);
    black_box(1u32);
}

#[inline(never)]
fn step(path: u32, depth: u32, out: &mut Vec<Block>) {
    if depth == 0 {
        // `out` has room: the only allocation on this stack is the box.
        out.push(Box::new([7u8; 32]));
    } else if path & 1 == 0 {
        zero(path >> 1, depth - 1, out);
    } else {
        one(path >> 1, depth - 1, out);
    }
    black_box(());
}

/// One 32-byte block from each of `2^depth` distinct stacks.
fn distinct_stacks(depth: u32) -> Vec<Block> {
    let mut out = Vec::with_capacity(1 << depth);
    for path in 0..1u32 << depth {
        step(path, depth, &mut out);
    }
    out
}

fn other_site(snapshot: &Snapshot) -> Option<&Site> {
    snapshot
        .sites()
        .iter()
        .find(|site| site.stack().addresses().is_empty())
}

fn main() {
    stacks_beyond_the_capacity_are_counted_under_other();
    println!("site_overflow: ok");
}

fn stacks_beyond_the_capacity_are_counted_under_other() {
    // Fill the table: more distinct stacks than it can hold.
    let first = distinct_stacks(10);
    let full = snapshot();
    assert!(
        full.sites().len() <= MAX_SITES as usize + 1,
        "{} sites with room for {MAX_SITES} and 'other'",
        full.sites().len()
    );
    let overflowed = full.health().overflowed_allocations;
    assert!(overflowed >= 1024 - u64::from(MAX_SITES), "{overflowed}");
    let other = other_site(&full).expect("an 'other' site");
    assert_eq!(other.stack().label(), "[other: stack table full]");
    // Every block is still counted: the totals include the overflow.
    assert!(full.live_blocks() >= 1024);

    // With the table full, every block from a new stack goes to 'other',
    // exactly, and the table does not grow: 4096 boxes, plus the vector
    // that holds them (allocated from a stack of its own, new too).
    let second = distinct_stacks(12);
    let fuller = snapshot();
    let (blocks, bytes) = (4096 + 1, 4096 * 32 + 4096 * 8);
    assert_eq!(
        fuller.health().overflowed_allocations - overflowed,
        blocks,
        "each new stack's allocation counted once under 'other'"
    );
    let other_after = other_site(&fuller).expect("an 'other' site");
    assert_eq!(other_after.total_blocks() - other.total_blocks(), blocks);
    assert_eq!(other_after.total_bytes() - other.total_bytes(), bytes);
    assert_eq!(other_after.live_blocks() - other.live_blocks(), blocks);
    assert_eq!(other_after.live_bytes() - other.live_bytes(), bytes);
    assert!(fuller.sites().len() <= MAX_SITES as usize + 1);

    // Frees of overflowed blocks come off 'other' exactly.
    drop(second);
    let freed = snapshot();
    let other_freed = other_site(&freed).expect("an 'other' site");
    assert_eq!(other_freed.live_blocks(), other.live_blocks());
    assert_eq!(other_freed.live_bytes(), other.live_bytes());

    // The dump carries the count and a valid catch-all site.
    let dump = freed.to_dump();
    dump.validate().expect("a valid dump");
    assert_eq!(
        dump.tracker.overflowed_allocations,
        freed.health().overflowed_allocations
    );
    assert!(dump
        .sites
        .iter()
        .any(|site| dump.stacks[site.stack as usize].locations.is_empty()));
    drop(first);
}
