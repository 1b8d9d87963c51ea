//! Exact figures under threads: allocations on several threads at once,
//! blocks freed on another thread than the one that allocated them, and
//! `measure` calls on parallel threads while a noisy thread churns.

mod common;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;

use alloc_track::{measure, snapshot, Tracker};
use common::{diff_figures, figures};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn allocate_on_worker(count: usize, size: usize) -> Vec<Box<[u8]>> {
    (0..count)
        .map(|_| vec![1u8; size].into_boxed_slice())
        .collect()
}

#[test]
fn several_threads_allocate_at_once() {
    const THREADS: usize = 4;
    const COUNT: usize = 5_000;
    let before = snapshot();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                allocate_on_worker(COUNT, 16 + t)
            })
        })
        .collect();
    let kept: Vec<Vec<Box<[u8]>>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let after = snapshot();
    let diff = after.diff(&before);

    // Each thread: COUNT boxes of 16+t bytes, plus one Vec of COUNT
    // pointers (16 bytes each, a boxed slice is a fat pointer) collected
    // with an exact size hint.
    let boxes: u64 = (0..THREADS as u64).map(|t| COUNT as u64 * (16 + t)).sum();
    let vectors = THREADS as u64 * COUNT as u64 * 16;
    let (live_bytes, live_blocks, total_bytes, total_blocks, retained_bytes, retained_blocks) =
        diff_figures(&diff, "allocate_on_worker");
    let blocks = (THREADS * (COUNT + 1)) as u64;
    assert_eq!(total_blocks, blocks, "{diff}");
    assert_eq!(total_bytes, boxes + vectors, "{diff}");
    assert_eq!(
        (live_blocks, live_bytes),
        (blocks as i64, (boxes + vectors) as i64),
        "{diff}"
    );
    assert_eq!(
        (retained_blocks, retained_bytes),
        (blocks, boxes + vectors),
        "{diff}"
    );
    drop(kept);

    let freed = snapshot();
    let now = figures(&freed, "allocate_on_worker");
    let then = figures(&after, "allocate_on_worker");
    assert_eq!(now.live_blocks, then.live_blocks - blocks);
    assert_eq!(now.total_blocks, then.total_blocks);
}

// One heap block per value is the point: many small blocks to free
// elsewhere.
#[allow(clippy::vec_box)]
#[inline(never)]
fn allocate_for_another_thread(count: usize) -> Vec<Box<u64>> {
    // Through `black_box`: an optimised build may otherwise make the
    // `collect` a tail call, and this function would not be on its stack.
    black_box((0..count as u64).map(Box::new).collect())
}

#[test]
fn blocks_freed_on_another_thread() {
    const COUNT: usize = 10_000;
    let (sender, receiver) = mpsc::channel::<Vec<Box<u64>>>();
    let freer = thread::spawn(move || {
        for batch in receiver {
            drop(batch);
        }
    });
    let before = snapshot();
    for _ in 0..4 {
        sender.send(allocate_for_another_thread(COUNT)).unwrap();
    }
    drop(sender);
    freer.join().unwrap();
    let diff = snapshot().diff(&before);
    let (live_bytes, live_blocks, total_bytes, total_blocks, retained_bytes, _) =
        diff_figures(&diff, "allocate_for_another_thread");
    assert_eq!(total_blocks, 4 * (COUNT as u64 + 1), "{diff}");
    assert_eq!(
        total_bytes,
        4 * (COUNT as u64 * 8 + COUNT as u64 * 8),
        "{diff}"
    );
    assert_eq!(
        (live_blocks, live_bytes, retained_bytes),
        (0, 0, 0),
        "{diff}"
    );
}

#[inline(never)]
fn workload(items: usize) -> usize {
    let strings: Vec<String> = (0..items).map(|i| format!("{i:08}")).collect();
    strings.iter().map(String::len).sum()
}

#[test]
fn parallel_measures_are_exact_per_thread() {
    let stop = Arc::new(AtomicBool::new(false));
    // A noisy neighbour: allocates and frees constantly, and takes
    // snapshots, while the measured threads run.
    let noise = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                black_box(noise_allocations());
                if rounds.is_multiple_of(50) {
                    black_box(snapshot().live_bytes());
                }
                rounds += 1;
            }
        })
    };
    let handles: Vec<_> = (1..=6)
        .map(|t| {
            thread::spawn(move || {
                let items = t * 100;
                for _ in 0..20 {
                    let (sum, diff) = measure(|| workload(items));
                    assert_eq!(sum, items * 8);
                    // One String per item (8 bytes), one Vec of items.
                    assert_eq!(diff.total_blocks(), items as u64 + 1, "{diff}");
                    assert_eq!(
                        diff.total_bytes(),
                        (items * 8 + items * 24) as u64,
                        "{diff}"
                    );
                    assert_eq!((diff.live_blocks(), diff.live_bytes()), (0, 0), "{diff}");
                    assert_eq!(diff.retained_blocks(), 0, "{diff}");
                    assert_eq!(
                        diff.peak_bytes(),
                        Some((items * 8 + items * 24) as u64),
                        "{diff}"
                    );
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    noise.join().unwrap();
}

#[test]
fn measure_excludes_blocks_another_thread_freed_from_retained() {
    let (sender, receiver) = mpsc::channel::<Box<[u8; 256]>>();
    let (done_sender, done) = mpsc::channel::<()>();
    let freer = thread::spawn(move || {
        for block in receiver {
            drop(block);
            done_sender.send(()).unwrap();
        }
    });
    let (kept, diff) = measure(|| {
        let kept = block_kept_here();
        sender.send(block_for_another_thread()).unwrap();
        done.recv().unwrap();
        kept
    });
    drop(sender);
    freer.join().unwrap();
    // Count only the two blocks of interest: the channel's own blocks may
    // or may not have been freed by the other thread yet.
    let kept_figures = diff_figures(&diff, "block_kept_here");
    assert_eq!(kept_figures, (256, 1, 256, 1, 256, 1), "{diff}");
    let sent_figures = diff_figures(&diff, "block_for_another_thread");
    // Allocated here and not freed by this thread (net +1), but freed by
    // the other thread before the closure returned: not retained.
    assert_eq!(sent_figures, (256, 1, 256, 1, 0, 0), "{diff}");
    drop(kept);
}

#[inline(never)]
fn block_kept_here() -> Box<[u8; 256]> {
    Box::new([1u8; 256])
}

#[inline(never)]
fn block_for_another_thread() -> Box<[u8; 256]> {
    Box::new([2u8; 256])
}

#[inline(never)]
fn noise_allocations() -> Vec<Vec<u8>> {
    (0..100).map(|i| vec![0u8; 64 + i]).collect()
}
