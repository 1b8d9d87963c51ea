//! An inner allocator that fails every allocation of a thread on demand,
//! to check what the tracker does when the allocator it wraps returns
//! null.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// `System`, except that every allocation and realloc of a thread fails
/// while [`fail`] is set on it.
pub struct FailOnDemand;

thread_local! {
    static FAIL: Cell<bool> = const { Cell::new(false) };
}

/// Makes this thread's allocations fail (`true`) or succeed again.
pub fn fail(failing: bool) {
    FAIL.with(|f| f.set(failing));
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
