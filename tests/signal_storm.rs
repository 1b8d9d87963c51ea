//! The dump signal arriving during allocation, many times in a row: the
//! process never deadlocks or crashes, keeps allocating, and every dump it
//! writes is complete and valid.
//!
//! The test runs itself again as a child process (live dumps are configured
//! by environment variables read before `main`): the child allocates on
//! several threads until told to stop, while the parent sends it `SIGUSR1`
//! hundreds of times, with and without pauses.
#![cfg(unix)]

use std::alloc::System;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use alloc_track::dump::Dump;
use alloc_track::Tracker;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

/// Set in the child's environment to the directory it works in.
const CHILD_DIR: &str = "ALLOC_TRACK_SIGNAL_STORM_CHILD";
const SIGNALS: usize = 300;
/// How long the child may take in all; a healthy run needs a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);

#[inline(never)]
fn churn(stop: &AtomicBool, rounds: &AtomicU64) {
    let mut window: Vec<Vec<u8>> = Vec::new();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        window.push(vec![1u8; 8 + i % 300]);
        if window.len() > 100 {
            window.swap_remove(i % 100);
        }
        i += 1;
        rounds.fetch_add(1, Ordering::Relaxed);
    }
    black_box(window);
}

/// The child: announces it is ready, allocates on four threads until the
/// parent creates `stop`, then exits (which writes the exit dump).
#[test]
fn signal_storm_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR).map(PathBuf::from) else {
        return; // not the child: nothing to do
    };
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (stop, rounds) = (stop.clone(), rounds.clone());
            thread::spawn(move || churn(&stop, &rounds))
        })
        .collect();
    while rounds.load(Ordering::Relaxed) < 1000 {
        thread::yield_now();
    }
    std::fs::write(dir.join("ready"), b"").unwrap();
    while !dir.join("stop").exists() {
        thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }
    // The allocating threads made progress throughout the storm.
    std::fs::write(
        dir.join("rounds"),
        rounds.load(Ordering::Relaxed).to_string(),
    )
    .unwrap();
}

fn wait_for(path: &Path, child: &mut std::process::Child) {
    let start = Instant::now();
    while !path.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the child exited early: {status}");
        }
        assert!(start.elapsed() < DEADLINE, "the child never got ready");
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn many_dump_signals_during_allocation_never_deadlock() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return; // the child runs only its own test
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("signal-storm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signal_storm_child", "--nocapture"])
        .env(CHILD_DIR, &dir)
        .env("ALLOC_TRACK_DUMP", dir.join("heap.json"))
        .env("ALLOC_TRACK_SIGNAL", "USR1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for(&dir.join("ready"), &mut child);

    let pid = child.id() as libc::pid_t;
    for i in 0..SIGNALS {
        // SAFETY: sends a signal to our own child, which handles it.
        let sent = unsafe { libc::kill(pid, libc::SIGUSR1) };
        assert_eq!(sent, 0, "the child is gone after {i} signals");
        // Bursts back to back, then a pause long enough for a dump to be
        // under way when the next burst lands.
        if i % 20 == 19 {
            thread::sleep(Duration::from_millis(100));
        }
    }
    // The handler and the dump thread survived the storm: after the dump
    // it set off, one more signal gives one more dump.
    wait_for(&dir.join("heap.1.json"), &mut child);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0);
    wait_for(&dir.join("heap.2.json"), &mut child);
    std::fs::write(dir.join("stop"), b"").unwrap();

    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child hung after the signal storm (killed)");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "child: {status}\n{stderr}");
    assert!(!stderr.contains("failed"), "{stderr}");

    // Signals that arrive together are answered with one dump, so there
    // are fewer dumps than signals, but at least one; each one complete.
    let numbered: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("heap.") && name != "heap.json" && name.ends_with(".json")
        })
        .collect();
    assert!(numbered.len() >= 2, "{numbered:?}");
    for path in &numbered {
        Dump::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
    Dump::load(dir.join("heap.json")).expect("the exit dump");
    let rounds: u64 = std::fs::read_to_string(dir.join("rounds"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rounds > 1000, "the child stopped allocating");
    println!(
        "{SIGNALS} signals, {} numbered dumps, {rounds} allocation rounds",
        numbered.len()
    );
}
