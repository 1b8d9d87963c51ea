//! Exact totals without a shared counter on every allocation: each thread
//! adds into a slot of its own, which only it writes, and a snapshot sums
//! the slots.
//!
//! A shared atomic counter costs a locked read-modify-write on every
//! allocation, and with several threads the cache line holding it bounces
//! between cores: the four the cheap modes started with made them 1.2 to
//! 1.7 times as slow as the bare allocator. A thread's own slot is a plain
//! load and store on a line no other core writes.
//!
//! A thread claims a slot the first time it is counted, inside the tracker
//! (`thread_life.rs` registers a thread-local destructor, which may
//! allocate, and that allocation must find the thread busy). When the
//! thread exits, the destructor folds the slot's figures into `RETIRED` and frees the slot
//! for another thread. A thread without a slot (all taken, or its
//! thread-locals already torn down) adds straight into `RETIRED` with
//! atomics.

use std::sync::atomic::{AtomicU64, Ordering};

use super::spin::{CachePadded, SpinLock};
pub(crate) use super::thread::PUBLISH_STEP;
use super::thread::{Slot, ThreadState};

/// Enough for every thread of a large server at once; later threads share
/// the atomic fallback.
const SLOTS: usize = 1024;

/// Adds to a field of the calling thread's own slot: the owner is its only
/// writer, so a load and a store (no lock prefix) are exact.
#[inline]
fn bump(field: &AtomicU64, delta: u64) {
    field.store(
        field.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

static THREAD_SLOTS: [CachePadded<Slot>; SLOTS] = [const { CachePadded(Slot::new()) }; SLOTS];

/// Figures of exited threads, and of threads without a slot (atomics).
static RETIRED: CachePadded<Slot> = CachePadded(Slot::new());

/// Held while a thread folds its slot into `RETIRED` and while a snapshot
/// sums: otherwise a sum could see a figure in both places, or in neither.
static FOLD: SpinLock<()> = SpinLock::new(());

/// A thread's slot pointer after it found none free, or after it exited.
const NO_SLOT: *const Slot = 1 as *const Slot;

/// Gives this thread a slot of its own if one is free (true), else marks
/// it as having none. The caller is inside the tracker and has registered
/// the thread's exit fold (`thread_life.rs`), which calls [`retire`].
pub(crate) fn claim_slot(state: &ThreadState) -> bool {
    let free = THREAD_SLOTS.iter().find(|slot| {
        !slot.claimed.load(Ordering::Relaxed)
            && slot
                .claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    });
    state
        .slot
        .set(free.map_or(NO_SLOT, |slot| &slot.0 as *const Slot));
    free.is_some()
}

/// Marks this thread as having no slot, for good: it is exiting, and no
/// exit fold could release one.
pub(crate) fn go_without_slot(state: &ThreadState) {
    state.slot.set(NO_SLOT);
}

/// At the thread's exit: closes its fast path, folds its slot into
/// `RETIRED` and frees the slot for another thread.
pub(crate) fn retire(state: &ThreadState) {
    // Closed first: the fast path counts only into a claimed slot.
    state.set_ready(false);
    let slot = state.slot.replace(NO_SLOT);
    if slot.is_null() || slot == NO_SLOT {
        return;
    }
    // SAFETY: a claimed slot points into the static array.
    let slot = unsafe { &*slot };
    let _fold = FOLD.lock();
    for (from, to) in slot.fields().into_iter().zip(RETIRED.fields()) {
        to.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
    }
    slot.claimed.store(false, Ordering::Release);
}

/// The thread's claimed slot, if it has one.
#[inline]
fn own_slot(state: &ThreadState) -> Option<&'static Slot> {
    let slot = state.slot.get();
    if slot.is_null() || slot == NO_SLOT {
        return None;
    }
    // SAFETY: a claimed slot points into the static array, and only this
    // thread writes it until its exit fold releases it.
    Some(unsafe { &*slot })
}

/// The fast path's count of an allocation: in the thread's own slot, which
/// it has, for the fast path is open only on a thread with one (`claim`
/// opens it, [`retire`] closes it before releasing the slot).
#[inline(always)]
pub(crate) fn count_alloc_on_fast_path(state: &ThreadState, size: u64) {
    // SAFETY: the fast path is open, so the slot is claimed: it points
    // into the static array, and only this thread writes it.
    let slot = unsafe { &*state.slot.get() };
    bump(&slot.total_bytes, size);
    bump(&slot.total_blocks, 1);
}

/// The fast path's count of a free, as [`count_alloc_on_fast_path`].
#[inline(always)]
pub(crate) fn count_free_on_fast_path(state: &ThreadState, size: u64) {
    // SAFETY: as in `count_alloc_on_fast_path`.
    let slot = unsafe { &*state.slot.get() };
    bump(&slot.freed_bytes, size);
    bump(&slot.freed_blocks, 1);
}

/// The fast path's count of a realloc: `old_size` bytes freed and
/// `new_size` allocated, as [`count_alloc_on_fast_path`].
#[inline(always)]
pub(crate) fn count_realloc_on_fast_path(state: &ThreadState, old_size: u64, new_size: u64) {
    // SAFETY: as in `count_alloc_on_fast_path`.
    let slot = unsafe { &*state.slot.get() };
    bump(&slot.freed_bytes, old_size);
    bump(&slot.freed_blocks, 1);
    bump(&slot.total_bytes, new_size);
    bump(&slot.total_blocks, 1);
}

/// Counts an allocation of `size` bytes in this thread's slot, or in the
/// shared fallback if it has none.
#[inline]
pub(crate) fn count_alloc(state: Option<&ThreadState>, size: u64) {
    match state.and_then(own_slot) {
        Some(slot) => {
            bump(&slot.total_bytes, size);
            bump(&slot.total_blocks, 1);
        }
        None => {
            RETIRED.total_bytes.fetch_add(size, Ordering::Relaxed);
            RETIRED.total_blocks.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counts a free of `size` bytes, as [`count_alloc`] does.
#[inline]
pub(crate) fn count_free(state: Option<&ThreadState>, size: u64) {
    match state.and_then(own_slot) {
        Some(slot) => {
            bump(&slot.freed_bytes, size);
            bump(&slot.freed_blocks, 1);
        }
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
    if sum >= PUBLISH_STEP || sum <= -PUBLISH_STEP || own_slot(state).is_none() {
        // Without a slot there is no exit fold to publish the rest later.
        state.unpublished.set(0);
        Some(sum)
    } else {
        state.unpublished.set(sum);
        None
    }
}

/// The exact totals: (live bytes, live blocks, total bytes, total blocks).
/// Cold path.
pub(crate) fn sum() -> (u64, u64, u64, u64) {
    let _fold = FOLD.lock();
    let [mut total_bytes, mut total_blocks, mut freed_bytes, mut freed_blocks] = [0u64; 4];
    for slot in std::iter::once(&*RETIRED).chain(THREAD_SLOTS.iter().map(|s| &s.0)) {
        total_bytes = total_bytes.wrapping_add(slot.total_bytes.load(Ordering::Relaxed));
        total_blocks = total_blocks.wrapping_add(slot.total_blocks.load(Ordering::Relaxed));
        freed_bytes = freed_bytes.wrapping_add(slot.freed_bytes.load(Ordering::Relaxed));
        freed_blocks = freed_blocks.wrapping_add(slot.freed_blocks.load(Ordering::Relaxed));
    }
    (
        total_bytes.wrapping_sub(freed_bytes),
        total_blocks.wrapping_sub(freed_blocks),
        total_bytes,
        total_blocks,
    )
}

/// Takes the fold lock for the fork handlers (see `fork.rs`).
pub(crate) fn lock_for_fork() {
    std::mem::forget(FOLD.lock());
}

/// Releases the fold lock after a fork.
///
/// # Safety
/// Only after [`lock_for_fork`], by the thread that called it.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: the caller's contract: this thread holds the lock and no
    // guard for it exists.
    unsafe { FOLD.force_unlock() }
}
