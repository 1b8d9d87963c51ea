//! Temporary allocations in sampled mode: each sample is followed exactly,
//! so a sampled block counts as temporary only if nothing at all (sampled
//! or not) was allocated by its thread before its free. A site whose
//! every block is temporary has as many temporary blocks as blocks (both
//! estimated from the same samples); one whose blocks never are, none.

// The tests keep boxes in vectors on purpose: each box is one block.
#![allow(clippy::vec_box)]

mod common;

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{Mode, Snapshot, Tracker};
use common::passes_through;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).sampled(256);

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
        drop(black_box(Box::new([i as u8; 64])));
    }
}

#[inline(never)]
fn keep(rounds: usize, into: &mut Vec<Box<[u8; 64]>>) {
    for i in 0..rounds {
        into.push(Box::new([i as u8; 64]));
    }
}

#[inline(never)]
fn first_of_pair() -> Box<[u8; 64]> {
    black_box(Box::new([1; 64]))
}

#[inline(never)]
fn second_of_pair() -> Box<[u8; 64]> {
    black_box(Box::new([2; 64]))
}

#[test]
fn sampled_blocks_are_followed_exactly() {
    assert!(matches!(alloc_track::mode(), Mode::Sampled { .. }));
    churn(20_000);
    let mut kept = Vec::with_capacity(5_000);
    keep(5_000, &mut kept);
    for _ in 0..5_000 {
        let first = first_of_pair();
        let second = second_of_pair();
        drop(second);
        drop(first);
    }
    let snapshot = alloc_track::snapshot();

    let (total, temporary_churn) = temporary(&snapshot, "churn");
    assert!(total > 0, "no samples at the churn site");
    assert_eq!(temporary_churn, total);
    assert_eq!(temporary(&snapshot, "::keep").1, 0);
    // The first of each pair is followed by the second's allocation, which
    // is mostly not sampled (it takes the fast path): still not temporary.
    let (first_total, first_temporary) = temporary(&snapshot, "first_of_pair");
    assert!(first_total > 0);
    assert_eq!(first_temporary, 0);
    let (second_total, second_temporary) = temporary(&snapshot, "second_of_pair");
    assert_eq!(second_temporary, second_total);
    drop(kept);
}
