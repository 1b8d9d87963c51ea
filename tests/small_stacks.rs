//! Threads with small stacks: the tracker runs on the allocating thread's
//! stack, and the fastest stack walker available without frame pointers
//! (the CFI walker) needs tens of KiB of it, more in a debug build. A
//! thread without that much to spare must get its stacks from another
//! walker, never overflow. Each thread here allocates from a function of
//! its own, and the snapshot must show that function's site.

use std::alloc::System;
use std::hint::black_box;

use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[inline(never)]
fn allocated_on_a_small_stack() -> Vec<u8> {
    black_box(vec![5u8; 4321])
}

#[test]
fn threads_with_small_stacks_are_tracked_without_overflowing() {
    // The smallest stack std accepts (glibc's minimum) and a few above it.
    for size in [16 << 10, 32 << 10, 64 << 10, 128 << 10] {
        let before = snapshot();
        let block = std::thread::Builder::new()
            .stack_size(size)
            .spawn(allocated_on_a_small_stack)
            .unwrap()
            .join()
            .unwrap();
        let diff = snapshot().diff(&before);
        let found = diff.sites().iter().any(|site| {
            site.retained_bytes() == 4321
                && site
                    .stack()
                    .frames()
                    .iter()
                    .any(|frame| frame.function.contains("allocated_on_a_small_stack"))
        });
        assert!(
            found,
            "{} KiB stack: no site for the block\n{diff}",
            size >> 10
        );
        drop(block);
    }
}
