//! [`Tracker`], the global allocator wrapper: the hot path's entry point.
//!
//! # The hot-path contract
//!
//! Everything reachable from the [`GlobalAlloc`] methods below obeys these
//! rules, because breaking any of them inside an allocator means deadlock,
//! infinite recursion or a corrupted heap in the host program:
//!
//! 1. **No allocation through the tracked path.** The tracker's tables get
//!    their memory straight from the kernel (anonymous mappings, apart
//!    from the program's heap). Anything that does
//!    reach the global allocator from inside the tracker (the platform
//!    unwinder on its first use) finds the thread's busy flag set and
//!    passes straight through to the inner allocator, untracked.
//! 2. **No panic, no unwrap.** Every failure has a defined outcome: the
//!    inner allocator's null is returned as is; bookkeeping that cannot get
//!    memory leaves the block unrecorded and counts it in
//!    `unrecorded_allocations`.
//! 3. **No I/O, no symbol resolution.** Stacks are stored as raw return
//!    addresses; names are resolved by the cold path, on demand.
//! 4. **No lock held while a stack is captured, and no lock that may
//!    allocate.** Capture runs first, lock-free; the tables use spin locks
//!    (never `parking_lot`, whose contended path allocates) held for a few
//!    hash probes.
//! 5. **Survives thread-local teardown.** The per-thread flag is a
//!    const-initialised thread-local without a destructor; should it be
//!    unreachable, the allocation passes through untracked, and its free
//!    later finds no record and counts nothing.
//! 6. **Every `unsafe` block says why it is sound** in a `// SAFETY:` line.

use std::alloc::{GlobalAlloc, Layout};

use crate::hot::view::config::{Config, Mode};
use crate::hot::view::record;
use crate::hot::view::stacks::MAX_SITES;

/// A global allocator that wraps `A` and records every live allocation
/// with the call stack that made it.
///
/// Install it once, in the binary (or the test crate) to be profiled:
///
/// ```
/// use std::alloc::System;
///
/// #[global_allocator]
/// static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
/// # fn main() {}
/// ```
///
/// Any [`GlobalAlloc`] works as the inner allocator (jemalloc, mimalloc,
/// `System`); the tracker only watches what passes through.
pub struct Tracker<A> {
    inner: A,
    config: Config,
}

impl<A> Tracker<A> {
    /// Wraps `inner`, recording every allocation with its stack: exact
    /// figures for every call site.
    pub const fn new(inner: A) -> Self {
        Tracker {
            inner,
            config: Config::wrapping::<A>(),
        }
    }

    /// Records one allocation per `mean_bytes` allocated, on average
    /// (Poisson sampling by bytes), instead of every one: per-site figures
    /// become unbiased estimates, totals stay exact (the peak to within
    /// 64 KiB per thread), and the cost drops to a few nanoseconds per
    /// allocation. See [`Mode::Sampled`].
    /// `ALLOC_TRACK_MODE` in the environment overrides it.
    ///
    /// ```
    /// use std::alloc::System;
    /// #[global_allocator]
    /// static GLOBAL: alloc_track::Tracker<System> =
    ///     alloc_track::Tracker::new(System).sampled(512 * 1024);
    /// # fn main() {}
    /// ```
    pub const fn sampled(mut self, mean_bytes: u64) -> Self {
        self.config.mode = Mode::Sampled {
            mean_bytes: if mean_bytes == 0 { 1 } else { mean_bytes },
        };
        self
    }

    /// Counts allocations without recording stacks: exact totals and
    /// [`measure`](fn@crate::measure) (the peak to within 64 KiB per thread),
    /// the lowest overhead. See [`Mode::Count`].
    /// `ALLOC_TRACK_MODE` in the environment overrides it.
    pub const fn counting(mut self) -> Self {
        self.config.mode = Mode::Count;
        self
    }

    /// Bounds the number of distinct call sites (unique stacks) recorded,
    /// and with it the tracker's memory for stacks (default and maximum:
    /// 4,194,304). Allocations from further stacks are counted, exactly,
    /// against one "other" site, and snapshots report how many there were.
    ///
    /// Each site costs the tracker 72 bytes of record (its temporary
    /// count included), 18 to 37 bytes of index and 8 bytes per frame of
    /// its stack, mapped as sites appear: at the default cap, 416 MiB plus
    /// 32 MiB per frame of the average stack (about 1.4 GiB for 30-frame
    /// stacks, 4.4 GiB for 128-frame ones). A [`Snapshot`](crate::Snapshot) holds about 150 bytes per site
    /// more; writing it as a dump, about 25; `alloc_track::dump` peaks at
    /// about 190 in all.
    ///
    /// ```
    /// use std::alloc::System;
    /// #[global_allocator]
    /// static GLOBAL: alloc_track::Tracker<System> =
    ///     alloc_track::Tracker::new(System).max_sites(100_000);
    /// # fn main() {}
    /// ```
    pub const fn max_sites(mut self, max_sites: u32) -> Self {
        self.config.max_sites = if max_sites > MAX_SITES {
            MAX_SITES
        } else {
            max_sites
        };
        self
    }

    /// How far live bytes must climb above the last recorded breakdown of
    /// the peak, in thousandths, before a new breakdown is taken (default
    /// 20, i.e. 2%; never less than 64 KiB). Each breakdown copies every
    /// site's live figures, so the margin bounds their number; the
    /// breakdown then describes a moment within the margin of the exact
    /// peak. 0 refreshes it at every new high beyond 64 KiB.
    pub const fn peak_margin_permille(mut self, permille: u32) -> Self {
        self.config.peak_margin_permille = permille;
        self
    }

    /// The wrapped allocator.
    pub const fn inner(&self) -> &A {
        &self.inner
    }
}

// SAFETY: every method forwards the caller's arguments unchanged to the
// inner allocator, which upholds `GlobalAlloc`'s contract, and returns its
// result unchanged; the bookkeeping around the calls never touches the
// memory handed out.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Tracker<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller guarantees `layout` is valid and non-zero in
        // size, as `GlobalAlloc::alloc` requires.
        let ptr = unsafe { self.inner.alloc(layout) };
        if !ptr.is_null() {
            record::on_alloc(ptr, layout.size(), &self.config);
        }
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        let ptr = unsafe { self.inner.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record::on_alloc(ptr, layout.size(), &self.config);
        }
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Forget the block before it is freed: once freed, another thread
        // may be handed the same address.
        record::on_free(ptr, layout.size(), &self.config);
        // SAFETY: the caller guarantees `ptr` came from this allocator
        // (hence from `inner`) with this `layout`.
        unsafe { self.inner.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if record::reserve_unrecorded_realloc(ptr, layout.size(), new_size) {
            // The partial modes' common case: nothing to take out first.
            // SAFETY: the caller guarantees `ptr` came from this allocator
            // with `layout`, and that `new_size` is valid for its alignment.
            let new_ptr = unsafe { self.inner.realloc(ptr, layout, new_size) };
            record::finish_unrecorded_realloc(layout.size(), new_ptr, new_size);
            return new_ptr;
        }
        // SAFETY: the caller's guarantees, passed on unchanged.
        unsafe { self.realloc_slow(ptr, layout, new_size) }
    }
}

impl<A: GlobalAlloc> Tracker<A> {
    /// A realloc the fast path declined: full mode, a block with a record,
    /// or a thread whose budgets are closed. Kept out of line so that the
    /// fast path's caller saves no registers for it.
    ///
    /// # Safety
    /// As [`GlobalAlloc::realloc`].
    #[inline(never)]
    unsafe fn realloc_slow(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = record::take_for_realloc(ptr, &self.config);
        // SAFETY: the caller guarantees `ptr` came from this allocator with
        // `layout`, and that `new_size` is valid for `layout.align()`.
        let new_ptr = unsafe { self.inner.realloc(ptr, layout, new_size) };
        record::finish_realloc(ptr, layout.size(), old, new_ptr, new_size, &self.config);
        new_ptr
    }
}
