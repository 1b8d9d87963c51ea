//! The partial modes' fast path at its edges, in count mode: a realloc
//! that the fast path reserved budget for and the inner allocator then
//! failed, and more threads at once than there are totals slots (the
//! threads without one are counted through the shared fallback, never the
//! fast path). Totals stay exact, and the peak true.
//!
//! A plain program (`harness = false`): process-wide totals are only exact
//! to the byte when no other thread allocates. A watchdog ends it with a
//! failure rather than let a stuck thread hang the run.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use alloc_track::{reset_peak, snapshot, Mode, Tracker};

/// Fails every allocation and realloc of this thread while `FAIL` is set.
struct FailOnDemand;

thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

fn failing() -> bool {
    FAIL.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to System, or returns null, which GlobalAlloc allows.
unsafe impl GlobalAlloc for FailOnDemand {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if failing() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if failing() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracker<FailOnDemand> = Tracker::new(FailOnDemand).counting();

/// Well above the tracker's 1,024 totals slots.
const THREADS: usize = 1100;
const WATCHDOG: Duration = Duration::from_secs(300);
/// The partial modes' peak is exact to within this much per thread.
const PUBLISH_STEP: u64 = 64 * 1024;

/// Small reallocs the inner allocator refuses: each one passes the fast
/// path's checks (budget reserved) before the inner call fails, so each
/// must give back exactly what it took. Were the growth kept, the thread's
/// unpublished live bytes would swell by megabytes and the next publish
/// would lift the peak far above anything the heap held.
fn failed_reallocs_on_the_fast_path_leave_the_figures_alone() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    // SAFETY: a non-zero size; the block is checked non-null and freed
    // with the layout it was allocated with (every realloc failed).
    unsafe {
        // Warm the thread up so that its fast path is open.
        drop(vec![0u8; 16]);
        let block = std::alloc::alloc(layout);
        assert!(!block.is_null());
        let before = snapshot();
        reset_peak();
        FAIL.with(|fail| fail.set(true));
        for _ in 0..10_000 {
            assert!(std::alloc::realloc(block, layout, 1024).is_null());
        }
        FAIL.with(|fail| fail.set(false));
        let after = snapshot();
        assert_eq!(after.total_blocks(), before.total_blocks(), "{after}");
        assert_eq!(after.total_bytes(), before.total_bytes());
        assert_eq!(after.live_bytes(), before.live_bytes());
        // A block larger than the publish step goes through the slow path,
        // which publishes whatever the thread has not.
        let large = Layout::from_size_align(1 << 20, 8).unwrap();
        let big = std::alloc::alloc(large);
        assert!(!big.is_null());
        std::alloc::dealloc(big, large);
        let peak = snapshot().peak_bytes();
        let bound = before.live_bytes() + (1 << 20) + 2 * PUBLISH_STEP;
        assert!(
            peak <= bound,
            "peak {peak} above the {bound} bytes the heap ever held"
        );
        std::alloc::dealloc(block, layout);
    }
}

/// More threads alive at once than there are slots: every allocation and
/// free lands in the totals exactly once, whichever way it was counted.
fn threads_beyond_the_slots_count_exactly() {
    // A first, small round: what the standard library sets up once (the
    // main thread's own handle, for parking) stays out of the figures.
    drop(run_threads(2));
    let before = snapshot();
    let kept = run_threads(THREADS);
    let during = snapshot();
    // Every thread's 100 boxes and its vector, at least (spawning
    // allocates too).
    let blocks = (THREADS * 101) as u64;
    assert!(
        during.total_blocks() - before.total_blocks() >= blocks,
        "{during}"
    );
    assert!(during.live_bytes() - before.live_bytes() >= (THREADS * 50 * 100) as u64);
    // Freed here, on a thread with a slot, what the others allocated.
    drop(kept);
    let after = snapshot();
    assert_eq!(
        after.live_bytes(),
        before.live_bytes(),
        "live bytes must return exactly: {after}"
    );
    assert_eq!(after.live_blocks(), before.live_blocks());
}

/// Runs `count` threads at once, each allocating 100 boxes and returning
/// half of them (the rest freed on the thread).
fn run_threads(count: usize) -> Vec<Vec<Box<[u8; 100]>>> {
    let barrier = Arc::new(Barrier::new(count));
    let workers: Vec<_> = (0..count)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || {
                    let mut kept: Vec<Box<[u8; 100]>> = Vec::with_capacity(100);
                    for _ in 0..100 {
                        kept.push(Box::new([7u8; 100]));
                    }
                    // Every thread holds its slot, or found none, until all
                    // have started.
                    barrier.wait();
                    kept.truncate(50);
                    kept
                })
                .expect("spawn")
        })
        .collect();
    workers
        .into_iter()
        .map(|worker| worker.join().expect("worker panicked"))
        .collect()
}

fn main() {
    assert_eq!(alloc_track::mode(), Mode::Count);
    thread::spawn(|| {
        thread::sleep(WATCHDOG);
        eprintln!("partial_fast_path: watchdog: no result after {WATCHDOG:?}");
        std::process::exit(1);
    });
    failed_reallocs_on_the_fast_path_leave_the_figures_alone();
    threads_beyond_the_slots_count_exactly();
    println!("partial_fast_path: 2 passed, 0 failed");
}
