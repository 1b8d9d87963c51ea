//! Allocations after `main` returns: in an `atexit` handler, with a
//! measure and a snapshot taken there, while other threads are still
//! allocating. The process must exit cleanly, and the tracker must still
//! count exactly. (Allocations in thread-local destructors are covered by
//! `thread_local_teardown.rs`.)
//!
//! The test runs itself again as a child process, because "after main"
//! is only reachable once: the child's test registers the hooks, returns,
//! and the test harness's `main` returns and exits.
#![cfg(unix)]

use std::alloc::System;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use alloc_track::{measure, snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

const CHILD: &str = "ALLOC_TRACK_AFTER_MAIN_CHILD";

/// Writes `text` to standard output with one `write` call: std's stdout
/// may already be flushed and shut down after `main`.
fn say(text: &str) {
    // SAFETY: writes `text.len()` bytes from a live buffer to fd 1.
    unsafe { libc::write(1, text.as_ptr().cast(), text.len()) };
}

#[inline(never)]
fn allocate_after_main() -> Vec<String> {
    (0..100).map(|i| format!("after main {i}")).collect()
}

extern "C" fn at_exit() {
    // Allocations, an exact measure and a snapshot, all after `main`.
    let (strings, diff) = measure(allocate_after_main);
    let snapshot = snapshot();
    let exact = diff.total_blocks() == 101 && snapshot.live_blocks() >= 101;
    black_box(&strings);
    drop(strings);
    say(if exact {
        "atexit: counted\n"
    } else {
        "atexit: WRONG\n"
    });
}

/// Allocates and frees forever: still running, never joined, when the
/// process exits.
#[inline(never)]
fn churn_forever() {
    let mut i = 0usize;
    loop {
        black_box(vec![0u8; 16 + i % 1000]);
        i += 1;
    }
}

/// The child: registers the hooks and returns.
#[test]
fn after_main_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    // SAFETY: `at_exit` is a plain `extern "C" fn()` for the program's life.
    assert_eq!(unsafe { libc::atexit(at_exit) }, 0);
    // Threads still inside the allocator while `exit` runs the hooks.
    for _ in 0..2 {
        std::thread::spawn(churn_forever);
    }
    say("child: main returning\n");
}

#[test]
fn allocations_after_main_returns_are_counted_and_exit_cleanly() {
    if std::env::var_os(CHILD).is_some() {
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "after_main_child", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the child hung at exit (killed)");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{stdout}", output.status);
    assert!(stdout.contains("child: main returning"), "{stdout}");
    assert!(stdout.contains("atexit: counted"), "{stdout}");
    assert!(!stdout.contains("WRONG"), "{stdout}");
}
