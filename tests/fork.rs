//! `fork()` from a tracked process while other threads allocate: the
//! child inherits the tracker's locks in whatever state the other threads
//! left them, and without the tracker's fork handlers a lock held at the
//! fork is held forever in the child. Here the child must allocate, take a
//! snapshot and exit, every time, and the parent must carry on.

mod common;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use alloc_track::{measure, reset_peak, snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// How long a child may take before the test calls it hung. A healthy
/// child needs a few milliseconds.
const CHILD_DEADLINE: Duration = Duration::from_secs(10);
const FORKS: usize = 50;
const HAMMERS: usize = 3;

/// Resets the peak in a loop: each reset holds the peak-breakdown flag
/// while it copies every site's figures.
fn reset_peaks(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        reset_peak();
        // Let a forking thread's prepare handler win the flag now and then:
        // a tight loop would starve it on a busy machine.
        thread::yield_now();
    }
}

#[inline(never)]
fn hammer(stop: &AtomicBool, rounds: &AtomicU64) {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        // Mixed sizes and a sliding window of live blocks, so that both
        // the live table and the stack index are locked all the time.
        kept.push(vec![0u8; 16 + i % 512]);
        if kept.len() > 64 {
            kept.swap_remove(i % 64);
        }
        if let Some(last) = kept.last_mut() {
            last.resize(last.len() + 8, 1);
        }
        // Now and then a large block, freed at once: the heap is then far
        // below its peak, where each thread holds a share of the room
        // below it (`headroom.rs`), which a fork must not lose.
        if i.is_multiple_of(512) {
            drop(black_box(vec![0u8; 256 << 10]));
        }
        i += 1;
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    black_box(kept);
}

/// The child's work: allocate, measure, reset the peak, snapshot. Returns the exit code:
/// 0 when every figure is right. Neither prints nor panics: another thread
/// of the parent may have held the stdout lock at the fork.
#[inline(never)]
fn child_work() -> i32 {
    let (block, diff) = measure(|| black_box(vec![7u8; 1000]));
    if diff.total_blocks() != 1 || diff.live_bytes() != 1000 {
        return 2;
    }
    reset_peak();
    let snapshot = snapshot();
    if snapshot.live_bytes() < 1000 || snapshot.live_blocks() < 1 {
        return 3;
    }
    // The child works its room below the peak out afresh, and a free is
    // counted as its record leaves: the reset lands on the live bytes. (An
    // operation a lost thread was in the middle of at the fork can only
    // leave the peak short of the records, which the snapshot's floor at
    // the live bytes hides. Before, a lost thread's 256 KiB block taken
    // out of its slot but not yet counted freed left the peak above them,
    // in about one run of this test in 100. The slack is for safety.)
    let slack = HAMMERS as u64 * 1024;
    if snapshot.peak_bytes() > snapshot.live_bytes() + slack {
        return 4;
    }
    let big = black_box(vec![1u8; 1 << 20]);
    let raised = alloc_track::snapshot().peak_bytes();
    let expected = snapshot.live_bytes() + (1 << 20);
    if raised < expected || raised > expected + slack {
        return 5;
    }
    drop((block, big));
    0
}

#[test]
fn a_child_forked_during_allocations_can_allocate_snapshot_and_exit() {
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let mut hammers: Vec<_> = (0..HAMMERS)
        .map(|_| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            thread::spawn(move || hammer(&stop, &rounds))
        })
        .collect();
    hammers.push({
        let stop = stop.clone();
        thread::spawn(move || reset_peaks(&stop))
    });
    // Let every hammer get going before the first fork.
    while rounds.load(Ordering::Relaxed) < 10_000 {
        thread::yield_now();
    }

    let mut failures = Vec::new();
    for attempt in 0..FORKS {
        // SAFETY: the child only runs `child_work`, which the tracker's
        // fork handlers make safe, and leaves through `_exit`, which runs
        // no destructors or atexit handlers inherited from the parent.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_work();
            // SAFETY: ends the child without unwinding into the test
            // harness's copy.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        match common::wait_with_deadline(pid, CHILD_DEADLINE) {
            None => failures.push(format!("fork {attempt}: child hung (killed)")),
            Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => {}
            Some(status) => failures.push(format!("fork {attempt}: child status {status:#x}")),
        }
        let before = rounds.load(Ordering::Relaxed);
        // The parent goes on: its threads still allocate after the fork.
        while rounds.load(Ordering::Relaxed) < before + 100 {
            thread::yield_now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for hammer in hammers {
        hammer.join().unwrap();
    }
    assert!(failures.is_empty(), "{failures:#?}");
    // And the parent's own tracking still works.
    let (_, diff) = measure(|| black_box(vec![1u8; 4096]));
    assert_eq!(diff.total_bytes(), 4096, "{diff}");
}
