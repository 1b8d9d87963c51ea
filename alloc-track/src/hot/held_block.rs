//! Each thread's newest recorded block, held back from the live table until
//! the thread records another (full mode).
//!
//! Programs free many blocks before their thread allocates again: a
//! `String` formatted and dropped, a buffer grown and released (42% of the
//! 5.4 million blocks of the benchmark's real-crates workload). Such a
//! block never enters the live table, whose insert and remove, in a table
//! of hundreds of thousands of entries, cost cache misses: its free finds
//! it here, in a slot only its thread writes in the common case. A block
//! that outlives the next allocation moves into the table then, its table
//! line fetched ahead at the hold ([`prefetch`](super::live::prefetch) by `live.rs`).
//!
//! The slots are a static array that every thread can read, so that a free
//! on another thread, and snapshots, still find a held block. Who writes a
//! slot:
//!
//! - its owner thread: it holds a new block (record, then address), and
//!   takes its held block back at its own free (address to 0, no lock: no
//!   other thread frees the same block, which would be a double free);
//! - whoever moves the held block into the live table (the owner, at its
//!   next allocation) or frees it from another thread: both hold the live
//!   table's shard lock of the block's address (`live.rs`), which orders a
//!   move against a free of the same block.
//!
//! Snapshots read a slot between two reads of its sequence count, which the
//! owner makes odd while it writes a new record, so that a block's address
//! is never paired with another block's record.
//!
//! A thread without a slot (more than 1,024 threads at once) records
//! straight into the table, as partial modes always do.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::live_block::LiveBlock;
use super::spin::CachePadded;

/// Enough for every thread of a large server at once.
const SLOTS: usize = 1024;

pub(crate) struct HeldSlot {
    claimed: AtomicBool,
    /// Odd while the owner writes a new record.
    sequence: AtomicU32,
    /// The held block's address; 0 when none is held.
    address: AtomicUsize,
    /// The held block's record, [`LiveBlock::to_raw`]'s words.
    size_word: AtomicU64,
    site_and_birth: AtomicU64,
}

static HELD: [CachePadded<HeldSlot>; SLOTS] = [const {
    CachePadded(HeldSlot {
        claimed: AtomicBool::new(false),
        sequence: AtomicU32::new(0),
        address: AtomicUsize::new(0),
        size_word: AtomicU64::new(0),
        site_and_birth: AtomicU64::new(0),
    })
}; SLOTS];

/// One past the highest slot ever claimed: scans stop there.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);

/// This thread's slot index; [`NOT_YET`] before its first hold, [`NONE`]
/// when it has none (all taken, or released at its exit).
const NOT_YET: u32 = u32::MAX;
const NONE: u32 = u32::MAX - 1;

thread_local! {
    static OWN: Cell<u32> = const { Cell::new(NOT_YET) };
}

impl HeldSlot {
    /// The held block's address, 0 for none.
    #[inline(always)]
    pub(crate) fn held(&self) -> usize {
        self.address.load(Ordering::Acquire)
    }

    /// The held block's record; meaningful while [`held`](Self::held) is
    /// not 0, read by the owner or under the shard lock of its address.
    #[inline(always)]
    pub(crate) fn block(&self) -> LiveBlock {
        let size_word = self.size_word.load(Ordering::Relaxed);
        let site_and_birth = self.site_and_birth.load(Ordering::Relaxed);
        LiveBlock::from_raw(
            size_word,
            site_and_birth as u32,
            (site_and_birth >> 32) as u32,
        )
    }

    /// Forgets the held block (moved into the table, or freed: by the
    /// owner at its own free, or by another thread under the shard lock).
    #[inline(always)]
    pub(crate) fn clear(&self) {
        self.address.store(0, Ordering::Relaxed);
    }

    /// Holds a new block; only the owner calls it, with nothing held.
    #[inline(always)]
    pub(crate) fn hold(&self, address: usize, block: LiveBlock) {
        let (size_word, site_and_tag, birth) = block.to_raw();
        let sequence = self.sequence.load(Ordering::Relaxed);
        self.sequence
            .store(sequence.wrapping_add(1), Ordering::Relaxed);
        // The odd count is visible before any word of the new record.
        fence(Ordering::Release);
        self.size_word.store(size_word, Ordering::Relaxed);
        self.site_and_birth.store(
            u64::from(site_and_tag) | (u64::from(birth) << 32),
            Ordering::Relaxed,
        );
        // Release: whoever reads the address reads the record written
        // before it (a forked child included).
        self.address.store(address, Ordering::Release);
        self.sequence
            .store(sequence.wrapping_add(2), Ordering::Release);
    }

    /// A consistent copy of the held block for a snapshot, or `None` if
    /// none is held (or the owner kept rewriting it: a snapshot taken
    /// while the thread allocates may miss its newest block).
    fn read(&self) -> Option<(usize, LiveBlock)> {
        for _ in 0..64 {
            let before = self.sequence.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let address = self.address.load(Ordering::Relaxed);
            let block = self.block();
            // The reads above happen before the second read of the count.
            fence(Ordering::Acquire);
            if self.sequence.load(Ordering::Relaxed) == before {
                return (address != 0).then_some((address, block));
            }
        }
        None
    }
}

/// This thread's slot, claiming one at its first call; `None` if it has
/// none. The caller is inside the tracker, recording in full mode.
#[inline(always)]
pub(crate) fn own() -> Option<&'static HeldSlot> {
    let index = OWN.try_with(Cell::get).ok()?;
    match index {
        NONE => None,
        NOT_YET => claim(),
        index => HELD.get(index as usize).map(|slot| &slot.0),
    }
}

/// This thread's slot if it has claimed one, without claiming.
#[inline(always)]
pub(crate) fn own_if_claimed() -> Option<&'static HeldSlot> {
    let index = OWN.try_with(Cell::get).ok()?;
    HELD.get(index as usize).map(|slot| &slot.0)
}

#[cold]
fn claim() -> Option<&'static HeldSlot> {
    let free = HELD.iter().position(|slot| {
        !slot.claimed.load(Ordering::Relaxed)
            && slot
                .claimed
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    });
    let index = free.map_or(NONE, |index| index as u32);
    let _ = OWN.try_with(|own| own.set(index));
    let index = free?;
    HIGH_WATER.fetch_max(index + 1, Ordering::AcqRel);
    Some(&HELD[index].0)
}

/// Gives this thread's slot back at its exit, once its held block is gone
/// (the caller moved it into the table); the thread holds no more blocks.
pub(crate) fn release_own() {
    if let Some(slot) = own_if_claimed() {
        slot.clear();
        slot.claimed.store(false, Ordering::Release);
    }
    let _ = OWN.try_with(|own| own.set(NONE));
}

/// Whether any thread ever held a block: partial modes never do, and
/// their frees that miss the table need not look through the slots.
pub(crate) fn any_ever_held() -> bool {
    HIGH_WATER.load(Ordering::Relaxed) > 0
}

/// The slot of another thread holding the block at `address`, if any. The
/// caller holds the shard lock of `address`.
pub(crate) fn holder_of(address: usize) -> Option<&'static HeldSlot> {
    let end = HIGH_WATER.load(Ordering::Acquire).min(SLOTS);
    HELD[..end]
        .iter()
        .map(|slot| &slot.0)
        .find(|slot| slot.held() == address)
}

/// Calls `f` with a copy of every held block (see [`HeldSlot::read`]).
pub(crate) fn for_each(mut f: impl FnMut(usize, LiveBlock)) {
    let end = HIGH_WATER.load(Ordering::Acquire).min(SLOTS);
    for slot in &HELD[..end] {
        if let Some((address, block)) = slot.0.read() {
            f(address, block);
        }
    }
}

/// After a fork, in the child: calls `f` with every slot claimed by a
/// thread other than this one (threads the child does not have), for the
/// caller to move its block into the table, then frees the slot.
#[cfg(unix)]
pub(crate) fn adopt_after_fork(mut f: impl FnMut(&HeldSlot)) {
    let own = own_if_claimed().map(|slot| slot as *const HeldSlot);
    let end = HIGH_WATER.load(Ordering::Acquire).min(SLOTS);
    for slot in &HELD[..end] {
        let slot = &slot.0;
        if !slot.claimed.load(Ordering::Relaxed) || own == Some(slot as *const HeldSlot) {
            continue;
        }
        f(slot);
        slot.clear();
        slot.claimed.store(false, Ordering::Release);
    }
}

/// Bytes of the slots threads have claimed so far (the array is static;
/// its pages are touched as slots are used).
pub(crate) fn heap_bytes() -> usize {
    HIGH_WATER.load(Ordering::Relaxed) * std::mem::size_of::<CachePadded<HeldSlot>>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> HeldSlot {
        HeldSlot {
            claimed: AtomicBool::new(true),
            sequence: AtomicU32::new(0),
            address: AtomicUsize::new(0),
            size_word: AtomicU64::new(0),
            site_and_birth: AtomicU64::new(0),
        }
    }

    #[test]
    fn a_held_block_comes_back_whole_until_cleared() {
        let slot = slot();
        let block = LiveBlock::new(1 << 40, 1023, (1 << 22) - 1, u32::MAX, 63, true);
        assert_eq!(slot.read(), None);
        slot.hold(0x7f00_0000_1008, block);
        assert_eq!(slot.held(), 0x7f00_0000_1008);
        assert_eq!(slot.read(), Some((0x7f00_0000_1008, block)));
        assert_eq!(slot.block(), block);
        slot.clear();
        assert_eq!(slot.held(), 0);
        assert_eq!(slot.read(), None);
    }

    #[test]
    fn a_reader_never_pairs_an_address_with_another_record() {
        // The owner keeps holding blocks whose record is derived from
        // their address; a reader on another thread checks every copy.
        let slot = std::sync::Arc::new(slot());
        let rounds = if cfg!(miri) { 200 } else { 200_000 };
        let writer = {
            let slot = slot.clone();
            std::thread::spawn(move || {
                for i in 1..=rounds {
                    let address = i * 16;
                    slot.hold(
                        address,
                        LiveBlock::new(address, 0, i as u32 % 1000, i as u32, 0, false),
                    );
                    slot.clear();
                }
            })
        };
        while !writer.is_finished() {
            if let Some((address, block)) = slot.read() {
                assert_eq!(block.size(), address);
                assert_eq!(block.birth as usize, address / 16);
            }
        }
        writer.join().unwrap();
    }
}
