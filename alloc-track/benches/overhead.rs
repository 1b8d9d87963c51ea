//! The tracker's overhead against `std::alloc::System`: one binary, run
//! with `cargo bench -p alloc-track --bench overhead`, that prints one table of median
//! times and ratios (`alloc-track/docs/performance.md`).
//!
//! Run without `--child`, the binary is the *driver*: it re-executes itself
//! once per measurement, as a *child* that installs one allocator (System,
//! or the tracker in one mode), runs one workload on 1 or 2 threads and
//! prints its time. A process per measurement gives every configuration a
//! fresh heap and a fresh tracker, and lets the tracker read its mode from
//! the environment as a user's program would.
//!
//! The peers run the same children: heaptrack preloads itself into a
//! `System` child, and dhat-rs is one more choice of the global allocator
//! (`ALLOC_BENCH_ALLOCATOR=dhat`). Where valgrind is installed, callgrind
//! counts the instructions of one child per configuration (`callgrind.rs`).

#[path = "overhead/callgrind.rs"]
mod callgrind;
#[path = "overhead/child.rs"]
mod child;
#[path = "overhead/driver.rs"]
mod driver;
#[path = "overhead/table.rs"]
mod table;
#[path = "overhead/workloads.rs"]
mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

use alloc_track::Tracker;

/// The environment variable that tells a child which allocator to use:
/// `system`, `tracker` or `dhat`. The tracker's mode comes from its own
/// variable, `ALLOC_TRACK_MODE`, read by the library.
const ALLOCATOR_VAR: &str = "ALLOC_BENCH_ALLOCATOR";

/// The prefix of the one line a child prints for the driver, which finds
/// it among whatever a peer profiler prints on the same stdout.
const CHILD_LINE_PREFIX: &str = "overhead-child:";

static TRACKER: Tracker<System> = Tracker::new(System);

/// Where this process sends allocations: one of the `USE_*` values. Set
/// once, in `main`, before any other thread exists.
static ALLOCATOR: AtomicU8 = AtomicU8::new(USE_SYSTEM);
const USE_SYSTEM: u8 = 0;
const USE_TRACKER: u8 = 1;
/// dhat-rs, the peer: its `Alloc` must be the global allocator, chosen at
/// compile time, so it joins the switch.
const USE_DHAT: u8 = 2;

/// The global allocator: a switch between `System`, the tracker and dhat,
/// so one binary measures them all. The switch's relaxed load and branch is
/// paid by every configuration, `System` included, so it cancels out of
/// the ratios.
///
/// Relaxed is enough: the choice is stored once, on the main thread, before
/// any thread that allocates is spawned (spawning orders the store before
/// everything the new thread does). Blocks the runtime allocated before the
/// switch, from `System`, may be freed or reallocated through the tracker
/// or dhat afterwards; both find no record of them and pass them to
/// `System`, where they came from.
struct BenchAlloc;

#[global_allocator]
static GLOBAL: BenchAlloc = BenchAlloc;

// SAFETY: every method forwards its arguments unchanged to `System`, to
// `Tracker<System>` or to `dhat::Alloc` (which allocates from `System`),
// all sound `GlobalAlloc`s backed by the same `System` heap, so a block
// from any of them may be freed or resized by another.
unsafe impl GlobalAlloc for BenchAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which
        // is passed on unchanged.
        unsafe {
            match ALLOCATOR.load(Ordering::Relaxed) {
                USE_TRACKER => TRACKER.alloc(layout),
                USE_DHAT => dhat::Alloc.alloc(layout),
                _ => System.alloc(layout),
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            match ALLOCATOR.load(Ordering::Relaxed) {
                USE_TRACKER => TRACKER.alloc_zeroed(layout),
                USE_DHAT => dhat::Alloc.alloc_zeroed(layout),
                _ => System.alloc_zeroed(layout),
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System`, the tracker or dhat, all backed
        // by `System` (see the impl's SAFETY note).
        unsafe {
            match ALLOCATOR.load(Ordering::Relaxed) {
                USE_TRACKER => TRACKER.dealloc(ptr, layout),
                USE_DHAT => dhat::Alloc.dealloc(ptr, layout),
                _ => System.dealloc(ptr, layout),
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`.
        unsafe {
            match ALLOCATOR.load(Ordering::Relaxed) {
                USE_TRACKER => TRACKER.realloc(ptr, layout, new_size),
                USE_DHAT => dhat::Alloc.realloc(ptr, layout, new_size),
                _ => System.realloc(ptr, layout, new_size),
            }
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(message) => {
            eprintln!("overhead: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<ExitCode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child::run(&args[1..])?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = driver::Options::parse(&args)?;
    driver::run(&options)
}
