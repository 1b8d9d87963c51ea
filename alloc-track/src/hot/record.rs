//! What the allocator methods do around the inner allocator: record a new
//! block, forget a freed one, and move one through a `realloc`.
//!
//! Order matters in two places. A free forgets the block *before* the inner
//! allocator frees it, because afterwards another thread may be handed the
//! same address and record it. A realloc takes the old record out first
//! and puts it back if the inner allocator fails, because the old block is
//! then still the caller's.

use std::sync::atomic::Ordering;

use super::capture;
use super::config::Config;
use super::counters::{COUNTERS, EPOCH, INSTALLED, UNRECORDED};
use super::live::{self, LiveBlock};
use super::stacks;
use super::thread::{self, Busy};

/// Records a block the inner allocator just returned.
#[inline]
pub(crate) fn on_alloc(address: *mut u8, size: usize, config: &Config) {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    // A thread already inside the tracker (the unwinder's first-use
    // allocations, snapshot building) passes through untracked.
    let Some(_busy) = Busy::enter() else { return };
    record_new(address as usize, size, config);
}

#[inline(never)]
fn record_new(address: usize, size: usize, config: &Config) {
    // Capture first, with no lock held: unwinding is the slow part, and
    // it may itself allocate.
    let stack = capture::capture();
    let site = stacks::intern(stack.frames(), stack.truncated, config.max_sites);
    let measuring = thread::measuring();
    // SAFETY: a non-null pointer is this thread's own measure state, alive
    // until the outermost measure frame closes; no other reference to it
    // exists while this thread is in the allocator.
    let measure = unsafe { measuring.as_mut() };
    let block = LiveBlock {
        size,
        site,
        birth: EPOCH.load(Ordering::Relaxed),
        tag: measure.as_ref().map_or(0, |m| m.tag),
    };
    match live::insert(address, block) {
        // A record left at this address means its free was never seen;
        // count it freed now so that nothing stays live twice.
        Ok(Some(stale)) => forget(address, &stale),
        Ok(None) => {}
        Err(_) => {
            UNRECORDED.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    // The site first: a peak breakdown triggered by the global counter
    // must already see this block at its site.
    stacks::count_allocation(site, size as u64);
    COUNTERS.on_alloc(size as u64, config);
    if let Some(measure) = measure {
        measure.on_alloc(address, size, site);
    }
}

/// Forgets a block the caller is about to free; returns its record if it
/// was tracked.
#[inline]
pub(crate) fn on_free(address: *mut u8) {
    if let Some(block) = live::remove(address as usize) {
        forget(address as usize, &block);
    }
}

/// Counts a removed record as freed.
fn forget(address: usize, block: &LiveBlock) {
    COUNTERS.on_free(block.size as u64);
    stacks::count_free(block.site, block.size as u64);
    // The measure state is touched only outside the tracker's own code, so
    // that it is never reentered; and untracked-thread frees never carry a
    // measure tag anyway.
    let measuring = thread::measuring();
    if measuring.is_null() {
        return;
    }
    if let Some(_busy) = Busy::enter() {
        // SAFETY: as in `record_new`; `_busy` keeps this thread from
        // reentering the state while it is borrowed.
        if let Some(measure) = unsafe { measuring.as_mut() } {
            measure.on_free(address, block);
        }
    }
}

/// Takes the record of a block about to be reallocated, leaving the
/// figures untouched until the outcome is known.
#[inline]
pub(crate) fn take_for_realloc(address: *mut u8) -> Option<LiveBlock> {
    live::remove(address as usize)
}

/// Completes a realloc: on failure the old block is still the caller's and
/// its record goes back; on success the old block counts as freed and the
/// new one as a fresh allocation at the realloc's call site.
#[inline]
pub(crate) fn finish_realloc(
    old_address: *mut u8,
    old: Option<LiveBlock>,
    new_address: *mut u8,
    new_size: usize,
    config: &Config,
) {
    if new_address.is_null() {
        if let Some(old) = old {
            // The slot it came from is free again unless the table lost its
            // memory meanwhile; then the block is unrecorded from now on,
            // and the figures drop it as a free.
            if live::insert(old_address as usize, old).is_err() {
                UNRECORDED.fetch_add(1, Ordering::Relaxed);
                forget(old_address as usize, &old);
            }
        }
        return;
    }
    if let Some(old) = old {
        forget(old_address as usize, &old);
    }
    on_alloc(new_address, new_size, config);
}
