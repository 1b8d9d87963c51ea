//! Full mode's exact peak without a shared write on every allocation while
//! the heap is well below its peak.
//!
//! The peak is exact only if every allocation that takes the live bytes
//! past it is seen as doing so. A shared live counter sees that, but its
//! cache line then moves between cores at every allocation and free, which
//! on two threads cost full mode a fifth of its time. Instead, the room
//! between the live bytes and the peak is accounted for: at every moment
//!
//! ```text
//! peak - live bytes = the pool + every thread's share
//! ```
//!
//! An allocation takes its size from this room, a free gives its size
//! back. Two regimes, which [`Headroom::regime`] tells apart:
//!
//! - **Far from the peak** (`ANYONE`): each thread holds a share of the
//!   room (`Totals::headroom`, on a line of its own state), and takes from
//!   and gives to it with one atomic operation no other core sees. When its
//!   share runs short, it takes the lock and gathers: the pool first, and
//!   if that is not enough, every thread's share. Enough room left, and it
//!   keeps [`GRANT`] and pools the rest; little left, and it pools it all
//!   and switches to the near regime.
//! - **Near the peak** (`NEAR`): no thread holds a share; every allocation
//!   takes from the pool and every free gives to it, one atomic operation on
//!   one shared line, as a shared live counter would. An allocation the
//!   pool cannot cover takes what there is and raises the peak by the rest,
//!   without the lock: with no room anywhere else, the live bytes were
//!   exactly that much below the peak. Once the pool holds several grants
//!   again, the next allocation gathers and goes back to the far regime.
//!
//! A raise only adds to the peak, and nothing here depends on the peak's
//! value, so each thread counts its own raises (`Totals::raised`, on its
//! own line) and the peak is a base plus their sum, which snapshots add up
//! (`Counters::peak`): raising it writes nothing shared. `reset_peak`
//! gathers all the room and lowers the base by it.
//!
//! Correctness rests on room never being out of sight when the peak is
//! raised. Room moves between shares, the pool and a gatherer's hands only
//! under the lock, with the regime word saying `GATHERING` (so a lock-free
//! raise defers to the lock). A lock-free raise reads the regime word
//! before and after it empties the pool, and raises only if nothing
//! changed in between (the word carries a generation, bumped at every
//! change); otherwise it takes the lock and gathers, carrying what it took.
//! A free into a share makes the word say `ANYONE` afterwards if it did not
//! already. And gathering repeats until a pass finds nothing more: a thread
//! may free between passes, and a pass must not count a free (and what
//! follows it on another thread) without the frees that came before it on
//! threads the pass had already read.
//!
//! An exiting thread's share goes to the pool under the lock
//! (`thread_life.rs`). A forked child cannot count on its cells: a thread
//! it lost may have been between two steps (room taken from the pool and
//! carried to the lock, an allocation counted but its room not yet
//! taken). So the child works its room out afresh from the invariant
//! above, its live bytes and its peak, all of it in the pool
//! (`Counters::rebuild_after_fork`).
//!
//! The partial modes do not use this: their peak is exact only to within a
//! publish step per thread (`counters.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::spin::SpinLock;
use super::thread::ThreadState;
use super::thread_totals;

/// Held while headroom is gathered, while the peak is reset, and while a
/// thread's share goes to the pool at its exit.
static LOCK: SpinLock<()> = SpinLock::new(());

/// The regimes, in the low bits of [`Headroom::regime`]; the bits above
/// count the changes.
const NEAR: u64 = 0;
const ANYONE: u64 = 1;
const GATHERING: u64 = 2;
const REGIME_BITS: u64 = 3;
const GENERATION: u64 = 4;

/// What a gatherer far from the peak keeps in its share: a gathering per
/// 64 KiB of net allocation on a thread, at most. The regime turns near
/// when less than two grants of room are left, and far again when the pool
/// holds four. Smaller would keep small heaps (a few hundred KiB live) far
/// from their peak more often, at the price of more gatherings.
const GRANT: u64 = 64 << 10;

/// How many times the shares are gathered before the sum is taken as it
/// is: each pass after the first finds only what threads freed meanwhile.
const GATHER_PASSES: usize = 4;

// The orderings: each cell is exact on its own (each change is one
// read-modify-write). Where one side writes a cell and then reads the
// regime word, and the other writes the word and then empties the cell (a
// free or a lock-free raise against a gatherer), both use `SeqCst`, so
// that at least one of them sees the other's write.

/// The shared part of the headroom, in `Counters` (`counters.rs`). Near
/// the peak, every allocation and free touches its cache line.
pub(crate) struct Headroom {
    /// The regime and the generation (see the module's documentation).
    regime: AtomicU64,
    /// Room no thread holds.
    pool: AtomicU64,
}

impl Headroom {
    pub(crate) const fn new() -> Self {
        Headroom {
            regime: AtomicU64::new(NEAR),
            pool: AtomicU64::new(0),
        }
    }

    /// Takes `size` bytes of room for an allocation on this thread
    /// (`None`: unreachable thread state). Returns true if the allocation
    /// raised the peak and a peak breakdown is due a check
    /// (`thread_totals::count_raise`).
    #[inline]
    pub(crate) fn take(&self, state: Option<&ThreadState>, size: u64) -> bool {
        let share = thread_totals::headroom_of(state);
        // A thread without a share takes from the pool: exactly its size,
        // so that it never holds room out of sight.
        if take_from(share.unwrap_or(&self.pool), size) {
            return false;
        }
        self.take_short(state, share, size)
    }

    /// Gives back `size` bytes of room for a free on this thread.
    #[inline]
    pub(crate) fn give(&self, state: Option<&ThreadState>, size: u64) {
        let share = thread_totals::headroom_of(state);
        match share {
            Some(share) if self.regime.load(Ordering::SeqCst) & REGIME_BITS != NEAR => {
                share.fetch_add(size, Ordering::SeqCst);
                if self.regime.load(Ordering::SeqCst) & REGIME_BITS != ANYONE {
                    self.make_anyone();
                }
            }
            _ => {
                self.pool.fetch_add(size, Ordering::SeqCst);
            }
        }
    }

    /// A share holds room: the regime word must say so.
    #[cold]
    fn make_anyone(&self) {
        let _ = self
            .regime
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                (word & REGIME_BITS != ANYONE).then_some(next(word, ANYONE))
            });
    }

    /// The thread's share (if any) is short of `size`.
    #[cold]
    #[inline(never)]
    fn take_short(
        &self,
        state: Option<&ThreadState>,
        share: Option<&AtomicU64>,
        size: u64,
    ) -> bool {
        let mut carried = 0;
        let word = self.regime.load(Ordering::SeqCst);
        if word & REGIME_BITS == NEAR {
            match self.take_near(word, size) {
                Near::Covered => return false,
                Near::Raise(missing) => return thread_totals::count_raise(state, missing),
                Near::Gather(taken) => carried = taken,
            }
        }
        self.gather(state, share, carried, size)
    }

    /// Near the peak: takes from the pool, and says to raise the peak by
    /// what it lacks, unless the regime word changed from `seen` meanwhile.
    fn take_near(&self, seen: u64, size: u64) -> Near {
        let mut room = self.pool.load(Ordering::Relaxed);
        let taken = loop {
            if room >= size.saturating_add(4 * GRANT) {
                // Far from the peak again: back to shares.
                return Near::Gather(0);
            }
            let taken = room.min(size);
            // At the peak the pool is empty: nothing to take, and no write
            // to its line.
            if taken == 0 {
                break 0;
            }
            match self.pool.compare_exchange_weak(
                room,
                room - taken,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => break taken,
                Err(now) => room = now,
            }
        };
        if taken == size {
            return Near::Covered;
        }
        // The pool was short. If no gatherer began since `seen`, no share
        // held room when the pool was emptied (or read empty), and a
        // gatherer that begins now finds it empty: the live bytes were
        // `taken` below the peak.
        if self.regime.load(Ordering::SeqCst) != seen {
            return Near::Gather(taken);
        }
        Near::Raise(size - taken)
    }

    /// Under the lock: gathers room for `size` bytes (`carried` already in
    /// hand), and either keeps some in the thread's share, pools it, or
    /// raises the peak by what no room covers.
    fn gather(
        &self,
        state: Option<&ThreadState>,
        share: Option<&AtomicU64>,
        carried: u64,
        size: u64,
    ) -> bool {
        let _lock = LOCK.lock();
        let gathering = self.begin_gathering();
        let own = share.map_or(0, |share| share.swap(0, Ordering::SeqCst));
        let mut room = carried
            .wrapping_add(own)
            .wrapping_add(self.pool.swap(0, Ordering::SeqCst));
        // Others' shares only if the pool falls short: emptying them sends
        // their next allocation here.
        let all = room < size.saturating_add(2 * GRANT);
        if all {
            room = room.wrapping_add(gather_shares());
        }
        if room < size {
            self.settle(gathering, NEAR);
            return thread_totals::count_raise(state, size - room);
        }
        let spare = room - size;
        match share {
            Some(share) if spare >= 2 * GRANT => {
                share.fetch_add(GRANT, Ordering::SeqCst);
                self.pool.fetch_add(spare - GRANT, Ordering::SeqCst);
                self.settle(gathering, ANYONE);
            }
            _ => {
                self.pool.fetch_add(spare, Ordering::SeqCst);
                // Near only if no share can hold room.
                self.settle(gathering, if all { NEAR } else { ANYONE });
            }
        }
        false
    }

    /// Says `GATHERING` in the regime word; returns what it wrote. The caller
    /// holds the lock.
    fn begin_gathering(&self) -> u64 {
        let before = self
            .regime
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                Some(next(word, GATHERING))
            })
            .unwrap_or_else(|word| word);
        next(before, GATHERING)
    }

    /// Ends a gathering in `regime`, unless a free into a share has made
    /// it `ANYONE` since.
    fn settle(&self, gathering: u64, regime: u64) {
        let _ = self.regime.compare_exchange(
            gathering,
            next(gathering, regime),
            Ordering::SeqCst,
            Ordering::Relaxed,
        );
    }

    /// Starts a new peak at the live bytes: gathers all the room, which is
    /// what separates them from the peak, leaves none, and lowers the
    /// peak's base (`Counters::peak`) by it.
    pub(crate) fn reset(&self, peak_base: &AtomicU64) {
        let _lock = LOCK.lock();
        let gathering = self.begin_gathering();
        let room = self
            .pool
            .swap(0, Ordering::SeqCst)
            .wrapping_add(gather_shares());
        peak_base.fetch_sub(room, Ordering::Relaxed);
        self.settle(gathering, NEAR);
    }

    /// Runs `retire`, which takes an exiting thread's share out of it (and
    /// frees its slot for another thread), and puts the share in the pool,
    /// all under the lock.
    pub(crate) fn retiring(&self, retire: impl FnOnce() -> u64) {
        let _lock = LOCK.lock();
        let share = retire();
        self.pool.fetch_add(share, Ordering::SeqCst);
    }

    /// In a forked child: all the room is `room`, in the pool, and no
    /// thread holds a share (the forking thread's goes too). The caller
    /// holds the lock since [`lock_for_fork`], and worked `room` out from
    /// the child's figures.
    #[cfg(unix)]
    pub(crate) fn rebuild_after_fork(&self, own_share: Option<&AtomicU64>, room: u64) {
        if let Some(share) = own_share {
            share.store(0, Ordering::SeqCst);
        }
        self.pool.store(room, Ordering::SeqCst);
        let word = self.regime.load(Ordering::SeqCst);
        self.regime.store(next(word, NEAR), Ordering::SeqCst);
    }
}

/// What [`Headroom::take_near`] did.
enum Near {
    /// The pool covered the allocation.
    Covered,
    /// No room was left anywhere: the allocation raises the peak by this.
    Raise(u64),
    /// The lock is needed, with this much room already taken.
    Gather(u64),
}

/// The regime word `word` moved on to `regime`, one generation later.
fn next(word: u64, regime: u64) -> u64 {
    ((word & !REGIME_BITS).wrapping_add(GENERATION)) | regime
}

/// Takes `size` from `cell` if it holds that much.
#[inline]
fn take_from(cell: &AtomicU64, size: u64) -> bool {
    let mut room = cell.load(Ordering::Relaxed);
    while room >= size {
        match cell.compare_exchange_weak(room, room - size, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => room = now,
        }
    }
    false
}

/// Empties every thread's share, in passes until one finds nothing more.
/// The caller holds the lock, the regime word saying `GATHERING`.
fn gather_shares() -> u64 {
    let mut room = 0u64;
    for _ in 0..GATHER_PASSES {
        let found = thread_totals::collect_headroom();
        room = room.wrapping_add(found);
        if found == 0 {
            break;
        }
    }
    room
}

/// Takes the headroom lock for the fork handlers (see `fork.rs`).
#[cfg(unix)]
pub(crate) fn lock_for_fork() {
    std::mem::forget(LOCK.lock());
}

/// Releases the headroom lock after a fork.
///
/// # Safety
/// Only after [`lock_for_fork`], by the thread that called it.
#[cfg(unix)]
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract: this thread holds the lock and no
    // guard for it exists.
    unsafe { LOCK.force_unlock() }
}
