//! The buddy allocator of 2 MiB chunks behind `table_memory.rs` (Linux
//! only: elsewhere there is no `MADV_HUGEPAGE`, and the tables take pages
//! straight from `pages.rs`).

use std::ptr;

use super::super::pages::{self, PAGE};
use super::super::spin::SpinLock;

/// The size and alignment of a chunk: one huge page on x86-64 and
/// (with 4 KiB base pages) on aarch64.
const CHUNK: usize = 2 << 20;
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
    /// Its free blocks of each order, so that finding one skips the
    /// chunks without any instead of reading their entries: the arena's
    /// lock is held meanwhile, and every thread takes it at its start and
    /// exit (its stack cache).
    free_blocks: [u16; ORDERS],
}

/// Block orders, from one page to the whole chunk.
const ORDERS: usize = CHUNK_ORDER as usize + 1;

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
    free_blocks: [usize; ORDERS],
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
            free_blocks: [0; ORDERS],
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
        let chunk = &mut self.chunks()[c];
        chunk.free[page] = entry;
        chunk.free_blocks[usize::from(entry & !FLAGS)] += 1;
        self.free_blocks[usize::from(entry & !FLAGS)] += 1;
        self.free_bytes += bytes;
        if entry & RELEASED == 0 {
            self.idle_bytes += bytes;
        }
    }

    /// Unmarks the free block at `page` of chunk `c`; its entry.
    fn unmark_free(&mut self, c: usize, page: usize) -> u8 {
        let chunk = &mut self.chunks()[c];
        let entry = std::mem::replace(&mut chunk.free[page], NOT_FREE);
        chunk.free_blocks[usize::from(entry & !FLAGS)] -= 1;
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
        let chunks = self.chunks();
        let c = (chunks.iter()).position(|chunk| chunk.free_blocks[usize::from(order)] > 0)?;
        let page =
            (chunks[c].free.iter()).position(|&entry| order_of_entry(entry) == Some(order))?;
        Some((c, page))
    }

    /// Maps a new chunk, wholly free and clean; its index.
    ///
    /// The first chunk is not advised for huge pages: a small program's
    /// tables fit in it (the live table's 128 first tables take 512 KiB),
    /// and a huge page would make all 2 MiB resident for them (+1.3 MiB of
    /// RSS on the `leaky_worker` example); in 2 MiB the TLB misses little.
    /// The chunks after it are, and their free pages count as idle though
    /// none is touched yet: the first touch brings in the whole chunk.
    fn add_chunk(&mut self) -> Option<usize> {
        if self.len == self.capacity && !self.grow() {
            return None;
        }
        let huge = self.len > 0;
        let base = map_aligned(CHUNK, huge)?;
        // SAFETY: `len < capacity` (grown above), and the slot is
        // written before `len` counts it.
        unsafe {
            (self.chunks.add(self.len)).write(Chunk {
                base,
                free: [NOT_FREE; BLOCKS],
                free_blocks: [0; ORDERS],
            })
        };
        self.len += 1;
        // Untouched small pages are not resident: released, as it were.
        let resident = if huge { 0 } else { RELEASED };
        self.mark_free(self.len - 1, 0, CHUNK_ORDER | CLEAN | resident);
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
                if entry == NOT_FREE || entry & RELEASED != 0 || entry & !FLAGS < RELEASE_ORDER {
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
/// chunk, advised for huge pages if `huge`; null without memory.
pub(super) fn map_aligned(bytes: usize, huge: bool) -> Option<usize> {
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
    if huge {
        // SAFETY: advice on our own fresh mapping. Refused (THP disabled,
        // an old kernel), the memory simply stays in small pages.
        unsafe { libc::madvise(start as *mut _, bytes, libc::MADV_HUGEPAGE) };
    }
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

/// Where a table of `bytes` takes its memory; the same answer at its
/// allocation and at its free.
pub(super) enum Route {
    /// A block carved from a chunk: a power of two below a chunk.
    Carved,
    /// An aligned mapping of its own, advised for huge pages: a power of
    /// two of a chunk or more.
    OwnMapping,
    /// Pages as they come (`pages.rs`): any other size.
    Pages,
}

pub(super) fn route(bytes: usize) -> Route {
    match bytes {
        _ if !bytes.is_power_of_two() || bytes < MIN_BLOCK => Route::Pages,
        _ if bytes < CHUNK => Route::Carved,
        _ => Route::OwnMapping,
    }
}

fn order_of(bytes: usize) -> u8 {
    (bytes / MIN_BLOCK).trailing_zeros() as u8
}

#[cfg(test)]
mod tests;
