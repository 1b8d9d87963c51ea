//! A thread's first and last moments in the tracker: claiming its totals
//! slot and preparing what its mode needs, and, at its exit, publishing
//! what it has not published and folding its slot back. These combine the
//! thread's state, its totals, the shared counters, capture and the live
//! table, so they sit above all of them, beside the recorder that calls
//! them.
//!
//! A thread claims a slot the first time it is counted, inside the tracker
//! (claiming registers the exit fold, which may allocate, and that
//! allocation must find the thread busy).
//!
//! The exit fold is a POSIX thread-key destructor where there are keys: the
//! key's value lives in the thread's own control block, so registering it
//! allocates nothing (a Rust thread-local destructor costs a block of
//! glibc's heap per thread, which shifted the program's heap layout enough
//! to change what glibc's `realloc` copies), and key destructors run after
//! the thread-local ones, so allocations those make are folded too.

use super::capture;
use super::config::{settled_mode, Mode};
use super::counters::COUNTERS;
use super::live;
use super::live_block::LiveBlock;
use super::sampler;
use super::site_cache;
use super::stacks;
use super::thread::{self, Busy, ThreadState};
use super::thread_totals;

/// At the thread's exit: folds its slot into the retired totals and lets go
/// of what it held.
fn fold_at_exit() {
    // Busy throughout: the fold holds the headroom's and the fold's locks,
    // which an allocation in a signal handler arriving meanwhile would
    // otherwise try to take again (to gather room, or to sum the peak).
    let _busy = Busy::enter();
    let _ = thread::with(|state| {
        // What the fast path counted goes into `unpublished` first.
        state.close();
        let unpublished = state.unpublished.replace(0);
        if unpublished != 0 {
            COUNTERS.publish_live(unpublished);
        }
        // Its share of full mode's headroom goes to the pool with its totals.
        COUNTERS.headroom.retiring(|| thread_totals::retire(state));
    });
    // The block the thread held back from the live table goes into it.
    count_held_move(live::release_held());
    // What `claim` prepared for capturing stacks goes with the thread, and
    // so does its cache of interned stacks.
    capture::release_thread();
    site_cache::release();
}

/// Where there are no thread keys (or none could be made): a thread-local
/// whose destructor runs the fold.
struct ExitFold;

impl Drop for ExitFold {
    fn drop(&mut self) {
        fold_at_exit();
    }
}

/// Counts what moving a held block into the table did, where no recorder
/// is at hand to do it (at a thread's exit, or in a forked child): the
/// block counted at its site as it enters the table, and a stale record
/// found there counted freed.
pub(crate) fn count_held_move(moved: live::Moved) {
    if let Some(block) = moved.entered_table {
        stacks::count_allocation(
            block.site(),
            block.size() as u64,
            sampler::weight_of(&block, Mode::Full),
        );
    }
    if let Some((_, stale)) = moved.stale {
        count_stale_free(&stale);
    }
}

/// Counts as freed a record found stale (its free was never seen) where
/// no recorder is at hand to do it: at a thread's exit, or in a forked
/// child. Only full mode holds blocks back, so the record weighs one block.
fn count_stale_free(stale: &LiveBlock) {
    let size = stale.size() as u64;
    // The room first, as `Counters::on_free` does.
    COUNTERS.headroom.give(None, size);
    thread_totals::count_free(None, size);
    stacks::count_free(
        stale.site(),
        size,
        sampler::weight_of(stale, Mode::Full),
        false,
    );
}

thread_local! {
    static EXIT_FOLD: ExitFold = const { ExitFold };
}

/// Arranges for [`fold_at_exit`] to run when this thread exits; false if it
/// cannot (the thread is already past its thread-locals' teardown).
fn register_exit_fold() -> bool {
    #[cfg(unix)]
    if exit_key::register() {
        return true;
    }
    EXIT_FOLD.try_with(|_| ()).is_ok()
}

#[cfg(unix)]
mod exit_key {
    use std::ffi::c_void;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The key plus one; 0 before it is made, `FAILED` if it cannot be.
    static KEY: AtomicUsize = AtomicUsize::new(0);
    const FAILED: usize = usize::MAX;

    extern "C" fn destructor(_value: *mut c_void) {
        super::fold_at_exit();
    }

    /// Gives this thread a non-null value under the key, so that the
    /// destructor runs at its exit; false without a key.
    pub(super) fn register() -> bool {
        let key = match KEY.load(Ordering::Acquire) {
            0 => make(),
            FAILED => None,
            stored => Some(stored - 1),
        };
        let Some(key) = key else { return false };
        // SAFETY: `key` came from `pthread_key_create` and is never
        // deleted; the value is a marker, never dereferenced.
        unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, 1 as *const c_void) == 0 }
    }

    #[cold]
    fn make() -> Option<usize> {
        let mut key: libc::pthread_key_t = 0;
        // SAFETY: `destructor` is an `extern "C"` function taking the
        // value, as `pthread_key_create` requires; it never unwinds.
        if unsafe { libc::pthread_key_create(&mut key, Some(destructor)) } != 0 {
            let _ = KEY.compare_exchange(0, FAILED, Ordering::AcqRel, Ordering::Acquire);
            return None;
        }
        match KEY.compare_exchange(0, key as usize + 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => Some(key as usize),
            Err(stored) => {
                // Another thread made one first: use it, and give this back.
                // SAFETY: this key was made above and never handed out.
                unsafe { libc::pthread_key_delete(key) };
                (stored != FAILED).then(|| stored - 1)
            }
        }
    }
}

/// Claims a slot for this thread, once; the caller is inside the tracker.
/// Full mode calls it at every recorded block: the check stays inline.
#[inline(always)]
pub(crate) fn claim(state: &ThreadState, busy: &Busy) {
    if state.slot.get().is_null() {
        claim_now(state, busy);
    }
}

#[cold]
#[inline(never)]
fn claim_now(state: &ThreadState, _busy: &Busy) {
    // Registering the exit fold first: if it cannot run (the thread is
    // exiting), claim nothing, and map no stack cache that nothing would
    // unmap.
    if !register_exit_fold() {
        thread_totals::go_without_slot(state);
        site_cache::release();
        return;
    }
    let claimed = thread_totals::claim_slot(state);
    // The partial modes' fast path opens once the thread has a slot of its
    // own; full mode records every block on the slow path and keeps it shut.
    let mode = settled_mode();
    let partial = matches!(mode, Some(Mode::Count | Mode::Sampled { .. }));
    state.set_ready(partial && claimed);
    if mode != Some(Mode::Count) {
        capture::prepare_thread();
    }
    if matches!(mode, Some(Mode::Sampled { .. })) {
        live::allocate_all();
    }
}
