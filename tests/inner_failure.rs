//! When the inner allocator fails, the tracker returns its null unchanged
//! and counts nothing, so the program's own out-of-memory handling runs
//! and the figures stay true.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;

use alloc_track::{measure, Tracker};

/// Fails every allocation of this thread while `FAIL` is set.
struct FailOnDemand;

thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

fn failing() -> bool {
    FAIL.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards to System, or returns null, which GlobalAlloc allows.
unsafe impl GlobalAlloc for FailOnDemand {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if failing() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if failing() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if failing() {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Tracker<FailOnDemand> = Tracker::new(FailOnDemand);

#[test]
fn failed_allocations_return_null_and_count_nothing() {
    let layout = Layout::from_size_align(1024, 16).unwrap();
    let (_, diff) = measure(|| {
        FAIL.with(|f| f.set(true));
        // SAFETY: the layout is non-zero in size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        // SAFETY: as above.
        let zeroed = unsafe { std::alloc::alloc_zeroed(layout) };
        FAIL.with(|f| f.set(false));
        assert!(ptr.is_null() && zeroed.is_null());
    });
    assert_eq!(diff.total_blocks(), 0, "{diff}");
    assert_eq!(diff.live_bytes(), 0, "{diff}");
}

#[test]
fn a_failed_realloc_keeps_the_old_block_counted() {
    let layout = Layout::from_size_align(64, 8).unwrap();
    let (ptr, allocated) = measure(|| {
        // SAFETY: non-zero size.
        unsafe { std::alloc::alloc(layout) }
    });
    assert_eq!(allocated.live_bytes(), 64);
    let (_, failed) = measure(|| {
        FAIL.with(|f| f.set(true));
        // SAFETY: `ptr` is live with `layout`.
        let grown = unsafe { std::alloc::realloc(ptr, layout, 1 << 20) };
        FAIL.with(|f| f.set(false));
        assert!(grown.is_null());
    });
    assert_eq!(
        (failed.total_blocks(), failed.live_bytes()),
        (0, 0),
        "{failed}"
    );
    // The old block is still tracked: freeing it counts.
    let (_, freed) = measure(|| {
        // SAFETY: the failed realloc left `ptr` live with `layout`.
        unsafe { std::alloc::dealloc(ptr, layout) }
    });
    assert_eq!(
        (freed.live_blocks(), freed.live_bytes()),
        (-1, -64),
        "{freed}"
    );
}

#[test]
fn out_of_memory_in_a_collection_reaches_the_programs_handler() {
    let (result, diff) = measure(|| {
        let mut buffer: Vec<u8> = Vec::new();
        FAIL.with(|f| f.set(true));
        let result = buffer.try_reserve(4096);
        FAIL.with(|f| f.set(false));
        black_box(result.is_err())
    });
    assert!(result, "try_reserve must see the failure");
    assert_eq!(diff.total_blocks(), 0, "{diff}");
}
