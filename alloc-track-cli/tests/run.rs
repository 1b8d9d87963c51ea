//! Issue 12, point 8, end to end: `alloc-track run -- CMD` runs a program
//! with `ALLOC_TRACK_DUMP` set, prints the report of the dump it wrote and
//! passes its exit code on; a `cargo run/test/bench` build gets frame
//! pointers and debug info in a target directory of its own. The programs
//! here are shell scripts that write a fixture dump where the variable
//! says, as a program built with alloc-track does at exit: Unix only.
#![cfg(unix)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::{data, BIN};
use tempfile::TempDir;

/// Writes the app.json fixture where ALLOC_TRACK_DUMP says ({pid} -> $$).
const WRITE_DUMP: &str = r#"cp "$FIXTURE" "$(printf %s "$ALLOC_TRACK_DUMP" | sed "s/{pid}/$$/")""#;

fn alloc_track(args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .current_dir(dir)
        .env("FIXTURE", data("app.json"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().expect("run alloc-track")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn runs_the_program_reports_its_dump_and_passes_its_exit_code_on() {
    let dir = TempDir::new().unwrap();
    let script = format!("{WRITE_DUMP}; echo program output; exit 3");
    let output = alloc_track(&["run", "--", "sh", "-c", &script], dir.path(), &[]);
    let (out, err) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(3), "{err}");
    assert!(out.starts_with("program output\n"), "{out}");
    assert!(
        out.contains("live heap    8.3 MiB in 34,276 blocks"),
        "{out}"
    );
    assert!(
        err.contains("the dump was temporary; --out PATH keeps it"),
        "{err}"
    );
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing left behind"
    );
}

#[test]
fn out_keeps_the_dump_and_its_flamegraph() {
    let dir = TempDir::new().unwrap();
    let output = alloc_track(
        &["run", "--out", "heap.json", "--", "sh", "-c", WRITE_DUMP],
        dir.path(),
        &[],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(dir.path().join("heap.json").is_file());
    assert!(dir.path().join("heap.svg").is_file());
    assert!(text(&output.stdout).contains("flamegraph of live bytes: heap.svg"));
}

#[test]
fn a_program_that_writes_no_dump_is_told_and_its_code_kept() {
    let dir = TempDir::new().unwrap();
    let output = alloc_track(&["run", "--", "sh", "-c", "exit 5"], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(5));
    let err = text(&output.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("wrote no heap dump (exit code 5)"), "{err}");
    assert!(err.contains("#[global_allocator]"), "{err}");

    let missing = alloc_track(&["run", "--", "./no-such-program"], dir.path(), &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).starts_with("alloc-track: ./no-such-program: cannot run"));
}

#[test]
fn cargo_builds_get_frame_pointers_in_their_own_target_dir() {
    let dir = TempDir::new().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).unwrap();
    // A stand-in for cargo: records what it was given, then runs "the
    // program", which dumps.
    let cargo = bin.join("cargo");
    fs::write(
        &cargo,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$RUSTFLAGS\" \"$CARGO_TARGET_DIR\" \"$*\" > seen.txt\n{WRITE_DUMP}\n"
        ),
    )
    .unwrap();
    fs::set_permissions(&cargo, fs::Permissions::from_mode(0o755)).unwrap();
    let cargo = cargo.to_str().unwrap();
    let output = alloc_track(
        &["run", "--", cargo, "test", "--release"],
        dir.path(),
        &[("RUSTFLAGS", "-C target-cpu=native")],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let seen = fs::read_to_string(dir.path().join("seen.txt")).unwrap();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines,
        [
            "-C target-cpu=native -C force-frame-pointers=yes -C debuginfo=limited -C symbol-mangling-version=v0",
            "target/alloc-track",
            "test --release",
        ]
    );
    assert!(text(&output.stdout).contains("live heap    8.3 MiB"));

    // Not a cargo run: the environment is left alone.
    let output = alloc_track(&["run", "--", cargo, "build"], dir.path(), &[]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let seen = fs::read_to_string(dir.path().join("seen.txt")).unwrap();
    assert_eq!(seen.lines().next(), Some(""), "{seen}");
}
