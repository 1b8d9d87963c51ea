//! Helpers shared by the integration tests: figures of the sites whose
//! stack passes through a named function, so that a test's assertions are
//! exact even while the test harness and other tests allocate.
#![allow(dead_code)]

pub mod fail_on_demand;

use alloc_track::{Diff, Snapshot, Stack};

/// Live and total figures summed over sites whose stack contains `function`.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct Figures {
    pub live_bytes: u64,
    pub live_blocks: u64,
    pub total_bytes: u64,
    pub total_blocks: u64,
}

pub fn passes_through(stack: &Stack, function: &str) -> bool {
    stack.frames().iter().any(|f| f.function.contains(function))
}

pub fn figures(snapshot: &Snapshot, function: &str) -> Figures {
    snapshot
        .sites()
        .iter()
        .filter(|s| passes_through(&s.stack(), function))
        .fold(Figures::default(), |f, s| Figures {
            live_bytes: f.live_bytes + s.live_bytes(),
            live_blocks: f.live_blocks + s.live_blocks(),
            total_bytes: f.total_bytes + s.total_bytes(),
            total_blocks: f.total_blocks + s.total_blocks(),
        })
}

/// (net live bytes, net live blocks, total bytes, total blocks, retained
/// bytes, retained blocks) over a diff's sites whose stack contains
/// `function`.
pub fn diff_figures(diff: &Diff, function: &str) -> (i64, i64, u64, u64, u64, u64) {
    diff.sites()
        .iter()
        .filter(|s| passes_through(&s.stack(), function))
        .fold((0, 0, 0, 0, 0, 0), |a, s| {
            (
                a.0 + s.live_bytes(),
                a.1 + s.live_blocks(),
                a.2 + s.total_bytes(),
                a.3 + s.total_blocks(),
                a.4 + s.retained_bytes(),
                a.5 + s.retained_blocks(),
            )
        })
}

/// The path of example `name`'s binary. `cargo test` builds the examples
/// beside the test binaries: target/<profile>/deps/<test> goes with
/// target/<profile>/examples/<name>.
/// Ends the process with a failure if it still runs after `limit`: for
/// `harness = false` programs, which have no test timeout. Returns once the
/// watchdog thread is running, so that its start-up (its closure's box
/// freed, its thread-locals set up) never lands between two snapshots whose
/// process-wide totals a check compares.
pub fn start_watchdog(program: &'static str, limit: std::time::Duration) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WATCHING: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(move || {
        WATCHING.store(true, Ordering::Release);
        std::thread::sleep(limit);
        eprintln!("{program}: watchdog: still running after {limit:?}");
        std::process::exit(1);
    });
    while !WATCHING.load(Ordering::Acquire) {
        std::thread::yield_now();
    }
}

/// The names of the files in `dir`, sorted.
pub fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

pub fn example(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is not built: plain `cargo test` builds the examples; with a target filter, run `cargo build --examples` first",
        path.display()
    );
    path
}

/// Waits for the child `pid` for at most `deadline`; kills and reaps it
/// and returns `None` if it is still running then, so that a child that
/// hangs fails its test instead of hanging the run.
pub fn wait_with_deadline(pid: libc::pid_t, deadline: std::time::Duration) -> Option<libc::c_int> {
    let start = std::time::Instant::now();
    loop {
        let mut status = 0;
        // SAFETY: `pid` is the caller's own child; `status` is a valid out
        // pointer.
        let done = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if done == pid {
            return Some(status);
        }
        assert!(done == 0, "waitpid failed");
        if start.elapsed() > deadline {
            // SAFETY: as above; the child is reaped right after.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}
