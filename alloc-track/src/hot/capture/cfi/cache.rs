//! The per-thread cache of compact rules (`rules.rs`) by frame, which the
//! CFI walk probes once per frame.

use framehop::FrameAddress;

use super::rules::Rule;

/// A rule's key in the cache: its frame's lookup address + 1. For a frame
/// found by its return address, that is the return address itself (the
/// lookup address is the call's last byte, one below), so the walk probes
/// with the word it just read, one subtraction fewer on its chain of
/// dependent loads (on the bench's crates workload: -0.034x in 40
/// alternating rounds, 27 lower, and -0.047x in 16, 15 lower; 26 fewer
/// instructions per allocation). A first frame's key is its instruction
/// pointer + 1, never a return address: the instruction's start would
/// have to be a call's last byte.
#[inline(always)]
pub(super) fn rule_key(frame: FrameAddress) -> u64 {
    frame.address_for_lookup().wrapping_add(1)
}

/// A thread's cache of rules by [`rule_key`]: two-way set-associative, each
/// entry tagged with the whole key. The cache holds rules derived under
/// one module list's generation ([`RuleCache::follow`] empties it when the
/// walk finds a newer one), so that the tag is the key itself and a probe
/// costs one comparison.
///
/// Two ways, because a direct-mapped table made two hot return addresses
/// that share a slot evict each other at every walk, and deriving a rule
/// costs a hundred times a cached frame: on the bench's real crates, 1 to 3
/// times the whole walk's instructions again, depending on where address
/// randomisation happened to put the code. A set is half a cache line, and
/// the second way is read only when the first misses; a hit there swaps
/// the two (least recently used out first).
pub(super) struct RuleCache {
    sets: Box<[Set]>,
    generation: u16,
}

/// Two entries, the most recently inserted or found first.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Set {
    ways: [Entry; 2],
}

/// See [`RuleCache::reader`]. Valid while its cache is: inserting changes
/// entries, never the table.
#[derive(Clone, Copy)]
pub(super) struct RuleReader {
    sets: *mut Set,
    /// The table's length minus one, in bytes of sets ([`set_offset`]).
    offset_mask: usize,
}

impl RuleReader {
    /// The rule cached under `key` (see [`rule_key`]). A hit in the second way
    /// moves the entry to the first (the two swap), so that the walk's loop
    /// reads its rule from one place whichever way it was found in.
    #[inline(always)]
    pub(super) fn get(&self, key: u64) -> Option<&Rule> {
        let offset = set_offset(key, self.offset_mask);
        // SAFETY: `offset` is a whole set's and masked to the table's
        // length (a power of two), and the table, owned by the cache this
        // reader came from, lives as long as the walk that uses the
        // reader; only this thread's walk, which holds no other reference
        // into the table while it probes, reads or writes it.
        let set = unsafe { &mut *self.sets.byte_add(offset) };
        if set.ways[0].tag != key {
            if set.ways[1].tag != key {
                return None;
            }
            set.ways.swap(0, 1);
        }
        Some(&set.ways[0].rule)
    }
}

/// Where `key`'s set lies in a table whose length minus one, times the
/// size of a set, is `offset_mask`: the key's bits from the third up pick
/// the set. A function's return addresses, a few bytes apart, land in
/// neighbouring sets and never evict each other, and distant ones alias
/// no more than at random.
///
/// This is on the walk's chain of dependent loads (each frame's rule gives
/// the next frame's address), so it is as short as it can be. No hashing:
/// a multiply's latency made full mode 5% slower on the bench's crates
/// workload (2.75x against 2.60x, with fewer rules derived again, not
/// more). And the offset in bytes straight from the key, a shift and a
/// mask, rather than an index scaled after masking: 2.48x against 2.55x
/// (22 of 24 alternating rounds lower).
#[inline(always)]
fn set_offset(key: u64, offset_mask: usize) -> usize {
    const _: () = assert!(std::mem::size_of::<Set>() == 1 << 5);
    // (key >> 2) * 32 within the mask: `key << 3` has the key's two low
    // bits at bits 3 and 4, which the mask, a multiple of 32, clears.
    (key << 3) as usize & offset_mask
}

/// 16 bytes: the tag, then the rule.
#[derive(Clone, Copy)]
struct Entry {
    /// The rule's [`rule_key`]; [`EMPTY`]: no rule.
    tag: u64,
    rule: Rule,
}

/// The tag of an empty entry: the key of a return address of 0, where
/// every walk stops before looking up a rule.
const EMPTY: u64 = 0;

const _: () = assert!(std::mem::size_of::<Entry>() == 16);
const _: () = assert!(std::mem::size_of::<Set>() == 32);

impl RuleCache {
    /// A cache of `slots` entries (a power of two, at least 2).
    pub(super) fn new(slots: usize) -> Self {
        let sets = (slots.next_power_of_two() / 2).max(1);
        RuleCache {
            sets: vec![Self::EMPTY_SET; sets].into_boxed_slice(),
            generation: 0,
        }
    }

    const EMPTY_SET: Set = Set {
        ways: [Entry {
            tag: EMPTY,
            rule: Rule::ROOT,
        }; 2],
    };

    /// Makes the cache hold rules of module list `generation`: the rules
    /// of another are dropped. A list rebuilt after a `dlopen` that only
    /// added objects keeps its predecessor's generation (`build.rs`), so
    /// this empties the cache only after an object went away or changed.
    #[inline(always)]
    pub(super) fn follow(&mut self, generation: u16) {
        if self.generation != generation {
            self.empty(generation);
        }
    }

    #[cold]
    #[inline(never)]
    fn empty(&mut self, generation: u16) {
        self.sets.fill(Self::EMPTY_SET);
        self.generation = generation;
    }

    fn offset_mask(&self) -> usize {
        (self.sets.len() - 1) * std::mem::size_of::<Set>()
    }

    /// A reader of the cache for one walk: the table's address and size in
    /// locals, so that the walk's loop does not reload them through the
    /// cache (which inserting may change, as far as the compiler can tell)
    /// at every frame.
    #[inline(always)]
    pub(super) fn reader(&mut self) -> RuleReader {
        RuleReader {
            sets: self.sets.as_mut_ptr(),
            offset_mask: self.offset_mask(),
        }
    }

    /// Caches `rule` under `key`, derived under the generation the cache
    /// follows: first in its set, the older first entry second, the older
    /// second evicted.
    pub(super) fn insert(&mut self, key: u64, rule: Rule) {
        let index = set_offset(key, self.offset_mask()) / std::mem::size_of::<Set>();
        if let Some(set) = self.sets.get_mut(index) {
            set.ways = [Entry { tag: key, rule }, set.ways[0]];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl RuleReader {
        fn get_copy(&self, key: u64) -> Option<Rule> {
            self.get(key).copied()
        }
    }
    use crate::hot::capture::cfi::rules::Base;

    #[test]
    fn the_cache_misses_on_another_address_or_module_list() {
        let mut cache = RuleCache::new(64);
        cache.follow(1);
        let rule = Rule::caller((Base::StackPointer, 8), None).unwrap();
        cache.insert(0x4000_1234, rule);
        assert_eq!(cache.reader().get_copy(0x4000_1234), Some(rule));
        assert_eq!(cache.reader().get_copy(0x4000_1235), None);
        // An empty slot matches no key a walk looks up (0 is a return
        // address of 0, which ends a walk before its lookup).
        assert_eq!(cache.reader().get_copy(1), None);
        assert_eq!(cache.reader().get_copy(u64::MAX), None);
        // The same list again keeps the rules; another empties the cache.
        cache.follow(1);
        assert_eq!(cache.reader().get_copy(0x4000_1234), Some(rule));
        cache.follow(2);
        assert_eq!(cache.reader().get_copy(0x4000_1234), None);
    }

    #[test]
    fn two_addresses_that_share_a_slot_both_stay_cached() {
        // One set: every address shares it.
        let mut cache = RuleCache::new(1);
        cache.follow(1);
        let rule = |offset| Rule::caller((Base::StackPointer, offset), None).unwrap();
        cache.insert(0x1000, rule(8));
        cache.insert(0x2000, rule(16));
        assert_eq!(cache.reader().get_copy(0x1000), Some(rule(8)));
        assert_eq!(cache.reader().get_copy(0x2000), Some(rule(16)));
        // A third evicts the older of the two.
        cache.insert(0x3000, rule(24));
        assert_eq!(cache.reader().get_copy(0x1000), None);
        assert_eq!(cache.reader().get_copy(0x2000), Some(rule(16)));
        assert_eq!(cache.reader().get_copy(0x3000), Some(rule(24)));
    }
}
