//! The partial modes' fast path at its edges, in count mode: a realloc
//! that the fast path reserved budget for and the inner allocator then
//! failed, and more threads at once than there are totals slots (the
//! threads without one are counted through the shared fallback, never the
//! fast path), and a fork while another thread holds a slot (the child's
//! next thread may be given that thread's memory). Totals stay exact, and
//! the peak true.
//!
//! A plain program (`harness = false`): process-wide totals are only exact
//! to the byte when no other thread allocates. A watchdog ends it with a
//! failure rather than let a stuck thread hang the run.

use std::alloc::Layout;
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use alloc_track::{reset_peak, snapshot, Mode, Tracker};

mod common;

use common::fail_on_demand::{self, FailOnDemand};

#[global_allocator]
static GLOBAL: Tracker<FailOnDemand> = Tracker::new(FailOnDemand).counting();

/// Well above the tracker's 1,024 totals slots.
const THREADS: usize = 1100;
const WATCHDOG: Duration = Duration::from_secs(300);
/// A healthy forked child needs milliseconds.
const CHILD_DEADLINE: Duration = Duration::from_secs(30);
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
        fail_on_demand::fail(true);
        for _ in 0..10_000 {
            assert!(std::alloc::realloc(block, layout, 1024).is_null());
        }
        fail_on_demand::fail(false);
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
#[allow(clippy::vec_box)] // one block per box is the point
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

/// A thread holding live blocks at a fork does not exist in the child,
/// but its totals do, and glibc hands its stack and thread-locals to the
/// child's next thread. That thread's figures must not overwrite the lost
/// thread's, nor be counted twice: in the child, a thread that allocates
/// and frees everything leaves the live figures exactly as they were.
fn a_forked_child_keeps_the_lost_threads_totals() {
    // The main thread's own handle, made once, before any figure is taken.
    thread::spawn(|| ()).join().unwrap();
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        let kept: Vec<Box<[u8; 1024]>> = (0..1024).map(|_| Box::new([1u8; 1024])).collect();
        ready_tx.send(()).unwrap();
        let _ = done_rx.recv();
        drop(kept);
    });
    ready_rx.recv().unwrap();
    // SAFETY: the child only takes snapshots, runs one thread and exits
    // with `_exit`; it never returns into the parent's code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = child_after_fork();
        // SAFETY: ends the child without running the parent's atexit
        // handlers or destructors.
        unsafe { libc::_exit(code) };
    }
    let status = wait_for(pid);
    done_tx.send(()).unwrap();
    holder.join().unwrap();
    assert_eq!(
        status,
        Some(0),
        "the child's figures were wrong (1: live bytes, 2: live blocks, 3: totals)"
    );
}

/// The child's check; returns its exit code. Neither prints nor panics.
fn child_after_fork() -> i32 {
    let before = snapshot();
    let worker = thread::spawn(|| {
        let blocks: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([2u8; 100])).collect();
        drop(blocks);
    });
    if worker.join().is_err() {
        return 4;
    }
    let after = snapshot();
    if after.live_bytes() != before.live_bytes() {
        return 1;
    }
    if after.live_blocks() != before.live_blocks() {
        return 2;
    }
    if after.total_blocks() < before.total_blocks() + 1001 {
        return 3;
    }
    0
}

/// The child's exit code, or `None` if it died of a signal or took longer
/// than [`CHILD_DEADLINE`] (then it is killed).
fn wait_for(pid: libc::pid_t) -> Option<i32> {
    let start = Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out-pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
        }
        if start.elapsed() > CHILD_DEADLINE {
            // SAFETY: kills and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    assert_eq!(alloc_track::mode(), Mode::Count);
    common::start_watchdog("partial_fast_path", WATCHDOG);
    failed_reallocs_on_the_fast_path_leave_the_figures_alone();
    threads_beyond_the_slots_count_exactly();
    a_forked_child_keeps_the_lost_threads_totals();
    println!("partial_fast_path: 3 passed, 0 failed");
}
