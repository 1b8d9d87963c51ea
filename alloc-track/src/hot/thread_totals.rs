//! Exact totals without a shared counter on every allocation: each thread
//! adds into totals of its own, which only it writes, and a snapshot sums
//! them.
//!
//! A shared atomic counter costs a locked read-modify-write on every
//! allocation, and with several threads the cache line holding it bounces
//! between cores: the four the cheap modes started with made them 1.2 to
//! 1.7 times as slow as the bare allocator. A thread's own totals take a
//! plain add in memory on a line no other core writes. They sit in the
//! thread's `ThreadState` (the fast path adds at a fixed offset from the
//! thread pointer, no pointer to load), and a slot of the registry below
//! holds their address while the thread lives, for snapshots to sum.
//!
//! A thread claims a slot the first time it is counted, inside the tracker
//! (`thread_life.rs` registers a thread-local destructor, which may
//! allocate, and that allocation must find the thread busy). When the
//! thread exits, the destructor folds its totals into `RETIRED` and frees
//! the slot for another thread, before the thread's memory goes. A thread
//! without a slot (all taken, or its thread-locals already torn down) adds
//! straight into `RETIRED` with atomics. In a forked child, the slots of
//! the threads that did not survive the fork are folded the same way (see
//! [`fold_lost_threads_after_fork`]): their memory may be reused or unmapped
//! by the child's next threads.

use std::ptr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::spin::{CachePadded, SpinGuard, SpinLock};
use super::thread::{Slot, ThreadState, Totals, PUBLISH_STEP};

/// Enough for every thread of a large server at once; later threads share
/// the atomic fallback.
const SLOTS: usize = 1024;

/// Adds to a field of the calling thread's own totals: the owner is its
/// only writer, so a load and a store (no lock prefix) are exact, and the
/// compiler makes them one add in memory.
#[inline(always)]
fn bump(field: &AtomicU64, delta: u64) {
    field.store(
        field.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

/// The registry: each claimed slot holds the address of its thread's
/// totals. Written only at a thread's claim and under [`FOLD`] at its exit.
static THREAD_SLOTS: [Slot; SLOTS] = [const { Slot::new(ptr::null_mut()) }; SLOTS];

/// Figures of exited threads, and of threads without a slot (atomics).
static RETIRED: CachePadded<Totals> = CachePadded(Totals::new());

/// Held while a thread folds its totals into `RETIRED` and while a snapshot
/// sums: otherwise a sum could see a figure in both places, or in neither,
/// or read the totals of a thread that has exited.
static FOLD: SpinLock<()> = SpinLock::new(());

/// Proof that this thread holds [`FOLD`]: its guard, or the hold the fork
/// handlers took with [`lock_for_fork`].
struct FoldHeld<'a> {
    _guard: Option<SpinGuard<'a, ()>>,
}

impl FoldHeld<'static> {
    fn lock() -> Self {
        FoldHeld {
            _guard: Some(FOLD.lock()),
        }
    }

    /// # Safety
    /// Only between [`lock_for_fork`] and [`unlock_after_fork`], on the
    /// thread that called the first (in a forked child, its copy).
    #[cfg(unix)]
    unsafe fn held_for_fork() -> Self {
        FoldHeld { _guard: None }
    }
}

/// One past the highest slot ever claimed: slots are claimed lowest
/// first, so a walk of the registered threads stops here instead of
/// reading all [`SLOTS`].
static CLAIMED_BELOW: AtomicUsize = AtomicUsize::new(0);

/// A thread's slot pointer after it found none free, or after it exited.
const NO_SLOT: *const Slot = 1 as *const Slot;

/// Gives this thread a slot of its own if one is free (true), else marks
/// it as having none. The caller is inside the tracker and has registered
/// the thread's exit fold (`thread_life.rs`), which calls [`retire`].
pub(crate) fn claim_slot(state: &ThreadState) -> bool {
    let totals = &state.totals as *const Totals as *mut Totals;
    let free = THREAD_SLOTS.iter().position(|slot| {
        slot.load(Ordering::Relaxed).is_null()
            && slot
                .compare_exchange(ptr::null_mut(), totals, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    });
    if let Some(index) = free {
        CLAIMED_BELOW.fetch_max(index + 1, Ordering::AcqRel);
    }
    state
        .slot
        .set(free.map_or(NO_SLOT, |index| &THREAD_SLOTS[index] as *const Slot));
    free.is_some()
}

/// Marks this thread as having no slot, for good: it is exiting, and no
/// exit fold could release one.
pub(crate) fn go_without_slot(state: &ThreadState) {
    state.slot.set(NO_SLOT);
}

/// At the thread's exit: closes its fast path, folds its totals into
/// `RETIRED` and frees the slot for another thread. Returns the thread's
/// share of full mode's headroom, which the caller puts in the pool
/// (`headroom::retiring`).
pub(crate) fn retire(state: &ThreadState) -> u64 {
    // Closed first: the fast path counts only into a thread's own totals.
    state.set_ready(false);
    let slot = state.slot.replace(NO_SLOT);
    let share = state.totals.headroom.swap(0, Ordering::SeqCst);
    if slot.is_null() || slot == NO_SLOT {
        return share;
    }
    // SAFETY: a claimed slot points into the static array.
    let slot = unsafe { &*slot };
    let _fold = FOLD.lock();
    fold_into_retired(&state.totals);
    slot.store(ptr::null_mut(), Ordering::Release);
    share
}

/// Moves `totals` into `RETIRED`. The caller holds [`FOLD`].
fn fold_into_retired(totals: &Totals) {
    for (from, to) in totals.fields().into_iter().zip(RETIRED.fields()) {
        to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
}

/// True if the thread counts into its own totals (it holds a slot).
#[inline]
fn has_slot(state: &ThreadState) -> bool {
    let slot = state.slot.get();
    !slot.is_null() && slot != NO_SLOT
}

/// The fast path's count of an allocation: in the thread's own totals,
/// for the fast path is open only on a thread with a slot (`claim` opens
/// it, [`retire`] closes it before releasing the slot).
#[inline(always)]
pub(crate) fn count_alloc_on_fast_path(state: &ThreadState, size: u64) {
    bump(&state.totals.total_bytes, size);
    bump(&state.totals.total_blocks, 1);
}

/// The fast path's count of a free, as [`count_alloc_on_fast_path`].
#[inline(always)]
pub(crate) fn count_free_on_fast_path(state: &ThreadState, size: u64) {
    bump(&state.totals.freed_bytes, size);
    bump(&state.totals.freed_blocks, 1);
}

/// The fast path's count of a realloc: `old_size` bytes freed and
/// `new_size` allocated, as [`count_alloc_on_fast_path`].
#[inline(always)]
pub(crate) fn count_realloc_on_fast_path(state: &ThreadState, old_size: u64, new_size: u64) {
    count_free_on_fast_path(state, old_size);
    count_alloc_on_fast_path(state, new_size);
}

/// Counts an allocation of `size` bytes in this thread's totals, or in the
/// shared fallback if it has no slot.
#[inline]
pub(crate) fn count_alloc(state: Option<&ThreadState>, size: u64) {
    match state.filter(|state| has_slot(state)) {
        Some(state) => count_alloc_on_fast_path(state, size),
        None => {
            RETIRED.total_bytes.fetch_add(size, Ordering::Relaxed);
            RETIRED.total_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a free of `size` bytes, as [`count_alloc`] does.
#[inline]
pub(crate) fn count_free(state: Option<&ThreadState>, size: u64) {
    match state.filter(|state| has_slot(state)) {
        Some(state) => count_free_on_fast_path(state, size),
        None => {
            RETIRED.freed_bytes.fetch_add(size, Ordering::Relaxed);
            RETIRED.freed_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Partial modes: adds `delta` live bytes to this thread's unpublished
/// sum; returns the sum to publish once it has drifted [`PUBLISH_STEP`]
/// away from zero (the caller adds it to the shared counter).
#[inline]
pub(crate) fn drift(state: &ThreadState, delta: i64) -> Option<i64> {
    // What the fast path consumed first, so that the sum is exact.
    state.close();
    let sum = state.unpublished.get().wrapping_add(delta);
    if sum >= PUBLISH_STEP || sum <= -PUBLISH_STEP || !has_slot(state) {
        // Without a slot there is no exit fold to publish the rest later.
        state.unpublished.set(0);
        Some(sum)
    } else {
        state.unpublished.set(sum);
        None
    }
}

/// This thread's share of full mode's headroom (`headroom.rs`), if it
/// holds a slot; a thread without one takes from the pool directly.
#[inline]
pub(crate) fn headroom_of(state: Option<&ThreadState>) -> Option<&AtomicU64> {
    state
        .filter(|state| has_slot(state))
        .map(|state| &state.totals.headroom)
}

/// Empties every thread's share of the headroom; returns their sum. The
/// caller holds the headroom's lock, so that no other thread is moving
/// headroom between shares meanwhile.
pub(crate) fn collect_headroom() -> u64 {
    let fold = FoldHeld::lock();
    let mut sum = 0u64;
    for_each_registered(&fold, |totals| {
        sum = sum.wrapping_add(totals.headroom.swap(0, Ordering::SeqCst));
    });
    sum
}

/// Full mode: adds `amount` to how far this thread raised the peak (see
/// `Totals::raised`). Returns true when the peak's breakdown is due a
/// check: each time the thread's raises (or, without a slot, the shared
/// fallback's) cross a multiple of [`RAISE_CHECK_STEP`].
#[inline]
pub(crate) fn count_raise(state: Option<&ThreadState>, amount: u64) -> bool {
    let before = match state.filter(|state| has_slot(state)) {
        Some(state) => {
            let before = state.totals.raised.load(Ordering::Relaxed);
            bump(&state.totals.raised, amount);
            before
        }
        None => RETIRED.raised.fetch_add(amount, Ordering::Relaxed),
    };
    before / RAISE_CHECK_STEP != before.wrapping_add(amount) / RAISE_CHECK_STEP
}

/// How much a thread raises the peak between two checks of whether a new
/// peak breakdown is due: far below the breakdown's own step (64 KiB or
/// 2% of the heap), so that a breakdown comes at most this much per thread
/// after the heap climbed past its step.
const RAISE_CHECK_STEP: u64 = 16 << 10;

/// Full mode: the sum of every thread's raises of the peak, exited threads'
/// included. Cold path.
pub(crate) fn raised() -> u64 {
    raised_under(&FoldHeld::lock())
}

fn raised_under(fold: &FoldHeld<'_>) -> u64 {
    let mut sum = RETIRED.raised.load(Ordering::Relaxed);
    for_each_registered(fold, |totals| {
        sum = sum.wrapping_add(totals.raised.load(Ordering::Relaxed));
    });
    sum
}

/// The exact totals: (live bytes, live blocks, total bytes, total blocks).
/// Cold path.
pub(crate) fn sum() -> (u64, u64, u64, u64) {
    sum_under(&FoldHeld::lock())
}

fn sum_under(fold: &FoldHeld<'_>) -> (u64, u64, u64, u64) {
    let [mut total_bytes, mut total_blocks, mut freed_bytes, mut freed_blocks] = [0u64; 4];
    let mut add = |totals: &Totals| {
        total_bytes = total_bytes.wrapping_add(totals.total_bytes.load(Ordering::Relaxed));
        total_blocks = total_blocks.wrapping_add(totals.total_blocks.load(Ordering::Relaxed));
        freed_bytes = freed_bytes.wrapping_add(totals.freed_bytes.load(Ordering::Relaxed));
        freed_blocks = freed_blocks.wrapping_add(totals.freed_blocks.load(Ordering::Relaxed));
    };
    add(&RETIRED);
    for_each_registered(fold, add);
    (
        total_bytes.wrapping_sub(freed_bytes),
        total_blocks.wrapping_sub(freed_blocks),
        total_bytes,
        total_blocks,
    )
}

/// Calls `f` with the totals of every thread that holds a slot. `_fold`
/// proves [`FOLD`] held: a thread clears its slot under it before its
/// memory goes. Slots are claimed lowest first, so the
/// walk stops at [`CLAIMED_BELOW`]: a thread raises it before it counts
/// anything in its slot.
fn for_each_registered(_fold: &FoldHeld<'_>, mut f: impl FnMut(&Totals)) {
    let claimed = CLAIMED_BELOW.load(Ordering::Acquire).min(SLOTS);
    for slot in &THREAD_SLOTS[..claimed] {
        // SAFETY: a registered address is a live thread's totals: the
        // thread clears its slot under `FOLD`, held by the caller, before
        // its memory goes (and a forked child clears the lost threads'
        // slots before anything else runs).
        if let Some(totals) = unsafe { slot.load(Ordering::Acquire).as_ref() } {
            f(totals);
        }
    }
}

/// In a forked child, which has only the thread that forked: folds every
/// other thread's totals into `RETIRED` and frees their slots. Those
/// threads never run their exit fold here, and the child's next threads
/// may be given their memory (glibc reuses the stacks, thread-locals and
/// all) or find it unmapped. Their shares of full mode's headroom are
/// dropped: the child works its room out afresh from what is returned,
/// its live bytes and the sum of the raises (`Counters::rebuild_after_fork`).
///
/// # Safety
/// Only in a forked child's fork handler, before anything else of the
/// child's has run, holding [`FOLD`] since [`lock_for_fork`].
#[cfg(unix)]
pub(crate) unsafe fn fold_lost_threads_after_fork() -> AfterFork {
    let own = super::thread::with(|state| &state.totals as *const Totals as *mut Totals);
    for slot in &THREAD_SLOTS {
        let totals = slot.load(Ordering::Acquire);
        if totals.is_null() || Some(totals) == own {
            continue;
        }
        // SAFETY: the lost thread's memory is still mapped in the child,
        // which is a copy of the parent at the fork, and nothing has run
        // in the child yet that could reuse or unmap it.
        let totals = unsafe { &*totals };
        fold_into_retired(totals);
        totals.headroom.store(0, Ordering::SeqCst);
        slot.store(ptr::null_mut(), Ordering::Release);
    }
    // Only this thread's totals are left beside the retired ones (its own
    // if it has a slot; counted into `RETIRED` otherwise).
    // SAFETY: the caller's contract: the fork handler holds `FOLD`.
    let fold = unsafe { FoldHeld::held_for_fork() };
    AfterFork {
        live_bytes: sum_under(&fold).0,
        raised: raised_under(&fold),
    }
}

/// A forked child's figures once the lost threads are folded
/// ([`fold_lost_threads_after_fork`]).
#[cfg(unix)]
pub(crate) struct AfterFork {
    pub(crate) live_bytes: u64,
    /// The threads' raises of the peak, summed.
    pub(crate) raised: u64,
}

/// Takes the fold lock for the fork handlers (see `fork.rs`).
#[cfg(unix)]
pub(crate) fn lock_for_fork() {
    std::mem::forget(FOLD.lock());
}

/// Releases the fold lock after a fork.
///
/// # Safety
/// Only after [`lock_for_fork`], by the thread that called it.
#[cfg(unix)]
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract: this thread holds the lock and no
    // guard for it exists.
    unsafe { FOLD.force_unlock() }
}
