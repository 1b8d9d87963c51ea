//! When the inner allocator fails, the tracker returns its null unchanged
//! and counts nothing, so the program's own out-of-memory handling runs
//! and the figures stay true.

use std::alloc::Layout;
use std::hint::black_box;

use alloc_track::{measure, Tracker};

mod common;

use common::fail_on_demand::{self, FailOnDemand};

#[global_allocator]
static GLOBAL: Tracker<FailOnDemand> = Tracker::new(FailOnDemand);

#[test]
fn failed_allocations_return_null_and_count_nothing() {
    let layout = Layout::from_size_align(1024, 16).unwrap();
    let (_, diff) = measure(|| {
        fail_on_demand::fail(true);
        // `black_box`: the compiler may assume an allocation whose pointer
        // is only compared with null succeeds, and leave it out.
        // SAFETY: the layout is non-zero in size.
        let ptr = black_box(unsafe { std::alloc::alloc(layout) });
        // SAFETY: as above.
        let zeroed = black_box(unsafe { std::alloc::alloc_zeroed(layout) });
        fail_on_demand::fail(false);
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
        fail_on_demand::fail(true);
        // SAFETY: `ptr` is live with `layout`.
        let grown = unsafe { std::alloc::realloc(ptr, layout, 1 << 20) };
        fail_on_demand::fail(false);
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
        fail_on_demand::fail(true);
        let result = buffer.try_reserve(4096);
        fail_on_demand::fail(false);
        black_box(result.is_err())
    });
    assert!(result, "try_reserve must see the failure");
    assert_eq!(diff.total_blocks(), 0, "{diff}");
}
