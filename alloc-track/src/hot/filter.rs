//! A counting filter over addresses: which blocks might be in the live
//! table, for the modes that record only some blocks (sampled, count).
//!
//! In those modes most frees are of blocks that were only counted, and
//! looking each one up in the live table (a lock and a probe) would cost
//! more than the whole rest of the free. One byte per slot, indexed by the
//! address (its 16-byte granule within a 1 MiB window: see [`slot`]): a
//! recorded block raises its slot, its free lowers
//! it, and a free whose slot is zero skips the table. A non-zero slot may
//! belong to another address (a false positive costs one lookup that
//! misses); a zero slot is never wrong. A slot that reaches 255 stays
//! there, which only makes it a permanent "maybe".
//!
//! 64 Ki slots (64 KiB) stay in a core's L2 cache; with a heap of a few
//! thousand recorded blocks (sampling at 512 KiB records about 2,000 per GiB
//! live) a few percent of frees pay the lookup.

use std::sync::atomic::{AtomicU8, Ordering};

const SLOT_BITS: u32 = 16;

static SLOTS: [AtomicU8; 1 << SLOT_BITS] = [const { AtomicU8::new(0) }; 1 << SLOT_BITS];

/// The slot of `address`: bits 4 to 19, i.e. its 16-byte granule within a
/// 1 MiB window. Allocators hand out blocks on 16-byte boundaries, and a
/// heap's recorded blocks (a sample every few hundred KiB, mostly) spread
/// evenly over those windows, so a plain mask serves as well as a hash
/// and costs every free two instructions instead of five.
#[inline(always)]
fn slot(address: usize) -> &'static AtomicU8 {
    &SLOTS[(address >> 4) & ((1 << SLOT_BITS) - 1)]
}

/// Notes that `address` is recorded in the live table.
#[inline]
pub(crate) fn mark(address: usize) {
    let _ = slot(address).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1));
}

/// Notes that `address` left the live table.
#[inline]
pub(crate) fn unmark(address: usize) {
    // A saturated slot no longer counts exactly: leave it at 255.
    let _ = slot(address).fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
        (n != u8::MAX).then(|| n.saturating_sub(1))
    });
}

/// False when `address` is certainly not in the live table.
#[inline]
pub(crate) fn may_contain(address: usize) -> bool {
    slot(address).load(Ordering::Relaxed) != 0
}
