//! A child: one allocator, one workload, one measured run, one line of
//! `key=value` figures on stdout for the driver.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::workloads::{self, Kept, Size, Workload};
use crate::{ALLOCATOR, ALLOCATOR_VAR, CHILD_LINE_PREFIX, USE_DHAT, USE_SYSTEM, USE_TRACKER};

/// `--child WORKLOAD THREADS SIZE`, SIZE one of `full`, `quick`,
/// `callgrind`, `smoke`.
pub fn run(args: &[String]) -> Result<(), String> {
    let allocator = match std::env::var(ALLOCATOR_VAR).as_deref() {
        Ok("tracker") => USE_TRACKER,
        Ok("dhat") => USE_DHAT,
        Ok("system") | Err(_) => USE_SYSTEM,
        Ok(other) => {
            return Err(format!(
                "{ALLOCATOR_VAR}={other}: expected system, tracker or dhat"
            ))
        }
    };
    ALLOCATOR.store(allocator, Ordering::Relaxed);
    let use_tracker = allocator == USE_TRACKER;

    let [workload, threads, size] = args else {
        return Err("usage: overhead --child WORKLOAD THREADS SIZE".into());
    };
    let workload =
        Workload::parse(workload).ok_or_else(|| format!("unknown workload {workload:?}"))?;
    let threads: usize = threads
        .parse()
        .map_err(|_| format!("bad thread count {threads:?}"))?;
    let size = Size::parse(size).ok_or_else(|| format!("unknown size {size:?}"))?;

    // dhat records nothing until its profiler runs. Its report, written
    // when the profiler is dropped, is never written: the process forgets
    // the profiler (below), as the other configurations are not timed on
    // writing their results either.
    let dhat_profiler = (allocator == USE_DHAT).then(|| {
        let file = std::env::temp_dir().join(format!("overhead-dhat-{}.json", std::process::id()));
        dhat::Profiler::builder().file_name(file).build()
    });

    // Warm-up at a small size: the tracker's tables, the unwinder's caches
    // (libgcc sorts its tables on first use), the threads' first arenas and
    // the pages behind them exist before the clock starts, as they would in
    // any long-running program.
    drop(workloads::run(workload, threads, &Size::SMOKE, false));
    // The small warm-up may allocate too little for sampled mode to take a
    // sample, and a process's first captured stack pays once for the
    // unwinder's set-up (the frame-pointer walk is checked against it): a
    // few large blocks, each sampled with p > 0.85, make sure that happens
    // before the clock starts too.
    for _ in 0..8 {
        drop(std::hint::black_box(vec![0u8; 1 << 20]));
    }
    let mode = use_tracker.then(alloc_track::mode);
    let counts_exactly = matches!(
        mode,
        Some(alloc_track::Mode::Full | alloc_track::Mode::Count)
    );
    let blocks_before = counts_exactly.then(|| alloc_track::snapshot().total_blocks());

    let cpu_before = process_cpu_time();
    let (elapsed, kept) = workloads::run(workload, threads, &size, true);
    let cpu_after = process_cpu_time();

    let mut line = format!("{CHILD_LINE_PREFIX} time_ns={}", elapsed.as_nanos());
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        line.push_str(&format!(
            " cpu_ns={}",
            after.saturating_sub(before).as_nanos()
        ));
    }
    // The mode the library says it ran in, not the one requested: a
    // misspelt or ignored ALLOC_TRACK_MODE must show in the table.
    if let Some(mode) = mode {
        line.push_str(&format!(" mode={mode}"));
        if mode != alloc_track::Mode::Count {
            // Full tracking's cost is mostly stack capture, and the walker
            // decides it: frame pointers or the (much slower) unwinder. It
            // is also how the driver learns whether this binary was built
            // with frame pointers, which no `cfg!` can tell.
            line.push_str(&format!(" walker={:?}", alloc_track::stack_walker()));
        }
    }
    if let Some(before) = blocks_before {
        // The measured run's allocations, the main thread's few included:
        // what per-allocation figures divide by.
        let snapshot = alloc_track::snapshot();
        line.push_str(&format!(
            " allocations={}",
            snapshot.total_blocks().saturating_sub(before)
        ));
        if mode == Some(alloc_track::Mode::Full) {
            line.push_str(&stack_depth_fields(&snapshot));
            if matches!(workload, Workload::Build | Workload::Crates) {
                // Measured while the build's map or the crates' JSON trees
                // are alive: the tracker's books against a live heap.
                // The peak too: the goal is worded against it, and a
                // table sized for the peak stays near that size.
                line.push_str(&format!(
                    " bookkeeping_bytes={} live_blocks={} live_bytes={} peak_bytes={}",
                    alloc_track::bookkeeping_bytes(),
                    snapshot.live_blocks(),
                    snapshot.live_bytes(),
                    snapshot.peak_bytes()
                ));
            }
        }
    }
    println!("{line}");
    // The process ends here; freeing millions of blocks one by one would
    // only make the run longer.
    std::mem::forget::<Vec<Kept>>(kept);
    std::mem::forget(dhat_profiler);
    Ok(())
}

/// The captured stack depth of the run's allocations: the median over
/// allocations (each site weighted by its blocks) of its stack's length as
/// captured, allocator and thread start-up frames included, and the share
/// of allocations whose stacks were cut at the capture limit.
fn stack_depth_fields(snapshot: &alloc_track::Snapshot) -> String {
    let mut depths: Vec<(usize, u64, bool)> = snapshot
        .sites()
        .iter()
        .map(|site| {
            let stack = site.stack();
            (
                stack.addresses().len(),
                site.total_blocks(),
                stack.is_truncated(),
            )
        })
        .collect();
    depths.sort_unstable();
    let total: u64 = depths.iter().map(|&(_, blocks, _)| blocks).sum();
    let truncated: u64 = depths
        .iter()
        .filter(|&&(_, _, truncated)| truncated)
        .map(|&(_, blocks, _)| blocks)
        .sum();
    let mut seen = 0;
    let median = depths.iter().find_map(|&(depth, blocks, _)| {
        seen += blocks;
        (2 * seen >= total).then_some(depth)
    });
    match median {
        Some(depth) if total > 0 => format!(
            " stack_depth={depth} truncated_permille={}",
            truncated * 1000 / total
        ),
        _ => String::new(),
    }
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
