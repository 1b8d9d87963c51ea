//! An open-addressing hash map from non-zero `usize` keys to plain values,
//! whose memory comes straight from the kernel (`table_memory.rs`, in
//! chunks that may be huge pages) so that the hot path can use it without
//! re-entering the global allocator.
//!
//! Robin Hood linear probing with backward-shift deletion: an insert takes
//! the slot of any resident closer to its own ideal slot than the newcomer
//! is, so probe lengths stay short and even up to a load of 7/8, and a
//! lookup stops as soon as it meets a resident closer to home than the key
//! it seeks. That ordering keeps each run sorted by home slot, so an
//! insert that displaces residents shifts the rest of its run by one slot
//! instead of hashing each member again (on the benchmark's crates
//! workload, the hashing displacement was 3.4% of full mode's time). No
//! tombstones, so lookups never slow down with churn. The
//! high load matters: the live table holds one entry per live allocation,
//! and its size is most of the tracker's memory. Growing returns an
//! error instead of aborting when the kernel is out of memory: the caller
//! then leaves the allocation unrecorded and counts it as such.
//!
//! The map is generic over its slot ([`MapSlot`]): [`RawMap`] stores a key
//! beside a value, and the live table stores a slot that packs both into
//! 16 bytes (`packed_slot.rs`).
//!
//! A table whose entries fall below a quarter of its capacity halves, so
//! that a table which once held many more entries gives the memory back.
//! The quarter sits well below the 7/8 that makes it grow, and each resize
//! leaves the load near the middle (a halving at < 1/4 leaves < 1/2, a
//! doubling at 7/8 leaves 7/16): a resize costs one pass over the table,
//! and the next one needs a number of inserts or removes proportional to
//! the table's size, so churn around either boundary stays O(1) amortised.

use std::alloc::Layout;

use super::pages;
use super::table_memory;
use std::ptr;

/// The key that marks an empty slot; callers never insert it.
pub(crate) const EMPTY: usize = 0;

/// The kernel could not provide memory for the table to grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

/// A slot of the map: plain data whose all-zero bytes are an empty slot.
pub(crate) trait MapSlot: Copy {
    /// The slot's key; [`EMPTY`] when the slot is empty.
    fn key(&self) -> usize;
    /// Makes the slot empty (its other bytes are then never read).
    fn clear(&mut self);
}

/// A key beside its value: the slot of [`RawMap`].
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Pair<V> {
    key: usize,
    value: V,
}

impl<V: Copy> MapSlot for Pair<V> {
    #[inline]
    fn key(&self) -> usize {
        self.key
    }

    #[inline]
    fn clear(&mut self) {
        self.key = EMPTY;
    }
}

/// A map whose values are plain data (integers): a slot with key 0 is empty,
/// and its value bytes, zeroed, are never read.
pub(crate) type RawMap<V> = SlotMap<Pair<V>>;

/// The map over any slot type; see the module's documentation.
pub(crate) struct SlotMap<S: MapSlot> {
    slots: *mut S,
    /// Capacity minus one; capacity is a power of two (or 0).
    mask: usize,
    len: usize,
    /// The table doubles before an insert when `len` has reached this:
    /// 7/8 of the capacity (0 before the first table).
    grow_at: usize,
    /// The table halves when `len` falls below this: a quarter of the
    /// capacity, 0 at the smallest capacity.
    shrink_below: usize,
}

// SAFETY: the map owns its slot array exclusively; moving it to another
// thread moves that ownership.
unsafe impl<S: MapSlot + Send> Send for SlotMap<S> {}

impl<S: MapSlot> SlotMap<S> {
    /// The smallest table: the most slots that fit one page (a power of
    /// two), as the memory comes in whole pages anyway.
    const MIN_CAPACITY: usize = {
        let fit = pages::PAGE / std::mem::size_of::<S>();
        1 << (usize::BITS - 1 - fit.leading_zeros())
    };

    pub(crate) const fn new() -> Self {
        SlotMap {
            slots: ptr::null_mut(),
            mask: 0,
            len: 0,
            grow_at: 0,
            shrink_below: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives an empty table its first memory now rather than at its first
    /// insert.
    pub(crate) fn allocate(&mut self) -> Result<(), OutOfMemory> {
        if self.slots.is_null() {
            self.resize(Self::MIN_CAPACITY)?;
        }
        Ok(())
    }

    pub(crate) fn capacity(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    /// Bytes of memory the table holds (whole pages), for the tracker's
    /// own overhead figure.
    pub(crate) fn heap_bytes(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            pages::round_up(self.capacity() * std::mem::size_of::<S>())
        }
    }

    /// Mixes all bits of the key into the low bits used for the index
    /// (addresses share their low and high bits, so they need mixing).
    #[inline]
    fn ideal(&self, key: usize) -> usize {
        Self::home(key, self.mask)
    }

    /// The slot index where a lookup of `key` starts in a table with this
    /// mask (capacity minus one).
    #[inline(always)]
    pub(crate) fn home(key: usize, mask: usize) -> usize {
        let mut h = key as u64;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h as usize) & mask
    }

    /// The table's address and mask, for [`home`](Self::home) computed by
    /// a thread that will only prefetch, not read, what lies there.
    #[inline]
    pub(crate) fn layout(&self) -> (usize, usize) {
        (self.slots as usize, self.mask)
    }

    #[inline]
    fn slot(&self, index: usize) -> &S {
        // SAFETY: callers pass `index & self.mask` on a non-null table, and
        // the table holds `mask + 1` initialised slots.
        unsafe { &*self.slots.add(index) }
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> &mut S {
        // SAFETY: as in `slot`; `&mut self` makes the access unique.
        unsafe { &mut *self.slots.add(index) }
    }

    /// How far the entry at `index` sits from its ideal slot.
    #[inline]
    fn distance(&self, key: usize, index: usize) -> usize {
        index.wrapping_sub(self.ideal(key)) & self.mask
    }

    fn find(&self, key: usize) -> Option<usize> {
        if self.slots.is_null() || key == EMPTY {
            return None;
        }
        let mut index = self.ideal(key);
        let mut distance = 0;
        loop {
            let resident = self.slot(index).key();
            if resident == key {
                return Some(index);
            }
            // Robin Hood's invariant: had the key been inserted, it would
            // have displaced this resident, which is closer to home.
            if resident == EMPTY || self.distance(resident, index) < distance {
                return None;
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    /// The slot holding `key`, if any.
    pub(crate) fn get_slot(&self, key: usize) -> Option<S> {
        self.find(key).map(|index| *self.slot(index))
    }

    /// Inserts `slot` (whose key is not [`EMPTY`]), or replaces the slot
    /// with its key; returns the slot it replaced.
    ///
    /// One probe sequence, which finds the key or the place it belongs:
    /// Robin Hood's ordering puts a present key before the first resident
    /// closer to home than the key would be.
    #[inline(always)]
    pub(crate) fn insert_slot(&mut self, slot: S) -> Result<Option<S>, OutOfMemory> {
        let key = slot.key();
        debug_assert!(key != EMPTY);
        if self.len >= self.grow_at {
            // Full enough to grow, unless the key is there to replace.
            if let Some(index) = self.find(key) {
                return Ok(Some(std::mem::replace(self.slot_mut(index), slot)));
            }
            self.resize((self.capacity() * 2).max(Self::MIN_CAPACITY))?;
        }
        let mut index = self.ideal(key);
        let mut distance = 0;
        loop {
            let resident = *self.slot(index);
            let resident_key = resident.key();
            if resident_key == key {
                *self.slot_mut(index) = slot;
                return Ok(Some(resident));
            }
            if resident_key == EMPTY {
                *self.slot_mut(index) = slot;
                self.len += 1;
                return Ok(None);
            }
            let resident_distance = self.distance(resident_key, index);
            if resident_distance < distance {
                // The key is absent: it takes this slot, and the resident
                // moves on.
                *self.slot_mut(index) = slot;
                self.len += 1;
                self.shift_run_after(index, resident);
                return Ok(None);
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    /// Inserts a slot whose key is known to be absent; returns its index.
    fn insert_new(&mut self, slot: S) -> Result<usize, OutOfMemory> {
        debug_assert!(slot.key() != EMPTY);
        if self.len >= self.grow_at {
            self.resize((self.capacity() * 2).max(Self::MIN_CAPACITY))?;
        }
        let placed = self.place(slot);
        self.len += 1;
        Ok(placed)
    }

    /// Puts an entry whose key is absent into the table (which has room),
    /// displacing residents closer to home; returns where it landed.
    fn place(&mut self, entry: S) -> usize {
        let mut index = self.ideal(entry.key());
        let mut distance = 0;
        loop {
            let resident = *self.slot(index);
            if resident.key() == EMPTY {
                *self.slot_mut(index) = entry;
                return index;
            }
            let resident_distance = self.distance(resident.key(), index);
            if resident_distance < distance {
                *self.slot_mut(index) = entry;
                self.shift_run_after(index, resident);
                return index;
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    /// Carries `carried`, just displaced from `index`, to the next slot,
    /// and every later member of its run one slot further, into the first
    /// empty slot.
    ///
    /// Robin Hood's ordering keeps every run sorted by home slot (each
    /// member sits no closer to home than the one before it, plus one), so
    /// the members after a newcomer's place are exactly the ones it
    /// displaces, each by one slot: a shift, with no hashing of the
    /// members it moves.
    fn shift_run_after(&mut self, index: usize, carried: S) {
        let mask = self.mask;
        let mut end = (index + 1) & mask;
        while self.slot(end).key() != EMPTY {
            end = (end + 1) & mask;
        }
        let first = (index + 1) & mask;
        while end != first {
            let previous = end.wrapping_sub(1) & mask;
            *self.slot_mut(end) = *self.slot(previous);
            end = previous;
        }
        *self.slot_mut(first) = carried;
    }

    /// Removes and returns the slot holding `key`, if any; halves the
    /// table when it has become mostly empty.
    #[inline(always)]
    pub(crate) fn remove_slot(&mut self, key: usize) -> Option<S> {
        let mut hole = self.find(key)?;
        let removed = *self.slot(hole);
        // Backward-shift deletion: move each following member of the run
        // one slot back, until an empty slot or a member already at home.
        // Every member moves one step closer to home, which keeps Robin
        // Hood's ordering (and so the early exit in `find`) intact.
        loop {
            let next = (hole + 1) & self.mask;
            let slot = *self.slot(next);
            if slot.key() == EMPTY || self.distance(slot.key(), next) == 0 {
                break;
            }
            *self.slot_mut(hole) = slot;
            hole = next;
        }
        self.slot_mut(hole).clear();
        self.len -= 1;
        if self.len < self.shrink_below {
            // Without memory for the smaller table the larger one simply
            // stays.
            let _ = self.resize(self.capacity() / 2);
        }
        Some(removed)
    }

    /// Calls `f` for every occupied slot, in no particular order.
    pub(crate) fn for_each_slot(&self, mut f: impl FnMut(&S)) {
        for index in 0..self.capacity() {
            let slot = self.slot(index);
            if slot.key() != EMPTY {
                f(slot);
            }
        }
    }

    /// Moves every entry into a new table of `new_capacity` slots (a power
    /// of two above the entry count) and gives the old one back.
    fn resize(&mut self, new_capacity: usize) -> Result<(), OutOfMemory> {
        debug_assert!(new_capacity.is_power_of_two() && new_capacity > self.len);
        let layout = Layout::array::<S>(new_capacity).map_err(|_| OutOfMemory)?;
        // Zeroed pages: every key is EMPTY.
        let slots = table_memory::alloc_zeroed(layout.size()).cast::<S>();
        if slots.is_null() {
            return Err(OutOfMemory);
        }
        let old = std::mem::replace(
            self,
            SlotMap {
                slots,
                mask: new_capacity - 1,
                len: 0,
                grow_at: new_capacity / 8 * 7,
                shrink_below: if new_capacity > Self::MIN_CAPACITY {
                    new_capacity / 4
                } else {
                    0
                },
            },
        );
        old.for_each_slot(|slot| {
            self.place(*slot);
        });
        self.len = old.len;
        drop(old);
        Ok(())
    }
}

impl<V: Copy> RawMap<V> {
    pub(crate) fn get(&self, key: usize) -> Option<V> {
        self.get_slot(key).map(|slot| slot.value)
    }

    /// Inserts or replaces; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: usize, value: V) -> Result<Option<V>, OutOfMemory> {
        Ok(self.insert_slot(Pair { key, value })?.map(|old| old.value))
    }

    /// The value for `key`, inserting `default` first if it is absent.
    pub(crate) fn get_or_insert(&mut self, key: usize, default: V) -> Result<&mut V, OutOfMemory> {
        let index = match self.find(key) {
            Some(index) => index,
            None => self.insert_new(Pair {
                key,
                value: default,
            })?,
        };
        Ok(&mut self.slot_mut(index).value)
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<V> {
        self.remove_slot(key).map(|slot| slot.value)
    }

    /// Calls `f` for every entry, in no particular order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, &V)) {
        self.for_each_slot(|slot| f(slot.key, &slot.value));
    }
}

impl<S: MapSlot> Drop for SlotMap<S> {
    fn drop(&mut self) {
        if self.slots.is_null() {
            return;
        }
        if let Ok(layout) = Layout::array::<S>(self.capacity()) {
            // SAFETY: `slots` came from `table_memory::alloc_zeroed` with
            // exactly this size in `resize`, and is freed once, here.
            unsafe { table_memory::free(self.slots.cast(), layout.size()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Robin Hood's ordering, which lookups' early exit and inserts' shift
    /// rely on: a run starts at its first member's home, and each member
    /// sits at most one slot further from home than the one before it.
    fn assert_runs_ordered<S: MapSlot>(map: &SlotMap<S>) {
        for index in 0..map.capacity() {
            let next = (index + 1) & map.mask;
            let (here, there) = (map.slot(index).key(), map.slot(next).key());
            if there == EMPTY {
                continue;
            }
            let limit = if here == EMPTY {
                0
            } else {
                map.distance(here, index) + 1
            };
            assert!(map.distance(there, next) <= limit, "slot {next}");
        }
    }

    #[test]
    fn behaves_like_a_hash_map_under_random_churn() {
        let mut map = RawMap::<u64>::new();
        let mut model = HashMap::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for step in 0..if cfg!(miri) { 2_000 } else { 200_000 } {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Few distinct keys, so inserts, replaces and removes all happen.
            let key = (state % 512 + 1) as usize * 16;
            match state >> 62 {
                0 | 1 => assert_eq!(map.insert(key, step).unwrap(), model.insert(key, step)),
                2 => assert_eq!(map.remove(key), model.remove(&key)),
                _ => assert_eq!(map.get(key), model.get(&key).copied()),
            }
            assert_eq!(map.len(), model.len());
            if step % 1000 == 0 {
                assert_runs_ordered(&map);
            }
        }
        assert_runs_ordered(&map);
        let mut seen = 0;
        map.for_each(|key, value| {
            assert_eq!(model.get(&key), Some(value));
            seen += 1;
        });
        assert_eq!(seen, model.len());
    }

    #[test]
    fn stays_correct_at_high_load_with_address_like_keys() {
        let count = if cfg!(miri) { 500 } else { 50_000 };
        let mut map = RawMap::<u32>::new();
        // Heap addresses: 16-byte aligned, clustered.
        let key = |i: usize| 0x5555_0000_0000 + i * 48;
        for i in 0..count {
            assert_eq!(map.insert(key(i), i as u32).unwrap(), None);
        }
        // The table filled to its 7/8 limit at least once on the way.
        assert!(map.len() * 8 > map.capacity() * 7 / 2);
        assert_runs_ordered(&map);
        for i in (0..count).step_by(3) {
            assert_eq!(map.remove(key(i)), Some(i as u32));
        }
        for i in 0..count {
            let expected = (i % 3 != 0).then_some(i as u32);
            assert_eq!(map.get(key(i)), expected, "key {i}");
        }
        assert_eq!(map.len(), count - count.div_ceil(3));
        assert_runs_ordered(&map);
    }

    #[test]
    fn get_or_insert_counts_in_place() {
        let mut map = RawMap::<u32>::new();
        for _ in 0..3 {
            *map.get_or_insert(7, 0).unwrap() += 1;
        }
        assert_eq!(map.get(7), Some(3));
        assert_eq!(map.get(8), None);
    }

    #[test]
    fn a_table_that_empties_gives_its_memory_back() {
        let count = if cfg!(miri) { 2_000 } else { 100_000 };
        let mut map = RawMap::<u64>::new();
        let key = |i: usize| 0x5555_0000_0000 + i * 32;
        for i in 0..count {
            map.insert(key(i), i as u64).unwrap();
        }
        let full = map.heap_bytes();
        // Keep one in a hundred: the table halves on the way down until
        // its load is back above a quarter.
        for i in 0..count {
            if i % 100 != 0 {
                assert_eq!(map.remove(key(i)), Some(i as u64));
            }
        }
        assert!(
            map.heap_bytes() * 16 <= full,
            "{} bytes left of {full}",
            map.heap_bytes()
        );
        for i in 0..count {
            assert_eq!(map.get(key(i)), (i % 100 == 0).then_some(i as u64));
        }
        // Down to nothing: one page remains.
        for i in (0..count).step_by(100) {
            map.remove(key(i));
        }
        assert_eq!(map.len(), 0);
        assert_eq!(map.heap_bytes(), pages::PAGE);
    }

    /// Counts the table's resizes while `step` runs `rounds` times.
    fn resizes(
        map: &mut RawMap<u64>,
        rounds: usize,
        mut step: impl FnMut(&mut RawMap<u64>, usize),
    ) -> usize {
        let mut changes = 0;
        let mut capacity = map.capacity();
        for round in 0..rounds {
            step(map, round);
            if map.capacity() != capacity {
                changes += 1;
                capacity = map.capacity();
            }
        }
        changes
    }

    #[test]
    fn churn_at_either_boundary_resizes_at_most_once() {
        let key = |i: usize| 0x7000_0000 + i * 16;
        let mut map = RawMap::<u64>::new();
        // Up to the last entry before growing, then one in and one out,
        // over and over.
        let mut n = 0;
        while (map.len() + 1) * 8 <= map.capacity() * 7 || map.capacity() < 1024 {
            map.insert(key(n), 0).unwrap();
            n += 1;
        }
        let churn = |map: &mut RawMap<u64>, round: usize| {
            if round % 2 == 0 {
                map.insert(key(n), 0).unwrap();
            } else {
                map.remove(key(n));
            }
        };
        assert!(resizes(&mut map, 1_000, churn) <= 1);
        // Down to the last entry before halving, then the same.
        let capacity = map.capacity();
        let mut i = 0;
        while map.len() > capacity / 4 {
            map.remove(key(i));
            i += 1;
        }
        assert_eq!(map.capacity(), capacity);
        let churn = |map: &mut RawMap<u64>, round: usize| {
            if round % 2 == 0 {
                map.remove(key(i));
            } else {
                map.insert(key(i), 0).unwrap();
            }
        };
        assert!(resizes(&mut map, 1_000, churn) <= 1);
    }
}
