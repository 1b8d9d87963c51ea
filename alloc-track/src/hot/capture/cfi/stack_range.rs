//! The part of a thread's stack the CFI walk may read, and its reads.

/// The part of the thread's stack a walk may read: the words at `low` to
/// `low + span` (whose last byte is `low + span + 7`), all mapped.
#[derive(Clone, Copy, Debug)]
pub(super) struct StackRange {
    low: u64,
    span: u64,
}

impl StackRange {
    /// The words from `low` up to `top` (one past the last byte), all of
    /// which must be mapped, readable memory.
    pub(super) fn new(low: u64, top: u64) -> Self {
        StackRange {
            low,
            span: top.saturating_sub(8).saturating_sub(low),
        }
    }

    /// Whether the word at `address` lies in the range. One comparison:
    /// below `low` wraps around to far above `span`.
    #[inline(always)]
    pub(super) fn holds(self, address: u64) -> bool {
        address.wrapping_sub(self.low) <= self.span
    }

    /// The word at `address`, if it lies in the range.
    #[inline(always)]
    pub(super) fn read(self, address: u64) -> Result<u64, ()> {
        if !self.holds(address) {
            return Err(());
        }
        // SAFETY: checked just above.
        Ok(unsafe { self.read_unchecked(address) })
    }

    /// The word at `address`.
    ///
    /// # Safety
    /// `address` must be [held](StackRange::holds) by the range.
    #[inline(always)]
    pub(super) unsafe fn read_unchecked(self, address: u64) -> u64 {
        // SAFETY: the word lies in the range (the caller's promise), which
        // `new`'s caller promised is mapped and readable.
        unsafe { (address as *const u64).read_unaligned() }
    }

    /// The highest CFA whose return address (the word below it) is in the
    /// range.
    #[inline(always)]
    pub(super) fn return_address_limit(self) -> u64 {
        self.low + self.span + 8
    }

    /// The lowest address of the range.
    #[inline(always)]
    pub(super) fn low(self) -> u64 {
        self.low
    }

    /// The range with the word below `low` added (see `Rule::apply_first`).
    #[inline(always)]
    pub(super) fn widened(self) -> Option<StackRange> {
        Some(StackRange {
            low: self.low.checked_sub(8)?,
            span: self.span + 8,
        })
    }
}
