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

/// The multiplier of the key mix (MurmurHash3's 64-bit finaliser) and its
/// inverse modulo 2^64.
const MIX: u64 = 0xff51_afd7_ed55_8ccd;
const MIX_INVERSE: u64 = modular_inverse(MIX);
const _: () = assert!(MIX.wrapping_mul(MIX_INVERSE) == 1);

/// The inverse of an odd number modulo 2^64 (Newton's iteration: each
/// step doubles the bits that are right, from 3).
const fn modular_inverse(odd: u64) -> u64 {
    let mut inverse = odd;
    let mut step = 0;
    while step < 5 {
        inverse = inverse.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inverse)));
        step += 1;
    }
    inverse
}

/// The code a key is stored as: a mix of all its bits (addresses share
/// their low and high bits) that is a bijection, so that two keys never
/// share a code, the key comes back by [`decode`], and 0 stays 0 (`EMPTY`).
/// Storing the code rather than the key gives each resident's home slot
/// (its low bits) without hashing it again at every probe step.
#[inline]
fn encode(key: usize) -> usize {
    let mut h = key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(MIX);
    h ^= h >> 33;
    h as usize
}

/// The key of a stored code: [`encode`]'s steps undone in reverse order
/// (a shift-xor by 33 or more bits is its own inverse).
fn decode(code: usize) -> usize {
    let mut h = code as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(MIX_INVERSE);
    h ^= h >> 33;
    h as usize
}

// Codes are mixed in 64 bits: keys must fit them unchanged.
const _: () = assert!(std::mem::size_of::<usize>() == 8);

/// The kernel could not provide memory for the table to grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OutOfMemory;

#[derive(Clone, Copy)]
#[repr(C)]
struct Slot<V> {
    /// The key's code ([`encode`]), `EMPTY` in a free slot.
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

    /// A resident's home slot: its stored code's low bits.
    #[inline]
    fn ideal(&self, code: usize) -> usize {
        code & self.mask
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
    fn distance(&self, code: usize, index: usize) -> usize {
        index.wrapping_sub(code) & self.mask
    }

    /// Where the entry with this code sits, if present.
    fn find(&self, code: usize) -> Option<usize> {
        if self.slots.is_null() || code == EMPTY {
            return None;
        }
        let mut index = self.ideal(code);
        let mut distance = 0;
        loop {
            let slot = self.slot(index);
            if slot.key == code {
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
        self.find(encode(key)).map(|index| self.slot(index).value)
    }

    /// Inserts or replaces; returns the value it replaced. One pass over
    /// the probe sequence: the key, if present, sits before the slot where
    /// Robin Hood would place it.
    pub(crate) fn insert(&mut self, key: usize, value: V) -> Result<Option<V>, OutOfMemory> {
        let code = encode(key);
        debug_assert!(code != EMPTY);
        if (self.len + 1) * 8 > self.capacity() * 7 {
            // Replacing needs no room: only grow for a new key.
            if let Some(index) = self.find(code) {
                return Ok(Some(std::mem::replace(
                    &mut self.slot_mut(index).value,
                    value,
                )));
            }
            self.grow()?;
        }
        let mut index = self.ideal(code);
        let mut distance = 0;
        loop {
            let resident = *self.slot(index);
            if resident.key == code {
                return Ok(Some(std::mem::replace(
                    &mut self.slot_mut(index).value,
                    value,
                )));
            }
            if resident.key == EMPTY {
                *self.slot_mut(index) = Slot { key: code, value };
                self.len += 1;
                return Ok(None);
            }
            let resident_distance = self.distance(resident.key, index);
            if resident_distance < distance {
                // The key is absent: it takes this slot, and the resident
                // moves on.
                *self.slot_mut(index) = Slot { key: code, value };
                self.place_from(resident, (index + 1) & self.mask, resident_distance + 1);
                self.len += 1;
                return Ok(None);
            }
            index = (index + 1) & self.mask;
            distance += 1;
        }
    }

    /// The value for `key`, inserting `default` first if it is absent.
    pub(crate) fn get_or_insert(&mut self, key: usize, default: V) -> Result<&mut V, OutOfMemory> {
        let code = encode(key);
        let index = match self.find(code) {
            Some(index) => index,
            None => {
                if (self.len + 1) * 8 > self.capacity() * 7 {
                    self.grow()?;
                }
                self.len += 1;
                self.place(Slot {
                    key: code,
                    value: default,
                })
            }
        };
        Ok(&mut self.slot_mut(index).value)
    }

    /// Puts an entry whose key is absent into the table (which has room),
    /// displacing residents closer to home; returns where it landed.
    fn place(&mut self, entry: Slot<V>) -> usize {
        let index = self.ideal(entry.key);
        self.place_from(entry, index, 0)
    }

    /// [`place`](Self::place), starting `distance` slots from the entry's
    /// home, at `index`.
    fn place_from(&mut self, entry: Slot<V>, mut index: usize, mut distance: usize) -> usize {
        let mut carried = entry;
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
        let mut hole = self.find(encode(key))?;
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
        self.for_each_slot(|slot| f(decode(slot.key), &slot.value));
    }

    fn for_each_slot(&self, mut f: impl FnMut(&Slot<V>)) {
        for index in 0..self.capacity() {
            let slot = self.slot(index);
            if slot.key != EMPTY {
                f(slot);
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
        old.for_each_slot(|slot| {
            self.place(*slot);
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
    fn codes_round_trip_and_keep_empty_empty() {
        assert_eq!(encode(EMPTY), EMPTY);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for key in [1, 16, usize::MAX, 1 << 47, (1 << 63) + 8] {
            assert_eq!(decode(encode(key)), key);
            assert_ne!(encode(key), EMPTY);
        }
        for _ in 0..if cfg!(miri) { 100 } else { 100_000 } {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            assert_eq!(decode(encode(state as usize)), state as usize);
        }
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
