//! Process-wide totals, updated on every recorded allocation and free.
//!
//! All counters sit on one cache line: every allocation writes several of
//! them, so one line moving between cores costs less than several.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::config::Config;
use super::spin::CachePadded;
use super::stacks;

pub(crate) struct Counters {
    pub(crate) live_bytes: AtomicU64,
    pub(crate) live_blocks: AtomicU64,
    pub(crate) total_bytes: AtomicU64,
    pub(crate) total_blocks: AtomicU64,
    pub(crate) peak_bytes: AtomicU64,
    /// Live bytes when the last peak breakdown was taken.
    pub(crate) breakdown_bytes: AtomicU64,
}

/// Held by the one thread copying a peak breakdown.
static BREAKDOWN_BUSY: AtomicBool = AtomicBool::new(false);

pub(crate) static COUNTERS: CachePadded<Counters> = CachePadded(Counters {
    live_bytes: AtomicU64::new(0),
    live_blocks: AtomicU64::new(0),
    total_bytes: AtomicU64::new(0),
    total_blocks: AtomicU64::new(0),
    peak_bytes: AtomicU64::new(0),
    breakdown_bytes: AtomicU64::new(0),
});

/// Allocations the tracker could not record because its own bookkeeping
/// memory ran out. They are in no figure; snapshots report their number.
pub(crate) static UNRECORDED: AtomicU64 = AtomicU64::new(0);

/// The number of snapshots taken so far. Each live block remembers the
/// epoch it was born in, which is how a diff tells the blocks allocated
/// between two snapshots from older ones. Read on every allocation, written
/// only by snapshots, so the line stays shared in every core's cache.
pub(crate) static EPOCH: CachePadded<AtomicU32> = CachePadded(AtomicU32::new(0));

/// Set by the first allocation that goes through a `Tracker`: the cold
/// path checks it so that a program that forgot `#[global_allocator]` gets
/// an error instead of empty figures.
pub(crate) static INSTALLED: AtomicBool = AtomicBool::new(false);

// Relaxed throughout: each counter is exact on its own (its modification
// order is total), and no reader infers anything about other memory from
// a counter's value. Snapshots that need several figures to agree compute
// them from the live table instead.
impl Counters {
    #[inline]
    pub(crate) fn on_alloc(&self, size: u64, config: &Config) {
        self.total_bytes.fetch_add(size, Ordering::Relaxed);
        self.total_blocks.fetch_add(1, Ordering::Relaxed);
        self.live_blocks.fetch_add(1, Ordering::Relaxed);
        let live = self
            .live_bytes
            .fetch_add(size, Ordering::Relaxed)
            .wrapping_add(size);
        // Skip the write when the peak is already higher: most allocations
        // happen below the peak, and a load keeps the line shared.
        if live > self.peak_bytes.load(Ordering::Relaxed) {
            self.peak_bytes.fetch_max(live, Ordering::Relaxed);
            let last = self.breakdown_bytes.load(Ordering::Relaxed);
            if live >= config.next_breakdown_at(last) {
                self.take_peak_breakdown(live);
            }
        }
    }

    /// Records what the heap consists of now, as the breakdown of its
    /// peak; skipped if another thread is already at it.
    #[cold]
    pub(crate) fn take_peak_breakdown(&self, live: u64) {
        if BREAKDOWN_BUSY.swap(true, Ordering::Acquire) {
            return;
        }
        stacks::record_peak_breakdown();
        self.breakdown_bytes.store(live, Ordering::Relaxed);
        BREAKDOWN_BUSY.store(false, Ordering::Release);
    }

    /// Starts a new peak from the current live heap, as tracemalloc's
    /// `reset_peak` does.
    pub(crate) fn reset_peak(&self) {
        let live = self.live_bytes.load(Ordering::Relaxed);
        self.peak_bytes.store(live, Ordering::Relaxed);
        // Force the breakdown even if another thread is taking one: wait.
        while BREAKDOWN_BUSY.swap(true, Ordering::Acquire) {
            std::thread::yield_now();
        }
        stacks::record_peak_breakdown();
        self.breakdown_bytes.store(live, Ordering::Relaxed);
        BREAKDOWN_BUSY.store(false, Ordering::Release);
    }

    /// The totals as they stand (each exact; read one after another).
    pub(crate) fn totals(&self) -> crate::dump::Totals {
        crate::dump::Totals {
            live_bytes: self.live_bytes.load(Ordering::Relaxed),
            live_blocks: self.live_blocks.load(Ordering::Relaxed),
            total_bytes: self.total_bytes.load(Ordering::Relaxed),
            total_blocks: self.total_blocks.load(Ordering::Relaxed),
            peak_bytes: self.peak_bytes.load(Ordering::Relaxed),
        }
    }

    #[inline]
    pub(crate) fn on_free(&self, size: u64) {
        self.live_bytes.fetch_sub(size, Ordering::Relaxed);
        self.live_blocks.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Takes the peak-breakdown flag and keeps it: the fork handlers' prepare
/// step (see `fork.rs`), so that a child never inherits the flag set by a
/// thread it does not have, which would make `reset_peak` wait forever.
#[cfg(unix)]
pub(crate) fn lock_breakdown_for_fork() {
    while BREAKDOWN_BUSY.swap(true, Ordering::Acquire) {
        std::thread::yield_now();
    }
}

/// Releases the flag taken by [`lock_breakdown_for_fork`].
#[cfg(unix)]
pub(crate) fn unlock_breakdown_after_fork() {
    BREAKDOWN_BUSY.store(false, Ordering::Release);
}
