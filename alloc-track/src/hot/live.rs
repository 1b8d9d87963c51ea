//! The live table: every tracked block that has not been freed, by address,
//! with its size, site, birth epoch and measure tag.
//!
//! Sharded by address so that threads allocating at once rarely meet on
//! the same lock; each shard is a `RawMap` behind a spin lock held for one
//! probe sequence. A free looks its block up here: a miss means the block
//! was allocated untracked (by the tracker itself, or while a thread's
//! state was gone) and is not counted.

use std::sync::atomic::{AtomicBool, Ordering};

use super::live_block::LiveBlock;
use super::raw_map::{OutOfMemory, RawMap};
use super::spin::{CachePadded, SpinLock};

const SHARD_BITS: u32 = 7;
const SHARDS: usize = 1 << SHARD_BITS;

static TABLE: [CachePadded<SpinLock<RawMap<LiveBlock>>>; SHARDS] =
    [const { CachePadded(SpinLock::new(RawMap::new())) }; SHARDS];

#[inline]
fn shard(address: usize) -> &'static SpinLock<RawMap<LiveBlock>> {
    // Fibonacci hashing of the address without its always-zero low bits;
    // the top bits pick the shard. The map inside mixes differently, so
    // shard and slot choices stay independent.
    let h = ((address >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    &TABLE[(h >> (64 - SHARD_BITS)) as usize]
}

/// Records a new live block; returns a stale record the address still had
/// (which would mean a free was missed: the caller counts it freed).
#[inline]
pub(crate) fn insert(address: usize, block: LiveBlock) -> Result<Option<LiveBlock>, OutOfMemory> {
    shard(address).lock().insert(address, block)
}

/// Removes and returns the block at `address`, if it was tracked.
#[inline]
pub(crate) fn remove(address: usize) -> Option<LiveBlock> {
    shard(address).lock().remove(address)
}

/// The block at `address`, if it is tracked and live.
pub(crate) fn get(address: usize) -> Option<LiveBlock> {
    shard(address).lock().get(address)
}

/// Calls `f` on every live block, one shard at a time (each shard is
/// consistent; the whole is as consistent as concurrent allocation lets
/// it be).
///
/// Each shard is copied out before `f` sees it: `f` may allocate and free,
/// and a free takes a shard lock, so no lock may be held while `f` runs.
/// The copy buffer is sized with the lock released, for the same reason.
pub(crate) fn for_each(mut f: impl FnMut(usize, &LiveBlock)) {
    let mut buffer: Vec<(usize, LiveBlock)> = Vec::new();
    for shard in &TABLE {
        loop {
            let len = shard.lock().len();
            buffer.clear();
            buffer.reserve(len + len / 8 + 16);
            let map = shard.lock();
            if map.len() > buffer.capacity() {
                continue; // grew meanwhile: size the buffer again
            }
            // Pushes stay within the reserved capacity: no allocation here.
            map.for_each(|address, block| buffer.push((address, *block)));
            break;
        }
        for (address, block) in &buffer {
            f(*address, block);
        }
    }
}

/// Maps every shard's first table now, once per process. Sampled mode
/// calls it at the first allocation: its first samples would otherwise map
/// the 128 shards' tables one page at a time in the middle of the
/// program's work, and on the benchmark's `build` workload those mappings
/// made the program 7% slower (the same instructions ran; the time went
/// to glibc's allocator and the kernel's page faults, whose address-space
/// bookkeeping the new mappings interleave with). 128 pages, 512 KiB.
pub(crate) fn allocate_all() {
    static DONE: AtomicBool = AtomicBool::new(false);
    if DONE.swap(true, Ordering::Relaxed) {
        return;
    }
    for shard in &TABLE {
        // A shard left without memory gets it at its first insert, as
        // before.
        let _ = shard.lock().allocate();
    }
}

/// Bytes of memory the table has mapped, for the overhead figure.
pub(crate) fn heap_bytes() -> usize {
    TABLE.iter().map(|shard| shard.lock().heap_bytes()).sum()
}

/// Takes every shard lock, in index order, and keeps them held: the
/// prepare step of the fork handlers in `fork.rs`.
#[cfg(unix)]
pub(crate) fn lock_all_for_fork() {
    for shard in &TABLE {
        std::mem::forget(shard.lock());
    }
}

/// Releases every shard lock taken by [`lock_all_for_fork`].
///
/// # Safety
/// Only after `lock_all_for_fork` on this thread (or, in a forked child,
/// its copy), with no guard alive.
#[cfg(unix)]
pub(crate) unsafe fn unlock_all_after_fork() {
    for shard in &TABLE {
        // SAFETY: the caller's contract: this thread holds the lock and no
        // guard for it exists.
        unsafe { shard.force_unlock() };
    }
}
