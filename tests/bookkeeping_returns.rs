//! The tracker's own memory follows the heap down: after a peak of a
//! million live blocks, freeing them gives the live table's memory back
//! (its shards halve, and the table arena purges what they left), and
//! growing again reuses it with every figure still exact.

use std::alloc::System;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

const BLOCKS: usize = 1_000_000;
const MIB: u64 = 1 << 20;

/// `count` blocks of 8 bytes, each its own allocation: the boxes are the
/// point.
#[allow(clippy::vec_box)]
fn allocate(count: usize) -> Vec<Box<u64>> {
    (0..count as u64).map(Box::new).collect()
}

#[test]
fn the_books_shrink_after_a_peak_and_grow_back_exactly() {
    let before = alloc_track::bookkeeping_bytes();
    let blocks = allocate(BLOCKS);
    let at_peak = alloc_track::bookkeeping_bytes();
    // 16 bytes a slot at a load of at most 7/8.
    assert!(
        at_peak >= before + (BLOCKS as u64 * 16),
        "{before} then {at_peak} bytes at the peak"
    );
    drop(blocks);
    let after = alloc_track::bookkeeping_bytes();
    // What stays: the smallest tables, the stack table, and at most the
    // arena's purge floor (8 MiB) of free space kept for reuse.
    assert!(
        after < at_peak / 2 && after < before + 10 * MIB,
        "{before} at the start, {at_peak} at the peak, {after} after freeing"
    );

    let again = allocate(BLOCKS);
    let snapshot = alloc_track::snapshot();
    assert!(snapshot.live_blocks() >= BLOCKS as u64);
    let site = snapshot
        .sites()
        .iter()
        .find(|site| site.live_blocks() == BLOCKS as u64)
        .unwrap_or_else(|| panic!("no site with {BLOCKS} live blocks"));
    assert_eq!(site.live_bytes(), (BLOCKS * 8) as u64);
    drop(again);
}
