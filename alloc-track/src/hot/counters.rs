//! Process-wide live bytes and peak, and the entry points that count an
//! allocation or a free (totals go to per-thread slots: `thread_totals`).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::config::{settled_mode, Config, Mode};
use super::headroom::Headroom;
use super::live;
use super::sampler;
use super::spin::CachePadded;
use super::stacks;
use super::thread::ThreadState;
use super::thread_totals;

pub(crate) struct Counters {
    /// The partial modes' live bytes: each thread adds its drift in steps
    /// (`thread_totals::drift`), so their peak is exact to within one step
    /// per thread. Full mode does without (its peak comes from
    /// `headroom.rs`, exact). Exact live figures come from `thread_totals`.
    pub(crate) live_bytes: AtomicU64,
    /// The partial modes: the highest live bytes so far. Full mode: the
    /// peak's base, which with every thread's raises (`Totals::raised`,
    /// wrapping) makes the peak; see [`peak`](Self::peak).
    peak_bytes: AtomicU64,
    /// Full mode: the room below the peak that no thread holds, and who
    /// may hold the rest (`headroom.rs`). Near the peak, every allocation
    /// and free touches it.
    pub(crate) headroom: Headroom,
    /// Live bytes when the last peak breakdown was taken.
    pub(crate) breakdown_bytes: AtomicU64,
}

/// Held by the one thread copying a peak breakdown.
static BREAKDOWN_BUSY: AtomicBool = AtomicBool::new(false);

pub(crate) static COUNTERS: CachePadded<Counters> = CachePadded(Counters {
    live_bytes: AtomicU64::new(0),
    peak_bytes: AtomicU64::new(0),
    headroom: Headroom::new(),
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
// them from the live table or the thread slots instead.
impl Counters {
    /// Counts an allocation in the thread's totals and the live bytes.
    /// `mode` is `config`'s (callers that read it already pass it on);
    /// `state` is the thread's (`None` when it cannot be reached: the
    /// shared fallback counts it).
    #[inline]
    pub(crate) fn on_alloc(
        &self,
        size: u64,
        mode: Mode,
        config: &Config,
        state: Option<&ThreadState>,
    ) {
        thread_totals::count_alloc(state, size);
        if mode == Mode::Full {
            if self.headroom.take(state, size) {
                self.after_new_high(self.peak(), config);
            }
        } else {
            self.add_drift(size as i64, config, state);
        }
    }

    /// Counts a free.
    #[inline]
    pub(crate) fn on_free(
        &self,
        size: u64,
        mode: Mode,
        config: &Config,
        state: Option<&ThreadState>,
    ) {
        if mode == Mode::Full {
            // The room back before the totals count the free: a
            // `reset_peak` between the two gathers that room too, so the
            // new peak lands on the live bytes once the free is counted
            // (the other way round, it would stay a block above them).
            self.headroom.give(state, size);
            thread_totals::count_free(state, size);
        } else {
            thread_totals::count_free(state, size);
            self.add_drift((size as i64).wrapping_neg(), config, state);
        }
    }

    /// The partial modes: adds `delta` to the thread's drift, and publishes
    /// the drift to the shared live bytes once it is a step away from zero.
    #[inline]
    fn add_drift(&self, delta: i64, config: &Config, state: Option<&ThreadState>) {
        let publish = match state {
            None => Some(delta),
            Some(state) => thread_totals::drift(state, delta),
        };
        if let Some(delta) = publish {
            let live = self.publish_live(delta);
            // Skip the write when the peak is already higher: most
            // allocations happen below the peak, and a load keeps the line
            // shared.
            if delta > 0 && live > self.peak_bytes.load(Ordering::Relaxed) {
                self.peak_bytes.fetch_max(live, Ordering::Relaxed);
                self.after_new_high(live, config);
            }
        }
    }

    /// The live bytes reached a new high, `live` (full mode: at least a
    /// raise check step below it): takes a peak breakdown if they climbed
    /// far enough above the last one.
    #[cold]
    fn after_new_high(&self, live: u64, config: &Config) {
        let last = self.breakdown_bytes.load(Ordering::Relaxed);
        if live >= config.next_breakdown_at(last) {
            self.take_peak_breakdown(live);
        }
    }

    /// Adds `delta` to the shared live bytes; returns the new value.
    #[inline]
    pub(crate) fn publish_live(&self, delta: i64) -> u64 {
        self.live_bytes
            .fetch_add(delta as u64, Ordering::Relaxed)
            .wrapping_add(delta as u64)
    }

    /// Records what the heap consists of now, as the breakdown of its
    /// peak; skipped if another thread is already at it.
    #[cold]
    pub(crate) fn take_peak_breakdown(&self, live: u64) {
        if BREAKDOWN_BUSY.swap(true, Ordering::Acquire) {
            return;
        }
        record_peak_breakdown();
        self.breakdown_bytes.store(live, Ordering::Relaxed);
        BREAKDOWN_BUSY.store(false, Ordering::Release);
    }

    /// The exact totals, summed over the threads' slots; the peak is at
    /// least the live bytes.
    pub(crate) fn totals(&self) -> crate::dump::Totals {
        let (live_bytes, live_blocks, total_bytes, total_blocks) = thread_totals::sum();
        crate::dump::Totals {
            live_bytes,
            live_blocks,
            total_bytes,
            total_blocks,
            peak_bytes: self.peak().max(live_bytes),
        }
    }

    /// The highest live bytes so far. Cold path (full mode sums the
    /// threads' raises).
    pub(crate) fn peak(&self) -> u64 {
        let base = self.peak_bytes.load(Ordering::Relaxed);
        match settled_mode() {
            Some(Mode::Full) => base.wrapping_add(thread_totals::raised()),
            _ => base,
        }
    }

    /// Starts a new peak from the current live heap, as tracemalloc's
    /// `reset_peak` does.
    pub(crate) fn reset_peak(&self) {
        let live = if settled_mode() == Some(Mode::Full) {
            self.headroom.reset(&self.peak_bytes);
            self.peak()
        } else {
            let live = thread_totals::sum().0;
            self.peak_bytes.store(live, Ordering::Relaxed);
            live
        };
        // Force the breakdown even if another thread is taking one: wait.
        while BREAKDOWN_BUSY.swap(true, Ordering::Acquire) {
            std::thread::yield_now();
        }
        record_peak_breakdown();
        self.breakdown_bytes.store(live, Ordering::Relaxed);
        BREAKDOWN_BUSY.store(false, Ordering::Release);
    }
}

#[cfg(unix)]
impl Counters {
    /// In a forked child, once the lost threads' totals are folded: full
    /// mode's room below the peak, worked out from the child's live bytes
    /// and peak, all in the pool. A lost thread caught between counting an
    /// allocation and raising the peak for it leaves the peak below the
    /// live bytes, which include that block: the peak comes up to them.
    /// The caller is the child's fork handler, holding every lock.
    pub(crate) fn rebuild_after_fork(&self, after: thread_totals::AfterFork) {
        if settled_mode() != Some(Mode::Full) {
            return;
        }
        let base = self.peak_bytes.load(Ordering::Relaxed);
        let peak = base.wrapping_add(after.raised);
        let room = peak.checked_sub(after.live_bytes).unwrap_or_else(|| {
            self.peak_bytes.store(
                base.wrapping_add(after.live_bytes - peak),
                Ordering::Relaxed,
            );
            0
        });
        let rebuilt = super::thread::with(|state| {
            let own_share = thread_totals::headroom_of(Some(state));
            self.headroom.rebuild_after_fork(own_share, room);
        });
        if rebuilt.is_none() {
            self.headroom.rebuild_after_fork(None, room);
        }
    }
}

/// Copies every site's live figures into its peak figures, the blocks
/// held back from the live table included: their sites count them only
/// once they leave their thread's slot.
fn record_peak_breakdown() {
    stacks::record_peak_breakdown();
    live::for_each_held(|_, block| {
        let weight = sampler::weight_of(&block, Mode::Full);
        stacks::add_to_peak_breakdown(block.site(), block.size() as u64, weight);
    });
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
