//! Exact counts on known single-thread workloads: boxes, vectors, realloc
//! (grow and shrink, in place and moved), alloc_zeroed, alignments up to
//! 4096 and zero-sized values. `measure` makes each figure exact for the
//! calling thread whatever the other tests do meanwhile.

use std::alloc::{self, Layout, System};
use std::hint::black_box;

use alloc_track::{measure, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[test]
fn boxes_and_vectors() {
    let (kept, diff) = measure(|| {
        let boxed = black_box(Box::new([7u8; 100]));
        let kept: Vec<u64> = Vec::with_capacity(10);
        drop(boxed);
        kept
    });
    assert_eq!(diff.total_blocks(), 2, "{diff}");
    assert_eq!(diff.total_bytes(), 180, "{diff}");
    assert_eq!(diff.live_blocks(), 1, "{diff}");
    assert_eq!(diff.live_bytes(), 80, "{diff}");
    assert_eq!(diff.retained_blocks(), 1, "{diff}");
    assert_eq!(diff.retained_bytes(), 80, "{diff}");
    assert_eq!(diff.peak_bytes(), Some(180), "{diff}");
    assert!(diff.is_complete());
    drop(kept);
}

#[test]
fn zero_sized_values_allocate_nothing() {
    let (_, diff) = measure(|| {
        black_box(Vec::<u8>::new());
        black_box(String::new());
        black_box(Box::new(()));
        black_box(Vec::<()>::with_capacity(1000));
        black_box(Box::<[u64]>::from(Vec::new()));
    });
    assert_eq!(diff.total_blocks(), 0, "{diff}");
    assert_eq!(diff.total_bytes(), 0, "{diff}");
    assert_eq!(diff.peak_bytes(), Some(0));
    assert!(diff.sites().is_empty());
}

#[test]
fn alloc_zeroed_is_counted_and_zeroed() {
    let layout = Layout::from_size_align(4000, 8).unwrap();
    let (address, diff) = measure(|| {
        // SAFETY: the layout is non-zero in size.
        let ptr = unsafe { alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null());
        // SAFETY: `ptr` points to 4000 initialised (zeroed) bytes.
        assert!(unsafe { std::slice::from_raw_parts(ptr, 4000) }
            .iter()
            .all(|&b| b == 0));
        ptr as usize
    });
    assert_eq!(
        (diff.total_blocks(), diff.total_bytes()),
        (1, 4000),
        "{diff}"
    );
    assert_eq!((diff.live_blocks(), diff.live_bytes()), (1, 4000), "{diff}");
    let (_, freed) = measure(|| {
        // SAFETY: allocated above with this layout and not freed.
        unsafe { alloc::dealloc(address as *mut u8, layout) }
    });
    assert_eq!(
        (freed.live_blocks(), freed.live_bytes()),
        (-1, -4000),
        "{freed}"
    );
    assert_eq!(freed.total_blocks(), 0, "{freed}");
}

#[test]
fn alignments_up_to_4096() {
    for shift in 0..=12 {
        let align = 1usize << shift;
        let layout = Layout::from_size_align(align * 3, align).unwrap();
        let (address, diff) = measure(|| {
            // SAFETY: the layout is non-zero in size.
            let ptr = unsafe { alloc::alloc(layout) };
            assert!(!ptr.is_null());
            ptr as usize
        });
        assert_eq!(address % align, 0, "alignment {align} not honoured");
        assert_eq!(
            (diff.total_blocks(), diff.total_bytes()),
            (1, 3 * align as u64),
            "align {align}: {diff}"
        );
        let (_, freed) = measure(|| {
            // SAFETY: allocated above with this layout.
            unsafe { alloc::dealloc(address as *mut u8, layout) }
        });
        assert_eq!(
            freed.live_bytes(),
            -(3 * align as i64),
            "align {align}: {freed}"
        );
    }
}

/// A realloc counts as freeing the old block and allocating the new one:
/// one more allocation, live bytes move from the old size to the new.
#[test]
fn realloc_grow_and_shrink_in_place_and_moved() {
    let mut saw_in_place = false;
    let mut saw_moved = false;
    for &(from, to) in &[
        (64usize, 4096usize),
        (4096, 16),
        (16, 100_000),
        (100_000, 200_000),
        (200_000, 8),
    ] {
        let layout = Layout::from_size_align(from, 8).unwrap();
        // SAFETY: non-zero size.
        let ptr = unsafe { alloc::alloc(layout) };
        assert!(!ptr.is_null());
        // A neighbour right after the block, so that growing usually has
        // to move.
        let blocker = black_box(vec![0u8; 32]);
        let (new_ptr, diff) = measure(|| {
            // SAFETY: `ptr` is live with `layout`; `to` is non-zero.
            let new_ptr = unsafe { alloc::realloc(ptr, layout, to) };
            assert!(!new_ptr.is_null());
            new_ptr
        });
        if new_ptr == ptr {
            saw_in_place = true;
        } else {
            saw_moved = true;
        }
        assert_eq!(diff.total_blocks(), 1, "{from} -> {to}: {diff}");
        assert_eq!(diff.total_bytes(), to as u64, "{from} -> {to}: {diff}");
        assert_eq!(diff.live_blocks(), 0, "{from} -> {to}: {diff}");
        assert_eq!(
            diff.live_bytes(),
            to as i64 - from as i64,
            "{from} -> {to}: {diff}"
        );
        // The realloc'd block is the old one, born before the measure: it
        // is retained only as the new allocation it became.
        assert_eq!(diff.retained_bytes(), to as u64, "{from} -> {to}: {diff}");
        let (_, freed) = measure(|| {
            // SAFETY: `new_ptr` is live with size `to`.
            unsafe { alloc::dealloc(new_ptr, Layout::from_size_align(to, 8).unwrap()) }
        });
        assert_eq!(freed.live_bytes(), -(to as i64), "{freed}");
        drop(blocker);
    }
    assert!(
        saw_in_place,
        "no realloc stayed in place; the workload no longer covers that path"
    );
    assert!(
        saw_moved,
        "no realloc moved; the workload no longer covers that path"
    );
}

#[test]
fn nested_measures_each_see_their_span() {
    let (inner, outer) = measure(|| {
        let a = black_box(vec![1u8; 10]);
        let (b, inner) = measure(|| black_box(vec![2u8; 20]));
        drop(a);
        drop(b);
        inner
    });
    assert_eq!(
        (inner.total_blocks(), inner.total_bytes()),
        (1, 20),
        "{inner}"
    );
    assert_eq!(inner.retained_bytes(), 20, "{inner}");
    // The outer saw both allocations and both frees, but not the inner
    // diff's own (untracked) memory.
    assert_eq!(
        (outer.total_blocks(), outer.total_bytes()),
        (2, 30),
        "{outer}"
    );
    assert_eq!((outer.live_blocks(), outer.live_bytes()), (0, 0), "{outer}");
    assert_eq!(outer.retained_blocks(), 0, "{outer}");
}

#[test]
fn a_panicking_closure_leaves_the_thread_measurable() {
    let result = std::panic::catch_unwind(|| measure(|| panic!("inside measure")));
    assert!(result.is_err());
    let (_, diff) = measure(|| black_box(Box::new(1u32)));
    assert_eq!((diff.total_blocks(), diff.total_bytes()), (1, 4), "{diff}");
}

#[test]
fn the_trackers_own_work_is_never_counted() {
    let (_, diff) = measure(|| {
        let before = alloc_track::snapshot();
        let after = alloc_track::snapshot();
        let change = after.diff(&before);
        black_box(change.sites().len());
        black_box(after.to_dump());
        for site in after.sites().iter().take(5) {
            black_box(site.stack().label());
        }
    });
    assert_eq!(diff.total_blocks(), 0, "{diff}");
}
