//! The tracker's overhead against `std::alloc::System`: one binary, run
//! with `cargo bench -p alloc-track --bench overhead`, that prints one table of median
//! times and ratios (README, "Performance").
//!
//! Run without `--child`, the binary is the *driver*: it re-executes itself
//! once per measurement, as a *child* that installs one allocator (System,
//! or the tracker in one mode), runs one workload on 1 or 2 threads and
//! prints its time. A process per measurement gives every configuration a
//! fresh heap and a fresh tracker, and lets the tracker read its mode from
//! the environment as a user's program would.

#[path = "overhead/driver.rs"]
mod driver;
#[path = "overhead/workloads.rs"]
mod workloads;

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use alloc_track::Tracker;

use workloads::{Kept, Size, Workload};

/// The environment variable that tells a child which allocator to use:
/// `system` or `tracker`. The tracker's mode comes from its own variable,
/// `ALLOC_TRACK_MODE`, read by the library.
const ALLOCATOR_VAR: &str = "ALLOC_BENCH_ALLOCATOR";

static TRACKER: Tracker<System> = Tracker::new(System);

/// Whether this process sends allocations to `TRACKER` (true) or straight
/// to `System`. Set once, in `main`, before any other thread exists.
static USE_TRACKER: AtomicBool = AtomicBool::new(false);

/// The global allocator: a switch between `System` and the tracker, so one
/// binary measures both. The switch's relaxed load and branch is paid by
/// every configuration, `System` included, so it cancels out of the ratios.
///
/// Relaxed is enough: the flag is stored once, on the main thread, before
/// any thread that allocates is spawned (spawning orders the store before
/// everything the new thread does). Blocks the runtime allocated before the
/// switch, from `System`, may be freed or reallocated through the tracker
/// afterwards; the tracker finds no record of them and passes them to its
/// inner allocator, the same `System`.
struct BenchAlloc;

#[global_allocator]
static GLOBAL: BenchAlloc = BenchAlloc;

// SAFETY: every method forwards its arguments unchanged to `System` or to
// `Tracker<System>`, both sound `GlobalAlloc`s backed by the same `System`
// heap, so a block from either may be freed or resized by the other.
unsafe impl GlobalAlloc for BenchAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which
        // is passed on unchanged.
        unsafe {
            if USE_TRACKER.load(Ordering::Relaxed) {
                TRACKER.alloc(layout)
            } else {
                System.alloc(layout)
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if USE_TRACKER.load(Ordering::Relaxed) {
                TRACKER.alloc_zeroed(layout)
            } else {
                System.alloc_zeroed(layout)
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` or from the tracker, whose inner
        // allocator is `System` (see the impl's SAFETY note).
        unsafe {
            if USE_TRACKER.load(Ordering::Relaxed) {
                TRACKER.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as in `dealloc`.
        unsafe {
            if USE_TRACKER.load(Ordering::Relaxed) {
                TRACKER.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
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
        run_child(&args[1..])?;
        return Ok(ExitCode::SUCCESS);
    }
    let options = driver::Options::parse(&args)?;
    driver::run(&options)
}

/// A child: `--child WORKLOAD THREADS [--quick]`. Prints one line of
/// `key=value` figures on stdout for the driver.
fn run_child(args: &[String]) -> Result<(), String> {
    let use_tracker = match std::env::var(ALLOCATOR_VAR).as_deref() {
        Ok("tracker") => true,
        Ok("system") | Err(_) => false,
        Ok(other) => {
            return Err(format!(
                "{ALLOCATOR_VAR}={other}: expected system or tracker"
            ))
        }
    };
    USE_TRACKER.store(use_tracker, Ordering::Relaxed);

    let [workload, threads, rest @ ..] = args else {
        return Err("usage: overhead --child WORKLOAD THREADS [--quick]".into());
    };
    let workload =
        Workload::parse(workload).ok_or_else(|| format!("unknown workload {workload:?}"))?;
    let threads: usize = threads
        .parse()
        .map_err(|_| format!("bad thread count {threads:?}"))?;
    let size = match rest {
        [] => Size::FULL,
        [quick] if quick == "--quick" => Size::QUICK,
        _ => return Err(format!("unexpected arguments {rest:?}")),
    };

    // Warm-up at a small size: the tracker's tables, the unwinder's caches
    // (libgcc sorts its tables on first use), the threads' first arenas and
    // the pages behind them exist before the clock starts, as they would in
    // any long-running program.
    drop(workloads::run(workload, threads, &Size::SMOKE));
    // The small warm-up may allocate too little for sampled mode to take a
    // sample, and a process's first captured stack pays once for the
    // unwinder's set-up (the frame-pointer walk is checked against it): a
    // few large blocks, each sampled with p > 0.85, make sure that happens
    // before the clock starts too.
    for _ in 0..8 {
        drop(std::hint::black_box(vec![0u8; 1 << 20]));
    }
    let cpu_before = process_cpu_time();
    let (elapsed, kept) = workloads::run(workload, threads, &size);
    let cpu_after = process_cpu_time();

    let mut line = format!("time_ns={}", elapsed.as_nanos());
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        line.push_str(&format!(
            " cpu_ns={}",
            after.saturating_sub(before).as_nanos()
        ));
    }
    // The mode the library says it ran in, not the one requested: a
    // misspelt or ignored ALLOC_TRACK_MODE must show in the table.
    let mode = use_tracker.then(alloc_track::mode);
    if let Some(mode) = mode {
        line.push_str(&format!(" mode={mode}"));
        if mode != alloc_track::Mode::Count {
            // Full tracking's cost is mostly stack capture, and the walker
            // decides it: frame pointers or the (much slower) unwinder.
            line.push_str(&format!(" walker={:?}", alloc_track::stack_walker()));
        }
    }
    if mode == Some(alloc_track::Mode::Full) && workload == Workload::Build {
        // Measured while the build's map and vectors are alive: the
        // tracker's books at their largest relative to the heap.
        let snapshot = alloc_track::snapshot();
        line.push_str(&format!(
            " bookkeeping_bytes={} live_blocks={} live_bytes={}",
            alloc_track::bookkeeping_bytes(),
            snapshot.live_blocks(),
            snapshot.live_bytes()
        ));
    }
    println!("{line}");
    // The process ends here; freeing millions of blocks one by one would
    // only make the run longer.
    std::mem::forget::<Vec<Kept>>(kept);
    Ok(())
}

/// CPU time used so far by all the threads of this process: for
/// `--cpu`, where other processes' load would otherwise show in the
/// times. None where the clock is missing.
#[cfg(unix)]
fn process_cpu_time() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` that outlives the call,
    // which is all `clock_gettime` needs.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    let secs = u64::try_from(now.tv_sec).ok()?;
    let nanos = u32::try_from(now.tv_nsec).ok()?;
    (status == 0).then(|| Duration::new(secs, nanos))
}

#[cfg(not(unix))]
fn process_cpu_time() -> Option<Duration> {
    None
}
