//! 1,100 threads inside `measure`, then `limits`, then `scope(..).log()`, all
//! at once: more than the 1,023 measure tags the live record has room for.
//! No thread may panic; the first 1,023 get exact figures, the rest exact
//! flows with retained figures marked approximate; the process gets one
//! line on standard error about it, not one per thread.
//!
//! A plain program (`harness = false`) that runs itself as a child, so that
//! the child's standard error can be read whole and no other test's
//! measures hold tags meanwhile. The parent kills a child that takes longer
//! than the watchdog allows (a thread that panics before the barrier leaves
//! the others waiting forever), so a regression fails rather than hangs.

use std::alloc::System;
use std::io::Read;
use std::panic::{self, AssertUnwindSafe};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use alloc_track::{limits, measure, scope, Approximation, Diff, Tracker};

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System);

const THREADS: usize = 1100;
/// Tags run from 1 to 1,023.
const TAGS: usize = 1023;
const CHILD_ENV: &str = "MEASURE_MANY_THREADS_CHILD";
const WATCHDOG: Duration = Duration::from_secs(300);
const WARNING: &str = "threads are inside measure, limits or scope(..).log() at once";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    } else {
        parent();
    }
}

/// What every thread's closure does, with every measure of the round open:
/// 1,000 bytes freed on the thread, 24 kept, and 48 handed to the main
/// thread, which frees them while the measures are still open (so the
/// tagged measures must leave them out of the retained figures).
fn body(round: &Round) -> Vec<u8> {
    let scratch = vec![0u8; 1000];
    let kept = vec![1u8; 24];
    let given = vec![2u8; 48];
    round.handed_over.lock().unwrap().push(given);
    round.barrier.wait(); // every thread is inside its measure
    round.barrier.wait(); // the main thread has freed the handed-over blocks
    drop(scratch);
    kept
}

struct Round {
    barrier: Barrier,
    handed_over: Mutex<Vec<Vec<u8>>>,
}

/// Runs `work` on `THREADS` threads with 64 KiB stacks, the main thread
/// freeing the handed-over blocks between the two barriers of `body`.
fn at_once<T: Send + 'static>(work: fn(&Round) -> T) -> Vec<T> {
    let round = Arc::new(Round {
        barrier: Barrier::new(THREADS + 1),
        handed_over: Mutex::new(Vec::with_capacity(THREADS)),
    });
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let round = Arc::clone(&round);
            thread::Builder::new()
                .stack_size(64 << 10)
                .spawn(move || work(&round))
                .expect("spawn a thread")
        })
        .collect();
    round.barrier.wait();
    round.handed_over.lock().unwrap().clear();
    round.barrier.wait();
    handles
        .into_iter()
        .map(|handle| handle.join().expect("no thread panics"))
        .collect()
}

fn child() {
    // Round 1: measure.
    let diffs: Vec<Diff> = at_once(|round| measure(|| body(round)).1);
    report_round("measure", &diffs);

    // Round 2: limits, with one limit broken on purpose so that each
    // thread's message shows whether its figures are approximate.
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let messages: Vec<String> = at_once(|round| {
        let checked = panic::catch_unwind(AssertUnwindSafe(|| {
            limits()
                .max_blocks(2)
                .max_bytes(1072)
                .max_peak_bytes(1072)
                .max_retained_blocks(1)
                .max_retained_bytes(24)
                .check(|| body(round))
        }));
        match checked {
            Ok(_) => "passed".to_string(),
            Err(payload) => payload
                .downcast_ref::<String>()
                .cloned()
                .unwrap_or_else(|| "a panic without a message".to_string()),
        }
    });
    panic::set_hook(quiet);
    for message in &messages {
        println!("limits:{}", message.replace('\n', "\\n"));
    }

    // Round 3: logged scopes (their lines go to standard error).
    at_once(|round| {
        let _task = scope("connection").log();
        drop(body(round));
    });
    println!("done");
}

fn report_round(name: &str, diffs: &[Diff]) {
    for diff in diffs {
        println!(
            "{name}:approximate={} total={}/{} retained={}/{} peak={:?} display_marked={}",
            diff.approximation() == Some(Approximation::TooManyMeasuringThreads),
            diff.total_bytes(),
            diff.total_blocks(),
            diff.retained_bytes(),
            diff.retained_blocks(),
            diff.peak_bytes(),
            diff.to_string()
                .contains("Approximate: retained figures are an upper bound"),
        );
    }
}

/// Runs the child and returns (success, stdout, stderr), killing it past
/// the watchdog.
fn run_child() -> (bool, String, String) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, "1")
        .env_remove("ALLOC_TRACK_MODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child");
    // Read both pipes as the child writes: 1,100 log lines overflow a pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > WATCHDOG {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err.join().unwrap();
            panic!(
                "the child did not finish within {WATCHDOG:?} (a thread panicked before \
                 the barrier?); its stderr began:\n{}",
                stderr.chars().take(4000).collect::<String>()
            );
        }
        thread::sleep(Duration::from_millis(50));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

fn parent() {
    let (success, stdout, stderr) = run_child();
    let stderr_head: String = stderr.chars().take(4000).collect();
    assert!(
        success,
        "the child failed; its stderr began:\n{stderr_head}"
    );
    assert!(stdout.lines().any(|l| l == "done"), "{stdout}");

    // Round 1: every flow exact; retained exact where tagged, and here
    // (nothing reuses the handed-over blocks' site) right for all.
    let exact = "total=1072/3 retained=24/1 peak=Some(1072)";
    let rows: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("measure:"))
        .collect();
    assert_eq!(rows.len(), THREADS);
    let marked = rows
        .iter()
        .filter(|r| r.starts_with("approximate=true"))
        .count();
    assert_eq!(marked, THREADS - TAGS, "{rows:#?}");
    for row in &rows {
        assert!(row.contains(exact), "{row}");
        let approximate = row.starts_with("approximate=true");
        assert!(
            row.ends_with(&format!("display_marked={approximate}")),
            "Display must show the approximation: {row}"
        );
    }

    // Round 2: every check fails on the one broken limit only, and says
    // whether its figures are approximate.
    let messages: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("limits:"))
        .collect();
    assert_eq!(messages.len(), THREADS);
    for message in &messages {
        assert!(
            message.starts_with("alloc-track limits exceeded:\\n  allocations: 3, limit 2\\n")
                && message.matches(", limit ").count() == 1,
            "{message}"
        );
    }
    let marked = messages
        .iter()
        .filter(|m| m.contains("Approximate: retained figures are an upper bound"))
        .count();
    assert_eq!(marked, THREADS - TAGS);

    // Round 3: one line per scope, every figure on it exact for all.
    let lines: Vec<&str> = stderr.lines().collect();
    let scope_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("alloc-track: scope \"connection\""))
        .collect();
    assert_eq!(scope_lines.len(), THREADS, "{stderr_head}");
    for line in &scope_lines {
        assert_eq!(
            // The process-wide RSS that follows is not this test's concern.
            line.split("; RSS").next().unwrap(),
            // Kept and dropped inside: the 48 bytes freed by the main
            // thread are all the scope's thread still counts as live.
            "alloc-track: scope \"connection\": +48 B live in +1 blocks, \
             1.0 KiB allocated in 3 blocks, peak +1.0 KiB"
        );
    }

    // One warning for the whole process, and nothing else on stderr.
    let warnings = lines.iter().filter(|l| l.contains(WARNING)).count();
    assert_eq!(warnings, 1, "{stderr_head}");
    assert_eq!(lines.len(), THREADS + 1, "{stderr_head}");
    println!("measure_many_threads: ok");
}
