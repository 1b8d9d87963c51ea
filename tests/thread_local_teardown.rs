//! Allocations made while a thread's thread-locals are torn down are
//! tracked (the tracker's own per-thread state has no destructor, so it
//! outlives every other thread-local), and blocks that threads create and
//! destroy constantly leave no trace behind.

mod common;

use std::alloc::System;
use std::cell::RefCell;
use std::sync::Mutex;
use std::thread;

use alloc_track::{snapshot, Tracker};
use common::figures;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

static SURVIVORS: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

struct AllocatesOnDrop;

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        allocate_during_teardown();
    }
}

#[inline(never)]
fn allocate_during_teardown() {
    // One block that survives the thread, one freed at once.
    SURVIVORS.lock().unwrap().push(vec![1u8; 1000]);
    drop(std::hint::black_box(vec![2u8; 500]));
}

thread_local! {
    static ON_EXIT: RefCell<Option<AllocatesOnDrop>> = const { RefCell::new(None) };
    static SCRATCH: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

#[inline(never)]
fn use_scratch() {
    SCRATCH.with(|s| s.borrow_mut().extend(0..100));
}

#[test]
fn allocations_in_thread_local_destructors_are_counted() {
    SURVIVORS.lock().unwrap().reserve(64);
    let before = figures(&snapshot(), "allocate_during_teardown");
    const THREADS: u64 = 16;
    for _ in 0..THREADS {
        thread::spawn(|| {
            ON_EXIT.with(|slot| *slot.borrow_mut() = Some(AllocatesOnDrop));
            use_scratch();
        })
        .join()
        .unwrap();
    }
    let after = figures(&snapshot(), "allocate_during_teardown");
    assert_eq!(after.total_blocks - before.total_blocks, 2 * THREADS);
    assert_eq!(after.total_bytes - before.total_bytes, 1500 * THREADS);
    assert_eq!(after.live_blocks - before.live_blocks, THREADS);
    assert_eq!(after.live_bytes - before.live_bytes, 1000 * THREADS);
    // Every thread's scratch vector was freed with its thread-locals.
    let scratch = figures(&snapshot(), "use_scratch");
    assert!(scratch.total_blocks >= THREADS);
    assert_eq!(scratch.live_blocks, 0, "{scratch:?}");
}

#[test]
fn short_lived_threads_leave_nothing_live() {
    let before = figures(&snapshot(), "short_lived_work");
    let handles: Vec<_> = (0..200).map(|_| thread::spawn(short_lived_work)).collect();
    for handle in handles {
        handle.join().unwrap();
    }
    let after = figures(&snapshot(), "short_lived_work");
    assert_eq!(after.total_blocks - before.total_blocks, 200 * 10);
    assert_eq!(after.live_blocks, before.live_blocks);
}

#[inline(never)]
fn short_lived_work() {
    let blocks: Vec<Box<u64>> = (0..9).map(Box::new).collect();
    std::hint::black_box(blocks);
}
