//! `fork()` while another thread resolves symbols: the child inherits the
//! symbol cache's lock (and the `backtrace` crate's) in whatever state
//! that thread left it. The child must still save a dump, with its own new
//! call sites named, and exit; the parent must carry on.
//!
//! The child writes with `Snapshot::save`, not `alloc_track::dump`: this
//! test is about symbolization, not the lock that serialises live dumps.
//!
//! A child that hangs is killed after a deadline and counted, so a
//! regression fails the test instead of hanging it.

#![cfg(unix)]

mod common;

use std::alloc::System;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use alloc_track::dump::Dump;
use alloc_track::{snapshot, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// How long a child may take before the test calls it hung. A healthy
/// child needs well under a second, even in a debug build.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);
/// Children forked in quick succession while the parent's first
/// symbolization (loading debug info, the longest time `backtrace` holds
/// its lock) is under way, then one at a time once it has settled.
const EARLY_FORKS: usize = 10;
const FORKS: usize = 30;

/// Resolves symbols in a loop: every site's frames (the symbol cache's
/// lock, once per address) and a whole dump.
fn symbolize(stop: &AtomicBool, started: &AtomicBool, rounds: &AtomicU64, path: &Path) {
    started.store(true, Ordering::Relaxed);
    while !stop.load(Ordering::Relaxed) {
        let snap = snapshot();
        for site in snap.sites() {
            black_box(site.stack().frames());
        }
        snap.save(path).unwrap();
        rounds.fetch_add(1, Ordering::Relaxed);
    }
}

/// An allocation from a call site only the child has, so the child
/// resolves addresses the parent never did.
#[inline(never)]
fn allocated_in_child() -> Vec<u8> {
    black_box(vec![9u8; 7777])
}

/// The child's work: a new site, a dump saved and read back with that site
/// named. Returns the exit code, 0 when all is right. Neither prints nor
/// panics: another thread of the parent may have held the stdout lock at
/// the fork.
fn child_work(path: &Path) -> i32 {
    let block = allocated_in_child();
    if snapshot().save(path).is_err() {
        return 2;
    }
    let Ok(dump) = Dump::load(path) else {
        return 3;
    };
    let Some(site) = dump.sites.iter().find(|s| s.live_bytes == 7777) else {
        return 4;
    };
    let named = dump.stacks[site.stack as usize]
        .locations
        .iter()
        .flat_map(|&l| dump.locations[l as usize].frames.iter())
        .any(|frame| frame.function.contains("allocated_in_child"));
    drop(block);
    if named {
        0
    } else {
        // A child forked while the parent was inside `backtrace` names new
        // code from exported symbols only: a hex address here.
        NOT_NAMED
    }
}

/// The child's exit code for a complete dump whose new site is not named.
const NOT_NAMED: i32 = 6;

#[test]
fn a_child_forked_while_symbols_are_resolved_can_dump_and_exit() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("alloc-track-fork-symbols-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let symbolizer = {
        let (stop, started, rounds) = (stop.clone(), started.clone(), rounds.clone());
        let path = dir.join("parent.json");
        thread::spawn(move || symbolize(&stop, &started, &rounds, &path))
    };
    while !started.load(Ordering::Relaxed) {
        thread::yield_now();
    }

    let mut failures = Vec::new();
    let early_paths: Vec<PathBuf> = (0..EARLY_FORKS)
        .map(|n| dir.join(format!("early-{n}.json")))
        .collect();
    let mut early = Vec::new();
    for path in &early_paths {
        // SAFETY: as below.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_work(path);
            // SAFETY: as below.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        early.push(pid);
        thread::sleep(Duration::from_millis(10));
    }
    for (attempt, pid) in early.into_iter().enumerate() {
        match common::wait_with_deadline(pid, CHILD_DEADLINE) {
            None => failures.push(format!("early fork {attempt}: child hung (killed)")),
            Some(status)
                if libc::WIFEXITED(status)
                    && matches!(libc::WEXITSTATUS(status), 0 | NOT_NAMED) => {}
            Some(status) => {
                failures.push(format!("early fork {attempt}: child status {status:#x}"))
            }
        }
    }
    while rounds.load(Ordering::Relaxed) < 1 {
        thread::yield_now();
    }

    let child_paths: Vec<PathBuf> = (0..FORKS)
        .map(|n| dir.join(format!("child-{n}.json")))
        .collect();
    let mut named = 0;
    for (attempt, path) in child_paths.iter().enumerate() {
        // SAFETY: the child only runs `child_work`, and leaves through
        // `_exit`, which runs no destructors or atexit handlers inherited
        // from the parent.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            let code = child_work(path);
            // SAFETY: ends the child without unwinding into the test
            // harness's copy.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        match common::wait_with_deadline(pid, CHILD_DEADLINE) {
            None => failures.push(format!("fork {attempt}: child hung (killed)")),
            Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 => named += 1,
            Some(status) if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == NOT_NAMED => {}
            Some(status) => failures.push(format!("fork {attempt}: child status {status:#x}")),
        }
        // Fork at another point of the parent's loop next time.
        thread::sleep(Duration::from_micros(137 * (attempt as u64 % 7)));
    }
    stop.store(true, Ordering::Relaxed);
    symbolizer.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "{failures:#?}");
    // The parent resolves only addresses it has seen before, almost never
    // entering `backtrace`: most children resolve their own site fully.
    assert!(
        named > FORKS / 2,
        "only {named} of {FORKS} children named their own site"
    );
}
