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
//! to 2.02x on two (`docs/performance-history.md`, the fourth session).
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
//! resize (that cost half the gain). The first chunk stays in small
//! pages, so that a small program's tables cost only the pages they touch.
//! Tables of 2 MiB and more get aligned mappings of their own.
//!
//! Sizes that are not a power of two of at least a page, and every size
//! off Linux (no `MADV_HUGEPAGE`), go to `pages.rs` directly.
//!
//! The arena's lock is taken while a table lock is held (a table resizes
//! under its owner's lock), never the other way round, and nothing waits
//! for another lock while holding it: the fork handlers take it last.

#[cfg(all(target_os = "linux", not(miri)))]
mod arena;

use super::pages;

/// `bytes` of zeroed memory for a table, or null.
pub(crate) fn alloc_zeroed(bytes: usize) -> *mut u8 {
    #[cfg(all(target_os = "linux", not(miri)))]
    match arena::route(bytes) {
        arena::Route::Carved => return arena::alloc_zeroed(bytes),
        arena::Route::OwnMapping => {
            return arena::map_aligned(bytes, true).map_or(std::ptr::null_mut(), |a| a as *mut u8)
        }
        arena::Route::Pages => {}
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
    match arena::route(bytes) {
        // SAFETY: the caller's contract.
        arena::Route::Carved => return unsafe { arena::free(memory, bytes) },
        arena::Route::OwnMapping => return arena::unmap(memory as usize, bytes),
        arena::Route::Pages => {}
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
