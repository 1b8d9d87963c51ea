//! Per-thread state: the reentrancy flag, the thread's open `measure`
//! frames, its scope, and what the partial modes' fast path needs (the
//! thread's totals slot, its unpublished live bytes, its sampler), all in
//! one thread-local so that path reads it once.
//!
//! The partial modes' fast path (`record.rs`) tests one byte, `blocked`,
//! for everything that would send it to the slow path: the thread is
//! inside the tracker, inside a `measure`, or not ready (no totals slot of
//! its own yet, or full mode, which always takes the slow path). It never
//! loads the mode: count mode keeps the sampler's countdown out of reach,
//! so both partial modes run the same few instructions.
//!
//! The thread-local is const-initialised and has no destructor, so reading
//! it never allocates, never registers anything, and keeps working while
//! the thread's other thread-locals are being torn down (the pattern
//! `tracing` uses). `try_with` is still used so that a platform where the
//! access can fail degrades to "untracked" rather than panicking.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64};

use super::measuring::MeasureState;

pub(crate) struct ThreadState {
    /// Why the partial modes' fast path is closed to this thread: a set of
    /// the `BUSY`, `MEASURING` and `NOT_READY` bits, 0 when it is open.
    /// One word, so that the fast path tests all three with one load.
    blocked: Cell<u8>,
    /// The thread's measure state while a `measure` call is open, else
    /// null. Owned by the `measure` frames that created it.
    measuring: Cell<*mut MeasureState>,
    /// The scope the thread's allocations are tagged with (0: none).
    scope: Cell<u16>,
    /// The thread's totals slot (`thread_totals`): null until claimed.
    pub(crate) slot: Cell<*const Slot>,
    /// Partial modes: live bytes not yet added to the shared counter.
    pub(crate) unpublished: Cell<i64>,
    /// Bytes the thread may still allocate on the fast path before the
    /// sampler must look: in sampled mode the bytes left before the next
    /// sample, in count mode `i64::MAX`; 0 until the slow path first sets it.
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
            blocked: Cell::new(NOT_READY),
            measuring: Cell::new(ptr::null_mut()),
            scope: Cell::new(0),
            slot: Cell::new(ptr::null()),
            unpublished: Cell::new(0),
            countdown: Cell::new(0),
            rng: Cell::new(0),
            last_allocation: Cell::new(0),
        }
    };
}

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
    /// True when the partial modes' fast path may count this thread's
    /// allocations and frees in its slot: not busy, not measuring, ready.
    #[inline(always)]
    pub(crate) fn fast_path_open(&self) -> bool {
        self.blocked.get() == 0
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
    /// previous one's chance of being temporary).
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
        self.blocked.set(if ready {
            blocked & !NOT_READY
        } else {
            blocked | NOT_READY
        });
    }
}

/// Runs `f` on this thread's state; `None` if it cannot be reached.
#[inline]
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
        thread.blocked.set(if state.is_null() {
            blocked & !MEASURING
        } else {
            blocked | MEASURING
        });
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

/// One thread's totals slot (`thread_totals` owns the array of them and
/// is the only module that reads or writes one): what the thread allocated
/// and what it freed (possibly blocks other threads allocated). Live
/// figures are their differences. Defined here, beside the pointer to it
/// in [`ThreadState`], so that the thread state needs nothing above it.
pub(crate) struct Slot {
    pub(crate) claimed: AtomicBool,
    pub(crate) total_bytes: AtomicU64,
    pub(crate) total_blocks: AtomicU64,
    pub(crate) freed_bytes: AtomicU64,
    pub(crate) freed_blocks: AtomicU64,
}

impl Slot {
    pub(crate) const fn new() -> Self {
        Slot {
            claimed: AtomicBool::new(false),
            total_bytes: AtomicU64::new(0),
            total_blocks: AtomicU64::new(0),
            freed_bytes: AtomicU64::new(0),
            freed_blocks: AtomicU64::new(0),
        }
    }

    pub(crate) fn fields(&self) -> [&AtomicU64; 4] {
        [
            &self.total_bytes,
            &self.total_blocks,
            &self.freed_bytes,
            &self.freed_blocks,
        ]
    }
}
