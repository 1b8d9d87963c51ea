//! The per-thread cache of compact rules (`rules.rs`) by lookup address,
//! which the CFI walk probes once per frame.

use super::rules::Rule;

/// A thread's cache of rules by lookup address: direct-mapped, each entry
/// tagged with the whole address. The cache holds rules derived under one
/// module list's generation ([`RuleCache::follow`] empties it when the
/// walk finds a newer one), so that the tag is the address itself and a
/// probe costs one comparison.
pub(super) struct RuleCache {
    entries: Box<[Entry]>,
    generation: u16,
}

/// See [`RuleCache::reader`]. Valid while its cache is: inserting changes
/// entries, never the table.
#[derive(Clone, Copy)]
pub(super) struct RuleReader {
    entries: *const Entry,
    mask: usize,
}

impl RuleReader {
    #[inline(always)]
    pub(super) fn get(self, address: u64) -> Option<Rule> {
        let slot = (address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize & self.mask;
        // SAFETY: `slot` is masked to the table's length (a power of two),
        // and the table, owned by the cache this reader came from, lives
        // as long as the walk that uses the reader.
        let entry = unsafe { &*self.entries.add(slot) };
        (entry.tag == address).then_some(entry.rule)
    }
}

/// 16 bytes: the tag, then the rule.
#[derive(Clone, Copy)]
struct Entry {
    /// The lookup address (return address - 1, or a first frame's
    /// instruction pointer); [`EMPTY`]: no rule.
    tag: u64,
    rule: Rule,
}

/// The tag of an empty entry: the lookup address of a return address of
/// 0, where every walk stops before looking up a rule.
const EMPTY: u64 = u64::MAX;

const _: () = assert!(std::mem::size_of::<Entry>() == 16);

impl RuleCache {
    /// A cache of `slots` entries, a power of two.
    pub(super) fn new(slots: usize) -> Self {
        RuleCache {
            entries: vec![Self::EMPTY_ENTRY; slots.next_power_of_two()].into_boxed_slice(),
            generation: 0,
        }
    }

    const EMPTY_ENTRY: Entry = Entry {
        tag: EMPTY,
        rule: Rule::ROOT,
    };

    /// Return addresses differ in their low bits; a multiply spreads
    /// nearby ones over the table. [`RuleReader::get`] computes the same.
    #[inline(always)]
    fn slot(&self, address: u64) -> usize {
        let hash = address.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
        hash as usize & (self.entries.len() - 1)
    }

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
        self.entries.fill(Self::EMPTY_ENTRY);
        self.generation = generation;
    }

    /// A reader of the cache for one walk: the table's address and size in
    /// locals, so that the walk's loop does not reload them through the
    /// cache (which inserting may change, as far as the compiler can tell)
    /// at every frame.
    #[inline(always)]
    pub(super) fn reader(&self) -> RuleReader {
        RuleReader {
            entries: self.entries.as_ptr(),
            mask: self.entries.len() - 1,
        }
    }

    /// Caches `rule` for `address`, derived under the generation the cache
    /// follows.
    pub(super) fn insert(&mut self, address: u64, rule: Rule) {
        let slot = self.slot(address);
        if let Some(entry) = self.entries.get_mut(slot) {
            *entry = Entry { tag: address, rule };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::capture::cfi::rules::Base;

    #[test]
    fn the_cache_misses_on_another_address_or_module_list() {
        let mut cache = RuleCache::new(64);
        cache.follow(1);
        let rule = Rule::caller((Base::StackPointer, 8), None).unwrap();
        cache.insert(0x4000_1234, rule);
        assert_eq!(cache.reader().get(0x4000_1234), Some(rule));
        assert_eq!(cache.reader().get(0x4000_1235), None);
        // An empty slot matches no address, not even 0.
        assert_eq!(cache.reader().get(0), None);
        // The same list again keeps the rules; another empties the cache.
        cache.follow(1);
        assert_eq!(cache.reader().get(0x4000_1234), Some(rule));
        cache.follow(2);
        assert_eq!(cache.reader().get(0x4000_1234), None);
    }
}
