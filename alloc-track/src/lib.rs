//! # alloc-track: what is alive on your heap, and who allocated it
//!
//! `alloc-track` is a heap profiler for Rust programs. It wraps the global
//! allocator, records every live allocation with the call stack that made
//! it, and answers the questions a growing process raises: *what is alive
//! on the heap now, where was it allocated, what grew between two moments,
//! and what was the peak made of.*
//!
//! ## Setup: two lines
//!
//! ```
//! use std::alloc::System;
//!
//! #[global_allocator]
//! static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() {}
//! ```
//!
//! [`Tracker`] wraps any [`GlobalAlloc`](std::alloc::GlobalAlloc) (System,
//! jemalloc, mimalloc). From the first allocation on, every block is
//! recorded with its stack; figures are exact.
//!
//! ## What is alive, and what changed
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! fn load_cache() -> Vec<String> {
//!     (0..1000).map(|i| format!("entry {i}")).collect()
//! }
//!
//! fn main() {
//!     let before = alloc_track::snapshot();
//!     let cache = load_cache();
//!     let after = alloc_track::snapshot();
//!
//!     let diff = after.diff(&before);
//!     // 1000 strings and the vector that holds them are still alive.
//!     assert_eq!(diff.retained_blocks(), 1001);
//!     println!("{diff}"); // a table of sites, biggest change first
//!     # drop(cache);
//! }
//! ```
//!
//! A [`Snapshot`] holds the totals ([`live_bytes`](Snapshot::live_bytes),
//! [`live_blocks`](Snapshot::live_blocks), [`total_bytes`](Snapshot::total_bytes),
//! [`total_blocks`](Snapshot::total_blocks), [`peak_bytes`](Snapshot::peak_bytes)),
//! what the OS says of the process ([`os`](Snapshot::os): RSS, its anonymous
//! and file-backed parts, virtual size, peak RSS), what the allocator says
//! of its own memory ([`allocator`](Snapshot::allocator): free chunks,
//! arenas, what trimming would return; glibc's malloc only) and every call
//! site ([`sites`](Snapshot::sites)). Printing it shows the top sites.
//!
//! ## Heap vs RSS
//!
//! [`Snapshot::memory_breakdown`] takes the RSS apart: live heap, the
//! allocator's free memory and overhead, the tracker's own tables,
//! file-backed pages, and the remainder, with advice stated from the
//! figures (what [`trim`] would return, fragmentation, glibc arenas).
//! [`trim`] gives the allocator's free pages back to the OS and reports
//! what the RSS did.
//!
//! A [`Diff`] shows both the net change per site and the *retained* set,
//! the blocks allocated after the first snapshot that are still alive: net
//! deltas hide churn (100 new and 100 freed is zero), the retained set does
//! not.
//!
//! ## Exact allocation counts in tests
//!
//! [`measure`] runs a closure and returns what the calling thread
//! allocated inside it, exact even while other tests allocate on other
//! threads:
//!
//! ```
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! fn handle(items: &[u32]) -> String {
//!     let mut out = String::with_capacity(items.len() * 4);
//!     for item in items {
//!         out.push_str(&item.to_string()); // one allocation per item
//!     }
//!     out
//! }
//!
//! # fn main() {
//! let (_, diff) = alloc_track::measure(|| handle(&[1, 2, 3]));
//! assert_eq!(diff.total_blocks(), 4, "{diff}");
//! # }
//! ```
//!
//! ## Dumps for the CLI
//!
//! [`Snapshot::save`] writes a JSON dump (schema in [`dump`](mod@dump), versioned);
//! `alloc-track report dump.json` turns it into a report and a flamegraph.
//!
//! ```no_run
//! # use std::alloc::System;
//! # #[global_allocator]
//! # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
//! # fn main() -> Result<(), alloc_track::dump::DumpError> {
//! alloc_track::snapshot().save("heap.json")?;
//! # Ok(())
//! # }
//! ```
//!
//! ## What is counted
//!
//! Every block that passes through the global allocator: a `realloc`
//! counts as freeing the old block and allocating the new one at the
//! `realloc`'s call site. The tracker's own memory (its tables, snapshots,
//! symbol caches, dumps) never appears in any figure. Memory that does not
//! come from the global allocator (direct `mmap`, C libraries' `malloc`) is
//! not seen; the OS figures in every snapshot show how much that is.

mod allocator_stats;
mod diff;
pub mod dump;
mod dump_build;
mod fork_safe_mutex;
mod hot;
pub mod human;
mod limits;
mod live_by_site;
mod live_dump;
mod measure;
mod memory_breakdown;
mod os_memory;
mod scope;
mod settings;
mod site;
mod snapshot;
mod symbolize;
mod table;
mod tracker;
pub mod types;

use std::sync::atomic::Ordering;

pub use allocator_stats::{trim, Trimmed};
pub use diff::{Diff, SiteDiff};
pub use dump::Frame;
pub use hot::view::capture::Walker;
pub use hot::view::config::{Mode, DEFAULT_SAMPLE_BYTES};
pub use limits::{limits, Exceeded, Limits};
pub use live_dump::{dump, numbered_path, start_live_dumps};
pub use measure::{measure, Approximation};
pub use memory_breakdown::{MemoryBreakdown, MemoryKind, MemoryPart};
pub use scope::{scope, LoggedScope, ScopeGuard};
pub use site::Stack;
pub use snapshot::{ScopeStats, Site, Snapshot};
pub use tracker::Tracker;

/// Takes a [`Snapshot`] of the live heap now.
///
/// # Panics
///
/// If the [`Tracker`] is not the program's global allocator: the snapshot
/// would be silently empty.
pub fn snapshot() -> Snapshot {
    ensure_installed("snapshot");
    Snapshot::take()
}

/// Starts a new peak from the live heap as it is now, as Python's
/// `tracemalloc.reset_peak()` does: the next [`Snapshot::peak_bytes`] and
/// the per-site peak figures describe the high-water mark since this call.
/// Use it between the phases of a job to see each phase's own peak.
pub fn reset_peak() {
    hot::view::thread::untracked(|| hot::view::counters::COUNTERS.reset_peak());
}

/// The mode the tracker records in: the one chosen in code
/// ([`Tracker::sampled`], [`Tracker::counting`], full by default) unless the
/// environment variable `ALLOC_TRACK_MODE` overrode it. Settled at the
/// program's first allocation and fixed from then on.
pub fn mode() -> Mode {
    is_installed();
    hot::view::config::settled_mode().unwrap_or(Mode::Full)
}

/// Seeds the sampler of [`Mode::Sampled`] so that a test's samples are
/// the same in every run: the calling thread restarts its sequence from
/// `seed`, and threads that start sampling afterwards derive theirs from
/// it. Figures stay estimates; only their randomness becomes repeatable.
pub fn seed_sampler(seed: u64) {
    hot::view::sampler::reseed(seed);
}

/// How stacks are being captured: [`Walker::FramePointers`] when the binary
/// keeps frame pointers (build with `-C force-frame-pointers=yes`) and the
/// start-up check against the unwinder passed; else, on Linux x86_64 with
/// glibc, [`Walker::Cfi`] when the cached DWARF CFI walker's check passed;
/// else [`Walker::Unwinder`].
/// Settled at the first captured stack.
pub fn stack_walker() -> Walker {
    is_installed();
    hot::view::capture::walker()
}

/// True when a [`Tracker`] is this program's global allocator.
pub fn is_installed() -> bool {
    if !hot::view::counters::INSTALLED.load(Ordering::Relaxed) {
        // One allocation through the global allocator: a Tracker, if it is
        // installed, notices it.
        drop(std::hint::black_box(Box::new(0u64)));
    }
    hot::view::counters::INSTALLED.load(Ordering::Relaxed)
}

/// Bytes of memory the tracker itself uses for its books (the live table
/// and the stack table), outside every figure it reports. Divide by
/// [`Snapshot::live_blocks`] for its cost per live block.
pub fn bookkeeping_bytes() -> u64 {
    hot::view::thread::untracked(|| {
        (hot::view::live::heap_bytes() + hot::view::stacks::heap_bytes()) as u64
    })
}

fn ensure_installed(api: &str) {
    assert!(
        is_installed(),
        "alloc_track::{api}() needs the tracker installed in this binary: \
         `#[global_allocator] static GLOBAL: alloc_track::Tracker<std::alloc::System> = \
         alloc_track::Tracker::new(std::alloc::System);`"
    );
}
