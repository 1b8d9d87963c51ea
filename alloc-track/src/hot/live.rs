//! The live table: every tracked block that has not been freed, by address,
//! with its size, site, birth epoch and measure tag.
//!
//! Sharded by address so that threads allocating at once rarely meet on
//! the same lock; each shard is a map of 16-byte packed slots
//! (`packed_slot.rs`), plus a side map for the rare record that does not
//! pack, behind a spin lock held for one probe sequence. A shard's table
//! halves when it empties below a quarter (`raw_map.rs`), so a table sized
//! for an earlier peak gives its memory back. A free looks its block up here: a miss means the block
//! was allocated untracked (by the tracker itself, or while a thread's
//! state was gone) and is not counted.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::held_block;
use super::live_block::LiveBlock;
use super::packed_slot::{self, PackedSlot};
use super::raw_map::{OutOfMemory, RawMap, SlotMap};
use super::spin::{CachePadded, SpinGuard, SpinLock};
use super::table_memory;

// Every scope id packs (the last one collects the overflow).
const _: () = assert!(super::scopes::MAX_SCOPES <= packed_slot::SCOPE_LIMIT);

const SHARD_BITS: u32 = 7;
const SHARDS: usize = 1 << SHARD_BITS;

/// One shard's blocks. Nearly every block has a 16-byte slot in `packed`;
/// a record that does not fit one (`packed_slot.rs` says which) is kept
/// whole in `aside`, with a marker slot in `packed` when its address can
/// be a key there, so that looking an address up stays one probe of
/// `packed` for every address an allocator returns.
struct Shard {
    packed: SlotMap<PackedSlot>,
    aside: RawMap<LiveBlock>,
}

impl Shard {
    const fn new() -> Self {
        Shard {
            packed: SlotMap::new(),
            aside: RawMap::new(),
        }
    }

    /// At least the number of records (a marker and its record count
    /// twice).
    fn len(&self) -> usize {
        self.packed.len() + self.aside.len()
    }

    #[inline(always)]
    fn insert(
        &mut self,
        address: usize,
        block: LiveBlock,
    ) -> Result<Option<LiveBlock>, OutOfMemory> {
        let Some(key) = PackedSlot::key_of(address) else {
            return self.aside.insert(address, block);
        };
        let Some(slot) = PackedSlot::pack(key, block) else {
            return self.insert_aside(key, address, block);
        };
        let replaced = self.packed.insert_slot(slot)?;
        Ok(replaced.map(|old| self.unpack_removed(address, old)))
    }

    /// A record too large for its slot: the record aside, a marker in
    /// `packed`. The record goes in first, and comes out again if the
    /// marker cannot.
    #[cold]
    fn insert_aside(
        &mut self,
        key: usize,
        address: usize,
        block: LiveBlock,
    ) -> Result<Option<LiveBlock>, OutOfMemory> {
        let replaced_aside = self.aside.insert(address, block)?;
        match self.packed.insert_slot(PackedSlot::marker(key)) {
            // A marker replaced a marker: what it replaced was aside.
            Ok(Some(old)) if old.is_marker() => Ok(replaced_aside),
            Ok(Some(old)) => Ok(Some(old.block())),
            Ok(None) => Ok(replaced_aside),
            // The marker could not go in, so none was there (replacing
            // never grows the table), and nothing was aside either.
            Err(error) => {
                self.aside.remove(address);
                Err(error)
            }
        }
    }

    /// The record of a slot just taken out of `packed`: the slot's own, or
    /// for a marker the one aside.
    #[inline(always)]
    fn unpack_removed(&mut self, address: usize, slot: PackedSlot) -> LiveBlock {
        if slot.is_marker() {
            self.remove_aside(address)
        } else {
            slot.block()
        }
    }

    #[cold]
    fn remove_aside(&mut self, address: usize) -> LiveBlock {
        // A marker always has its record aside; the default is never used.
        self.aside
            .remove(address)
            .unwrap_or(LiveBlock::new(0, 0, 0, 0, 0, false))
    }

    #[inline(always)]
    fn remove(&mut self, address: usize) -> Option<LiveBlock> {
        let Some(key) = PackedSlot::key_of(address) else {
            return self.aside.remove(address);
        };
        let slot = self.packed.remove_slot(key)?;
        Some(self.unpack_removed(address, slot))
    }

    fn get(&self, address: usize) -> Option<LiveBlock> {
        let Some(key) = PackedSlot::key_of(address) else {
            return self.aside.get(address);
        };
        let slot = self.packed.get_slot(key)?;
        if slot.is_marker() {
            self.aside.get(address)
        } else {
            Some(slot.block())
        }
    }

    fn for_each(&self, mut f: impl FnMut(usize, LiveBlock)) {
        self.packed.for_each_slot(|slot| {
            if !slot.is_marker() {
                f(slot.address(), slot.block());
            }
        });
        self.aside.for_each(|address, block| f(address, *block));
    }

    fn heap_bytes(&self) -> usize {
        self.packed.heap_bytes() + self.aside.heap_bytes()
    }
}

static TABLE: [CachePadded<SpinLock<Shard>>; SHARDS] =
    [const { CachePadded(SpinLock::new(Shard::new())) }; SHARDS];

/// Where each shard's table lies, as of its last change, readable without
/// its lock: enough to prefetch the line an insert will touch
/// ([`prefetch`]). A stale layout only prefetches a useless line.
struct Layout {
    slots: AtomicUsize,
    mask: AtomicUsize,
}

static LAYOUTS: [Layout; SHARDS] = [const {
    Layout {
        slots: AtomicUsize::new(0),
        mask: AtomicUsize::new(0),
    }
}; SHARDS];

#[inline]
fn shard_index(address: usize) -> usize {
    // Fibonacci hashing of the address without its always-zero low bits;
    // the top bits pick the shard. The map inside mixes differently, so
    // shard and slot choices stay independent.
    let h = ((address >> 4) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> (64 - SHARD_BITS)) as usize
}

/// The shard that `address` belongs to.
#[inline]
fn shard(address: usize) -> ShardRef {
    ShardRef(shard_index(address))
}

struct ShardRef(usize);

impl ShardRef {
    #[inline(always)]
    fn lock(&self) -> ShardGuard<'static> {
        ShardGuard {
            shard: TABLE[self.0].lock(),
            layout: &LAYOUTS[self.0],
        }
    }
}

/// A locked shard; on release it publishes the table's layout if an
/// insert or remove resized it.
struct ShardGuard<'a> {
    shard: SpinGuard<'a, Shard>,
    layout: &'a Layout,
}

impl Deref for ShardGuard<'_> {
    type Target = Shard;
    #[inline(always)]
    fn deref(&self) -> &Shard {
        &self.shard
    }
}

impl DerefMut for ShardGuard<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.shard
    }
}

impl Drop for ShardGuard<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        let (slots, mask) = self.shard.packed.layout();
        if self.layout.slots.load(Ordering::Relaxed) != slots
            || self.layout.mask.load(Ordering::Relaxed) != mask
        {
            self.layout.slots.store(slots, Ordering::Relaxed);
            self.layout.mask.store(mask, Ordering::Relaxed);
        }
    }
}

/// Asks the processor to fetch the line of the table where an insert of
/// `address` will start probing, without waiting for it: done when a block
/// is held back, so that moving it into the table at the thread's next
/// allocation finds the line in cache. Never faults, whatever the layout.
#[inline(always)]
pub(crate) fn prefetch(address: usize) {
    let Some(key) = PackedSlot::key_of(address) else {
        return;
    };
    let layout = &LAYOUTS[shard_index(address)];
    let slots = layout.slots.load(Ordering::Relaxed);
    if slots == 0 {
        return;
    }
    let home = SlotMap::<PackedSlot>::home(key, layout.mask.load(Ordering::Relaxed));
    let line = slots.wrapping_add(home.wrapping_mul(std::mem::size_of::<PackedSlot>()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint that never faults and reads nothing
    // into the program; any address may be given.
    unsafe {
        std::arch::x86_64::_mm_prefetch(line as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = line;
}

/// Records a new live block; returns a stale record the address still had
/// (which would mean a free was missed: the caller counts it freed).
#[inline(always)]
pub(crate) fn insert(address: usize, block: LiveBlock) -> Result<Option<LiveBlock>, OutOfMemory> {
    shard(address).lock().insert(address, block)
}

/// Records the thread's newest block in full mode: held back in the
/// thread's slot (`held_block.rs`), while the block it held before moves
/// into the table. Without a slot, or without memory to move the older
/// block, the new block goes straight into the table, as [`insert`].
///
/// `on_entered` gets the block that went into the table (the one held
/// before, or the new one if it could not be held), with no lock held:
/// held blocks are counted at their site only when they leave their slot
/// (`record.rs`). Returns a stale record the table had at the address the
/// block went in at, with that address (the caller counts it freed).
#[inline(always)]
pub(crate) fn hold(
    address: usize,
    block: LiveBlock,
    on_entered: impl FnOnce(&LiveBlock),
) -> Result<Option<(usize, LiveBlock)>, OutOfMemory> {
    let Some(slot) = held_block::own() else {
        return insert_instead_of_holding(address, block, on_entered);
    };
    let held = slot.held();
    let mut stale = None;
    if held != 0 {
        let mut shard = shard(held).lock();
        // Under the lock a free on another thread cannot take it midway;
        // it may have taken it already.
        if slot.held() == held {
            let older = slot.block();
            match shard.insert(held, older) {
                Ok(replaced) => {
                    stale = replaced.map(|block| (held, block));
                    slot.clear();
                    drop(shard);
                    on_entered(&older);
                }
                // The older block stays held; the new one goes in instead.
                Err(_) => {
                    drop(shard);
                    return insert_instead_of_holding(address, block, on_entered);
                }
            }
        }
    }
    slot.hold(address, block);
    prefetch(address);
    Ok(stale)
}

/// [`insert`] for a block that [`hold`] could not hold back.
fn insert_instead_of_holding(
    address: usize,
    block: LiveBlock,
    on_entered: impl FnOnce(&LiveBlock),
) -> Result<Option<(usize, LiveBlock)>, OutOfMemory> {
    let stale = insert(address, block)?;
    on_entered(&block);
    Ok(stale.map(|stale| (address, stale)))
}

/// What moving a held block into the table did ([`release_held`],
/// [`adopt_held_after_fork`]), for the caller to count.
pub(crate) struct Moved {
    /// A stale record the table had at the block's address, with that
    /// address (the caller counts it freed).
    pub(crate) stale: Option<(usize, LiveBlock)>,
    /// The block moved: its site counts it now.
    pub(crate) entered_table: Option<LiveBlock>,
}

/// A block taken out by [`remove`].
#[derive(Clone, Copy)]
pub(crate) struct Removed {
    pub(crate) block: LiveBlock,
    /// It was still held back (by this thread or another), never in the
    /// table: its site has not counted it yet.
    pub(crate) was_held: bool,
}

/// Removes and returns the block at `address`, if it was tracked: this
/// thread's held block without a lock, else from the table, else (not for
/// the tracker's own frees, `search_threads` false) another thread's held
/// block.
///
/// `on_removed` gets the block at the moment it leaves: while it is still
/// held, or with the table's shard lock still held. A caller that counts
/// the free there leaves no moment where the block is out of the books
/// but still in the figures: a fork then (whose handlers take every shard
/// lock) would leave a child with that block counted live for good, and
/// nowhere to be found.
#[inline(always)]
pub(crate) fn remove(
    address: usize,
    search_threads: bool,
    on_removed: impl FnOnce(&LiveBlock),
) -> Option<Removed> {
    let found = find_for_removal(address, search_threads)?;
    on_removed(&found.block);
    if let Some(slot) = found.held_in {
        slot.clear();
    }
    // The shard lock, if any, goes here, after `on_removed`.
    drop(found.shard);
    Some(Removed {
        block: found.block,
        was_held: found.held_in.is_some(),
    })
}

/// A block [`remove`] found: out of the table already, or still in its
/// held slot, with the shard lock it was found under.
struct Found {
    block: LiveBlock,
    held_in: Option<&'static held_block::HeldSlot>,
    shard: Option<ShardGuard<'static>>,
}

#[inline(always)]
fn find_for_removal(address: usize, search_threads: bool) -> Option<Found> {
    if let Some(slot) = held_block::own_if_claimed().filter(|slot| slot.held() == address) {
        // The owner's own block: no other thread frees it (that would be
        // a double free), so no lock.
        return Some(Found {
            block: slot.block(),
            held_in: Some(slot),
            shard: None,
        });
    }
    let mut shard = shard(address).lock();
    if let Some(block) = shard.remove(address) {
        return Some(Found {
            block,
            held_in: None,
            shard: Some(shard),
        });
    }
    if !search_threads || !held_block::any_ever_held() {
        return None;
    }
    // Under the shard lock, which orders this against the holder moving
    // the block into the table.
    let slot = held_block::holder_of(address)?;
    Some(Found {
        block: slot.block(),
        held_in: Some(slot),
        shard: Some(shard),
    })
}

/// The block at `address`, if it is tracked and live.
pub(crate) fn get(address: usize) -> Option<LiveBlock> {
    let shard = shard(address).lock();
    shard
        .get(address)
        .or_else(|| held_block::holder_of(address).map(|slot| slot.block()))
}

/// At the thread's exit: moves its held block into the table and gives its
/// slot back. Returns what the move did, for the caller to count.
/// Without memory for the move the slot stays claimed, holding the block,
/// where frees and snapshots still find it.
pub(crate) fn release_held() -> Moved {
    let mut moved = Moved {
        stale: None,
        entered_table: None,
    };
    let Some(slot) = held_block::own_if_claimed() else {
        return moved;
    };
    let held = slot.held();
    if held != 0 {
        let mut shard = shard(held).lock();
        if slot.held() == held {
            let block = slot.block();
            match shard.insert(held, block) {
                Ok(replaced) => {
                    moved.stale = replaced.map(|stale| (held, stale));
                    moved.entered_table = Some(block);
                }
                Err(_) => return moved,
            }
            slot.clear();
        }
    }
    held_block::release_own();
    moved
}

/// In a forked child: moves the blocks held by the threads the child does
/// not have into the table, and frees their slots; `on_move` gets what
/// each move did, as [`release_held`]'s caller does. The child runs alone.
#[cfg(unix)]
pub(crate) fn adopt_held_after_fork(mut on_move: impl FnMut(Moved)) {
    held_block::adopt_after_fork(|slot| {
        let held = slot.held();
        if held != 0 {
            let block = slot.block();
            // Without memory the block is lost to the figures' books: its
            // free will find no record and count nothing.
            let inserted = shard(held).lock().insert(held, block);
            if let Ok(replaced) = inserted {
                on_move(Moved {
                    stale: replaced.map(|stale| (held, stale)),
                    entered_table: Some(block),
                });
            }
        }
    });
}

/// Calls `f` with every block held back from the table, which its site
/// has not counted yet (see [`hold`]).
pub(crate) fn for_each_held(f: impl FnMut(usize, LiveBlock)) {
    held_block::for_each(f);
}

/// Calls `f` on every live block, one shard at a time (each shard is
/// consistent; the whole is as consistent as concurrent allocation lets
/// it be: a block allocated or freed during the walk may be in it or not,
/// but a block live throughout is in it once).
///
/// The threads' held blocks are read first, then the table: a held block
/// that its thread moves into the table meanwhile is then found in one or
/// both, never in neither, and a table entry at an address read as held
/// stands for it (it is the same block moved, or, if that block was freed
/// meanwhile, the one now at its address).
///
/// Each shard is copied out before `f` sees it: `f` may allocate and free,
/// and a free takes a shard lock, so no lock may be held while `f` runs.
/// The copy buffer is sized with the lock released, for the same reason.
pub(crate) fn for_each(mut f: impl FnMut(usize, &LiveBlock)) {
    let mut held: Vec<(usize, LiveBlock)> = Vec::new();
    held_block::for_each(|address, block| held.push((address, block)));
    held.sort_unstable_by_key(|&(address, _)| address);
    let mut also_in_table = vec![false; held.len()];
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
            map.for_each(|address, block| buffer.push((address, block)));
            break;
        }
        for (address, block) in &buffer {
            if let Ok(index) = held.binary_search_by_key(address, |&(held, _)| held) {
                also_in_table[index] = true;
            }
            f(*address, block);
        }
    }
    for ((address, block), _) in held
        .iter()
        .zip(&also_in_table)
        .filter(|(_, &in_table)| !in_table)
    {
        f(*address, block);
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
        let _ = shard.lock().packed.allocate();
    }
}

/// Bytes of memory the table has mapped, for the overhead figure. The
/// table memory arena's idle blocks are counted here (once, though the
/// stack index's tables share the arena): the live table is most of it.
pub(crate) fn heap_bytes() -> usize {
    TABLE
        .iter()
        .map(|shard| shard.lock().heap_bytes())
        .sum::<usize>()
        + held_block::heap_bytes()
        + table_memory::idle_bytes()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn all(shard: &Shard) -> HashMap<usize, LiveBlock> {
        let mut seen = HashMap::new();
        shard.for_each(|address, block| {
            assert!(seen.insert(address, block).is_none(), "{address:#x} twice");
        });
        seen
    }

    const ADDRESS: usize = 0x7f00_0000_1000;

    #[test]
    fn records_that_do_not_pack_come_back_whole() {
        let mut shard = Shard::new();
        let small = LiveBlock::new(48, 2, 7, 1, 1, false);
        let cases = [
            // Unpackable records at a packable address: aside, with a marker.
            (ADDRESS, LiveBlock::new(1 << 33, 2, 7, 1, 1, false)),
            (
                ADDRESS + 16,
                LiveBlock::new(48, 2, 7, u32::MAX - 1, 1, false),
            ),
            (ADDRESS + 32, LiveBlock::new(48, 2, 7, 1, 900, true)),
            // Addresses that cannot be keys: aside alone.
            (ADDRESS + 49, small),
            (1 << 52, small),
            // And the common case.
            (ADDRESS + 64, small),
        ];
        for (address, block) in cases {
            assert_eq!(shard.insert(address, block), Ok(None));
        }
        for (address, block) in cases {
            assert_eq!(shard.get(address), Some(block), "{address:#x}");
        }
        assert_eq!(all(&shard), cases.into_iter().collect());
        for (address, block) in cases {
            assert_eq!(shard.remove(address), Some(block), "{address:#x}");
            assert_eq!(shard.get(address), None);
            assert_eq!(shard.remove(address), None);
        }
        assert_eq!(shard.len(), 0);
    }

    #[test]
    fn a_stale_record_comes_back_whichever_form_it_had() {
        let mut shard = Shard::new();
        let packed = LiveBlock::new(64, 0, 3, 0, 0, false);
        let aside = LiveBlock::new(1 << 40, 0, 4, 0, 0, false);
        let other_aside = LiveBlock::new(1 << 41, 0, 5, 0, 0, false);
        assert_eq!(shard.insert(ADDRESS, packed), Ok(None));
        assert_eq!(shard.insert(ADDRESS, aside), Ok(Some(packed)));
        assert_eq!(shard.insert(ADDRESS, other_aside), Ok(Some(aside)));
        assert_eq!(shard.insert(ADDRESS, packed), Ok(Some(other_aside)));
        // Nothing was left behind aside.
        assert_eq!(shard.aside.len(), 0);
        assert_eq!(all(&shard).len(), 1);
        assert_eq!(shard.remove(ADDRESS), Some(packed));
        assert_eq!(shard.len(), 0);
    }

    #[test]
    fn a_common_block_costs_sixteen_bytes_a_slot() {
        // One block past 7/8 of a capacity: the table has just doubled,
        // to its lowest load, 7/16.
        let count = if cfg!(miri) { 897 } else { 114_689 };
        let mut shard = Shard::new();
        for i in 0..count {
            let block = LiveBlock::new(32 + i % 200, 1, i as u32 % 5000, 3, 0, false);
            shard.insert(ADDRESS + i * 48, block).unwrap();
        }
        assert_eq!(shard.aside.len(), 0);
        let per_block = shard.heap_bytes() as f64 / count as f64;
        assert!(
            per_block < 16.0 * 16.0 / 7.0 + 0.1,
            "{per_block} bytes a block"
        );
    }

    #[test]
    fn behaves_like_a_hash_map_with_both_forms_under_churn() {
        let mut shard = Shard::new();
        let mut model = HashMap::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..if cfg!(miri) { 3_000 } else { 300_000 } {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few addresses, a few of them unaligned; one record in
            // sixteen too large to pack.
            let address = ADDRESS + (state % 1024) as usize * 16 + usize::from(state % 97 == 0);
            let size = if (state >> 20) % 16 == 0 {
                1 << 30
            } else {
                8 + (state >> 24) as usize % 512
            };
            let block = LiveBlock::new(size, (step % 7) as u16, step % 100, step / 1000, 0, false);
            match state >> 62 {
                0 | 1 => assert_eq!(
                    shard.insert(address, block).unwrap(),
                    model.insert(address, block)
                ),
                2 => assert_eq!(shard.remove(address), model.remove(&address)),
                _ => assert_eq!(shard.get(address), model.get(&address).copied()),
            }
        }
        assert_eq!(all(&shard), model);
    }
}
