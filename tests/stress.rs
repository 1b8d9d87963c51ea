//! Many threads allocating, reallocating and freeing at once, half of the
//! blocks freed on another thread than the one that allocated them, while
//! another thread takes snapshots and builds dumps in a loop. At the end
//! every figure is exact, and a watchdog fails the run (rather than letting
//! CI hang) if anything deadlocks.
//!
//! The short version runs in `cargo test`. The long one (8 threads x
//! 1,000,000 operations) is ignored by default:
//!
//! ```text
//! cargo test --release --test stress -- --ignored --nocapture
//! ```

mod common;

use std::alloc::System;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use alloc_track::{snapshot, Tracker};
use common::{figures, Figures};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

const THREADS: usize = 8;

/// Both tests read cumulative figures before and after: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Allocates one block of exactly `size` bytes: the "alloc" site.
#[inline(never)]
fn alloc_block(size: usize) -> Vec<u8> {
    black_box(vec![0u8; size])
}

/// Grows a block in place or by moving it (one `realloc` of the whole
/// block to exactly `len + extra` bytes): the "grow" site.
#[inline(never)]
fn grow_block(block: &mut Vec<u8>, extra: usize) {
    block.reserve_exact(extra);
    black_box(block.as_ptr());
}

/// Which site a block is attributed to now: its last `realloc` moves it
/// to the grow site.
#[derive(Clone, Copy, PartialEq)]
enum Origin {
    Alloc,
    Grow,
}

/// What one worker did, for the exact expectations.
#[derive(Default)]
struct Expected {
    alloc: Figures,
    grow: Figures,
}

impl Expected {
    fn add(&mut self, other: &Expected) {
        for (mine, theirs) in [
            (&mut self.alloc, &other.alloc),
            (&mut self.grow, &other.grow),
        ] {
            mine.total_blocks += theirs.total_blocks;
            mine.total_bytes += theirs.total_bytes;
            mine.live_blocks += theirs.live_blocks;
            mine.live_bytes += theirs.live_bytes;
        }
    }
}

/// A worker: `ops` operations picked by a per-thread xorshift, a window of
/// blocks it owns, blocks sent to the next worker to free, and blocks it
/// receives from the previous one. Keeps `keep` blocks alive at the end.
fn worker(
    seed: u64,
    ops: usize,
    keep: usize,
    to_next: mpsc::Sender<Vec<u8>>,
    from_previous: mpsc::Receiver<Vec<u8>>,
) -> (Expected, Vec<(Vec<u8>, Origin)>) {
    let mut expected = Expected::default();
    let mut window: Vec<(Vec<u8>, Origin)> = Vec::with_capacity(256);
    let mut state = seed | 1;
    for _ in 0..ops {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let size = 1 + (state >> 40) as usize % 2048;
        match state % 8 {
            // Allocate (most often, so the window fills).
            0..=3 => {
                expected.alloc.total_blocks += 1;
                expected.alloc.total_bytes += size as u64;
                window.push((alloc_block(size), Origin::Alloc));
            }
            // Grow a block: one realloc.
            4 if !window.is_empty() => {
                let index = (state >> 20) as usize % window.len();
                let (block, origin) = &mut window[index];
                let extra = 1 + size % 512;
                let new_len = block.len() + extra;
                grow_block(block, extra);
                block.resize(new_len, 1); // within capacity: no allocation
                *origin = Origin::Grow;
                expected.grow.total_blocks += 1;
                expected.grow.total_bytes += new_len as u64;
            }
            // Free here.
            5 if !window.is_empty() => {
                let index = (state >> 20) as usize % window.len();
                drop(window.swap_remove(index));
            }
            // Hand a block to the next worker, which frees it.
            6 if !window.is_empty() => {
                let index = (state >> 20) as usize % window.len();
                let (block, _) = window.swap_remove(index);
                // The next worker may already have finished: then the
                // block comes back and is freed here.
                if let Err(mpsc::SendError(block)) = to_next.send(block) {
                    drop(block);
                }
            }
            _ => {}
        }
        // Free what the previous worker sent.
        while let Ok(block) = from_previous.try_recv() {
            drop(block);
        }
        // Bound the window so the live heap stays small.
        if window.len() > 200 {
            let index = (state >> 24) as usize % window.len();
            drop(window.swap_remove(index));
        }
    }
    window.truncate(keep);
    for (block, origin) in &window {
        let figures = match origin {
            Origin::Alloc => &mut expected.alloc,
            Origin::Grow => &mut expected.grow,
        };
        figures.live_blocks += 1;
        figures.live_bytes += block.capacity() as u64;
    }
    (expected, window)
}

/// Writes `message` to stderr with one `write` call and aborts: no lock
/// (stderr's may be held by a deadlocked thread), no unwinding.
fn fail_hung(message: &str) -> ! {
    // SAFETY: writes `message.len()` bytes from a live buffer to fd 2.
    unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
    std::process::abort()
}

/// Starts a thread that aborts the process if `done` is not set within
/// `limit`, so that a deadlock fails the test instead of hanging CI.
fn watchdog(done: Arc<AtomicBool>, limit: Duration) {
    thread::spawn(move || {
        let start = Instant::now();
        while !done.load(Ordering::Relaxed) {
            if start.elapsed() > limit {
                fail_hung("\nstress: watchdog: not finished in time, presumed deadlocked\n");
            }
            thread::sleep(Duration::from_millis(50));
        }
    });
}

fn run(ops_per_thread: usize, limit: Duration) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let done = Arc::new(AtomicBool::new(false));
    watchdog(done.clone(), limit);
    let start = Instant::now();

    let before = snapshot();
    let alloc_before = figures(&before, "alloc_block");
    let grow_before = figures(&before, "grow_block");

    // The observer: snapshots and dumps in a loop, each dump checked for
    // self-consistency while the workers run.
    let stop = Arc::new(AtomicBool::new(false));
    let dumps = Arc::new(AtomicU64::new(0));
    let observer = {
        let (stop, dumps) = (stop.clone(), dumps.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let snapshot = snapshot();
                let dump = snapshot.to_dump();
                dump.validate()
                    .expect("a dump taken under load is consistent");
                black_box(snapshot.diff(&snapshot).live_bytes());
                dumps.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // A ring: each worker frees what the previous one sends it.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..THREADS).map(|_| mpsc::channel()).unzip();
    let barrier = Arc::new(Barrier::new(THREADS));
    let mut receivers: Vec<Option<mpsc::Receiver<Vec<u8>>>> =
        receivers.into_iter().map(Some).collect();
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let to_next = senders[(t + 1) % THREADS].clone();
            let from_previous = receivers[t].take().expect("one receiver per worker");
            let barrier = barrier.clone();
            thread::spawn(move || {
                barrier.wait();
                let seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(t as u64 + 1);
                worker(seed, ops_per_thread, 10, to_next, from_previous)
            })
        })
        .collect();
    drop(senders);
    let mut expected = Expected::default();
    let mut kept = Vec::new();
    for worker in workers {
        let (figures, blocks) = worker.join().expect("worker");
        expected.add(&figures);
        kept.extend(blocks);
    }
    stop.store(true, Ordering::Relaxed);
    observer.join().expect("observer");
    // Blocks still in flight in the channels were freed when the channels
    // were dropped with their receivers, before the joins returned.

    let after = snapshot();
    let alloc = figures(&after, "alloc_block");
    let grow = figures(&after, "grow_block");
    let delta = |now: Figures, then: Figures| Figures {
        live_bytes: now.live_bytes - then.live_bytes,
        live_blocks: now.live_blocks - then.live_blocks,
        total_bytes: now.total_bytes - then.total_bytes,
        total_blocks: now.total_blocks - then.total_blocks,
    };
    assert_eq!(delta(alloc, alloc_before), expected.alloc, "alloc_block");
    assert_eq!(delta(grow, grow_before), expected.grow, "grow_block");
    assert_eq!(after.health().overflowed_allocations, 0);
    assert_eq!(after.health().unrecorded_allocations, 0);
    assert!(
        dumps.load(Ordering::Relaxed) > 0,
        "the observer made no dump"
    );

    // Freeing the survivors leaves nothing live at either site.
    let kept_blocks = kept.len() as u64;
    assert_eq!(
        expected.alloc.live_blocks + expected.grow.live_blocks,
        kept_blocks
    );
    drop(kept);
    let end = snapshot();
    assert_eq!(
        figures(&end, "alloc_block").live_blocks,
        alloc_before.live_blocks
    );
    assert_eq!(
        figures(&end, "grow_block").live_blocks,
        grow_before.live_blocks
    );

    done.store(true, Ordering::Relaxed);
    let ops = (THREADS * ops_per_thread) as f64;
    println!(
        "stress: {THREADS} threads x {ops_per_thread} ops, {} dumps, {:.2} s ({:.0} ops/s)",
        dumps.load(Ordering::Relaxed),
        start.elapsed().as_secs_f64(),
        ops / start.elapsed().as_secs_f64()
    );
}

#[test]
fn threads_churn_while_snapshots_and_dumps_run() {
    run(60_000, Duration::from_secs(300));
}

#[test]
#[ignore = "long: cargo test --release --test stress -- --ignored"]
fn threads_churn_millions_of_operations() {
    run(1_000_000, Duration::from_secs(1800));
}
