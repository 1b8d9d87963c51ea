//! The hot path: everything the allocator methods touch on every call.
//!
//! The modules here obey the contract written at the top of
//! `tracker.rs`: they never allocate through the global allocator (their
//! own memory comes straight from the kernel: `pages.rs`), never panic,
//! never do I/O, never resolve symbols, and never hold a lock while a stack
//! is captured. The cold path (snapshots, symbols, dumps) reaches them only
//! through [`view`], at the bottom of this file.
//!
//! # Layers
//!
//! Read top to bottom: a module uses only modules listed after it (within
//! a layer too), never one above.
//!
//! 1. Entry points. `record`: what the allocator methods of `tracker.rs`
//!    call, the fast path and the slow path that captures and records.
//!    `fork`: the `fork` handlers, which hold every lock across a fork.
//! 2. Recording's shared steps. `thread_life`: a thread's first and last
//!    moments (claiming its totals slot, its exit fold). `counters`: the
//!    process-wide live bytes and peak, and the counting of an allocation
//!    or a free.
//! 3. Tables and capture. `stacks`: call stacks to site ids, with each
//!    site's totals. `site_cache`: each thread's cache of the stacks it
//!    interned lately, in front of `stacks`' shared index. `scopes`: each
//!    scope's totals. `sampler`: sampled mode's draws and weights. `live`:
//!    every live block by address. `held_block`: each thread's newest
//!    block, held back from `live`'s table until the thread allocates
//!    again. `capture/`: walking the stack.
//! 4. Per-thread state and configuration. `headroom`: full mode's exact
//!    peak, from the room below it, shared out among the threads far from
//!    it. `thread_totals`: the threads' totals and the slots that register
//!    them. `thread`: the one
//!    thread-local the hot path reads (it holds the thread's totals and
//!    the fast path's budgets, and defines the slot type). `measuring`: the books of a
//!    thread's open `measure` calls. `config`: the mode and limits.
//! 5. Building blocks. `raw_map`: an open-addressing map in mapped pages.
//!    `table_memory`: the tables' memory, in 2 MiB chunks that the kernel
//!    may back with huge pages. `pages`: memory straight from the kernel.
//!    `spin`: a spin lock.
//!    `filter`: which addresses may be recorded. `packed_slot`: a live
//!    block and its address in the live table's 16-byte slot.
//!    `live_block`: the packed record of one live block. `site_id`: site ids and the few with a
//!    fixed meaning.

// One group per layer, top to bottom.
#[cfg(unix)]
mod fork;
mod record;

mod counters;
mod thread_life;

mod capture;
mod held_block;
mod live;
mod sampler;
mod scopes;
mod site_cache;
mod stacks;

mod config;
mod headroom;
mod measuring;
mod thread;
mod thread_totals;

mod filter;
mod live_block;
mod packed_slot;
mod pages;
mod raw_map;
mod site_id;
mod spin;
mod table_memory;

/// The cold path's view of the hot path: every name code outside `hot/`
/// may use, grouped by the module that defines it. The modules above are
/// private, so this list is the whole interface: a name missing here is
/// the hot path's own business.
pub(crate) mod view {
    /// How stacks are captured (`walker` reports the settled choice).
    pub(crate) mod capture {
        /// Only where a fast walker exists is `ALLOC_TRACK_UNWIND` read.
        #[cfg(stack_walk)]
        pub(crate) use crate::hot::capture::trust::is_valid_unwind_setting;
        pub use crate::hot::capture::Walker;
        pub(crate) use crate::hot::capture::{walker, walker_if_settled};
    }
    /// The tracker's settings, read by `tracker.rs` and `settings.rs`.
    pub(crate) mod config {
        #[cfg(any(feature = "jemalloc", all(target_os = "linux", target_env = "gnu")))]
        pub(crate) use crate::hot::config::inner_allocator_type_name;
        pub(crate) use crate::hot::config::{mode_setting, settled_mode, Config};
        pub use crate::hot::config::{Mode, DEFAULT_SAMPLE_BYTES};
    }
    /// The process-wide totals, peak, epoch and the count of blocks lost.
    pub(crate) mod counters {
        pub(crate) use crate::hot::counters::{COUNTERS, EPOCH, INSTALLED, UNRECORDED};
    }
    /// Whether a `fork` happened since a lock was taken.
    #[cfg(unix)]
    pub(crate) mod fork {
        pub(crate) use crate::hot::fork::{generation, register, run_before_main};
    }
    /// The live table, walked by snapshots and looked up by `measure`.
    pub(crate) mod live {
        pub(crate) use crate::hot::live::{for_each, for_each_held, get, heap_bytes};
        pub(crate) use crate::hot::live_block::MAX_TAG;
    }
    /// The books of a thread's open `measure` calls.
    pub(crate) mod measuring {
        pub(crate) use crate::hot::measuring::{Frame, MeasureState, MAX_NESTING};
    }
    /// The entry points `tracker.rs` calls from the allocator methods.
    pub(crate) mod record {
        pub(crate) use crate::hot::record::{
            finish_realloc, finish_unrecorded_realloc, on_alloc, on_free,
            reserve_unrecorded_realloc, take_for_realloc,
        };
    }
    /// Sampled mode's weights, to turn recorded blocks into estimates.
    pub(crate) mod sampler {
        pub(crate) use crate::hot::sampler::{reseed, weight_of, weighted_bytes, whole_blocks};
    }
    /// Per-scope totals.
    pub(crate) mod scopes {
        pub(crate) use crate::hot::scopes::{totals, MAX_SCOPES};
    }
    /// The lock `scope.rs` guards its name table with.
    pub(crate) mod spin {
        pub(crate) use crate::hot::spin::SpinLock;
    }
    /// The stack table: site ids, their frames and their totals.
    pub(crate) mod stacks {
        pub(crate) use crate::hot::site_id::{SiteId, MAX_SITES};
        pub(crate) use crate::hot::stacks::{
            for_each_site, frames, heap_bytes, ids_handed_out, is_truncated, overflowed,
        };
    }
    /// The calling thread's state: its measure books, its scope, and
    /// `untracked`, which keeps the cold path's own memory out of the
    /// figures.
    pub(crate) mod thread {
        pub(crate) use crate::hot::thread::{measuring, set_measuring, set_scope, untracked};
    }
}
