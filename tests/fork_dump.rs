//! `fork()` and dumps. A child forked while another thread of the parent
//! writes a dump inherits the dump lock as it was at the fork: held, by a
//! thread the child does not have. The child must still be able to dump,
//! in every mode. And the live dumps configured by `ALLOC_TRACK_*` belong
//! to the parent: a child writes an exit dump only to a path of its own
//! (`{pid}`), and a dump signal sent to it makes no one dump.
//!
//! Each scenario runs in a fresh process of this test binary (the mode and
//! the `ALLOC_TRACK_*` variables are read at start-up), under a watchdog:
//! a hang fails the test instead of stalling CI.
#![cfg(unix)]

mod common;

use std::alloc::System;
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

/// Names the scenario a re-run of this binary is to play.
const SCENARIO: &str = "ALLOC_TRACK_TEST_FORK_SCENARIO";
/// The directory a scenario writes to.
const DIR: &str = "ALLOC_TRACK_TEST_FORK_DIR";

/// How long a forked child may take to dump and exit before it counts as
/// hung; a healthy one needs well under a second.
const CHILD_DEADLINE: Duration = Duration::from_secs(15);
/// How long a whole scenario process may take.
const SCENARIO_DEADLINE: Duration = Duration::from_secs(240);
/// Forks per mode while the parent dumps in a loop.
const FORKS: usize = 12;

/// Under the build's target directory, normally on disk rather than
/// tmpfs: each dump's `fsync` then keeps the parent's thread in its
/// file-writing phase long enough for the fork to land there.
fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("alloc-track-fork-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `scenario` in a new process of this binary with `vars` set and
/// returns its output; fails if it does not finish in time or fails.
fn run_scenario(scenario: &str, dir: &Path, vars: &[(&str, &str)]) -> String {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", scenario, "--nocapture", "--test-threads=1"])
        .env(SCENARIO, scenario)
        .env(DIR, dir)
        .env_remove("ALLOC_TRACK_MODE")
        .env_remove("ALLOC_TRACK_DUMP")
        .env_remove("ALLOC_TRACK_INTERVAL")
        .env_remove("ALLOC_TRACK_SIGNAL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > SCENARIO_DEADLINE {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "{scenario} {vars:?} hung; killed. Output:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{scenario} {vars:?} failed:\n{text}"
    );
    text
}

/// Forks a child that runs `prepare`, keeps what it returns (a scope
/// guard, say) while it dumps to `path`, and leaves through `_exit`: 0 if
/// the dump was written, 1 if not. Returns the child's pid.
fn fork_and_dump<G>(path: &Path, prepare: impl FnOnce() -> G) -> libc::pid_t {
    // SAFETY: the child only calls the tracker (which makes itself
    // fork-safe) and leaves through `_exit`, running nothing of the
    // parent's.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let _kept = prepare();
        let code = match alloc_track::dump(path) {
            Ok(()) => 0,
            Err(_) => 1,
        };
        // SAFETY: ends the child without unwinding into the harness.
        unsafe { libc::_exit(code) };
    }
    assert!(pid > 0, "fork failed");
    pid
}

/// True in the process that is to play `scenario`.
fn playing(scenario: &str) -> bool {
    std::env::var_os(SCENARIO).is_some_and(|s| s == scenario)
}

fn scenario_dir() -> PathBuf {
    PathBuf::from(std::env::var_os(DIR).expect("the scenario's directory"))
}

fn exited_cleanly(status: libc::c_int) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Waits until a temporary file of a dump to `dir/name` exists: the
/// thread writing that dump holds the dump lock, and has resolved its
/// symbols (a dump is built before its file is created).
fn wait_for_write_phase(dir: &Path, name: &str) {
    let prefix = format!(".{name}.");
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        let writing = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
        if writing {
            return;
        }
        assert!(Instant::now() < deadline, "no dump being written");
        thread::yield_now();
    }
}

/// Forks `FORKS` times while another thread writes dumps in a loop, each
/// time while that thread is writing its file, so that the dump lock is
/// held at the fork; each child writes a dump of its own and leaves. Fails
/// after the first few hung children, so that a regression does not take
/// minutes.
///
/// The fork lands in the file-writing phase rather than anywhere: this
/// test is about the dump lock, and the symbol cache has locks of its own
/// that a fork during symbol resolution would catch. For the same reason
/// the parent allocates nothing new between forks: new call sites would
/// keep the dumping thread resolving symbols.
#[test]
fn scenario_fork_while_dumping() {
    if !playing("scenario_fork_while_dumping") {
        return;
    }
    let dir = scenario_dir();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let dumper = {
        let (stop, written, path) = (stop.clone(), written.clone(), dir.join("parent.json"));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                alloc_track::dump(&path).expect("the parent's dump");
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while written.load(Ordering::Relaxed) == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    let mut failures = Vec::new();
    let mut hung = 0;
    let paths: Vec<PathBuf> = (0..FORKS)
        .map(|attempt| dir.join(format!("child-{attempt}.json")))
        .collect();
    let mut children = Vec::new();
    for (attempt, path) in paths.iter().enumerate() {
        wait_for_write_phase(&dir, "parent.json");
        let pid = fork_and_dump(path, || ());
        match common::wait_with_deadline(pid, CHILD_DEADLINE) {
            None => {
                failures.push(format!("fork {attempt}: the child's dump hung (killed)"));
                hung += 1;
                if hung == 3 {
                    break;
                }
            }
            Some(status) if exited_cleanly(status) => children.push((path, pid)),
            Some(status) => failures.push(format!("fork {attempt}: child status {status:#x}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    dumper.join().unwrap();
    for (path, pid) in children {
        match Dump::load(path) {
            Ok(dump) if dump.pid == pid as u32 => {}
            Ok(dump) => failures.push(format!("{}: dump of pid {}", path.display(), dump.pid)),
            Err(error) => failures.push(error.to_string()),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(Dump::load(dir.join("parent.json")).is_ok());
    println!("mode {}: {FORKS} children dumped", alloc_track::mode());
}

#[test]
fn a_child_forked_while_the_parent_dumps_can_dump_in_every_mode() {
    for mode in ["full", "sampled:4096", "count"] {
        let dir = temp_dir(&format!("dumping-{}", &mode[..4]));
        let output = run_scenario(
            "scenario_fork_while_dumping",
            &dir,
            &[("ALLOC_TRACK_MODE", mode)],
        );
        assert!(
            output.contains(&format!("mode {mode}: {FORKS} children dumped")),
            "{output}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Waits up to `limit` for `path` to appear; true if it did.
fn appears_within(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > limit {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A child of a process with exit and signal dumps configured: it sends
/// itself the dump signal, which must not make the parent dump, then
/// leaves with `exit`, which runs the exit hook it inherited.
#[test]
fn scenario_child_of_a_process_with_live_dumps() {
    if !playing("scenario_child_of_a_process_with_live_dumps") {
        return;
    }
    let dir = scenario_dir();
    let parent = std::process::id();
    let template = std::env::var("ALLOC_TRACK_DUMP").unwrap();
    let parent_numbered = |n: u64| {
        alloc_track::numbered_path(
            Path::new(&template.replace("{pid}", &parent.to_string())),
            n,
        )
    };
    // SAFETY: the child signals itself, waits and leaves with `exit`;
    // the parent's other threads are the dump thread and the harness's.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: signals this process only.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        // Had the child's signal reached the parent's dump thread, its
        // dump would appear at once; a second is generous.
        let parent_dumped = appears_within(&parent_numbered(1), Duration::from_secs(2));
        std::process::exit(if parent_dumped { 3 } else { 0 });
    }
    assert!(pid > 0, "fork failed");
    let status = common::wait_with_deadline(pid, CHILD_DEADLINE).expect("the child hung");
    assert!(
        exited_cleanly(status),
        "status {status:#x} (3: the child's signal made the parent dump)"
    );
    assert!(!parent_numbered(1).exists());
    // The parent still answers its own signal.
    // SAFETY: signals this process only.
    unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
    assert!(appears_within(&parent_numbered(1), Duration::from_secs(60)));

    let child_exit_dump = PathBuf::from(template.replace("{pid}", &pid.to_string()));
    if template.contains("{pid}") {
        let dump = Dump::load(&child_exit_dump).expect("the child's own exit dump");
        assert_eq!(dump.pid, pid as u32);
    }
    // Never the parent's exit dump: that is written when the parent exits.
    let parent_exit_dump = PathBuf::from(template.replace("{pid}", &parent.to_string()));
    assert!(
        !parent_exit_dump.exists(),
        "the child wrote the parent's dump"
    );
    println!("files: {:?}", common::file_names(&dir));
}

#[test]
fn a_forked_child_writes_its_own_exit_dump_and_never_the_parents_dumps() {
    for template in ["heap.{pid}.json", "heap.json"] {
        let dir = temp_dir(if template.contains("{pid}") {
            "own"
        } else {
            "shared"
        });
        let path = dir.join(template);
        let output = run_scenario(
            "scenario_child_of_a_process_with_live_dumps",
            &dir,
            &[
                ("ALLOC_TRACK_DUMP", path.to_str().unwrap()),
                ("ALLOC_TRACK_SIGNAL", "USR1"),
            ],
        );
        assert!(output.contains("files: "), "{output}");
        // The scenario process's own exit dump, after it finished.
        let files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        let expected = if template.contains("{pid}") { 3 } else { 2 };
        assert_eq!(files.len(), expected, "{files:?}\n{output}");
        assert!(files.iter().all(|f| !f.contains(".tmp")), "{files:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Forks while another thread registers scope names as fast as it can: the
/// scope registry's lock is held at many of the forks, and each child names
/// a scope of its own and writes a dump (which reads the names).
#[test]
fn scenario_fork_while_scopes_are_named() {
    if !playing("scenario_fork_while_scopes_are_named") {
        return;
    }
    const SCOPE_FORKS: usize = 100;
    let dir = scenario_dir();
    // Resolves the program's symbols once, here, so that each child's dump
    // finds them cached instead of resolving them all again.
    alloc_track::dump(dir.join("warm-up.json")).expect("the parent's dump");
    let stop = Arc::new(AtomicBool::new(false));
    let namer = {
        let stop = stop.clone();
        thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // A few hundred names at most (the registry is bounded),
                // then the same names again: each call takes the lock.
                let _scope = alloc_track::scope(&format!("namer-{}", n % 200));
                n += 1;
            }
        })
    };
    let mut failures = Vec::new();
    for attempt in 0..SCOPE_FORKS {
        let path = dir.join(format!("scoped-{attempt}.json"));
        let pid = fork_and_dump(&path, || alloc_track::scope("child"));
        match common::wait_with_deadline(pid, CHILD_DEADLINE) {
            None => {
                failures.push(format!("fork {attempt}: the child hung (killed)"));
                break;
            }
            Some(status) if exited_cleanly(status) => {}
            Some(status) => failures.push(format!("fork {attempt}: child status {status:#x}")),
        }
    }
    stop.store(true, Ordering::Relaxed);
    namer.join().unwrap();
    assert!(failures.is_empty(), "{failures:#?}");
    println!("{SCOPE_FORKS} children named a scope and dumped");
}

#[test]
fn a_child_forked_while_scopes_are_named_can_name_one_and_dump() {
    let dir = temp_dir("scopes");
    let output = run_scenario("scenario_fork_while_scopes_are_named", &dir, &[]);
    assert!(
        output.contains("100 children named a scope and dumped"),
        "{output}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
