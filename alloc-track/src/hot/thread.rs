//! Per-thread state: the reentrancy flag, the thread's open `measure`
//! frames, its scope, and what the partial modes' fast path needs (the
//! thread's totals slot, its unpublished live bytes, its sampler), all in
//! one thread-local so that path reads it once.
//!
//! The partial modes' fast path (`record.rs`) tests nothing but two
//! budgets: `alloc_room`, the bytes the thread may still allocate without
//! the slow path, and `free_room`, the bytes it may still free. Each
//! allocation subtracts its size from the one, each free from the other;
//! the slow path runs when a budget would go below zero. A budget is the
//! smallest of every limit the slow path would otherwise check:
//!
//! - the publish step: the thread's unpublished live bytes stay within
//!   (-[`PUBLISH_STEP`], [`PUBLISH_STEP`]), so that the shared live bytes
//!   (and the peak) stay within a step per thread of the exact figure;
//! - the sampler's countdown (count mode keeps it beyond reach);
//! - the state: both budgets are 0 while the fast path is closed (the
//!   thread is inside the tracker, inside a `measure`, has no totals slot,
//!   or runs in full mode), and `alloc_room` is 0 while the thread's last
//!   allocation was recorded, so that the next allocation, on the slow
//!   path, ends that block's chance of being temporary.
//!
//! So one subtraction and one branch stand for the checks of the busy
//! flag, the mode, the drift, the countdown and the last allocation. What
//! the fast path consumed is folded back into `unpublished` and
//! `countdown` (`close`) whenever the slow path is about to read them or
//! the fast path closes, and fresh budgets are computed from the settled
//! figures (`reopen`) when it reopens.
//!
//! The thread-local is const-initialised and has no destructor, so reading
//! it never allocates, never registers anything, and keeps working while
//! the thread's other thread-locals are being torn down (the pattern
//! `tracing` uses). `try_with` is still used so that a platform where the
//! access can fail degrades to "untracked" rather than panicking.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64};

use super::measuring::MeasureState;

pub(crate) struct ThreadState {
    /// Bytes the partial modes' fast path may still allocate on this
    /// thread (see the module's documentation); 0 while it is closed.
    alloc_room: Cell<u64>,
    /// Bytes the fast path may still free on this thread; 0 while closed.
    free_room: Cell<u64>,
    /// The budgets as [`reopen`](Self::reopen) last set them: what the
    /// fast path consumed since is the difference.
    alloc_granted: Cell<u64>,
    free_granted: Cell<u64>,
    /// Why the fast path is closed to this thread: a set of the `BUSY`,
    /// `MEASURING` and `NOT_READY` bits, 0 when it may open.
    blocked: Cell<u8>,
    /// The thread's measure state while a `measure` call is open, else
    /// null. Owned by the `measure` frames that created it.
    measuring: Cell<*mut MeasureState>,
    /// The scope the thread's allocations are tagged with (0: none).
    scope: Cell<u16>,
    /// The thread's totals slot (`thread_totals`): null until claimed.
    pub(crate) slot: Cell<*const Slot>,
    /// The thread's totals, counted here once it holds a slot (before, and
    /// without one, they go to the shared fallback).
    pub(crate) totals: Totals,
    /// Partial modes: live bytes not yet added to the shared counter, as of
    /// the last [`close`](Self::close) (the fast path's consumption since
    /// is in the budgets).
    pub(crate) unpublished: Cell<i64>,
    /// Sampled mode: the bytes left before the next sample, as of the last
    /// `close`; in count mode `i64::MAX`; 0 until the slow path first sets
    /// it.
    pub(crate) countdown: Cell<i64>,
    /// Sampled mode: the thread's random state; 0 until seeded.
    pub(crate) rng: Cell<u64>,
    /// The address of the thread's last recorded allocation while no other
    /// allocation has followed it, else 0: a free of that address is a
    /// "temporary" allocation (freed before the thread's next one).
    last_allocation: Cell<usize>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            alloc_room: Cell::new(0),
            free_room: Cell::new(0),
            alloc_granted: Cell::new(0),
            free_granted: Cell::new(0),
            blocked: Cell::new(NOT_READY),
            measuring: Cell::new(ptr::null_mut()),
            scope: Cell::new(0),
            slot: Cell::new(ptr::null()),
            totals: Totals::new(),
            unpublished: Cell::new(0),
            countdown: Cell::new(0),
            rng: Cell::new(0),
            last_allocation: Cell::new(0),
        }
    };
}

/// How far a thread's unpublished live bytes may drift before they are
/// added to the shared live counter: the partial modes' peak is exact to
/// within this much per thread.
pub(crate) const PUBLISH_STEP: i64 = 64 * 1024;

/// Set while this thread runs tracker code: allocations made then (by the
/// unwinder, by snapshots, by symbolization) are the tracker's own and pass
/// through untracked.
const BUSY: u8 = 1;
/// Set while a `measure` call is open on this thread: its allocations and
/// frees are also added to the measure's books.
const MEASURING: u8 = 2;
/// Set until the thread has a totals slot of its own in a partial mode,
/// and for good in full mode, after the thread's exit fold, or when every
/// slot was taken.
const NOT_READY: u8 = 4;

impl ThreadState {
    /// The fast path's allocation check: takes `size` bytes from the
    /// thread's allocation budget, or returns false having changed nothing
    /// if they are not there (the slow path must count this one).
    #[inline(always)]
    pub(crate) fn take_alloc_room(&self, size: usize) -> bool {
        take(&self.alloc_room, size)
    }

    /// The fast path's free check, as [`take_alloc_room`](Self::take_alloc_room).
    #[inline(always)]
    pub(crate) fn take_free_room(&self, size: usize) -> bool {
        take(&self.free_room, size)
    }

    /// Gives back what [`take_alloc_room`](Self::take_alloc_room) took,
    /// when the fast path changes its mind.
    #[inline(always)]
    pub(crate) fn give_back_alloc_room(&self, size: usize) {
        give_back(&self.alloc_room, size);
    }

    /// Gives back what [`take_free_room`](Self::take_free_room) took, when
    /// the fast path changes its mind.
    #[inline(always)]
    pub(crate) fn give_back_free_room(&self, size: usize) {
        give_back(&self.free_room, size);
    }

    /// Closes the fast path's budgets and folds what it consumed into
    /// `unpublished` and `countdown`, which are then exact. Called before
    /// the slow path reads or changes either, and whenever the fast path
    /// closes (so that nothing it consumed is lost).
    #[inline]
    pub(crate) fn close(&self) {
        let allocated = self
            .alloc_granted
            .replace(0)
            .wrapping_sub(self.alloc_room.replace(0));
        let freed = self
            .free_granted
            .replace(0)
            .wrapping_sub(self.free_room.replace(0));
        if allocated | freed == 0 {
            return;
        }
        // Each is below 2 * PUBLISH_STEP: no sum here overflows.
        self.unpublished.set(
            self.unpublished
                .get()
                .wrapping_add(allocated as i64)
                .wrapping_sub(freed as i64),
        );
        self.countdown
            .set(self.countdown.get().wrapping_sub(allocated as i64));
    }

    /// Opens the fast path with fresh budgets, if nothing keeps it closed:
    /// the allocation budget keeps the unpublished bytes below the publish
    /// step and each allocation below the countdown (the fast path lets
    /// through a size up to its budget), the free budget keeps the
    /// unpublished bytes above minus a step.
    #[inline]
    pub(crate) fn reopen(&self) {
        if self.blocked.get() != 0 {
            return;
        }
        self.close();
        self.grant();
    }

    /// [`reopen`](Self::reopen) for a fast path whose budget ran short:
    /// false, leaving the path closed, if something keeps it closed or if
    /// the coming allocation of `next_allocation` bytes reaches the
    /// sampler's countdown (the sampler must see it).
    #[inline]
    pub(crate) fn refill(&self, next_allocation: Option<usize>) -> bool {
        if self.blocked.get() != 0 {
            return false;
        }
        self.close();
        // A layout's size never exceeds `isize::MAX`.
        if next_allocation.is_some_and(|size| size as i64 >= self.countdown.get()) {
            return false;
        }
        self.grant();
        true
    }

    /// Sets the budgets from the settled figures; the path is closed.
    #[inline]
    fn grant(&self) {
        let unpublished = self.unpublished.get();
        let alloc = if self.last_allocation.get() != 0 {
            0
        } else {
            (PUBLISH_STEP - 1)
                .saturating_sub(unpublished)
                .min(self.countdown.get().saturating_sub(1))
                .max(0)
        };
        let free = (PUBLISH_STEP - 1).saturating_add(unpublished).max(0);
        self.alloc_room.set(alloc as u64);
        self.alloc_granted.set(alloc as u64);
        self.free_room.set(free as u64);
        self.free_granted.set(free as u64);
    }

    /// True while the thread runs tracker code.
    #[inline]
    pub(crate) fn is_busy(&self) -> bool {
        self.blocked.get() & BUSY != 0
    }

    /// True while a `measure` call is open on the thread.
    #[inline]
    pub(crate) fn is_measuring(&self) -> bool {
        self.blocked.get() & MEASURING != 0
    }

    /// Notes the thread's latest allocation: the recorded block at
    /// `address`, or 0 for one that is not recorded (which still ends the
    /// previous one's chance of being temporary). A recorded block is
    /// noted inside the tracker (busy), so the fast path is closed, and
    /// [`reopen`](Self::reopen) leaves it no allocation budget until the
    /// slow path notes the next allocation.
    #[inline(always)]
    pub(crate) fn note_allocation(&self, address: usize) {
        self.last_allocation.set(address);
    }

    /// True if `address`, being freed, is the thread's last allocation
    /// with nothing allocated since: a temporary allocation. Forgets it,
    /// so that a later block at the same address starts afresh.
    #[inline(always)]
    pub(crate) fn frees_last_allocation(&self, address: usize) -> bool {
        let last = self.last_allocation.get() == address;
        if last {
            self.last_allocation.set(0);
        }
        last
    }

    /// Opens (`true`) or closes the fast path's `NOT_READY` gate: only
    /// `thread_totals`, which owns the slot, calls it.
    pub(crate) fn set_ready(&self, ready: bool) {
        let blocked = self.blocked.get();
        if ready {
            self.blocked.set(blocked & !NOT_READY);
            self.reopen();
        } else {
            self.close();
            self.blocked.set(blocked | NOT_READY);
        }
    }
}

/// Takes `size` bytes from `room` if they are there. Subtracts first and
/// checks the borrow after, restoring the budget on the rare short one:
/// so the common case compiles to a subtraction in memory and a branch.
#[inline(always)]
fn take(room: &Cell<u64>, size: usize) -> bool {
    let (left, short) = room.get().overflowing_sub(size as u64);
    room.set(left);
    if short {
        give_back(room, size);
        return false;
    }
    true
}

/// Adds `size` bytes back to `room`. Reads the budget back from memory
/// rather than reuse a value the compiler holds: with no other use of the
/// difference [`take`] computed, the subtraction stays in memory.
#[inline(always)]
fn give_back(room: &Cell<u64>, size: usize) {
    // SAFETY: the cell's own pointer, valid and aligned, read on the
    // thread that owns the cell.
    let stored = unsafe { std::ptr::read_volatile(room.as_ptr()) };
    room.set(stored.wrapping_add(size as u64));
}

/// Runs `f` on this thread's state; `None` if it cannot be reached.
/// Always inline: a call costs more than the thread-local's lookup.
#[inline(always)]
pub(crate) fn with<R>(f: impl FnOnce(&ThreadState) -> R) -> Option<R> {
    THREAD.try_with(f).ok()
}

/// Proof that this thread is inside the tracker; dropping it leaves.
/// Not `Send`: the flag it clears belongs to the thread that set it.
pub(crate) struct Busy {
    _thread_bound: PhantomData<*const ()>,
}

/// Why [`Busy::try_enter`] refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The thread is already inside the tracker: this allocation is the
    /// tracker's own.
    Reentrant,
    /// The thread's state cannot be reached (torn down): this allocation is
    /// the program's, made too late to be recorded with a stack.
    Gone,
}

impl Busy {
    /// Marks the thread busy, or returns `None` if it already is (a
    /// reentrant call from inside the tracker) or its state is gone.
    #[inline]
    pub(crate) fn enter() -> Option<Busy> {
        Busy::try_enter().ok()
    }

    /// Marks the thread busy, or says why not.
    #[inline]
    pub(crate) fn try_enter() -> Result<Busy, Refused> {
        match THREAD.try_with(|thread| {
            let blocked = thread.blocked.get();
            if blocked == 0 {
                // The fast path was open: its allocations now are the
                // tracker's own.
                thread.close();
            }
            thread.blocked.set(blocked | BUSY);
            blocked & BUSY != 0
        }) {
            Ok(false) => Ok(Busy {
                _thread_bound: PhantomData,
            }),
            Ok(true) => Err(Refused::Reentrant),
            Err(_) => Err(Refused::Gone),
        }
    }
}

impl Drop for Busy {
    #[inline]
    fn drop(&mut self) {
        // The fast path stays closed until the thread's next allocation or
        // free refills its budgets: reopening here would cost full mode,
        // which enters the tracker on every call, for what the partial
        // modes do rarely (a sample, a recorded block's free).
        let _ = THREAD.try_with(|thread| thread.blocked.set(thread.blocked.get() & !BUSY));
    }
}

/// Runs `f` with this thread's allocations untracked: the cold path's
/// working memory never shows up in the figures it reports.
pub(crate) fn untracked<R>(f: impl FnOnce() -> R) -> R {
    let _busy = Busy::enter();
    f()
}

/// The thread's open measure state, or null.
#[inline]
pub(crate) fn measuring() -> *mut MeasureState {
    THREAD
        .try_with(|thread| thread.measuring.get())
        .unwrap_or(ptr::null_mut())
}

pub(crate) fn set_measuring(state: *mut MeasureState) {
    let _ = THREAD.try_with(|thread| {
        thread.measuring.set(state);
        let blocked = thread.blocked.get();
        if state.is_null() {
            thread.blocked.set(blocked & !MEASURING);
            thread.reopen();
        } else {
            thread.close();
            thread.blocked.set(blocked | MEASURING);
        }
    });
}

/// The scope this thread's allocations are tagged with now (0: none).
#[inline]
pub(crate) fn scope() -> u16 {
    THREAD.try_with(|thread| thread.scope.get()).unwrap_or(0)
}

/// Tags this thread's allocations with `scope` from now on; returns the
/// scope it replaces.
pub(crate) fn set_scope(scope: u16) -> u16 {
    THREAD
        .try_with(|thread| thread.scope.replace(scope))
        .unwrap_or(0)
}

/// One thread's totals: what the thread allocated and what it freed
/// (possibly blocks other threads allocated); live figures are their
/// differences. They live in the thread's own [`ThreadState`], so that the
/// fast path reaches them at a fixed offset from the thread pointer, with
/// no pointer to load; `thread_totals` registers them in a slot where a
/// snapshot finds them, and is the only module that reads or writes them.
pub(crate) struct Totals {
    pub(crate) total_bytes: AtomicU64,
    pub(crate) total_blocks: AtomicU64,
    pub(crate) freed_bytes: AtomicU64,
    pub(crate) freed_blocks: AtomicU64,
    /// Full mode: the thread's share of the room below the peak
    /// (`headroom.rs`). Not a total, and not in [`fields`](Self::fields):
    /// other threads take it (under the headroom's lock), so even its owner
    /// changes it with atomic read-modify-writes, and it goes to the
    /// headroom's pool, not to another `Totals`.
    pub(crate) headroom: AtomicU64,
    /// Full mode: how far this thread's allocations raised the peak
    /// (`headroom.rs`). The peak is a base plus the sum over threads, so
    /// that raising it writes no shared line.
    pub(crate) raised: AtomicU64,
}

impl Totals {
    pub(crate) const fn new() -> Self {
        Totals {
            total_bytes: AtomicU64::new(0),
            total_blocks: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            freed_blocks: AtomicU64::new(0),
            headroom: AtomicU64::new(0),
            raised: AtomicU64::new(0),
        }
    }

    /// The totals, for moving one thread's figures into another `Totals`.
    pub(crate) fn fields(&self) -> [&AtomicU64; 5] {
        [
            &self.total_bytes,
            &self.total_blocks,
            &self.freed_bytes,
            &self.freed_blocks,
            &self.raised,
        ]
    }
}

/// A registry entry: the address of a thread's [`Totals`] while the thread
/// holds the slot, null while the slot is free.
pub(crate) type Slot = AtomicPtr<Totals>;
