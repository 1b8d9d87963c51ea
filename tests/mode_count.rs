//! Count mode: exact totals, peak and `measure` without stacks; the
//! tracker's own allocations still never counted.

use std::alloc::{Layout, System};
use std::hint::black_box;
use std::sync::mpsc;
use std::thread;

use alloc_track::{measure, snapshot, Mode, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).counting();

fn count_mode_keeps_exact_totals_and_measure() {
    assert_eq!(alloc_track::mode(), Mode::Count);

    let before = snapshot();
    assert!(before.sites().is_empty(), "count mode records no sites");
    let kept: Vec<Box<[u8; 100]>> = (0..1000).map(|_| Box::new([1u8; 100])).collect();
    let after = snapshot();
    // The only allocations between the two snapshots are ours: the tracker's
    // own (the first snapshot's buffers, freed by now) are never counted.
    assert_eq!(after.total_blocks() - before.total_blocks(), 1001);
    assert_eq!(
        after.total_bytes() - before.total_bytes(),
        1000 * 100 + 1000 * 8
    );
    assert_eq!(after.live_blocks() - before.live_blocks(), 1001);
    assert!(after.peak_bytes() >= after.live_bytes());
    drop(kept);
    let freed = snapshot();
    assert_eq!(freed.live_blocks(), before.live_blocks());
    assert_eq!(freed.live_bytes(), before.live_bytes());

    // Frees on another thread, reallocs.
    let start = snapshot();
    let (sender, receiver) = mpsc::channel::<Vec<u64>>();
    let freer = thread::spawn(move || receiver.into_iter().for_each(drop));
    for n in 0..100 {
        let mut v = Vec::with_capacity(1);
        v.extend(0..n as u64 + 1);
        sender.send(v).unwrap();
    }
    drop(sender);
    freer.join().unwrap();
    let end = snapshot();
    // Thread start-up and the channel allocate too, but everything is freed
    // again once the thread is joined.
    assert_eq!(end.live_bytes(), start.live_bytes(), "{end}");
    assert_eq!(end.live_blocks(), start.live_blocks());

    // measure is exact per thread, with its own retained set.
    let (kept, diff) = measure(|| {
        let mut grown: Vec<u32> = Vec::with_capacity(4);
        grown.extend(0..100); // grows by realloc
        let kept = black_box(vec![0u8; 4096]);
        drop(grown);
        kept
    });
    assert!(diff.total_blocks() >= 2, "{diff}");
    assert_eq!(diff.retained_blocks(), 1, "{diff}");
    assert_eq!(diff.retained_bytes(), 4096, "{diff}");
    assert_eq!(diff.live_bytes(), 4096, "{diff}");
    drop(kept);

    // A failed-then-retried pattern through the raw API.
    let layout = Layout::from_size_align(256, 64).unwrap();
    let (_, raw) = measure(|| {
        // SAFETY: non-zero size; freed right away with the same layout.
        // The pointers go through `black_box`: an optimised build may
        // otherwise leave out an allocation nothing reads.
        unsafe {
            let p = black_box(std::alloc::alloc(layout));
            assert!(!p.is_null());
            let p = black_box(std::alloc::realloc(p, layout, 512));
            std::alloc::dealloc(p, Layout::from_size_align(512, 64).unwrap());
        }
    });
    assert_eq!(
        (raw.total_blocks(), raw.total_bytes(), raw.live_bytes()),
        (2, 768, 0),
        "{raw}"
    );

    // Snapshots, diffs and dumps allocate only untracked memory.
    let (_, own) = measure(|| {
        let a = snapshot();
        let b = snapshot();
        black_box(b.diff(&a));
        black_box(b.to_dump());
    });
    assert_eq!(own.total_blocks(), 0, "{own}");
    let dump = snapshot().to_dump();
    assert_eq!(dump.mode, "count");
    dump.validate().unwrap();
}

/// The partial modes' fast path counts in the thread's own slot and hands
/// over to the slow path whenever the thread's unpublished live bytes would
/// reach the 64 KiB publish step: reallocs that grow a block across it and
/// shrink it back, blocks larger than a step, and their frees must all
/// land in the totals exactly once, whichever path counted them.
fn the_fast_paths_limits_keep_totals_exact() {
    let before = snapshot();
    let (mut bytes, mut blocks) = (0u64, 0u64);
    let layout = |size| Layout::from_size_align(size, 8).unwrap();
    // SAFETY: every pointer is non-null (checked) and resized or freed with
    // the layout it was last given.
    unsafe {
        let mut size = 8;
        let mut block = std::alloc::alloc(layout(size));
        assert!(!block.is_null());
        (bytes, blocks) = (bytes + 8, blocks + 1);
        // Up to 1 MiB and back down: each realloc frees the old size and
        // allocates the new one.
        let shifts = (4..=20).chain((3..20).rev());
        for new_size in shifts.map(|shift| 1usize << shift) {
            block = std::alloc::realloc(block, layout(size), new_size);
            assert!(!block.is_null());
            (bytes, blocks) = (bytes + new_size as u64, blocks + 1);
            size = new_size;
        }
        std::alloc::dealloc(block, layout(size));
        // Blocks of several steps each, freed in another order.
        let sizes = [70_000, 140_000, 210_000, 280_000];
        let large = sizes.map(|size| {
            let p = std::alloc::alloc(layout(size));
            assert!(!p.is_null());
            p
        });
        for (&size, &p) in sizes.iter().zip(&large).rev() {
            std::alloc::dealloc(p, layout(size));
        }
        bytes += sizes.iter().sum::<usize>() as u64;
        blocks += sizes.len() as u64;
    }
    let after = snapshot();
    assert_eq!(after.total_bytes() - before.total_bytes(), bytes, "{after}");
    assert_eq!(after.total_blocks() - before.total_blocks(), blocks);
    assert_eq!(after.live_bytes(), before.live_bytes());
    assert_eq!(after.live_blocks(), before.live_blocks());
}

// A plain `main` (the test has `harness = false`): process-wide totals
// are only exact to the byte when no other thread allocates, and the
// libtest harness keeps threads of its own.
fn main() {
    if std::env::args().nth(1).as_deref() == Some("--print-mode") {
        println!("{}", alloc_track::mode());
        return;
    }
    count_mode_keeps_exact_totals_and_measure();
    the_fast_paths_limits_keep_totals_exact();
    the_environment_overrides_the_mode_chosen_in_code();
    println!("mode_count: 3 passed, 0 failed");
}

/// `ALLOC_TRACK_MODE` switches a built binary's mode without a rebuild;
/// a value that does not parse leaves the mode chosen in code.
fn the_environment_overrides_the_mode_chosen_in_code() {
    let mode_with = |value: Option<&str>| {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.arg("--print-mode");
        match value {
            Some(value) => command.env("ALLOC_TRACK_MODE", value),
            None => command.env_remove("ALLOC_TRACK_MODE"),
        };
        let output = command.output().unwrap();
        assert!(output.status.success());
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    assert_eq!(mode_with(None), "count");
    assert_eq!(mode_with(Some("full")), "full");
    assert_eq!(mode_with(Some("sampled:1m")), "sampled:1048576");
    assert_eq!(mode_with(Some("nonsense")), "count");
}
