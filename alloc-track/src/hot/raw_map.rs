//! An open-addressing hash map from non-zero `usize` keys to plain values,
//! whose memory comes straight from the kernel (`pages.rs`) so that the hot
//! path can use it without re-entering the global allocator.
//!
//! Robin Hood linear probing with backward-shift deletion: an insert takes
//! the slot of any resident closer to its own ideal slot than the newcomer
//! is, so probe lengths stay short and even up to a load of 7/8, and a
//! lookup stops as soon as it meets a resident closer to home than the key
//! it seeks. No tombstones, so lookups never slow down with churn. The
//! high load matters: the live table holds one entry per live allocation,
//! and its size is most of the tracker's memory. Growing returns an
//! error instead of aborting when the kernel is out of memory: the caller
//! then leaves the allocation unrecorded and counts it as such.

use std::alloc::Layout;

use super::pages;
use std::ptr;

/// The key that marks an empty slot; callers never insert it.
const EMPTY: usize = 0;
/// A page's worth of slots: the memory comes in whole pages anyway.
const MIN_CAPACITY: usize = 128;

/// The kernel could not provide memory for the table to grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot<V> {
    key: usize,
    value: V,
}

/// A map whose values are plain data (integers): a slot with key 0 is empty,
/// and its value bytes, zeroed, are never read.
pub(crate) struct RawMap<V: Copy> {
    slots: *mut Slot<V>,
    /// Capacity minus one; capacity is a power of two (or 0).
    mask: usize,
    len: usize,
}

// SAFETY: the map owns its slot array exclusively; moving it to another
// thread moves that ownership.
unsafe impl<V: Copy + Send> Send for RawMap<V> {}

impl<V: Copy> RawMap<V> {
    pub(crate) const fn new() -> Self {
        RawMap {
            slots: ptr::null_mut(),
            mask: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Gives an empty table its first memory now rather than at its first
    /// insert.
    pub(crate) fn allocate(&mut self) -> Result<(), OutOfMemory> {
        if self.slots.is_null() {
            self.grow()?;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
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
            pages::round_up(self.capacity() * std::mem::size_of::<Slot<V>>())
        }
    }

    /// Mixes all bits of the key into the low bits used for the index
    /// (addresses share their low and high bits, so they need mixing).
    #[inline]
    fn ideal(&self, key: usize) -> usize {
        let mut h = key as u64;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        (h as usize) & self.mask
    }

    #[inline]
    fn slot(&self, index: usize) -> &Slot<V> {
        // SAFETY: callers pass `index & self.mask` on a non-null table, and
        // the table holds `mask + 1` initialised slots.
        unsafe { &*self.slots.add(index) }
    }

    #[inline]
    fn slot_mut(&mut self, index: usize) -> &mut Slot<V> {
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
            let slot = self.slot(index);
            if slot.key == key {
                return Some(index);
            }
            // Robin Hood's invariant: had the key been inserted, it would
            // have displaced this resident, which is closer to home.
            if slot.key == EMPTY || self.distance(slot.key, index) < distance {
                return None;
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    pub(crate) fn get(&self, key: usize) -> Option<V> {
        self.find(key).map(|index| self.slot(index).value)
    }

    /// Inserts or replaces; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: usize, value: V) -> Result<Option<V>, OutOfMemory> {
        if let Some(index) = self.find(key) {
            let old = self.slot(index).value;
            self.slot_mut(index).value = value;
            return Ok(Some(old));
        }
        self.insert_new(key, value)?;
        Ok(None)
    }

    /// The value for `key`, inserting `default` first if it is absent.
    pub(crate) fn get_or_insert(&mut self, key: usize, default: V) -> Result<&mut V, OutOfMemory> {
        let index = match self.find(key) {
            Some(index) => index,
            None => self.insert_new(key, default)?,
        };
        Ok(&mut self.slot_mut(index).value)
    }

    /// Inserts a key known to be absent; returns its slot index.
    fn insert_new(&mut self, key: usize, value: V) -> Result<usize, OutOfMemory> {
        debug_assert!(key != EMPTY);
        if (self.len + 1) * 8 > self.capacity() * 7 {
            self.grow()?;
        }
        let placed = self.place(Slot { key, value });
        self.len += 1;
        Ok(placed)
    }

    /// Puts an entry whose key is absent into the table (which has room),
    /// displacing residents closer to home; returns where it landed.
    fn place(&mut self, entry: Slot<V>) -> usize {
        let mut carried = entry;
        let mut index = self.ideal(carried.key);
        let mut distance = 0;
        let mut placed = None;
        loop {
            let resident = *self.slot(index);
            if resident.key == EMPTY {
                *self.slot_mut(index) = carried;
                return placed.unwrap_or(index);
            }
            let resident_distance = self.distance(resident.key, index);
            if resident_distance < distance {
                *self.slot_mut(index) = carried;
                placed.get_or_insert(index);
                carried = resident;
                distance = resident_distance;
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<V> {
        let mut hole = self.find(key)?;
        let removed = self.slot(hole).value;
        // Backward-shift deletion: move each following member of the run
        // one slot back, until an empty slot or a member already at home.
        // Every member moves one step closer to home, which keeps Robin
        // Hood's ordering (and so the early exit in `find`) intact.
        loop {
            let next = (hole + 1) & self.mask;
            let slot = *self.slot(next);
            if slot.key == EMPTY || self.distance(slot.key, next) == 0 {
                break;
            }
            *self.slot_mut(hole) = slot;
            hole = next;
        }
        self.slot_mut(hole).key = EMPTY;
        self.len -= 1;
        Some(removed)
    }

    /// Calls `f` for every entry, in no particular order.
    pub(crate) fn for_each(&self, mut f: impl FnMut(usize, &V)) {
        for index in 0..self.capacity() {
            let slot = self.slot(index);
            if slot.key != EMPTY {
                f(slot.key, &slot.value);
            }
        }
    }

    fn grow(&mut self) -> Result<(), OutOfMemory> {
        let new_capacity = (self.capacity() * 2).max(MIN_CAPACITY);
        let layout = Layout::array::<Slot<V>>(new_capacity).map_err(|_| OutOfMemory)?;
        // Zeroed pages: every key is EMPTY.
        let slots = pages::alloc_zeroed(layout.size()).cast::<Slot<V>>();
        if slots.is_null() {
            return Err(OutOfMemory);
        }
        let old = std::mem::replace(
            self,
            RawMap {
                slots,
                mask: new_capacity - 1,
                len: 0,
            },
        );
        old.for_each(|key, value| {
            self.place(Slot { key, value: *value });
        });
        self.len = old.len;
        drop(old);
        Ok(())
    }
}

impl<V: Copy> Drop for RawMap<V> {
    fn drop(&mut self) {
        if self.slots.is_null() {
            return;
        }
        if let Ok(layout) = Layout::array::<Slot<V>>(self.capacity()) {
            // SAFETY: `slots` came from `pages::alloc_zeroed` with exactly
            // this size in `grow`, and is freed once, here.
            unsafe { pages::free(self.slots.cast(), layout.size()) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
        }
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
        for i in (0..count).step_by(3) {
            assert_eq!(map.remove(key(i)), Some(i as u32));
        }
        for i in 0..count {
            let expected = (i % 3 != 0).then_some(i as u32);
            assert_eq!(map.get(key(i)), expected, "key {i}");
        }
        assert_eq!(map.len(), count - count.div_ceil(3));
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
}
