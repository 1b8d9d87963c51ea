//! The record the live table keeps for each block, packed into 16 bytes.
//! Apart from the table (`live.rs`) because the layers below it use the
//! record too: the measure books and the sampler's weights read a block's
//! size, site and tag.

use super::site_id::{SiteId, SITE_BITS};

/// What the tracker knows of one live block. There is one per live
/// allocation, so it is packed: 16 bytes. The live table packs it further,
/// with its address, into 16 bytes in all (`packed_slot.rs`) when its
/// fields fit, as nearly all do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LiveBlock {
    /// The size in the low 47 bits (no allocation reaches 128 TiB), the
    /// "sampled" flag in bit 47, the scope in the high 16 bits.
    size_word: u64,
    /// The site in the low 22 bits (the stack table's capacity), the tag
    /// of the thread's open `measure` in the high 10 (0: none).
    site_and_tag: u32,
    /// The epoch (snapshot count) when the block was allocated.
    pub(crate) birth: u32,
}

// The side map of the live table holds one of these, plus an address,
// per block that does not fit a packed slot.
const _: () = assert!(std::mem::size_of::<LiveBlock>() == 16);

/// The size word's layout, which the live table's packed slot
/// (`packed_slot.rs`) copies bit ranges of.
pub(crate) const SIZE_BITS: u32 = 47;
const SAMPLED_BIT: u64 = 1 << SIZE_BITS;
pub(crate) const SCOPE_SHIFT: u32 = 48;
/// Measure tags run from 1 to `MAX_TAG`.
pub(crate) const MAX_TAG: u32 = (1 << (32 - SITE_BITS)) - 1;

impl LiveBlock {
    /// A record; `site` must be below `1 << SITE_BITS` and `tag` at most
    /// [`MAX_TAG`] (both are, by construction of their allocators).
    pub(crate) fn new(
        size: usize,
        scope: u16,
        site: SiteId,
        birth: u32,
        tag: u32,
        sampled: bool,
    ) -> Self {
        LiveBlock {
            size_word: (size as u64 & (SAMPLED_BIT - 1))
                | if sampled { SAMPLED_BIT } else { 0 }
                | (u64::from(scope) << SCOPE_SHIFT),
            site_and_tag: (site & ((1 << SITE_BITS) - 1)) | ((tag & MAX_TAG) << SITE_BITS),
            birth,
        }
    }

    /// The three words as stored: the size word, the site and tag, the
    /// birth; for the packed slot, which moves them as bit ranges.
    #[inline]
    pub(crate) fn to_raw(self) -> (u64, u32, u32) {
        (self.size_word, self.site_and_tag, self.birth)
    }

    /// A record from words [`to_raw`](Self::to_raw) gave.
    #[inline]
    pub(crate) fn from_raw(size_word: u64, site_and_tag: u32, birth: u32) -> Self {
        LiveBlock {
            size_word,
            site_and_tag,
            birth,
        }
    }

    /// The block's size in bytes.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        (self.size_word & (SAMPLED_BIT - 1)) as usize
    }

    /// True for a sample of the sampled mode (it stands for others).
    #[inline]
    pub(crate) fn sampled(&self) -> bool {
        self.size_word & SAMPLED_BIT != 0
    }

    /// The scope the block was allocated in (0: none).
    #[inline]
    pub(crate) fn scope(&self) -> u16 {
        (self.size_word >> SCOPE_SHIFT) as u16
    }

    /// The block's call site.
    #[inline]
    pub(crate) fn site(&self) -> SiteId {
        self.site_and_tag & ((1 << SITE_BITS) - 1)
    }

    /// The tag of the `measure` it was born in (0: none).
    #[inline]
    pub(crate) fn tag(&self) -> u32 {
        self.site_and_tag >> SITE_BITS
    }
}
