//! Live dumps configured by environment variables, end to end: this test
//! binary runs itself as a child with `ALLOC_TRACK_*` set, as an operator
//! would start a deployed service, and checks the files the child leaves.

mod common;

use std::alloc::System;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use alloc_track::dump::Dump;
use common::file_names;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// The bytes [`held_by_child`] allocates.
const HELD_BYTES: u64 = (1 << 20) + 64 * std::mem::size_of::<Vec<u8>>() as u64;

/// Set in the child's environment: run the child's part.
const CHILD: &str = "ALLOC_TRACK_TEST_CHILD";

/// What the child holds while it waits: 64 blocks of 16 KiB, 1 MiB in all,
/// and the vector of 64 `Vec`s that holds them.
#[inline(never)]
fn held_by_child() -> Vec<Vec<u8>> {
    // Through `black_box`: an optimised build may otherwise make the
    // `collect` a tail call, and this function would not be on its stack.
    std::hint::black_box((0..64).map(|i| vec![i as u8; 16 * 1024]).collect())
}

/// The child: allocate, say "ready", then obey stdin: `exit` calls
/// `std::process::exit(0)`, end of input returns normally.
#[test]
fn child_process() {
    let Some(_) = std::env::var_os(CHILD) else {
        return; // an ordinary test run: nothing to do
    };
    let held = held_by_child();
    println!("ready");
    let _ = std::io::stdout().flush();
    for line in std::io::stdin().lock().lines() {
        if line.is_ok_and(|l| l.trim() == "exit") {
            std::process::exit(0);
        }
    }
    // Freed before the exit dump, and replaced by 1 MiB that is never
    // freed: the exit dump must show the new one, not the old.
    drop(std::hint::black_box(held));
    std::mem::forget(held_by_child());
}

struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
}

fn spawn(vars: &[(&str, &Path)], extra: &[(&str, &str)]) -> Running {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in vars {
        command.env(name, value);
    }
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    // Wait for "ready": the child's data is allocated.
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let ready = lines.any(|l| l.map(|l| l.contains("ready")).unwrap_or(false));
    assert!(ready, "the child never got ready");
    // Keep reading so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    let stdin = child.stdin.take();
    Running { child, stdin }
}

impl Running {
    /// Ends the child with `exit` (`std::process::exit(0)`) or by closing
    /// stdin (normal return), then returns its stderr.
    fn finish(mut self, by_exit: bool) -> String {
        if let Some(mut stdin) = self.stdin.take() {
            if by_exit {
                writeln!(stdin, "exit").unwrap();
            }
        }
        let output = self.child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "child failed: {stderr}");
        stderr
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alloc-track-live-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live bytes of the dump's sites whose stack passes through `function`.
fn bytes_in(dump: &Dump, function: &str) -> u64 {
    dump.sites
        .iter()
        .filter(|site| {
            dump.stacks[site.stack as usize]
                .locations
                .iter()
                .flat_map(|&l| &dump.locations[l as usize].frames)
                .any(|f| f.function.contains(function))
        })
        .map(|site| site.live_bytes)
        .sum()
}

#[test]
fn interval_dumps_go_to_numbered_files_and_the_exit_dump_to_the_path() {
    let dir = temp_dir("interval");
    let path = dir.join("heap.json");
    let running = spawn(
        &[("ALLOC_TRACK_DUMP", &path)],
        &[("ALLOC_TRACK_INTERVAL", "0.1")],
    );
    let pid = running.pid();
    wait_for(&dir.join("heap.2.json"));
    // End of input: the child's `main` returns normally.
    let stderr = running.finish(false);
    assert!(stderr.is_empty(), "no warnings expected: {stderr}");

    let first = Dump::load(dir.join("heap.1.json")).unwrap();
    let second = Dump::load(dir.join("heap.2.json")).unwrap();
    assert_eq!(first.pid, pid);
    assert!(second.timestamp_ms >= first.timestamp_ms + 50);
    assert!(second.epoch > first.epoch);
    // The child's 1 MiB, exactly, at both ticks.
    assert_eq!(bytes_in(&first, "held_by_child"), HELD_BYTES);
    assert_eq!(bytes_in(&second, "held_by_child"), HELD_BYTES);

    // The exit dump, taken after `main` returned: the first 1 MiB was
    // freed, the second (leaked) one is there.
    let last = Dump::load(&path).unwrap();
    assert_eq!(last.pid, pid);
    assert_eq!(bytes_in(&last, "held_by_child"), HELD_BYTES);
    assert!(last.epoch > second.epoch);
    let born_late: u64 = last
        .sites
        .iter()
        .flat_map(|s| &s.births)
        .filter(|b| b.epoch > second.epoch)
        .map(|b| b.bytes)
        .sum();
    assert!(
        born_late >= HELD_BYTES,
        "the leaked 1 MiB was born after the ticks"
    );
    // Renamed into place: no temporary file is left behind.
    assert!(
        file_names(&dir).iter().all(|name| !name.contains(".tmp")),
        "{:?}",
        file_names(&dir)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_signal_writes_a_numbered_dump_and_process_exit_writes_the_last() {
    let dir = temp_dir("signal");
    let path = dir.join("heap.json");
    let running = spawn(
        &[("ALLOC_TRACK_DUMP", &path)],
        &[("ALLOC_TRACK_SIGNAL", "USR1")],
    );
    let pid = running.pid();
    for n in 1..=2 {
        let status = Command::new("kill")
            .args(["-USR1", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_for(&dir.join(format!("heap.{n}.json")));
    }
    // No interval: nothing else is written while the child waits.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(file_names(&dir), ["heap.1.json", "heap.2.json"]);

    let stderr = running.finish(true); // std::process::exit(0)
    assert!(stderr.is_empty(), "no warnings expected: {stderr}");
    let on_signal = Dump::load(dir.join("heap.1.json")).unwrap();
    assert_eq!(on_signal.pid, pid);
    assert_eq!(bytes_in(&on_signal, "held_by_child"), HELD_BYTES);
    // `exit` was called with the first 1 MiB still held.
    let at_exit = Dump::load(&path).unwrap();
    assert_eq!(bytes_in(&at_exit, "held_by_child"), HELD_BYTES);
    assert_eq!(
        file_names(&dir),
        ["heap.1.json", "heap.2.json", "heap.json"]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn keep_bounds_the_numbered_files_and_pid_names_the_process() {
    let dir = temp_dir("keep");
    let pattern = dir.join("heap-{pid}.json");
    let running = spawn(
        &[("ALLOC_TRACK_DUMP", &pattern)],
        &[("ALLOC_TRACK_INTERVAL", "0.05"), ("ALLOC_TRACK_KEEP", "2")],
    );
    let pid = running.pid();
    wait_for(&dir.join(format!("heap-{pid}.5.json")));
    running.finish(true);
    let names = file_names(&dir);
    // The exit dump and the newest two numbered ones.
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.contains(&format!("heap-{pid}.json")), "{names:?}");
    let numbers: Vec<u64> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix(&format!("heap-{pid}."))?
                .strip_suffix(".json")
        })
        .filter_map(|n| n.parse().ok())
        .collect();
    assert_eq!(numbers.len(), 2, "{names:?}");
    assert_eq!(numbers[0].abs_diff(numbers[1]), 1, "{names:?}");
    assert!(numbers.iter().all(|&n| n >= 4), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_settings_cost_one_line_each_and_the_exit_dump_still_works() {
    let dir = temp_dir("bad");
    let path = dir.join("heap.json");
    let running = spawn(
        &[("ALLOC_TRACK_DUMP", &path)],
        &[
            ("ALLOC_TRACK_INTERVAL", "often"),
            ("ALLOC_TRACK_SIGNAL", "HUP"),
        ],
    );
    let stderr = running.finish(true);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("alloc-track: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings[0].contains("ALLOC_TRACK_INTERVAL=\"often\""),
        "{stderr}"
    );
    assert!(Dump::load(&path).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_unwritable_path_is_one_line_on_stderr_not_a_crash() {
    let dir = temp_dir("unwritable");
    let path = dir.join("no/such/dir/heap.json");
    let running = spawn(&[("ALLOC_TRACK_DUMP", &path)], &[]);
    let stderr = running.finish(true);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("alloc-track: dump at exit failed: "),
        "{stderr}"
    );
    assert!(stderr.contains("no/such/dir"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dump_writes_now_from_a_call() {
    let dir = temp_dir("call");
    let path = dir.join("now.json");
    let held = held_by_child();
    alloc_track::dump(&path).unwrap();
    let dump = Dump::load(&path).unwrap();
    assert_eq!(dump.pid, std::process::id());
    assert_eq!(bytes_in(&dump, "held_by_child"), HELD_BYTES);
    drop(held);
    let error = alloc_track::dump(dir.join("missing/now.json")).unwrap_err();
    assert!(error.to_string().contains("missing"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
