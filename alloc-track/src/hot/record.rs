//! What the allocator methods do around the inner allocator: record a new
//! block, forget a freed one, and move one through a `realloc`, in each
//! [`Mode`].
//!
//! - **Full**: every block the program allocates goes into the live table
//!   with its stack; a free looks its block up, and a miss means the block
//!   was the tracker's own (allocated while the thread was busy) and is
//!   not counted.
//! - **Sampled and count**: every block is counted in the exact totals,
//!   but only some are recorded in the live table: samples, blocks born
//!   inside a `measure`, and the tracker's own (marked so their frees are
//!   not counted). The address filter tells a free whether to look.
//!
//! Every mode also notes each thread's last allocation (`ThreadState`), so
//! that a recorded block freed before its thread allocates again is
//! counted as "temporary" at its site: a compare at the free, a store at
//! the allocation. The partial modes' fast path stores nothing: after a
//! recorded block the thread has no allocation budget, so its next
//! allocation takes the slow path, which notes it (so that a sample
//! followed by unsampled allocations is not mistaken for a temporary one).
//!
//! Full mode counts a block at its site when it leaves its thread's held
//! slot (`held_block.rs`), not at its allocation: when the thread's next
//! allocation moves it into the live table, or at its free. A temporary
//! block, freed while still held, then costs its site two atomic additions
//! (`stacks::count_fleeting`) instead of five, and leaves the site's record
//! untouched. Until a held block leaves its slot, snapshots and the peak
//! breakdown find it there.
//!
//! Order matters in three places. A free forgets the block *before* the
//! inner allocator frees it, because afterwards another thread may be
//! handed the same address and record it. A realloc takes the old record
//! out first and puts it back if the inner allocator fails, because the
//! old block is then still the caller's. And full mode counts a free in
//! the totals as its record leaves the table or the held slot, under the
//! table's lock or before the slot lets go (`live::remove`): a fork, whose
//! handlers take every table lock, then never finds a block gone from the
//! records but still counted live, which the child would keep for good.
//! (The other way round, a record in place whose allocation is not
//! counted yet, leaves the child's peak short of its records, which a
//! snapshot's floor at the live bytes covers.)

use std::sync::atomic::Ordering;

use super::capture::{self, CapturedStack};
use super::config::{Config, Mode};
use super::counters::{COUNTERS, EPOCH, INSTALLED, UNRECORDED};
use super::filter;
use super::live;
use super::live_block::LiveBlock;
use super::sampler;
use super::scopes;
use super::site_id::{INTERNAL_SITE, OVERFLOW_SITE};
use super::stacks;
use super::thread::{self, Busy};
use super::thread_life;
use super::thread_totals;

/// Records a block the inner allocator just returned.
#[inline(always)]
pub(crate) fn on_alloc(address: *mut u8, size: usize, config: &Config) {
    if !count_alloc_fast(size) {
        on_alloc_slow(address as usize, size, config);
    }
}

/// The partial modes' fast path for an allocation, the common case there:
/// counts it in the thread's own totals and returns true; or returns false
/// having changed nothing when the thread's allocation budget is short
/// (`thread.rs`): the fast path is closed (full mode, the thread is busy,
/// measuring, has no slot yet, or just recorded a block), or the
/// allocation would take the drift to a publish step or reach the
/// sampler's countdown. One thread-local, one subtraction, one branch.
#[inline(always)]
fn count_alloc_fast(size: usize) -> bool {
    thread::with(|state| {
        if !state.take_alloc_room(size) {
            return false;
        }
        thread_totals::count_alloc_on_fast_path(state, size as u64);
        true
    })
    .unwrap_or(false)
}

/// The partial modes' fast path for a free, as [`count_alloc_fast`] with
/// the free budget: a block the address filter says was never recorded.
/// `address` is `None` when the caller has already looked (a realloc).
#[inline(always)]
fn count_free_fast(address: Option<usize>, size: usize) -> bool {
    thread::with(|state| {
        // The budget first: full mode (budget 0) then skips the filter.
        if !state.take_free_room(size) {
            return false;
        }
        if address.is_some_and(filter::may_contain) {
            state.give_back_free_room(size);
            return false;
        }
        thread_totals::count_free_on_fast_path(state, size as u64);
        true
    })
    .unwrap_or(false)
}

/// The partial modes' commonest reason to leave the fast path: its budget
/// ran out (the budgets are conservative: frees do not refill the
/// allocation budget, nor allocations the free budget). When nothing else
/// needs the slow path (the thread is not blocked, the allocation is not
/// a sample), fresh budgets from the settled figures, and the fast path
/// once more: a few dozen instructions instead of the whole slow path.
fn count_alloc_after_refill(size: usize) -> bool {
    thread::with(|state| state.refill(Some(size)) && count_alloc_fast(size)).unwrap_or(false)
}

/// The free side of [`count_alloc_after_refill`]: a block without a
/// record whose free found the budget short.
fn count_free_after_refill(address: usize, size: usize) -> bool {
    if filter::may_contain(address) {
        return false;
    }
    thread::with(|state| state.refill(None) && count_free_fast(None, size)).unwrap_or(false)
}

/// Everything the fast path declined, in every mode.
#[inline(never)]
fn on_alloc_slow(address: usize, size: usize, config: &Config) {
    if !INSTALLED.load(Ordering::Relaxed) {
        config.publish_inner_allocator();
        INSTALLED.store(true, Ordering::Relaxed);
    }
    match config.mode() {
        Mode::Full => {
            // A thread already inside the tracker (the unwinder's first-use
            // allocations, snapshot building) passes through untracked.
            let Ok(busy) = Busy::try_enter() else { return };
            record_with_stack(address, size, config, Mode::Full, false, &busy);
        }
        _ if count_alloc_after_refill(size) => {}
        mode => on_alloc_partial(address, size, config, mode),
    }
}

/// What the partial modes' fast path decided.
enum Next {
    /// Counted; nothing more to do.
    Done,
    /// The thread is inside the tracker: the tracker's own block.
    Internal,
    /// Record it with its stack: a sample, or (not sampled) a block
    /// recorded only for the thread's open `measure`.
    Record { sampled: bool },
    /// The thread has no totals slot yet: take the slow path once.
    Claim,
    /// The thread's state is gone (it is exiting).
    Gone,
}

/// Sampled and count modes, past the fast path: count every block, record
/// a few (samples, blocks born inside a `measure`, the tracker's own).
fn on_alloc_partial(address: usize, size: usize, config: &Config, mode: Mode) {
    let next = thread::with(|state| {
        if state.is_busy() {
            return Next::Internal;
        }
        if state.slot.get().is_null() {
            return Next::Claim;
        }
        state.note_allocation(0);
        COUNTERS.on_alloc(size as u64, mode, config, Some(state));
        let sampled = match mode {
            Mode::Sampled { mean_bytes } => sampler::sample(state, size, mean_bytes),
            _ => {
                sampler::never_sample(state);
                false
            }
        };
        if !sampled && !state.is_measuring() {
            state.reopen();
            Next::Done
        } else {
            Next::Record { sampled }
        }
    })
    .unwrap_or(Next::Gone);
    match next {
        Next::Done => {}
        Next::Internal => record_internal(address, size, config),
        // Too late in the thread's life to record anything: count it, and
        // its free will count it back.
        Next::Gone => COUNTERS.on_alloc(size as u64, mode, config, None),
        Next::Record { sampled } => record_sample(address, size, config, mode, sampled),
        Next::Claim => {
            if let Ok(busy) = Busy::try_enter() {
                let _ = thread::with(|state| thread_life::claim(state, &busy));
            }
            // Counted now through the fast path (or, without a slot, the
            // shared fallback).
            on_alloc_partial(address, size, config, mode);
        }
    }
}

/// The tracker's own block in a partial mode: recorded so that its free is
/// recognised and not counted. Rare (snapshots, dumps, symbols).
#[cold]
fn record_internal(address: usize, size: usize, config: &Config) {
    let block = LiveBlock::new(size, 0, INTERNAL_SITE, 0, 0, false);
    match live::insert(address, block) {
        Ok(_) => filter::mark(address),
        // Unrecordable: count it after all, so that its free (which will
        // not find it) balances.
        Err(_) => COUNTERS.on_alloc(size as u64, config.mode(), config, None),
    }
}

/// The partial modes' [`record_with_stack`], kept out of their path's
/// line (full mode's has it inline: one call, and one walked frame, less).
#[inline(never)]
fn record_sample(address: usize, size: usize, config: &Config, mode: Mode, sampled: bool) {
    if let Ok(busy) = Busy::try_enter() {
        record_with_stack(address, size, config, mode, sampled, &busy);
    }
}

/// Records a block with its stack. In full mode the totals are counted
/// here; in the partial modes the caller has counted them already, and the
/// block is a sample or (not `sampled`) recorded only for a `measure`.
#[inline(always)]
fn record_with_stack(
    address: usize,
    size: usize,
    config: &Config,
    mode: Mode,
    sampled: bool,
    busy: &Busy,
) {
    // Capture first, with no lock held: unwinding is the slow part, and
    // it may itself allocate.
    let mut stack = CapturedStack::new();
    capture::capture(&mut stack);
    let site = stacks::intern(&stack, config.max_sites);
    let measuring = thread::measuring();
    // SAFETY: a non-null pointer is this thread's own measure state, alive
    // until the outermost measure frame closes; no other reference to it
    // exists while this thread is in the allocator.
    let measure = unsafe { measuring.as_mut() };
    let full = mode == Mode::Full;
    let block = LiveBlock::new(
        size,
        thread::scope(),
        site,
        EPOCH.load(Ordering::Relaxed),
        measure.as_ref().map_or(0, |m| m.tag),
        sampled,
    );
    let weight = sampler::weight_of(&block, mode);
    // A block is counted at its site as it enters the table, before the
    // global counter below: a peak breakdown that counter triggers must
    // already see the block at its site, or (held) in its slot. The block
    // that enters weighs what this one does: it is this one, or in full
    // mode (every block weighs one) the one held before.
    let count_at_site = |entered: &LiveBlock| {
        stacks::count_allocation(entered.site(), entered.size() as u64, weight)
    };
    // Full mode holds the thread's newest block back from the table
    // (`held_block.rs`); the partial modes mark what they record in the
    // filter, which looks in the table alone.
    let recorded = if full {
        live::hold(address, block, count_at_site)
    } else {
        live::insert(address, block).map(|stale| {
            count_at_site(&block);
            stale.map(|stale| (address, stale))
        })
    };
    match recorded {
        // A record left at an address means its free was never seen; count
        // it freed now so that nothing stays live twice. (Its filter mark
        // stands for the new record.)
        Ok(Some((stale_address, stale))) if stale.site() != INTERNAL_SITE => {
            let stale = live::Removed {
                block: stale,
                was_held: false,
            };
            forget(stale_address, &stale, config, mode, Release::Moved)
        }
        Ok(Some(_)) => {}
        Ok(None) if !full => filter::mark(address),
        Ok(None) => {}
        // Unrecordable. In full mode it is counted nowhere, and its free
        // will not find it; in the partial modes it was counted already,
        // and its free (finding no record) counts it back. Either way only
        // the site figures miss it.
        Err(_) => {
            UNRECORDED.fetch_add(1, Ordering::Relaxed);
            let _ = thread::with(|state| state.note_allocation(0));
            return;
        }
    }
    scopes::count_allocation(block.scope(), size as u64, weight);
    let _ = thread::with(|state| {
        if full {
            thread_life::claim(state, busy);
            COUNTERS.on_alloc(size as u64, mode, config, Some(state));
        }
        state.note_allocation(address);
    });
    if let Some(measure) = measure {
        measure.on_alloc(address, size, site);
    }
}

/// Forgets a block the caller is about to free.
#[inline(always)]
pub(crate) fn on_free(address: *mut u8, size: usize, config: &Config) {
    let address = address as usize;
    if !count_free_fast(Some(address), size) {
        on_free_slow(address, size, config);
    }
}

#[inline(never)]
fn on_free_slow(address: usize, size: usize, config: &Config) {
    let mode = config.mode();
    if mode == Mode::Full {
        // The free is counted as the record leaves (see `live::remove`).
        let mut temporary = false;
        let removed = live::remove(address, !is_busy(), |block| {
            temporary = count_freed(address, block, config, mode, Release::Freed);
        });
        if let Some(removed) = removed {
            forget_counted(address, &removed, mode, temporary);
        }
        return;
    }
    if count_free_after_refill(address, size) {
        return;
    }
    if let Some(removed) = take_partial(address) {
        if removed.block.site() != INTERNAL_SITE {
            forget(address, &removed, config, mode, Release::Freed);
        }
        return;
    }
    forget_unrecorded(address, size, config, mode);
}

/// Whether this thread is inside the tracker: its frees are of its own
/// untracked blocks (or found in the table), so a miss there need not look
/// through other threads' held blocks.
#[inline]
fn is_busy() -> bool {
    thread::with(|state| state.is_busy()).unwrap_or(false)
}

/// Partial modes: the record of `address` if it has one.
#[inline]
fn take_partial(address: usize) -> Option<live::Removed> {
    if !filter::may_contain(address) {
        return None;
    }
    // The partial modes hold no blocks back: the table alone has them.
    let removed = live::remove(address, false, |_| {})?;
    filter::unmark(address);
    Some(removed)
}

/// Partial modes: a block that was counted but not recorded, past the
/// fast path.
fn forget_unrecorded(address: usize, size: usize, config: &Config, mode: Mode) {
    let measured = thread::with(|state| {
        COUNTERS.on_free(size as u64, mode, config, Some(state));
        state.reopen();
        state.is_measuring() && !state.is_busy()
    });
    match measured {
        None => COUNTERS.on_free(size as u64, mode, config, None),
        Some(false) => {}
        // A measured thread freeing a block born before its measure: the
        // flow is exact, its site unknown.
        Some(true) => {
            let Some(_busy) = Busy::enter() else { return };
            let block = LiveBlock::new(size, 0, OVERFLOW_SITE, 0, 0, false);
            // SAFETY: as in `record_with_stack`; `_busy` keeps this thread
            // from reentering the state while it is borrowed.
            if let Some(measure) = unsafe { thread::measuring().as_mut() } {
                measure.on_free(address, &block);
            }
        }
    }
}

/// How a recorded block leaves the live table.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Release {
    /// Freed by the program: temporary if it was the thread's last
    /// allocation.
    Freed,
    /// Moved by a realloc (its contents live on in the new block), or a
    /// stale record dropped: never temporary.
    Moved,
}

/// Full mode: a realloc failed after its old block was counted freed
/// ([`take_for_realloc`]); the block is the caller's still, and its
/// record back in the table: counted allocated again.
#[cold]
fn count_back(size: u64, config: &Config) {
    let counted = thread::with(|state| COUNTERS.on_alloc(size, Mode::Full, config, Some(state)));
    if counted.is_none() {
        COUNTERS.on_alloc(size, Mode::Full, config, None);
    }
}

/// Counts a removed record as freed: [`count_freed`], then
/// [`forget_counted`].
#[inline(always)]
fn forget(address: usize, removed: &live::Removed, config: &Config, mode: Mode, release: Release) {
    let temporary = count_freed(address, &removed.block, config, mode, release);
    forget_counted(address, removed, mode, temporary);
}

/// Counts a block's free in the totals (and full mode's room below the
/// peak). Returns whether it was temporary: freed by the program before
/// its thread allocated again.
#[inline(always)]
fn count_freed(
    address: usize,
    block: &LiveBlock,
    config: &Config,
    mode: Mode,
    release: Release,
) -> bool {
    let size = block.size() as u64;
    let temporary = thread::with(|state| {
        COUNTERS.on_free(size, mode, config, Some(state));
        release == Release::Freed && state.frees_last_allocation(address)
    });
    if temporary.is_none() {
        COUNTERS.on_free(size, mode, config, None);
    }
    temporary == Some(true)
}

/// The rest of a free, once [`count_freed`] has counted it: the block's
/// site, and the thread's open `measure`. The measure state is updated
/// only if this thread can enter the tracker: a caller already inside it
/// (a stale record found while recording, the tracker's own code freeing
/// a block) may be borrowing that state. A block that never left its
/// thread's held slot (`was_held`) has not been counted at its site yet.
#[inline(always)]
fn forget_counted(address: usize, removed: &live::Removed, mode: Mode, temporary: bool) {
    let (block, was_held) = (&removed.block, removed.was_held);
    let entered = Busy::enter();
    let (site, size) = (block.site(), block.size() as u64);
    let weight = sampler::weight_of(block, mode);
    match (was_held, temporary) {
        // Held until now: its site has not counted its allocation yet.
        (true, true) => stacks::count_fleeting(site, size, weight),
        (true, false) => {
            stacks::count_allocation(site, size, weight);
            stacks::count_free(site, size, weight, false);
        }
        (false, _) => stacks::count_free(site, size, weight, temporary),
    }
    if entered.is_none() {
        return;
    }
    // SAFETY: as in `record_with_stack`; `entered` keeps this thread from
    // reentering the state while it is borrowed.
    if let Some(state) = unsafe { thread::measuring().as_mut() } {
        state.on_free(address, block);
    }
}

/// The partial modes' fast path for a realloc, before the inner allocator
/// runs: true when the block at `address` has no record (the address
/// filter says so) and the thread's budgets cover freeing `old_size` bytes
/// and allocating `new_size`, which are then taken from them. The caller
/// then reallocates and calls [`finish_unrecorded_realloc`]. False, having
/// changed nothing, sends the realloc down the slow path.
#[inline(always)]
pub(crate) fn reserve_unrecorded_realloc(
    address: *mut u8,
    old_size: usize,
    new_size: usize,
) -> bool {
    take_realloc_rooms(address, old_size, new_size)
        || reserve_unrecorded_realloc_after_refill(address, old_size, new_size)
}

#[inline(always)]
fn take_realloc_rooms(address: *mut u8, old_size: usize, new_size: usize) -> bool {
    thread::with(|state| {
        // The budgets first: full mode (budgets 0) then skips the filter.
        if !state.take_free_room(old_size) {
            return false;
        }
        if !state.take_alloc_room(new_size) {
            state.give_back_free_room(old_size);
            return false;
        }
        if filter::may_contain(address as usize) {
            state.give_back_free_room(old_size);
            state.give_back_alloc_room(new_size);
            return false;
        }
        true
    })
    .unwrap_or(false)
}

/// [`reserve_unrecorded_realloc`] once more with fresh budgets, as
/// [`count_alloc_after_refill`] does.
#[inline(never)]
fn reserve_unrecorded_realloc_after_refill(
    address: *mut u8,
    old_size: usize,
    new_size: usize,
) -> bool {
    if filter::may_contain(address as usize) {
        return false;
    }
    let refilled = thread::with(|state| state.refill(Some(new_size)));
    refilled == Some(true) && take_realloc_rooms(address, old_size, new_size)
}

/// Counts a realloc reserved by [`reserve_unrecorded_realloc`]: the old
/// block freed and the new one allocated, in the thread's own totals; or,
/// if the inner allocator failed (`new_address` null: the old block is
/// still the caller's), gives the budgets back.
#[inline(always)]
pub(crate) fn finish_unrecorded_realloc(old_size: usize, new_address: *mut u8, new_size: usize) {
    if new_address.is_null() {
        cancel_unrecorded_realloc(old_size, new_size);
        return;
    }
    let _ = thread::with(|state| {
        thread_totals::count_realloc_on_fast_path(state, old_size as u64, new_size as u64)
    });
}

/// A reserved realloc that failed: nothing was counted, but the budgets
/// were taken. Folded into the exact figures first (whatever closed the
/// fast path meanwhile, the reservation is in them then), then undone.
#[cold]
#[inline(never)]
fn cancel_unrecorded_realloc(old_size: usize, new_size: usize) {
    let _ = thread::with(|state| {
        state.close();
        let (old, new) = (old_size as i64, new_size as i64);
        state
            .unpublished
            .set(state.unpublished.get().wrapping_sub(new).wrapping_add(old));
        state.countdown.set(state.countdown.get().wrapping_add(new));
        state.reopen();
    });
}

/// Takes the record of a block about to be reallocated. Full mode counts
/// the old block freed as its record leaves (see `live::remove`), and
/// [`finish_realloc`] counts it back if the realloc fails; the partial
/// modes leave the figures untouched until the outcome is known.
#[inline]
pub(crate) fn take_for_realloc(address: *mut u8, config: &Config) -> Option<live::Removed> {
    let address = address as usize;
    match config.mode() {
        Mode::Full => live::remove(address, !is_busy(), |block| {
            count_freed(address, block, config, Mode::Full, Release::Moved);
        }),
        _ => take_partial(address),
    }
}

/// Completes a realloc: on failure the old block is still the caller's and
/// its record goes back; on success the old block counts as freed and the
/// new one as a fresh allocation at the realloc's call site.
#[inline]
pub(crate) fn finish_realloc(
    old_address: *mut u8,
    old_size: usize,
    old: Option<live::Removed>,
    new_address: *mut u8,
    new_size: usize,
    config: &Config,
) {
    let old_address = old_address as usize;
    let mode = config.mode();
    let full = mode == Mode::Full;
    if new_address.is_null() {
        if let Some(old) = old {
            // The slot it came from is free again unless the table lost its
            // memory meanwhile; then the block is unrecorded from now on,
            // and the figures drop it as a free. A block that was held goes
            // into the table, and is counted at its site as it enters.
            match live::insert(old_address, old.block) {
                Ok(_) => {
                    if full {
                        count_back(old.block.size() as u64, config);
                    } else {
                        filter::mark(old_address);
                    }
                    if old.was_held {
                        let weight = sampler::weight_of(&old.block, mode);
                        let size = old.block.size() as u64;
                        stacks::count_allocation(old.block.site(), size, weight);
                    }
                }
                Err(_) => {
                    UNRECORDED.fetch_add(1, Ordering::Relaxed);
                    if full {
                        forget_counted(old_address, &old, mode, false);
                    } else if old.block.site() != INTERNAL_SITE {
                        forget(old_address, &old, config, mode, Release::Moved);
                    }
                }
            }
        }
        return;
    }
    match old {
        Some(old) if full => forget_counted(old_address, &old, mode, false),
        Some(old) if old.block.site() != INTERNAL_SITE => {
            forget(old_address, &old, config, mode, Release::Moved)
        }
        Some(_) => {}
        None if full => {}
        None => {
            if !count_free_fast(None, old_size) {
                forget_unrecorded(old_address, old_size, config, mode);
            }
        }
    }
    on_alloc(new_address, new_size, config);
}
