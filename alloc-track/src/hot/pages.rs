//! Memory for the tracker's own tables, straight from the kernel and apart
//! from the program's heap.
//!
//! Taking it from `System` (malloc) put the tracker's tables among the
//! program's own blocks: they changed how the allocator packed and
//! consolidated the program's heap, which on an allocation-heavy workload
//! cost more than the tracker's own work, and they blurred the heap-versus-
//! RSS picture the tracker exists to show. Anonymous mappings keep the two
//! apart, come zeroed, and are inherited by a forked child like any memory.
//! A system call per table growth is cheap: tables grow by doubling.

use std::ptr;

/// The granularity of the kernel's mappings, assumed for rounding. A
/// larger real page size only means the kernel rounds further.
pub(crate) const PAGE: usize = 4096;

/// Rounds `bytes` up to whole pages.
pub(crate) fn round_up(bytes: usize) -> usize {
    bytes.div_ceil(PAGE).saturating_mul(PAGE)
}

/// `bytes` (rounded up to pages) of zeroed memory, or null.
#[cfg(unix)]
pub(crate) fn alloc_zeroed(bytes: usize) -> *mut u8 {
    if bytes == 0 {
        return ptr::null_mut();
    }
    // SAFETY: an anonymous private mapping at an address of the kernel's
    // choosing touches no existing memory.
    let mapped = unsafe {
        libc::mmap(
            ptr::null_mut(),
            round_up(bytes),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        ptr::null_mut()
    } else {
        mapped.cast()
    }
}

/// Gives back memory from [`alloc_zeroed`].
///
/// # Safety
/// `memory` came from `alloc_zeroed(bytes)` with the same `bytes`, and is
/// not used afterwards.
#[cfg(unix)]
pub(crate) unsafe fn free(memory: *mut u8, bytes: usize) {
    // SAFETY: the caller's contract: this is exactly one whole mapping.
    unsafe { libc::munmap(memory.cast(), round_up(bytes)) };
}

#[cfg(not(unix))]
pub(crate) fn alloc_zeroed(bytes: usize) -> *mut u8 {
    use std::alloc::{GlobalAlloc, Layout, System};
    match Layout::from_size_align(round_up(bytes), PAGE) {
        // SAFETY: the layout is non-zero in size (bytes > 0 rounds up).
        Ok(layout) if bytes > 0 => unsafe { System.alloc_zeroed(layout) },
        _ => ptr::null_mut(),
    }
}

/// Gives back memory from [`alloc_zeroed`].
///
/// # Safety
/// As on Unix.
#[cfg(not(unix))]
pub(crate) unsafe fn free(memory: *mut u8, bytes: usize) {
    use std::alloc::{GlobalAlloc, Layout, System};
    if let Ok(layout) = Layout::from_size_align(round_up(bytes), PAGE) {
        // SAFETY: the caller's contract; the same layout as the allocation.
        unsafe { System.dealloc(memory, layout) };
    }
}

/// A bump allocator for small pieces that live as long as the process
/// (stack frames of interned sites), carved from 16 KiB mappings. Not
/// synchronised: each owner keeps it behind its own lock.
pub(crate) struct Arena {
    next: *mut u8,
    left: usize,
    /// Bytes mapped so far, for the tracker's overhead figure.
    pub(crate) mapped: usize,
}

// SAFETY: the arena owns its mappings; moving it moves that ownership.
unsafe impl Send for Arena {}

const ARENA_CHUNK: usize = 16 * 1024;

impl Arena {
    pub(crate) const fn new() -> Self {
        Arena {
            next: ptr::null_mut(),
            left: 0,
            mapped: 0,
        }
    }

    /// Room for `count` words, or null when the kernel has no memory.
    pub(crate) fn alloc_words(&mut self, count: usize) -> *mut usize {
        let bytes = count.max(1) * std::mem::size_of::<usize>();
        if bytes > self.left {
            let chunk = bytes.max(ARENA_CHUNK);
            let fresh = alloc_zeroed(chunk);
            if fresh.is_null() {
                return ptr::null_mut();
            }
            self.mapped += round_up(chunk);
            self.next = fresh;
            self.left = round_up(chunk);
        }
        let words = self.next.cast::<usize>();
        // SAFETY: `bytes <= left`, so the result stays inside the mapping.
        self.next = unsafe { self.next.add(bytes) };
        self.left -= bytes;
        words
    }
}
