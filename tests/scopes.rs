//! Scopes: a thread's allocations tagged with a name, per-scope figures in
//! snapshots and dumps, filtered snapshots, and the one-line task log.

use std::alloc::System;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::thread;

use alloc_track::{scope, snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

fn scope_figures(snapshot: &alloc_track::Snapshot, name: &str) -> (u64, u64, u64, u64) {
    snapshot
        .scopes()
        .iter()
        .find(|s| s.name() == name)
        .map_or((0, 0, 0, 0), |s| {
            (
                s.live_bytes(),
                s.live_blocks(),
                s.total_bytes(),
                s.total_blocks(),
            )
        })
}

#[test]
fn a_scope_counts_what_its_thread_allocates_inside_it() {
    // Another thread allocates while the scope is open: not the scope's.
    let barrier = Arc::new(Barrier::new(2));
    let other = {
        let barrier = barrier.clone();
        thread::spawn(move || {
            barrier.wait();
            let block = black_box(vec![3u8; 7777]);
            barrier.wait();
            block.len()
        })
    };
    let kept = {
        let _request = scope("request 1");
        let kept = black_box(vec![1u8; 3000]);
        drop(black_box(vec![2u8; 500]));
        barrier.wait();
        barrier.wait();
        kept
    };
    other.join().unwrap();
    // After the guard drops, allocations are no longer tagged.
    let after = black_box(vec![4u8; 100]);
    let snap = snapshot();
    assert_eq!(scope_figures(&snap, "request 1"), (3000, 1, 3500, 2));

    // The filtered snapshot holds only the scope's live blocks.
    let only = snap.in_scope("request 1");
    assert_eq!((only.live_bytes(), only.live_blocks()), (3000, 1));
    assert_eq!(only.sites().len(), 1);
    assert!(only.sites()[0]
        .stack()
        .label()
        .contains("a_scope_counts_what_its_thread_allocates"));
    assert_eq!(snap.in_scope("no such scope").live_blocks(), 0);

    // Dumps carry the scope and each site's share in it.
    let dump = snap.to_dump();
    dump.validate().unwrap();
    let index = dump
        .scopes
        .iter()
        .position(|s| s.name == "request 1")
        .unwrap() as u32;
    let in_scope: u64 = dump
        .sites
        .iter()
        .flat_map(|s| &s.scopes)
        .filter(|p| p.scope == index)
        .map(|p| p.bytes)
        .sum();
    assert_eq!(in_scope, 3000);
    drop(kept);
    drop(after);
    assert_eq!(scope_figures(&snapshot(), "request 1").0, 0);
}

#[test]
fn scopes_nest_and_restore() {
    let (outer_block, inner_block) = {
        let _outer = scope("outer");
        let inner_block = {
            let _inner = scope("inner");
            black_box(vec![0u8; 64])
        };
        (black_box(vec![0u8; 32]), inner_block)
    };
    let snap = snapshot();
    assert_eq!(scope_figures(&snap, "inner"), (64, 1, 64, 1));
    assert_eq!(scope_figures(&snap, "outer"), (32, 1, 32, 1));
    drop((outer_block, inner_block));
}

#[test]
fn a_logged_scope_prints_one_line_per_task() {
    if std::env::var_os("SCOPES_LOG_CHILD").is_some() {
        for task in 0..2 {
            let _task = scope("task").log();
            black_box(vec![0u8; 1000 * (task + 1)]);
        }
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_logged_scope_prints_one_line_per_task",
            "--nocapture",
        ])
        .env("SCOPES_LOG_CHILD", "1")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("alloc-track: scope"))
        .collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].contains(
            "\"task\": +0 B live in +0 blocks, 1000 B allocated in 1 blocks, peak +1000 B"
        ),
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains("2.0 KiB allocated in 1 blocks"),
        "{}",
        lines[1]
    );
    if cfg!(target_os = "linux") {
        // The process's RSS before -> after beside the heap figures.
        assert!(lines[0].contains("; RSS "), "{}", lines[0]);
        assert!(lines[0].contains(" -> "), "{}", lines[0]);
    }
}
