//! The overhead benchmark's workloads, run once each at a tiny size under
//! the tracker, so that `cargo test` keeps them compiling and working
//! (`cargo test` does not build benches). No timing is asserted: timings
//! belong to `cargo bench -p alloc-track --bench overhead`.

use std::alloc::System;
use std::sync::{Mutex, MutexGuard, PoisonError};

use alloc_track::{measure, snapshot, Tracker};

// The bench's own file, not a copy: the test runs the code that is timed.
// Sizes other than SMOKE are only for the bench.
#[allow(dead_code)]
#[path = "../alloc-track/benches/overhead/workloads.rs"]
mod workloads;

use workloads::{Kept, Size, Workload, DEPTHS};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// The tests that read process-wide snapshots run one at a time, so that
/// no other test's allocations land in their figures.
fn alone() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

#[test]
fn every_workload_allocates_on_one_thread() {
    let _alone = alone();
    for workload in Workload::ALL {
        let ((_, kept), diff) = measure(|| workloads::run(workload, 1, &Size::SMOKE, false));
        // The workers are other threads, so `measure` sees only what the
        // calling thread allocated: the scope's bookkeeping and `kept`.
        assert!(diff.total_blocks() > 0, "{}: {diff}", workload.name());
        if workload == Workload::Build {
            let Kept::Built { map, values } = &kept[0] else {
                panic!("build keeps its map and vector");
            };
            assert_eq!(map.len(), Size::SMOKE.build_entries);
            assert_eq!(values.len(), Size::SMOKE.build_pushes);
        }
    }
}

#[test]
fn every_workload_runs_on_two_threads() {
    let _alone = alone();
    for workload in Workload::ALL {
        let before = snapshot();
        let (_, kept) = workloads::run(workload, 2, &Size::SMOKE, true);
        let after = snapshot();
        assert_eq!(kept.len(), 2);
        let grown = after.total_blocks() - before.total_blocks();
        // Two workers, each at least a ring's or a map's worth of blocks
        // (the crates workload's units are far larger).
        assert!(
            grown >= 2 * Size::SMOKE.churn_ring as u64,
            "{}: only {grown} blocks allocated",
            workload.name()
        );
    }
}

#[test]
fn workload_names_round_trip() {
    for workload in Workload::ALL {
        assert_eq!(Workload::parse(&workload.name()), Some(workload));
    }
    assert_eq!(Workload::parse("nope"), None);
    assert_eq!(Workload::parse("depth-7"), Some(Workload::Depth(7)));
    assert_eq!(Workload::parse("depth-0"), None);
}

/// The crates workload deals its units out: two threads do the one
/// thread's work between them, not twice it, and a thread that parsed JSON
/// keeps its trees.
#[test]
fn crates_threads_share_the_work() {
    let _alone = alone();
    let blocks = |threads| {
        let before = snapshot();
        let (_, kept) = workloads::run(Workload::Crates, threads, &Size::SMOKE, false);
        // One tree per JSON unit, whichever thread parsed it.
        let trees: Vec<&serde_json::Value> = kept
            .iter()
            .flat_map(|k| match k {
                Kept::Trees(trees) => trees.iter(),
                _ => panic!("crates keeps JSON trees"),
            })
            .collect();
        assert_eq!(trees.len(), Size::SMOKE.crates.units);
        assert!(trees.iter().all(|tree| tree.is_array()));
        snapshot().total_blocks() - before.total_blocks()
    };
    let (one, two) = (blocks(1), blocks(2));
    assert!(one > 1000, "only {one} blocks");
    // Not exactly equal: two threads' runtime bookkeeping differs a little.
    assert!(
        two < one * 5 / 4,
        "two threads allocated {two} blocks, one thread {one}"
    );
}

/// Each level of the depth series is a real frame: the captured stacks of
/// depth-N and depth-M allocations differ by N - M frames.
#[test]
fn depth_series_levels_are_real_frames() {
    let _alone = alone();
    let deepest_stack = |depth: u32| {
        let before = snapshot();
        drop(workloads::run(
            Workload::Depth(depth),
            1,
            &Size::SMOKE,
            false,
        ));
        let diff = snapshot().diff(&before);
        // The churn's allocations are those of 8 B to 4 KiB made at least
        // a thousand times; the deepest such stack is the chain's.
        diff.sites()
            .iter()
            .filter(|site| site.total_blocks() >= 100)
            .map(|site| site.stack().addresses().len())
            .max()
            .expect("the depth series allocates")
    };
    let (shallow, deep) = (DEPTHS[0], DEPTHS[2]);
    assert_eq!(
        deepest_stack(deep) - deepest_stack(shallow),
        (deep - shallow) as usize
    );
}
