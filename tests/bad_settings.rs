//! Bad values of the variables the allocator reads itself
//! (`ALLOC_TRACK_MODE`, `ALLOC_TRACK_UNWIND`): each gets one clear line on
//! standard error, and the tracker runs in the mode chosen in code (here
//! sampled, so that a silent fall back to full mode would show), not the
//! costly full mode. `FULL` is accepted as `full`; an empty value is unset.
//!
//! A plain program (`harness = false`) that runs itself as a child with
//! each value and reads the child's standard error whole.

use std::alloc::System;
use std::process::Command;

use alloc_track::Tracker;

#[global_allocator]
static GLOBAL: Tracker<System> = Tracker::new(System).sampled(524288);

const CHILD_ENV: &str = "BAD_SETTINGS_CHILD";
const IN_CODE: &str = "sampled:524288";

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child();
    } else {
        parent();
    }
}

/// Prints the mode in force (as a snapshot records it) and the stack
/// walker (settled by the stack a `measure` records).
fn child() {
    let (_, diff) = alloc_track::measure(|| std::hint::black_box(vec![1u8; 100]));
    assert_eq!(diff.total_blocks(), 1);
    println!("mode={}", alloc_track::snapshot().mode());
    println!("walker={:?}", alloc_track::stack_walker());
}

struct Run {
    mode: String,
    walker: String,
    stderr: Vec<String>,
}

fn run(mode: Option<&str>, unwind: Option<&str>) -> Run {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.env(CHILD_ENV, "1");
    // Nothing else may print: no live dumps.
    for name in [
        "ALLOC_TRACK_DUMP",
        "ALLOC_TRACK_INTERVAL",
        "ALLOC_TRACK_SIGNAL",
    ] {
        command.env_remove(name);
    }
    for (name, value) in [("ALLOC_TRACK_MODE", mode), ("ALLOC_TRACK_UNWIND", unwind)] {
        match value {
            Some(value) => command.env(name, value),
            None => command.env_remove(name),
        };
    }
    let output = command.output().expect("run the child");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
            .to_string()
    };
    Run {
        mode: field("mode="),
        walker: field("walker="),
        stderr: stderr.lines().map(String::from).collect(),
    }
}

fn mode_line(value: &str) -> String {
    format!(
        "alloc-track: ALLOC_TRACK_MODE={value:?} is not a mode (full, count, sampled or \
         sampled:BYTES with BYTES > 0); using {IN_CODE}, the mode set in code"
    )
}

fn parent() {
    let unset = run(None, None);
    assert_eq!(unset.mode, IN_CODE);
    assert!(unset.stderr.is_empty(), "{:?}", unset.stderr);

    // Not a mode: one line naming the value and the mode used instead.
    for bad in ["bogus", "sampled:0", "sampled:", "ful"] {
        let result = run(Some(bad), None);
        assert_eq!(result.mode, IN_CODE, "ALLOC_TRACK_MODE={bad:?}");
        assert_eq!(result.stderr, [mode_line(bad)], "ALLOC_TRACK_MODE={bad:?}");
    }

    // Any case, blanks around it: accepted, silently.
    for (value, mode) in [
        ("FULL", "full"),
        (" Count ", "count"),
        ("Sampled:4K", "sampled:4096"),
    ] {
        let result = run(Some(value), None);
        assert_eq!(result.mode, mode, "ALLOC_TRACK_MODE={value:?}");
        assert!(result.stderr.is_empty(), "{:?}", result.stderr);
    }

    // Empty: as if unset, silently.
    let empty = run(Some(""), None);
    assert_eq!(empty.mode, IN_CODE);
    assert!(empty.stderr.is_empty(), "{:?}", empty.stderr);

    // The walker variable exists where the fast walkers do.
    if cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    )) {
        let bad = run(None, Some("fast"));
        assert_eq!(
            bad.stderr,
            [
                "alloc-track: ALLOC_TRACK_UNWIND=\"fast\" is not a stack walker (unwinder, cfi); \
              choosing the walker as if it were unset"
            ]
        );
        assert_eq!(bad.walker, unset.walker, "a bad value forces nothing");

        let upper = run(None, Some("UNWINDER"));
        assert_eq!(upper.walker, "Unwinder");
        assert!(upper.stderr.is_empty(), "{:?}", upper.stderr);

        // Both bad at once: one line each.
        let both = run(Some("bogus"), Some("fast"));
        assert_eq!(both.mode, IN_CODE);
        assert_eq!(both.stderr.len(), 2, "{:?}", both.stderr);
        assert_eq!(both.stderr[0], mode_line("bogus"));
    }
    println!("bad_settings: ok");
}
