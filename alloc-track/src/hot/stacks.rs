//! The stack table: every unique call stack gets a small [`SiteId`], and
//! each site keeps its cumulative totals.
//!
//! Sites live in a two-level array of fixed chunks mapped from the kernel
//! on first use and never moved or freed, so a site's record has a stable
//! address: the hot path updates its counters with atomics and the cold
//! path reads its frames without any lock. Finding the id of a stack goes
//! through a sharded hash index (spin lock per shard), taken only after the
//! stack has been captured. When the table is full, new stacks are counted
//! against [`OVERFLOW_SITE`], the "other" site, so memory stays bounded.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use super::capture::CapturedStack;
use super::pages::Arena;
use super::raw_map::RawMap;
use super::sampler;
use super::site_cache;
use super::site_id::{SiteId, MAX_SITES, OVERFLOW_SITE, SITE_BITS};
use super::spin::{CachePadded, SpinLock};
use super::table_memory;

const CHUNK_BITS: u32 = 12;
const CHUNK_SIZE: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1024;
// The chunks hold exactly every id a live record can carry.
const _: () = assert!(CHUNK_SIZE * MAX_CHUNKS == 1 << SITE_BITS);

const INDEX_SHARDS: usize = 64;

/// One site. The frames are written once, before the id is published
/// through the index, and never change.
pub(crate) struct SiteRecord {
    frames: AtomicPtr<usize>,
    depth: AtomicU32,
    truncated: AtomicBool,
    total_bytes: AtomicU64,
    total_blocks: AtomicU64,
    /// What was freed of the totals. Live figures are the difference: an
    /// allocation then costs two atomic additions instead of four, on a
    /// cache line every thread allocating at this site writes.
    freed_bytes: AtomicU64,
    freed_blocks: AtomicU64,
    /// The site's live figures at the last peak breakdown.
    peak_bytes: AtomicU64,
    peak_blocks: AtomicU64,
}

/// A chunk of sites. The counts of temporary allocations (blocks freed
/// before their thread's next allocation) sit in an array beside the
/// records rather than in them: a `SiteRecord` stays 64 bytes, one cache
/// line, and the counters are written only at a temporary block's free.
struct Chunk {
    sites: [SiteRecord; CHUNK_SIZE],
    temporaries: [Temporaries; CHUNK_SIZE],
}

/// A site's temporary blocks, in 1/1024ths of a block like its other block
/// counts. Most are *fleeting*: full mode holds each thread's newest block
/// back from the live table, and counts it at its site only when it leaves
/// its slot (`record.rs`); a block freed while held is counted then, its
/// allocation and its free at once, here alone. The site's totals and
/// frees both include the fleeting figures, so its live figures (totals
/// minus frees) need not read them.
struct Temporaries {
    /// Temporaries counted at their allocation as well (the partial
    /// modes', and full mode's that were not held).
    counted_blocks: AtomicU64,
    fleeting_bytes: AtomicU64,
    fleeting_blocks: AtomicU64,
}

/// The memory a chunk takes: rounded up to a power of two, so that the
/// chunks share the tables' huge pages (`table_memory.rs`): every
/// allocation and free reads a site record, at random.
const CHUNK_BYTES: usize = std::mem::size_of::<Chunk>().next_power_of_two();

static CHUNKS: [AtomicPtr<Chunk>; MAX_CHUNKS] =
    [const { AtomicPtr::new(ptr::null_mut()) }; MAX_CHUNKS];
/// The next id to hand out; ids below it are taken (some may have failed
/// to publish under memory pressure and stay empty).
static NEXT_ID: AtomicU32 = AtomicU32::new(OVERFLOW_SITE + 1);
/// Allocations recorded against the overflow site.
static OVERFLOWED: AtomicU64 = AtomicU64::new(0);

/// One shard of the index from a stack's hash to its id, with the arena
/// that holds the frames of the sites it created (written under the same
/// lock, so the arena needs none of its own).
struct Shard {
    /// Keys are hashes (never 0); a collision between different stacks
    /// moves on to the next derived key.
    ids: RawMap<SiteId>,
    frames: Arena,
}

static INDEX: [CachePadded<SpinLock<Shard>>; INDEX_SHARDS] = [const {
    CachePadded(SpinLock::new(Shard {
        ids: RawMap::new(),
        frames: Arena::new(),
    }))
}; INDEX_SHARDS];

/// The record of `id`, allocating its chunk if `create` and it is missing.
fn record(id: SiteId, create: bool) -> Option<&'static SiteRecord> {
    chunk(id, create).map(|chunk| &chunk.sites[id as usize & (CHUNK_SIZE - 1)])
}

/// The temporary-allocation counters of `id`, if its chunk exists.
fn temporaries(id: SiteId) -> Option<&'static Temporaries> {
    chunk(id, false).map(|chunk| &chunk.temporaries[id as usize & (CHUNK_SIZE - 1)])
}

/// The chunk holding `id`, allocating it if `create` and it is missing.
fn chunk(id: SiteId, create: bool) -> Option<&'static Chunk> {
    let chunk_slot = CHUNKS.get((id >> CHUNK_BITS) as usize)?;
    let mut chunk = chunk_slot.load(Ordering::Acquire);
    if chunk.is_null() {
        if !create {
            return None;
        }
        // Zeroed pages: an all-zero Chunk is valid (null frames, zero
        // counters, false).
        let fresh = table_memory::alloc_zeroed(CHUNK_BYTES).cast::<Chunk>();
        if fresh.is_null() {
            return None;
        }
        // Release publishes the zeroed chunk; if another thread won the
        // race, free ours and use theirs.
        match chunk_slot.compare_exchange(
            ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => chunk = fresh,
            Err(existing) => {
                // SAFETY: `fresh` came from `table_memory::alloc_zeroed` with this
                // size and was never shared.
                unsafe { table_memory::free(fresh.cast(), CHUNK_BYTES) };
                chunk = existing;
            }
        }
    }
    // SAFETY: chunks are never freed, so the reference is valid forever.
    Some(unsafe { &*chunk })
}

fn frames_of(record: &SiteRecord) -> &'static [usize] {
    // Acquire pairs with the Release store of `depth` in `publish`, so the
    // frames written before it are visible.
    let depth = record.depth.load(Ordering::Acquire) as usize;
    let frames = record.frames.load(Ordering::Relaxed);
    if frames.is_null() || depth == 0 {
        return &[];
    }
    // SAFETY: `frames` points to `depth` initialised addresses written
    // before `depth` was published, and they are never freed or changed.
    unsafe { std::slice::from_raw_parts(frames, depth) }
}

/// The id of the site with this stack, creating it if new: from the
/// thread's cache (`site_cache.rs`) when it has the stack, else from the
/// shared index under one shard lock for a few probes. Never allocates
/// through the tracked path.
#[inline(always)]
pub(crate) fn intern(stack: &CapturedStack, capacity: u32) -> SiteId {
    let (frames, first_hash) = (stack.frames(), stack.hash());
    match site_cache::lookup(first_hash, frames.len()) {
        Some(id) => id,
        None => intern_and_remember(stack, first_hash, capacity),
    }
}

/// A stack this thread has not interned lately: the shared index.
#[inline(never)]
fn intern_and_remember(stack: &CapturedStack, first_hash: u64, capacity: u32) -> SiteId {
    let frames = stack.frames();
    let id = intern_shared(first_hash, frames, stack.truncated, capacity);
    site_cache::remember(first_hash, frames.len(), id);
    id
}

/// Looks the stack up in (or adds it to) the shared index.
fn intern_shared(first_hash: u64, frames: &[usize], truncated: bool, capacity: u32) -> SiteId {
    let shard = &INDEX[(first_hash >> 58) as usize % INDEX_SHARDS];
    let mut shard = shard.lock();
    let mut key = first_hash;
    loop {
        key = key.max(1);
        match shard.ids.get(key as usize) {
            Some(id) => {
                let same = record(id, false).is_some_and(|r| frames_of(r) == frames);
                if same {
                    return id;
                }
                // A different stack with the same hash: try the next key.
                key = key.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
            }
            None => break,
        }
    }
    match create(frames, truncated, capacity, &mut shard.frames) {
        Some(id) => {
            // If the index cannot grow, the site still exists; the next
            // identical stack just gets a fresh site. Snapshots merge sites
            // by frames, so nothing is counted twice.
            let _ = shard.ids.insert(key as usize, id);
            id
        }
        None => OVERFLOW_SITE,
    }
}

fn create(frames: &[usize], truncated: bool, capacity: u32, arena: &mut Arena) -> Option<SiteId> {
    // `capacity` real sites, plus the overflow site below them.
    let limit = capacity.saturating_add(OVERFLOW_SITE + 1).min(MAX_SITES);
    // Claim an id without ever moving NEXT_ID past the capacity, so that a
    // full table stays full without the counter wrapping.
    let id = NEXT_ID
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |next| {
            (next < limit).then_some(next + 1)
        })
        .ok()?;
    let record = record(id, true)?;
    let copy = arena.alloc_words(frames.len());
    if copy.is_null() {
        return None;
    }
    // SAFETY: `copy` has room for `frames.len()` addresses and does not
    // overlap `frames`.
    unsafe { ptr::copy_nonoverlapping(frames.as_ptr(), copy, frames.len()) };
    record.frames.store(copy, Ordering::Relaxed);
    record.truncated.store(truncated, Ordering::Relaxed);
    record.depth.store(frames.len() as u32, Ordering::Release);
    Some(id)
}

/// Adds an allocation of `size` bytes that stands for `weight` blocks, in
/// 1/1024ths (`sampler::WEIGHT_ONE` in full mode), to the site's totals
/// (and so to its live figures). Block counts are kept in that fixed point; bytes are
/// rounded per block, identically at the free.
#[inline]
pub(crate) fn count_allocation(id: SiteId, size: u64, weight: u64) {
    if !allocation_counts(id, weight) {
        return;
    }
    if let Some(record) = record(id, id == OVERFLOW_SITE) {
        let bytes = sampler::weighted_bytes(size, weight);
        record.total_bytes.fetch_add(bytes, Ordering::Relaxed);
        record.total_blocks.fetch_add(weight, Ordering::Relaxed);
    }
}

/// Where counting an allocation at `id` starts: false if it weighs
/// nothing (a partial mode's unsampled block); one more allocation against
/// the overflow site if that is where it goes.
#[inline(always)]
fn allocation_counts(id: SiteId, weight: u64) -> bool {
    if weight == 0 {
        return false;
    }
    if id == OVERFLOW_SITE {
        OVERFLOWED.fetch_add(1, Ordering::Relaxed);
    }
    true
}

/// Counts a freed block (as counted by [`count_allocation`]), which takes
/// it out of the site's live figures; `temporary` if it was freed before
/// its thread's next allocation.
#[inline]
pub(crate) fn count_free(id: SiteId, size: u64, weight: u64, temporary: bool) {
    if weight == 0 {
        return;
    }
    if let Some(chunk) = chunk(id, false) {
        let index = id as usize & (CHUNK_SIZE - 1);
        let record = &chunk.sites[index];
        record
            .freed_bytes
            .fetch_add(sampler::weighted_bytes(size, weight), Ordering::Relaxed);
        record.freed_blocks.fetch_add(weight, Ordering::Relaxed);
        if temporary {
            chunk.temporaries[index]
                .counted_blocks
                .fetch_add(weight, Ordering::Relaxed);
        }
    }
}

/// Counts a fleeting block (see [`Temporaries`]): allocated and freed, as
/// [`count_allocation`] then [`count_free`] as a temporary would, in two
/// atomic additions instead of five, on one line instead of two.
#[inline]
pub(crate) fn count_fleeting(id: SiteId, size: u64, weight: u64) {
    if !allocation_counts(id, weight) {
        return;
    }
    let Some(chunk) = chunk(id, id == OVERFLOW_SITE) else {
        return;
    };
    let temporaries = &chunk.temporaries[id as usize & (CHUNK_SIZE - 1)];
    temporaries
        .fleeting_bytes
        .fetch_add(sampler::weighted_bytes(size, weight), Ordering::Relaxed);
    temporaries
        .fleeting_blocks
        .fetch_add(weight, Ordering::Relaxed);
}

/// Adds a block to the site's figures of the last peak breakdown: a held
/// block, live then but not yet counted at its site (see [`Temporaries`]).
pub(crate) fn add_to_peak_breakdown(id: SiteId, size: u64, weight: u64) {
    if let Some(record) = record(id, false) {
        record
            .peak_bytes
            .fetch_add(sampler::weighted_bytes(size, weight), Ordering::Relaxed);
        record.peak_blocks.fetch_add(weight, Ordering::Relaxed);
    }
}

/// Copies every site's live figures into its peak figures: the breakdown
/// of the heap at (about) its peak. O(sites), lock-free, no allocation;
/// the caller makes sure only one thread runs it at a time. Concurrent
/// allocations make the copy a little fuzzy, never wrong by more than what
/// they allocate meanwhile.
#[cold]
pub(crate) fn record_peak_breakdown() {
    let end = NEXT_ID.load(Ordering::Acquire);
    for id in OVERFLOW_SITE..end {
        if let Some(record) = record(id, false) {
            // Freed first: a block freed between the two reads was
            // allocated before its free, so the totals read after include
            // it, and the difference never goes below zero.
            let freed_bytes = record.freed_bytes.load(Ordering::Relaxed);
            let freed_blocks = record.freed_blocks.load(Ordering::Relaxed);
            let bytes = record
                .total_bytes
                .load(Ordering::Relaxed)
                .saturating_sub(freed_bytes);
            let blocks = record
                .total_blocks
                .load(Ordering::Relaxed)
                .saturating_sub(freed_blocks);
            record.peak_bytes.store(bytes, Ordering::Relaxed);
            record.peak_blocks.store(blocks, Ordering::Relaxed);
        }
    }
}

/// A site as the cold path sees it.
pub(crate) struct SiteView {
    pub(crate) id: SiteId,
    pub(crate) frames: &'static [usize],
    pub(crate) truncated: bool,
    pub(crate) total_bytes: u64,
    pub(crate) total_blocks: u64,
    pub(crate) peak_bytes: u64,
    pub(crate) peak_blocks: u64,
    pub(crate) temporary_blocks: u64,
}

/// Calls `f` with every site that has ever been counted, the overflow site
/// included when it was used, in id order: a snapshot builds its own rows
/// from them without a list of views beside its rows (about 70 bytes a
/// site more at its peak).
pub(crate) fn for_each_site(mut f: impl FnMut(SiteView)) {
    let end = NEXT_ID.load(Ordering::Acquire);
    for id in OVERFLOW_SITE..end {
        let Some(record) = record(id, false) else {
            continue;
        };
        let (counted_temporaries, fleeting_bytes, fleeting_blocks) =
            temporaries(id).map_or((0, 0, 0), |t| {
                (
                    t.counted_blocks.load(Ordering::Relaxed),
                    t.fleeting_bytes.load(Ordering::Relaxed),
                    t.fleeting_blocks.load(Ordering::Relaxed),
                )
            });
        let total_blocks = record.total_blocks.load(Ordering::Relaxed) + fleeting_blocks;
        if total_blocks == 0 {
            continue;
        }
        f(SiteView {
            id,
            frames: frames_of(record),
            truncated: record.truncated.load(Ordering::Relaxed),
            total_bytes: record.total_bytes.load(Ordering::Relaxed) + fleeting_bytes,
            total_blocks: sampler::whole_blocks(total_blocks),
            peak_bytes: record.peak_bytes.load(Ordering::Relaxed),
            peak_blocks: sampler::whole_blocks(record.peak_blocks.load(Ordering::Relaxed)),
            temporary_blocks: sampler::whole_blocks(counted_temporaries + fleeting_blocks),
        });
    }
}

/// How many ids have been handed out: an upper bound of the sites that
/// [`for_each_site`] calls with.
pub(crate) fn ids_handed_out() -> usize {
    NEXT_ID.load(Ordering::Acquire) as usize
}

/// The frames of one site (empty for the overflow site).
pub(crate) fn frames(id: SiteId) -> &'static [usize] {
    record(id, false).map(frames_of).unwrap_or(&[])
}

/// Whether the site's stack lost its outermost frames to the depth limit.
pub(crate) fn is_truncated(id: SiteId) -> bool {
    record(id, false).is_some_and(|r| r.truncated.load(Ordering::Relaxed))
}

/// How many allocations went to the overflow site.
pub(crate) fn overflowed() -> u64 {
    OVERFLOWED.load(Ordering::Relaxed)
}

/// Bytes of memory the table (and the threads' caches in front of it) have
/// mapped, for the overhead figure.
pub(crate) fn heap_bytes() -> usize {
    let chunks = CHUNKS
        .iter()
        .filter(|c| !c.load(Ordering::Relaxed).is_null())
        .count();
    let shards: usize = INDEX
        .iter()
        .map(|shard| {
            let shard = shard.lock();
            shard.ids.heap_bytes() + shard.frames.mapped
        })
        .sum();
    chunks * CHUNK_BYTES + shards + site_cache::heap_bytes()
}

/// Takes every index shard lock, in index order, and keeps them held: the
/// prepare step of the fork handlers in `fork.rs`.
#[cfg(unix)]
pub(crate) fn lock_all_for_fork() {
    for shard in &INDEX {
        std::mem::forget(shard.lock());
    }
}

/// Releases every index shard lock taken by [`lock_all_for_fork`].
///
/// # Safety
/// Only after `lock_all_for_fork` on this thread (or, in a forked child,
/// its copy), with no guard alive.
#[cfg(unix)]
pub(crate) unsafe fn unlock_all_after_fork() {
    for shard in &INDEX {
        // SAFETY: the caller's contract: this thread holds the lock and no
        // guard for it exists.
        unsafe { shard.force_unlock() };
    }
}
