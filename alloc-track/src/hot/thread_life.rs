//! A thread's first and last moments in the tracker: claiming its totals
//! slot and preparing what its mode needs, and, at its exit, publishing
//! what it has not published and folding its slot back. These combine the
//! thread's state, its totals, the shared counters, capture and the live
//! table, so they sit above all of them, beside the recorder that calls
//! them.
//!
//! A thread claims a slot the first time it is counted, inside the tracker
//! (claiming registers a thread-local destructor, which may allocate, and
//! that allocation must find the thread busy).

use super::capture;
use super::config::{settled_mode, Mode};
use super::counters::COUNTERS;
use super::live;
use super::live_block::LiveBlock;
use super::sampler;
use super::stacks;
use super::thread::{self, Busy, ThreadState};
use super::thread_totals;

/// Exists only for its destructor, registered when the thread claims a
/// slot: at the thread's exit it folds the slot into the retired totals.
struct ExitFold;

impl Drop for ExitFold {
    fn drop(&mut self) {
        let _ = thread::with(|state| {
            // What the fast path counted goes into `unpublished` first.
            state.close();
            let unpublished = state.unpublished.replace(0);
            if unpublished != 0 {
                COUNTERS.publish_live(unpublished);
            }
            thread_totals::retire(state);
        });
        // The block the thread held back from the live table goes into it.
        if let Some(stale) = live::release_held() {
            count_stale_free(&stale);
        }
        // What `claim` prepared for capturing stacks goes with the thread.
        capture::release_thread();
    }
}

/// Counts as freed a record found stale (its free was never seen) where
/// no recorder is at hand to do it: at a thread's exit, or in a forked
/// child. Only full mode holds blocks back, so the record weighs one block.
pub(crate) fn count_stale_free(stale: &LiveBlock) {
    let size = stale.size() as u64;
    thread_totals::count_free(None, size);
    COUNTERS.publish_live((size as i64).wrapping_neg());
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

/// Claims a slot for this thread, once; the caller is inside the tracker.
#[cold]
#[inline(never)]
pub(crate) fn claim(state: &ThreadState, _busy: &Busy) {
    if !state.slot.get().is_null() {
        return;
    }
    // Registering the destructor first: if the thread-local is already
    // gone (the thread is exiting), claim nothing.
    if EXIT_FOLD.try_with(|_| ()).is_err() {
        thread_totals::go_without_slot(state);
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
