//! Memory for the tracker's hash tables, in 2 MiB chunks that the kernel
//! may back with huge pages.
//!
//! Why: the live table is read at random, one line per allocation and per
//! free, and on a heap of a few hundred thousand blocks it spans megabytes;
//! so do the per-thread stack caches and the site records (`stacks.rs`),
//! which take their memory here too. In 4 KiB pages most of those reads
//! also missed the TLB. Backed by 2 MiB pages (`MADV_HUGEPAGE`, which
//! Linux honours when transparent huge pages are `always` or `madvise`,
//! the common defaults), full mode on the benchmark's real-crates workload
//! went from 2.13x to 1.97x of System's time on one thread, and from 2.50x
//! to 2.02x on two (`docs/performance.md`).
//!
//! A huge page needs a 2 MiB-aligned range of one mapping, and a table is
//! often smaller than that: the live table has 128 shards, each its own
//! table. So tables below 2 MiB share chunks, carved up as a buddy
//! allocator: every table's size is a power of two of at least a page, so
//! a chunk splits into halves, quarters and so on, down to one page, and
//! a freed block merges with its free buddy back up to the whole chunk.
//! Freed blocks keep their pages, counted in [`idle_bytes`], until they
//! exceed 8 MiB and a quarter of the tables in use; then the arena purges:
//! wholly free chunks go back to the kernel, and free blocks of 64 KiB or
//! more give their pages back (`MADV_DONTNEED`). So a table sized for an
//! earlier peak does not keep its memory, and the tables' doubling and
//! halving does not split huge pages and fault them in again at every
//! resize (that cost half the gain). Tables of 2 MiB and more get aligned
//! mappings of their own.
//!
//! Sizes that are not a power of two of at least a page, and every size
//! off Linux (no `MADV_HUGEPAGE`), go to `pages.rs` directly.
//!
//! The arena's lock is taken while a table lock is held (a table resizes
//! under its owner's lock), never the other way round, and nothing waits
//! for another lock while holding it: the fork handlers take it last.

#[cfg(all(target_os = "linux", not(miri)))]
mod arena {
    use std::ptr;

    use super::super::pages::{self, PAGE};
    use super::super::spin::SpinLock;

    /// The size and alignment of a chunk: one huge page on x86-64 and
    /// (with 4 KiB base pages) on aarch64.
    pub(super) const CHUNK: usize = 2 << 20;
    /// The smallest block: one page.
    const MIN_BLOCK: usize = PAGE;
    const BLOCKS: usize = CHUNK / MIN_BLOCK;
    /// A block of order `k` is `MIN_BLOCK << k` bytes; the whole chunk is
    /// this order.
    const CHUNK_ORDER: u8 = BLOCKS.trailing_zeros() as u8;
    /// Free blocks from this order up (64 KiB) give their pages back when
    /// the arena purges.
    const RELEASE_ORDER: u8 = 4;
    /// The arena purges when the free blocks that keep their pages exceed
    /// both this and a quarter of the tables' memory.
    const PURGE_FLOOR: usize = 8 << 20;
    /// In [`Chunk::free`]: no free block starts at this page.
    const NOT_FREE: u8 = u8::MAX;
    /// In [`Chunk::free`], beside a free block's order: its pages were
    /// given back (and read as zero).
    const RELEASED: u8 = 0x80;
    /// In [`Chunk::free`], beside a free block's order: it holds zeros
    /// (never used, or given back), so taking it needs no clearing.
    const CLEAN: u8 = 0x40;
    const FLAGS: u8 = RELEASED | CLEAN;

    /// One 2 MiB chunk: where it is, and which of its pages start a free
    /// block: its order and flags.
    struct Chunk {
        base: usize,
        free: [u8; BLOCKS],
    }

    /// The order of a free block's entry, or `None` for `NOT_FREE`.
    fn order_of_entry(entry: u8) -> Option<u8> {
        (entry != NOT_FREE).then_some(entry & !FLAGS)
    }

    /// The chunks, in an array mapped from the kernel and doubled as it
    /// fills, and what they hold free. Finding a free block scans the
    /// array: tables are allocated only when they resize, and even a
    /// gigabyte of tables is only 512 chunks.
    struct Arena {
        chunks: *mut Chunk,
        len: usize,
        capacity: usize,
        /// Free blocks of each order.
        free_blocks: [usize; CHUNK_ORDER as usize + 1],
        /// Bytes in free blocks.
        free_bytes: usize,
        /// Bytes in free blocks that keep their pages (not given back, or
        /// merged with such a block: an overestimate).
        idle_bytes: usize,
    }

    // SAFETY: the arena owns its chunk array; the lock hands it to one
    // thread at a time.
    unsafe impl Send for Arena {}

    static ARENA: SpinLock<Arena> = SpinLock::new(Arena::new());

    impl Arena {
        const fn new() -> Self {
            Arena {
                chunks: ptr::null_mut(),
                len: 0,
                capacity: 0,
                free_blocks: [0; CHUNK_ORDER as usize + 1],
                free_bytes: 0,
                idle_bytes: 0,
            }
        }

        fn chunks(&mut self) -> &mut [Chunk] {
            if self.chunks.is_null() {
                return &mut [];
            }
            // SAFETY: `chunks` holds `capacity` chunks, of which the first
            // `len` are set, and only the lock's holder reaches them.
            unsafe { std::slice::from_raw_parts_mut(self.chunks, self.len) }
        }

        /// Marks a free block at `page` of chunk `c`, and counts it.
        fn mark_free(&mut self, c: usize, page: usize, entry: u8) {
            let bytes = MIN_BLOCK << (entry & !FLAGS);
            self.chunks()[c].free[page] = entry;
            self.free_blocks[usize::from(entry & !FLAGS)] += 1;
            self.free_bytes += bytes;
            if entry & RELEASED == 0 {
                self.idle_bytes += bytes;
            }
        }

        /// Unmarks the free block at `page` of chunk `c`; its entry.
        fn unmark_free(&mut self, c: usize, page: usize) -> u8 {
            let entry = std::mem::replace(&mut self.chunks()[c].free[page], NOT_FREE);
            let bytes = MIN_BLOCK << (entry & !FLAGS);
            self.free_blocks[usize::from(entry & !FLAGS)] -= 1;
            self.free_bytes -= bytes;
            if entry & RELEASED == 0 {
                self.idle_bytes -= bytes;
            }
            entry
        }

        /// A free block of `order` taken out of the chunks, split from the
        /// smallest larger one if need be, from a new chunk if none has
        /// room; and whether it holds zeros already.
        fn take(&mut self, order: u8) -> Option<(usize, bool)> {
            let smallest = (order..=CHUNK_ORDER).find(|&k| self.free_blocks[usize::from(k)] > 0);
            let (c, page) = match smallest {
                Some(k) => self.find_free(k)?,
                None => (self.add_chunk()?, 0),
            };
            let entry = self.unmark_free(c, page);
            // Split: the upper halves stay free, with the whole's flags.
            let mut free = entry & !FLAGS;
            while free > order {
                free -= 1;
                self.mark_free(c, page + (1 << free), free | (entry & FLAGS));
            }
            Some((self.chunks()[c].base + page * MIN_BLOCK, entry & CLEAN != 0))
        }

        /// The chunk and page of a free block of `order` (which the counts
        /// say exists).
        fn find_free(&mut self, order: u8) -> Option<(usize, usize)> {
            self.chunks().iter().enumerate().find_map(|(c, chunk)| {
                let page =
                    (chunk.free.iter()).position(|&entry| order_of_entry(entry) == Some(order))?;
                Some((c, page))
            })
        }

        /// Maps a new chunk, wholly free and clean; its index. Its free
        /// pages count as idle though none is touched yet: with huge pages,
        /// the first touch brings in the whole chunk.
        fn add_chunk(&mut self) -> Option<usize> {
            if self.len == self.capacity && !self.grow() {
                return None;
            }
            let base = map_aligned(CHUNK)?;
            // SAFETY: `len < capacity` (grown above), and the slot is
            // written before `len` counts it.
            unsafe {
                (self.chunks.add(self.len)).write(Chunk {
                    base,
                    free: [NOT_FREE; BLOCKS],
                })
            };
            self.len += 1;
            self.mark_free(self.len - 1, 0, CHUNK_ORDER | CLEAN);
            Some(self.len - 1)
        }

        /// Doubles the chunk array; false without memory.
        fn grow(&mut self) -> bool {
            let capacity = (self.capacity * 2).max(PAGE / size_of::<Chunk>());
            let chunks = pages::alloc_zeroed(capacity * size_of::<Chunk>()).cast::<Chunk>();
            if chunks.is_null() {
                return false;
            }
            if !self.chunks.is_null() {
                // SAFETY: both arrays hold at least `len` chunks and do not
                // overlap; the old one came from `pages` with this size.
                unsafe {
                    ptr::copy_nonoverlapping(self.chunks, chunks, self.len);
                    pages::free(self.chunks.cast(), self.capacity * size_of::<Chunk>());
                }
            }
            self.chunks = chunks;
            self.capacity = capacity;
            true
        }

        /// Gives back the block of `order` at `address`, merged with its
        /// free buddies. The merged block keeps its pages (some of them
        /// were in use until now), even a whole chunk, until the arena
        /// purges: a table that halves soon doubles again, and a huge page
        /// faulted in anew is cleared anew.
        fn give_back(&mut self, address: usize, mut order: u8) {
            let Some(c) = (self.chunks().iter())
                .position(|chunk| (chunk.base..chunk.base + CHUNK).contains(&address))
            else {
                return; // not ours: never happens, and leaking is harmless
            };
            let base = self.chunks()[c].base;
            let mut page = (address - base) / MIN_BLOCK;
            while order < CHUNK_ORDER {
                let buddy = page ^ (1 << order);
                if order_of_entry(self.chunks()[c].free[buddy]) != Some(order) {
                    break;
                }
                self.unmark_free(c, buddy);
                page = page.min(buddy);
                order += 1;
            }
            self.mark_free(c, page, order);
            self.purge_if_idle();
        }

        /// When the free blocks that keep their pages outgrow
        /// [`PURGE_FLOOR`] and a quarter of the tables in use: unmaps the
        /// wholly free chunks, and gives back the pages of the other free
        /// blocks of 64 KiB and more. Not at every free: a block given back
        /// splits its huge page, and the tables, which double and halve,
        /// soon take most freed blocks again.
        fn purge_if_idle(&mut self) {
            let in_use = self.len * CHUNK - self.free_bytes;
            if self.idle_bytes > PURGE_FLOOR.max(in_use / 4) {
                self.purge();
            }
        }

        fn purge(&mut self) {
            let mut c = 0;
            while c < self.len {
                if order_of_entry(self.chunks()[c].free[0]) == Some(CHUNK_ORDER) {
                    self.unmark_free(c, 0);
                    unmap(self.chunks()[c].base, CHUNK);
                    let last = self.len - 1;
                    self.chunks().swap(c, last);
                    self.len = last;
                    continue;
                }
                for page in 0..BLOCKS {
                    let entry = self.chunks()[c].free[page];
                    if entry == NOT_FREE || entry & RELEASED != 0 || entry & !FLAGS < RELEASE_ORDER
                    {
                        continue;
                    }
                    let start = self.chunks()[c].base + page * MIN_BLOCK;
                    // The block is aligned to its size, 64 KiB or more: a
                    // whole number of pages even where they are 16 or 64
                    // KiB, so no neighbour's page is cleared with it.
                    // SAFETY: the range is a free block of our own mapping:
                    // nothing reads it until it is taken again.
                    let status = unsafe {
                        libc::madvise(
                            start as *mut _,
                            MIN_BLOCK << (entry & !FLAGS),
                            libc::MADV_DONTNEED,
                        )
                    };
                    if status != 0 {
                        continue; // kept, and not known to be zero
                    }
                    self.unmark_free(c, page);
                    self.mark_free(c, page, entry | RELEASED | CLEAN);
                }
                c += 1;
            }
        }
    }

    /// `bytes` (a multiple of [`CHUNK`]) of zeroed memory aligned to a
    /// chunk, advised for huge pages; null without memory.
    pub(super) fn map_aligned(bytes: usize) -> Option<usize> {
        let mapped = pages::alloc_zeroed(bytes.checked_add(CHUNK)?) as usize;
        if mapped == 0 {
            return None;
        }
        let start = mapped.next_multiple_of(CHUNK);
        // Trim the slack on both sides: what is left is one aligned
        // mapping of `bytes`.
        if start > mapped {
            unmap(mapped, start - mapped);
        }
        let tail = mapped + bytes + CHUNK - (start + bytes);
        if tail > 0 {
            unmap(start + bytes, tail);
        }
        // SAFETY: advice on our own fresh mapping. Refused (THP disabled,
        // an old kernel), the memory simply stays in small pages.
        unsafe { libc::madvise(start as *mut _, bytes, libc::MADV_HUGEPAGE) };
        Some(start)
    }

    /// Unmaps part or all of a mapping from [`map_aligned`].
    pub(super) fn unmap(start: usize, bytes: usize) {
        // SAFETY: the callers pass whole pages of our own mappings that
        // nothing uses any more.
        unsafe { libc::munmap(start as *mut _, bytes) };
    }

    pub(super) fn alloc_zeroed(bytes: usize) -> *mut u8 {
        let Some((address, clean)) = ARENA.lock().take(order_of(bytes)) else {
            return ptr::null_mut();
        };
        let block = address as *mut u8;
        if !clean {
            // A reused block holds an old table. Cleared with the lock
            // released: the block is the caller's now.
            // SAFETY: the block is `bytes` of our own mapping, given to no
            // one else.
            unsafe { ptr::write_bytes(block, 0, bytes) };
        }
        block
    }

    /// # Safety
    /// As [`super::free`].
    pub(super) unsafe fn free(memory: *mut u8, bytes: usize) {
        ARENA.lock().give_back(memory as usize, order_of(bytes));
    }

    pub(super) fn idle_bytes() -> usize {
        ARENA.lock().idle_bytes
    }

    pub(super) fn lock_for_fork() {
        std::mem::forget(ARENA.lock());
    }

    /// # Safety
    /// As [`super::unlock_after_fork`].
    pub(super) unsafe fn unlock_after_fork() {
        // SAFETY: the caller's contract.
        unsafe { ARENA.force_unlock() };
    }

    /// Whether the arena carves `bytes` from chunks.
    pub(super) fn carves(bytes: usize) -> bool {
        bytes.is_power_of_two() && (MIN_BLOCK..CHUNK).contains(&bytes)
    }

    fn order_of(bytes: usize) -> u8 {
        (bytes / MIN_BLOCK).trailing_zeros() as u8
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn new_arena() -> Arena {
            Arena::new()
        }

        /// Takes a block and fills it with `fill`, checking that a block
        /// said to be clean reads as zeros.
        fn take(arena: &mut Arena, bytes: usize, fill: u8) -> usize {
            let (address, clean) = arena.take(order_of(bytes)).expect("memory");
            check(arena);
            assert!(
                !clean || holds(address, bytes, 0),
                "a clean block holds zeros"
            );
            assert_eq!(address % bytes, 0, "a block is aligned to its size");
            // SAFETY: the block is `bytes` of the arena's memory, this
            // test's alone.
            unsafe { ptr::write_bytes(address as *mut u8, fill, bytes) };
            address
        }

        /// The arena's counts agree with its chunks' entries.
        fn check(arena: &mut Arena) {
            let mut blocks = [0; CHUNK_ORDER as usize + 1];
            let (mut free, mut idle) = (0, 0);
            for chunk in arena.chunks().iter() {
                for &entry in &chunk.free {
                    if let Some(order) = order_of_entry(entry) {
                        blocks[usize::from(order)] += 1;
                        free += MIN_BLOCK << order;
                        if entry & RELEASED == 0 {
                            idle += MIN_BLOCK << order;
                        }
                    }
                }
            }
            assert_eq!(blocks, arena.free_blocks);
            assert_eq!((free, idle), (arena.free_bytes, arena.idle_bytes));
        }

        fn holds(address: usize, bytes: usize, fill: u8) -> bool {
            // SAFETY: as in `take`.
            let memory = unsafe { std::slice::from_raw_parts(address as *const u8, bytes) };
            memory.iter().all(|&b| b == fill)
        }

        #[test]
        fn blocks_are_disjoint_and_merge_back_into_returned_chunks() {
            let mut arena = new_arena();
            let sizes = [PAGE, 4 * PAGE, 64 * 1024, 1 << 20, PAGE, 2 * PAGE, 1 << 20];
            let blocks: Vec<(usize, usize)> = (sizes.iter().enumerate())
                .map(|(i, &bytes)| (take(&mut arena, bytes, i as u8 + 1), bytes))
                .collect();
            for (i, &(address, bytes)) in blocks.iter().enumerate() {
                assert!(holds(address, bytes, i as u8 + 1), "block {i} overwritten");
            }
            // 2 MiB + 200 KiB asked for: two chunks, no more.
            assert_eq!(arena.len, 2);
            for &(address, bytes) in blocks.iter().rev() {
                arena.give_back(address, order_of(bytes));
                check(&mut arena);
            }
            // Free buddies merged into whole chunks, kept until a purge.
            assert_eq!(arena.free_blocks[usize::from(CHUNK_ORDER)], 2);
            assert_eq!((arena.free_bytes, arena.idle_bytes), (2 * CHUNK, 2 * CHUNK));
            arena.purge();
            assert_eq!(arena.len, 0, "a purge unmaps the free chunks");
            assert_eq!((arena.free_bytes, arena.idle_bytes), (0, 0));
        }

        #[test]
        fn free_blocks_keep_their_pages_and_count_as_idle() {
            let mut arena = new_arena();
            let a = take(&mut arena, PAGE, 1);
            let b = take(&mut arena, PAGE, 2);
            assert_eq!(
                (arena.free_bytes, arena.idle_bytes),
                (CHUNK - 2 * PAGE, CHUNK - 2 * PAGE)
            );
            arena.give_back(a, 0);
            assert_eq!(arena.idle_bytes, CHUNK - PAGE);
            // Kept, not given back: the page still holds its fill.
            assert!(holds(a, PAGE, 1));
            let c = take(&mut arena, PAGE, 3);
            assert_eq!(c, a, "the free page is used first");
            arena.give_back(b, 0);
            arena.give_back(c, 0);
            // A wholly free chunk stays mapped, below the purge floor.
            assert_eq!((arena.len, arena.idle_bytes), (1, CHUNK));
            let d = take(&mut arena, PAGE, 4);
            assert_eq!(d, a);
            arena.give_back(d, 0);
            check(&mut arena);
        }

        #[test]
        fn idle_blocks_give_their_pages_back_past_the_purge_floor() {
            let mut arena = new_arena();
            let blocks: Vec<usize> = (0..20)
                .map(|i| take(&mut arena, 1 << 20, i as u8 + 1))
                .collect();
            assert_eq!(arena.len, 10);
            // One block of each chunk back: the chunks stay, half free.
            let freed: Vec<usize> = blocks.iter().copied().step_by(2).collect();
            let mut kept = 0;
            for &address in &freed {
                arena.give_back(address, order_of(1 << 20));
                kept += 1 << 20;
                if kept > PURGE_FLOOR {
                    kept = 0; // purged, every free block of them
                }
                assert_eq!(arena.idle_bytes, kept);
                check(&mut arena);
            }
            assert_eq!(arena.free_bytes, 10 << 20);
            let purged = PURGE_FLOOR / (1 << 20) + 1;
            for &address in &freed[..purged] {
                assert!(holds(address, 1 << 20, 0), "given back: zero");
            }
            for &address in &freed[purged..] {
                assert!(!holds(address, 1 << 20, 0), "not given back yet");
            }
            // Taken again, split and merged, the released blocks work.
            let again = take(&mut arena, 1 << 19, 7);
            assert!(freed.contains(&(again & !((1 << 20) - 1))));
            arena.give_back(again, order_of(1 << 19));
            for &address in blocks.iter().skip(1).step_by(2) {
                arena.give_back(address, order_of(1 << 20));
                check(&mut arena);
            }
            arena.purge();
            assert_eq!(arena.len, 0);
        }

        #[test]
        fn the_chunk_array_grows_past_one_page() {
            let mut arena = new_arena();
            let count = PAGE / size_of::<Chunk>() + 2;
            let blocks: Vec<usize> = (0..count)
                .map(|i| take(&mut arena, 1 << 20, i as u8))
                .collect();
            // Two megabyte blocks to a chunk.
            assert_eq!(arena.len, count.div_ceil(2));
            for (i, &address) in blocks.iter().enumerate() {
                assert!(holds(address, 1 << 20, i as u8));
                arena.give_back(address, order_of(1 << 20));
            }
            arena.purge();
            assert_eq!(arena.len, 0);
        }
    }
}

use super::pages;

/// `bytes` of zeroed memory for a table, or null.
pub(crate) fn alloc_zeroed(bytes: usize) -> *mut u8 {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        if arena::carves(bytes) {
            return arena::alloc_zeroed(bytes);
        }
        if bytes.is_power_of_two() && bytes >= arena::CHUNK {
            return arena::map_aligned(bytes).map_or(std::ptr::null_mut(), |a| a as *mut u8);
        }
    }
    pages::alloc_zeroed(bytes)
}

/// Gives back memory from [`alloc_zeroed`].
///
/// # Safety
/// `memory` came from `alloc_zeroed(bytes)` with the same `bytes`, and is
/// not used afterwards.
pub(crate) unsafe fn free(memory: *mut u8, bytes: usize) {
    #[cfg(all(target_os = "linux", not(miri)))]
    {
        if arena::carves(bytes) {
            // SAFETY: the caller's contract.
            return unsafe { arena::free(memory, bytes) };
        }
        if bytes.is_power_of_two() && bytes >= arena::CHUNK {
            return arena::unmap(memory as usize, bytes);
        }
    }
    // SAFETY: the caller's contract; `alloc_zeroed` sent this size to
    // `pages` too.
    unsafe { pages::free(memory, bytes) }
}

/// Bytes the chunks hold in free blocks that keep their pages: part of
/// the tracker's overhead, though no table uses them.
pub(crate) fn idle_bytes() -> usize {
    #[cfg(all(target_os = "linux", not(miri)))]
    return arena::idle_bytes();
    #[cfg(not(all(target_os = "linux", not(miri))))]
    0
}

/// Takes the arena's lock and keeps it: the fork handlers' prepare step,
/// after every table lock.
#[cfg(unix)]
pub(crate) fn lock_for_fork() {
    #[cfg(all(target_os = "linux", not(miri)))]
    arena::lock_for_fork();
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// Only after `lock_for_fork` on this thread (or, in a forked child, its
/// copy).
#[cfg(unix)]
pub(crate) unsafe fn unlock_after_fork() {
    #[cfg(all(target_os = "linux", not(miri)))]
    // SAFETY: the caller's contract.
    unsafe {
        arena::unlock_after_fork()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_comes_zeroed_even_when_reused() {
        // The shared arena: other tests' tables may take blocks meanwhile,
        // so this checks contents, not addresses. A size freed and asked
        // for again is most often the same, dirty, block.
        let sizes = [pages::PAGE, 8 * pages::PAGE, 3 * pages::PAGE, 4 << 20];
        // Miri has no arena (and checks every byte slowly).
        let sizes = if cfg!(miri) { &sizes[..3] } else { &sizes[..] };
        for &bytes in sizes {
            for round in 0..3u8 {
                let block = alloc_zeroed(bytes);
                assert!(!block.is_null());
                // SAFETY: `bytes` of memory this test owns until the free.
                let memory = unsafe { std::slice::from_raw_parts_mut(block, bytes) };
                assert!(
                    memory.iter().all(|&b| b == 0),
                    "{bytes} bytes, round {round}"
                );
                memory.fill(round + 1);
                // SAFETY: from `alloc_zeroed(bytes)`, freed once.
                unsafe { free(block, bytes) };
            }
        }
    }
}
