//! Temporary allocations: blocks freed by their thread before it allocates
//! anything else. A site that allocates and frees in a loop has exactly
//! as many as it made; a site that keeps its blocks, or whose blocks are
//! freed after a later allocation or by another thread, has none.

// The tests keep boxes in vectors on purpose: each box is one block.
#![allow(clippy::vec_box)]

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{Snapshot, Tracker};
use common::passes_through;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// (total blocks, temporary blocks) of the sites whose stack passes
/// through `function`.
fn temporary(snapshot: &Snapshot, function: &str) -> (u64, u64) {
    snapshot
        .sites()
        .iter()
        .filter(|s| passes_through(&s.stack(), function))
        .fold((0, 0), |(total, temporary), s| {
            (total + s.total_blocks(), temporary + s.temporary_blocks())
        })
}

#[inline(never)]
fn churn(rounds: usize) {
    for i in 0..rounds {
        let scratch = black_box(Box::new([i as u8; 64]));
        drop(scratch);
    }
}

#[inline(never)]
fn keep(rounds: usize, into: &mut Vec<Box<[u8; 64]>>) {
    for i in 0..rounds {
        into.push(Box::new([i as u8; 64]));
    }
}

#[inline(never)]
fn first_of_pair() -> Box<[u8; 32]> {
    black_box(Box::new([1; 32]))
}

#[inline(never)]
fn second_of_pair() -> Box<[u8; 48]> {
    black_box(Box::new([2; 48]))
}

#[inline(never)]
fn freed_elsewhere(rounds: usize) -> Vec<Box<[u8; 24]>> {
    (0..rounds).map(|i| Box::new([i as u8; 24])).collect()
}

#[test]
fn a_loop_that_frees_what_it_allocates_is_all_temporary() {
    churn(1000);
    let mut kept = Vec::with_capacity(500);
    keep(500, &mut kept);
    let snapshot = alloc_track::snapshot();
    assert_eq!(temporary(&snapshot, "churn"), (1000, 1000));
    assert_eq!(temporary(&snapshot, "::keep"), (500, 0));
    drop(kept);
}

#[test]
fn a_block_freed_after_a_later_allocation_is_not_temporary() {
    for _ in 0..100 {
        let first = first_of_pair();
        let second = second_of_pair();
        // `second` is the thread's last allocation: temporary; `first` was
        // followed by `second`'s allocation: not.
        drop(second);
        drop(first);
    }
    let snapshot = alloc_track::snapshot();
    assert_eq!(temporary(&snapshot, "first_of_pair"), (100, 0));
    assert_eq!(temporary(&snapshot, "second_of_pair"), (100, 100));
}

#[test]
fn a_block_freed_by_another_thread_is_not_temporary() {
    // Each block's free happens on another thread, so the allocating
    // thread's "last allocation" never sees it.
    for _ in 0..20 {
        let mut blocks = freed_elsewhere(1);
        let block = blocks.pop();
        drop(blocks);
        std::thread::spawn(move || drop(block)).join().unwrap();
    }
    let snapshot = alloc_track::snapshot();
    let (total, temporary) = temporary(&snapshot, "freed_elsewhere");
    assert!(total >= 20, "{total}");
    // The Vec's buffer (freed right away by its own thread) may be, the
    // boxes may not: at most one temporary per round.
    assert!(temporary <= 20, "{temporary} of {total}");
    let boxes: u64 = snapshot
        .sites()
        .iter()
        .filter(|s| {
            passes_through(&s.stack(), "freed_elsewhere")
                && s.stack()
                    .frames()
                    .iter()
                    .any(|f| f.function.contains("Box"))
        })
        .map(|s| s.temporary_blocks())
        .sum();
    assert_eq!(boxes, 0);
}
