//! Full mode's process-wide peak is exact with threads: each thread keeps
//! a share of the room below the peak, and the peak must still rise by
//! exactly what two threads hold at once, and `reset_peak` must land
//! exactly on the live bytes after threads have churned, freed each
//! other's blocks and exited (their shares gone back to the pool).
//!
//! One test function: the peak is process-wide, so nothing else in this
//! binary may allocate while it runs.

use std::alloc::System;
use std::hint::black_box;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use alloc_track::{reset_peak, snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

const MIB: usize = 1 << 20;

#[inline(never)]
fn block(size: usize) -> Vec<u8> {
    black_box(Vec::with_capacity(size))
}

/// Threads churning blocks, a third of them freed on another thread, so
/// that shares are taken, given back on the wrong thread, gathered and
/// left behind by exiting threads.
fn churn(threads: usize, rounds: usize) {
    let (to_sink, sink) = mpsc::channel::<Vec<u8>>();
    let sink = thread::spawn(move || sink.into_iter().map(|b| b.capacity()).sum::<usize>());
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let to_sink = to_sink.clone();
            thread::spawn(move || {
                let mut kept = Vec::new();
                for i in 0..rounds {
                    let size = 16 + (i * 7919 + t * 104_729) % 20_000;
                    match i % 3 {
                        0 => to_sink.send(block(size)).unwrap(),
                        1 => kept.push(block(size)),
                        _ => drop(block(size * 3)),
                    }
                    if kept.len() > 64 {
                        kept.drain(..32);
                    }
                }
            })
        })
        .collect();
    drop(to_sink);
    for worker in workers {
        worker.join().unwrap();
    }
    black_box(sink.join().unwrap());
}

/// Threads each holding at most `limit` bytes of blocks at any moment,
/// allocating and freeing at random near that limit: together they hold
/// at most `threads * limit`, so a peak above that (plus what the threads
/// hold besides) counted room that was not there.
fn near_the_limit(threads: usize, limit: usize, rounds: usize) -> (u64, u64) {
    let ready = Arc::new(Barrier::new(threads + 1));
    let go = Arc::new(Barrier::new(threads + 1));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (ready, go) = (ready.clone(), go.clone());
            thread::spawn(move || {
                let mut held: Vec<Vec<u8>> = Vec::with_capacity(limit / 16 + 1);
                let (mut held_bytes, mut seed) = (0, 0x9E37_79B9_7F4A_7C15u64 ^ t as u64);
                ready.wait();
                go.wait();
                for _ in 0..rounds {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let size = 16 + (seed as usize >> 8) % 4096;
                    if held_bytes + size <= limit {
                        held_bytes += size;
                        held.push(block(size));
                    } else if !held.is_empty() {
                        let gone = held.swap_remove((seed as usize >> 40) % held.len());
                        held_bytes -= gone.capacity();
                    }
                }
                ready.wait();
                drop(held);
            })
        })
        .collect();
    ready.wait();
    reset_peak();
    let baseline = snapshot().live_bytes();
    go.wait();
    ready.wait();
    let peak = snapshot().peak_bytes();
    for worker in workers {
        worker.join().unwrap();
    }
    (baseline, peak)
}

#[test]
fn the_peak_is_exact_across_threads() {
    if alloc_track::mode() != alloc_track::Mode::Full {
        return;
    }
    // Four threads near their limits cross between the regimes (room in
    // shares far from the peak, in the pool near it) over and over.
    const LIMIT: usize = 256 << 10;
    for _ in 0..4 {
        let (baseline, peak) = near_the_limit(4, LIMIT, 200_000);
        assert!(
            peak <= baseline + 4 * LIMIT as u64,
            "peak {peak} above {baseline} + 4 x {LIMIT}"
        );
        assert!(
            peak >= baseline + LIMIT as u64 - 4096,
            "peak {peak}, baseline {baseline}"
        );
    }

    churn(6, 20_000);

    // After all that, a reset lands on the live bytes: the headroom the
    // threads held, gave and left behind adds up to peak minus live.
    let big = block(MIB);
    reset_peak();
    let at_reset = snapshot();
    assert_eq!(at_reset.peak_bytes(), at_reset.live_bytes());
    // Freeing and allocating less does not move it: had the shares held
    // more than the room below the peak, the peak would now read lower.
    drop(big);
    let small = block(MIB / 4);
    let after_small = snapshot();
    assert_eq!(
        after_small.live_bytes(),
        at_reset.live_bytes() - MIB as u64 * 3 / 4
    );
    assert_eq!(after_small.peak_bytes(), at_reset.peak_bytes());
    drop(small);

    // Two threads allocate at once and hold their blocks together: the
    // peak rises by exactly both, though neither thread's share had room.
    let start = Arc::new(Barrier::new(3));
    let both_held = Arc::new(Barrier::new(3));
    let done = Arc::new(Barrier::new(3));
    let holders: Vec<_> = [3 * MIB, 2 * MIB]
        .into_iter()
        .map(|size| {
            let (start, both_held, done) = (start.clone(), both_held.clone(), done.clone());
            thread::spawn(move || {
                start.wait();
                let held = block(size);
                both_held.wait();
                done.wait();
                drop(held);
            })
        })
        .collect();
    // The threads exist (their start-up allocations are done) before the
    // baseline is taken.
    thread::sleep(std::time::Duration::from_millis(50));
    reset_peak();
    let baseline = snapshot();
    start.wait();
    both_held.wait();
    let held = snapshot();
    done.wait();
    for holder in holders {
        holder.join().unwrap();
    }
    assert_eq!(held.live_bytes(), baseline.live_bytes() + 5 * MIB as u64);
    assert_eq!(held.peak_bytes(), baseline.live_bytes() + 5 * MIB as u64);
    let after = snapshot();
    assert_eq!(after.peak_bytes(), held.peak_bytes());
    assert!(after.live_bytes() < held.live_bytes());
}
