//! The overhead benchmark's workloads, run once each at a tiny size under
//! the tracker, so that `cargo test` keeps them compiling and working
//! (`cargo test` does not build benches). No timing is asserted: timings
//! belong to `cargo bench -p alloc-track --bench overhead`.

use std::alloc::System;

use alloc_track::{measure, snapshot, Tracker};

// The bench's own file, not a copy: the test runs the code that is timed.
// Sizes other than SMOKE are only for the bench.
#[allow(dead_code)]
#[path = "../alloc-track/benches/overhead/workloads.rs"]
mod workloads;

use workloads::{Kept, Size, Workload};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

#[test]
fn every_workload_allocates_on_one_thread() {
    for workload in Workload::ALL {
        let ((_, kept), diff) = measure(|| workloads::run(workload, 1, &Size::SMOKE));
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
    for workload in Workload::ALL {
        let before = snapshot();
        let (_, kept) = workloads::run(workload, 2, &Size::SMOKE);
        let after = snapshot();
        assert_eq!(kept.len(), 2);
        let grown = after.total_blocks() - before.total_blocks();
        // Two workers, each at least a ring's or a map's worth of blocks.
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
        assert_eq!(Workload::parse(workload.name()), Some(workload));
    }
    assert_eq!(Workload::parse("nope"), None);
}
