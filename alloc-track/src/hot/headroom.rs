//! Full mode's exact peak without a shared write on every allocation.
//!
//! The peak is exact only if every allocation that takes the live bytes
//! past it is seen as doing so. A shared live counter sees that, but its
//! cache line then moves between cores at every allocation and free, which
//! on two threads cost full mode a third of its time. Instead, the room
//! between the live bytes and the peak is shared out: at every moment
//!
//! ```text
//! peak - live bytes = the pool + the sum of every thread's share
//! ```
//!
//! An allocation takes its size from its thread's share, a free gives its
//! size back to it: an atomic operation on a line no other core writes
//! (`Totals::headroom`, in the thread's own state). While a share lasts,
//! the live bytes stay below the peak and nothing else needs to know. When
//! a share is short, the thread takes the headroom lock and gathers the
//! pool, then every thread's share. If all of it is still short of the
//! allocation, no room is left anywhere: the live bytes equal the peak, and
//! the allocation raises the peak by what is missing, exactly. Otherwise
//! the thread keeps a part of what it gathered and puts the rest in the
//! pool.
//!
//! Gathering repeats until a pass finds nothing more: a thread may free
//! between passes, and a pass must not count a free (and what follows it on
//! another thread) without the frees that came before it on threads the
//! pass had already read.
//!
//! Headroom moves between shares only under the lock, and each move is a
//! single atomic operation or happens under the lock, so a fork (whose
//! handlers take the lock) never leaves part of it in a thread the child
//! does not have. An exiting thread's share goes to the pool with its
//! totals (`thread_totals::retire`); a thread without a slot takes from and
//! gives to the pool directly.
//!
//! The partial modes do not use this: their peak is exact only to within a
//! publish step per thread (`counters.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

use super::spin::SpinLock;
use super::thread::ThreadState;
use super::thread_totals;

/// Held while headroom is gathered and shared out, and while the peak is
/// raised or reset: the peak is written only under it.
static LOCK: SpinLock<()> = SpinLock::new(());

/// The most a thread keeps of what it gathered, beyond its allocation: a
/// refill per megabyte of net allocation at worst, far from the peak.
const KEEP_MAX: u64 = 1 << 20;

/// How many times the shares are gathered before the sum is taken as it
/// is: each pass after the first finds only what threads freed meanwhile.
const GATHER_PASSES: usize = 4;

// Relaxed throughout: the headroom cells are exact on their own (each
// change is one read-modify-write), the lock orders the gathering, and no
// reader infers anything about other memory from them.

/// Takes `size` bytes of headroom for an allocation on this thread (`None`:
/// unreachable thread state, the pool serves it). Returns the new peak if
/// the allocation raised it; `peak` is written only here and in [`reset`].
#[inline]
pub(crate) fn take(state: Option<&ThreadState>, size: u64, peak: &AtomicU64) -> Option<u64> {
    let share = thread_totals::headroom_of(state);
    if take_from(share, size) {
        return None;
    }
    refill(share, size, peak)
}

/// Gives back `size` bytes of headroom for a free on this thread.
#[inline]
pub(crate) fn give(state: Option<&ThreadState>, size: u64) {
    thread_totals::headroom_of(state).fetch_add(size, Ordering::Relaxed);
}

/// Takes `size` from `cell` if it holds that much.
#[inline]
fn take_from(cell: &AtomicU64, size: u64) -> bool {
    let mut room = cell.load(Ordering::Relaxed);
    while room >= size {
        match cell.compare_exchange_weak(room, room - size, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => room = now,
        }
    }
    false
}

/// The thread's share is short of `size`: gathers headroom from the pool
/// and every share, and either keeps part of it or raises the peak.
#[cold]
#[inline(never)]
fn refill(share: &AtomicU64, size: u64, peak: &AtomicU64) -> Option<u64> {
    let _lock = LOCK.lock();
    let mut room = 0u64;
    for _ in 0..GATHER_PASSES {
        let found = thread_totals::collect_headroom();
        room = room.wrapping_add(found);
        if found == 0 || room >= size {
            break;
        }
    }
    if room < size {
        // No room left anywhere: the live bytes are at the peak, and this
        // allocation takes them past it.
        let raised = peak.load(Ordering::Relaxed).wrapping_add(size - room);
        peak.store(raised, Ordering::Relaxed);
        return Some(raised);
    }
    let spare = room - size;
    let keep = (spare / 2).min(KEEP_MAX);
    share.fetch_add(keep, Ordering::Relaxed);
    thread_totals::headroom_of(None).fetch_add(spare - keep, Ordering::Relaxed);
    None
}

/// Starts a new peak at the live bytes: gathers all the headroom, which is
/// what separates them from the peak, and leaves none. Returns the live
/// bytes.
pub(crate) fn reset(peak: &AtomicU64) -> u64 {
    let _lock = LOCK.lock();
    let room = thread_totals::collect_headroom();
    let live = peak.load(Ordering::Relaxed).saturating_sub(room);
    peak.store(live, Ordering::Relaxed);
    live
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
