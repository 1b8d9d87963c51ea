//! The live table's slot: a block's address and record packed into 16
//! bytes, where the address beside a whole [`LiveBlock`] takes 24. The
//! table holds one slot per live block and is most of the tracker's
//! memory, so the common block gets the small form and the rare one that
//! does not fit it keeps its whole record in a side map (`live.rs`), with
//! a marker slot here: every figure stays exact either way.
//!
//! Two words, each field a bit range copied from the record's own words,
//! so that packing and unpacking are a few shifts and masks:
//!
//! | word | bits | field | compact when |
//! |---|---|---|---|
//! | low | 45 | address / 8: the key | 8-aligned, below 2^48 (user space on x86_64 and aarch64) |
//! | low | 19 | size | below 512 KiB |
//! | high | 24 | birth epoch | below 2^24 snapshots |
//! | high | 11 | sampled flag, scope | always (`MAX_SCOPES` is 1024) |
//! | high | 28 | site, measure tag | tag below 64 (tags go lowest first, one per thread measuring at once) |
//! | high | 1 | "the record is aside" | |
//!
//! Full mode with scopes, measures and snapshots keeps its blocks compact;
//! what goes aside is a block of 512 KiB or more (whose own size dwarfs
//! 40 bytes of books), an address these platforms' allocators do not
//! return, a measure tag past 63 concurrent measures, and blocks born
//! after 16 million snapshots.

use super::live_block::{self, LiveBlock};
use super::raw_map::MapSlot;
use super::site_id::SITE_BITS;

/// One block's slot; all zeroes is an empty slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct PackedSlot {
    low: u64,
    high: u64,
}

const ADDRESS_SHIFT: u32 = 3;
const KEY_BITS: u32 = 45;
const SIZE_BITS: u32 = 64 - KEY_BITS;
const BIRTH_BITS: u32 = 24;
const SCOPE_BITS: u32 = 10;
/// Scope ids below this pack; `live.rs` checks that every id is.
pub(crate) const SCOPE_LIMIT: usize = 1 << SCOPE_BITS;
/// The record's size word above its size: the sampled flag, then the
/// scope.
const FLAGS_SHIFT: u32 = BIRTH_BITS;
const FLAGS_BITS: u32 = 1 + SCOPE_BITS;
const TAG_BITS: u32 = 6;
const SITE_TAG_SHIFT: u32 = FLAGS_SHIFT + FLAGS_BITS;
const SITE_TAG_BITS: u32 = SITE_BITS + TAG_BITS;
const ASIDE_BIT: u64 = 1 << 63;

// The fields fill the high word below the aside bit; the record's size
// word has its flag right above the size and the scope right above that.
const _: () = assert!(SITE_TAG_SHIFT + SITE_TAG_BITS == 63);
const _: () = assert!(live_block::SCOPE_SHIFT == live_block::SIZE_BITS + 1);
const _: () = assert!(std::mem::size_of::<PackedSlot>() == 16);

const fn mask(bits: u32) -> u64 {
    (1 << bits) - 1
}

/// The bits of a record's size word that must be zero for the compact
/// form: the size's above `SIZE_BITS`, the scope's above `SCOPE_BITS`.
const SIZE_WORD_OVERFLOW: u64 =
    (mask(live_block::SIZE_BITS) & !mask(SIZE_BITS)) | !mask(live_block::SCOPE_SHIFT + SCOPE_BITS);

/// The bits of an address that must be zero for it to be a key: the low
/// three, and those from 48 up.
const ADDRESS_OVERFLOW: u64 = mask(ADDRESS_SHIFT) | !mask(KEY_BITS + ADDRESS_SHIFT);

impl PackedSlot {
    /// The key of `address` in the table of packed slots, when it can be
    /// one: 8-aligned, non-zero and below 2^48. Others live aside alone.
    #[inline]
    pub(crate) fn key_of(address: usize) -> Option<usize> {
        let address = address as u64;
        (address & ADDRESS_OVERFLOW == 0 && address != 0)
            .then_some((address >> ADDRESS_SHIFT) as usize)
    }

    /// The compact slot of `block` under `key` (from [`key_of`](Self::key_of)),
    /// or `None` when the record does not fit: then the side map keeps it,
    /// and the table a [`marker`](Self::marker).
    #[inline]
    pub(crate) fn pack(key: usize, block: LiveBlock) -> Option<Self> {
        let (size_word, site_and_tag, birth) = block.to_raw();
        let overflow = (size_word & SIZE_WORD_OVERFLOW)
            | u64::from(site_and_tag >> SITE_TAG_BITS)
            | u64::from(birth >> BIRTH_BITS);
        if overflow != 0 {
            return None;
        }
        Some(PackedSlot {
            // The shift drops the size word's bits above the size's.
            low: key as u64 | size_word << KEY_BITS,
            high: u64::from(birth)
                | (size_word >> live_block::SIZE_BITS) << FLAGS_SHIFT
                | u64::from(site_and_tag) << SITE_TAG_SHIFT,
        })
    }

    /// The slot that says "the record under `key` is in the side map".
    #[inline]
    pub(crate) fn marker(key: usize) -> Self {
        PackedSlot {
            low: key as u64,
            high: ASIDE_BIT,
        }
    }

    /// True for a [`marker`](Self::marker).
    #[inline]
    pub(crate) fn is_marker(&self) -> bool {
        self.high & ASIDE_BIT != 0
    }

    /// The block's address.
    #[inline]
    pub(crate) fn address(&self) -> usize {
        self.key() << ADDRESS_SHIFT
    }

    /// The record packed here; only for a slot that is no marker.
    #[inline]
    pub(crate) fn block(&self) -> LiveBlock {
        let size_word = (self.low >> KEY_BITS)
            | ((self.high >> FLAGS_SHIFT) & mask(FLAGS_BITS)) << live_block::SIZE_BITS;
        let site_and_tag = ((self.high >> SITE_TAG_SHIFT) & mask(SITE_TAG_BITS)) as u32;
        let birth = (self.high & mask(BIRTH_BITS)) as u32;
        LiveBlock::from_raw(size_word, site_and_tag, birth)
    }
}

impl MapSlot for PackedSlot {
    #[inline]
    fn key(&self) -> usize {
        (self.low & mask(KEY_BITS)) as usize
    }

    #[inline]
    fn clear(&mut self) {
        self.low = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hot::raw_map::EMPTY;
    use crate::hot::site_id::MAX_SITES;

    const ADDRESS: usize = 0x7fff_1234_5670;

    fn round_trip(address: usize, block: LiveBlock) {
        let key = PackedSlot::key_of(address).expect("a key");
        let slot = PackedSlot::pack(key, block).expect("fits the compact form");
        assert!(!slot.is_marker());
        assert_eq!(slot.key(), key);
        assert_eq!(slot.address(), address);
        assert_eq!(slot.block(), block);
    }

    const LARGEST_SIZE: usize = (1 << SIZE_BITS) - 1;
    const LARGEST_BIRTH: u32 = (1 << BIRTH_BITS) - 1;
    const LARGEST_TAG: u32 = (1 << TAG_BITS) - 1;
    const LARGEST_SCOPE: u16 = (1 << SCOPE_BITS) - 1;

    #[test]
    fn every_field_round_trips_at_its_limits() {
        let everything = LiveBlock::new(
            LARGEST_SIZE,
            LARGEST_SCOPE,
            MAX_SITES,
            LARGEST_BIRTH,
            LARGEST_TAG,
            true,
        );
        let nothing = LiveBlock::new(0, 0, 0, 0, 0, false);
        let largest_address = (1 << 48) - 8;
        for address in [8, ADDRESS, largest_address] {
            round_trip(address, everything);
            round_trip(address, nothing);
            // Each field alone at its largest, the others zero: no field
            // bleeds into its neighbours.
            for block in [
                LiveBlock::new(LARGEST_SIZE, 0, 0, 0, 0, false),
                LiveBlock::new(0, LARGEST_SCOPE, 0, 0, 0, false),
                LiveBlock::new(0, 0, MAX_SITES, 0, 0, false),
                LiveBlock::new(0, 0, 0, LARGEST_BIRTH, 0, false),
                LiveBlock::new(0, 0, 0, 0, LARGEST_TAG, false),
                LiveBlock::new(0, 0, 0, 0, 0, true),
                LiveBlock::new(24, 3, 77, 5, 2, false),
            ] {
                round_trip(address, block);
            }
        }
    }

    #[test]
    fn a_record_past_any_limit_does_not_pack() {
        let key = PackedSlot::key_of(ADDRESS).unwrap();
        for block in [
            LiveBlock::new(LARGEST_SIZE + 1, 0, 1, 0, 0, false),
            LiveBlock::new(1 << 40, 0, 1, 0, 0, false),
            LiveBlock::new(16, 0, 1, LARGEST_BIRTH + 1, 0, false),
            LiveBlock::new(16, 0, 1, u32::MAX, 0, false),
            LiveBlock::new(16, 0, 1, 0, LARGEST_TAG + 1, false),
            LiveBlock::new(16, LARGEST_SCOPE + 1, 1, 0, 0, false),
            LiveBlock::new(16, u16::MAX, 1, 0, 0, true),
        ] {
            assert_eq!(PackedSlot::pack(key, block), None, "{block:?}");
        }
        let marker = PackedSlot::marker(key);
        assert!(marker.is_marker());
        assert_eq!(marker.key(), key);
        assert_eq!(marker.address(), ADDRESS);
    }

    #[test]
    fn only_aligned_user_space_addresses_are_keys() {
        assert_eq!(PackedSlot::key_of(16), Some(2));
        assert!(PackedSlot::key_of((1 << 48) - 8).is_some());
        for address in [0, ADDRESS + 1, ADDRESS + 4, 1 << 48, usize::MAX - 7] {
            assert_eq!(PackedSlot::key_of(address), None, "{address:#x}");
        }
    }

    #[test]
    fn a_cleared_slot_is_empty() {
        let key = PackedSlot::key_of(ADDRESS).unwrap();
        let mut slot = PackedSlot::pack(key, LiveBlock::new(40, 2, 9, 3, 1, false)).unwrap();
        slot.clear();
        assert_eq!(slot.key(), EMPTY);
        let mut marker = PackedSlot::marker(key);
        marker.clear();
        assert_eq!(marker.key(), EMPTY);
    }
}
