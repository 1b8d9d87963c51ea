//! An open-addressing hash map from non-zero `usize` keys to plain values,
//! whose memory comes straight from [`System`] so that the hot path can use
//! it without re-entering the global allocator.
//!
//! Linear probing with backward-shift deletion (no tombstones, so lookups
//! never slow down with churn), grown at a load of 5/8. Growing returns an
//! error instead of aborting when `System` is out of memory: the caller
//! then leaves the allocation unrecorded and counts it as such.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr;

/// The key that marks an empty slot; callers never insert it.
const EMPTY: usize = 0;
const MIN_CAPACITY: usize = 16;

/// `System` could not provide memory for the table to grow.
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

    fn capacity(&self) -> usize {
        if self.slots.is_null() {
            0
        } else {
            self.mask + 1
        }
    }

    /// Bytes of `System` memory the table holds, for the tracker's own
    /// overhead figure.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.capacity() * std::mem::size_of::<Slot<V>>()
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

    fn find(&self, key: usize) -> Option<usize> {
        if self.slots.is_null() || key == EMPTY {
            return None;
        }
        let mut index = self.ideal(key);
        loop {
            let slot = self.slot(index);
            if slot.key == key {
                return Some(index);
            }
            if slot.key == EMPTY {
                return None;
            }
            index = (index + 1) & self.mask;
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
        if (self.len + 1) * 8 > self.capacity() * 5 {
            self.grow()?;
        }
        let mut index = self.ideal(key);
        while self.slot(index).key != EMPTY {
            index = (index + 1) & self.mask;
        }
        *self.slot_mut(index) = Slot { key, value };
        self.len += 1;
        Ok(index)
    }

    pub(crate) fn remove(&mut self, key: usize) -> Option<V> {
        let mut hole = self.find(key)?;
        let removed = self.slot(hole).value;
        // Backward-shift deletion: pull later members of the probe run into
        // the hole whenever the hole lies on their way from their ideal slot,
        // so that every remaining key stays reachable without tombstones.
        let mut next = (hole + 1) & self.mask;
        loop {
            let slot = *self.slot(next);
            if slot.key == EMPTY {
                break;
            }
            let ideal = self.ideal(slot.key);
            let distance_to_next = next.wrapping_sub(ideal) & self.mask;
            let distance_to_hole = hole.wrapping_sub(ideal) & self.mask;
            if distance_to_hole < distance_to_next {
                *self.slot_mut(hole) = slot;
                hole = next;
            }
            next = (next + 1) & self.mask;
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
        // SAFETY: the layout has a non-zero size (at least 16 slots).
        let slots = unsafe { System.alloc_zeroed(layout) }.cast::<Slot<V>>();
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
            let mut index = self.ideal(key);
            while self.slot(index).key != EMPTY {
                index = (index + 1) & self.mask;
            }
            *self.slot_mut(index) = Slot { key, value: *value };
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
            // SAFETY: `slots` came from `System.alloc_zeroed` with exactly
            // this layout in `grow`, and is freed once, here.
            unsafe { System.dealloc(self.slots.cast(), layout) };
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
    fn get_or_insert_counts_in_place() {
        let mut map = RawMap::<u32>::new();
        for _ in 0..3 {
            *map.get_or_insert(7, 0).unwrap() += 1;
        }
        assert_eq!(map.get(7), Some(3));
        assert_eq!(map.get(8), None);
    }
}
