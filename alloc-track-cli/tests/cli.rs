//! End-to-end tests of the `alloc-track` binary: exit codes, the files it
//! writes, and one clear line on stderr for every kind of bad input.

mod common;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{run, BIN};
use tempfile::TempDir;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must fail on bad input: exit code 1 and exactly one
/// line on stderr, `alloc-track: ` then a message containing `needle`.
fn assert_one_line_error(args: &[&str], dir: &Path, needle: &str) {
    let output = run(args, dir);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "args {args:?}, stderr {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got {err:?}");
    assert!(err.starts_with("alloc-track: "), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn report_prints_the_summary_and_writes_the_flamegraph_beside_the_dump() {
    let dir = TempDir::new().unwrap();
    let dump = dir.path().join("app.json");
    fs::copy(data("app.json"), &dump).unwrap();
    let output = run(&["report", "app.json"], dir.path());
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("live heap    8.3 MiB in 34,276 blocks"),
        "{text}"
    );
    assert!(text.contains("flamegraph of live bytes: app.svg"), "{text}");
    let svg = fs::read_to_string(dir.path().join("app.svg")).unwrap();
    assert!(svg.starts_with("<?xml"), "not an SVG");
}

#[test]
fn report_by_peak_fails_clearly_without_a_peak_breakdown() {
    let dir = TempDir::new().unwrap();
    let after = data("after.json");
    assert_one_line_error(
        &[
            "report",
            after.to_str().unwrap(),
            "--by",
            "peak",
            "--no-flamegraph",
        ],
        dir.path(),
        "this dump has no peak breakdown",
    );
}

#[test]
fn flamegraph_writes_the_requested_file() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    let output = run(
        &[
            "flamegraph",
            app.to_str().unwrap(),
            "-o",
            "g.svg",
            "--icicle",
            "--site-at-root",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("g.svg").is_file());
}

#[test]
fn diff_writes_both_differential_graphs() {
    let dir = TempDir::new().unwrap();
    let (before, after) = (data("app.json"), data("after.json"));
    let output = run(
        &[
            "diff",
            before.to_str().unwrap(),
            after.to_str().unwrap(),
            "-o",
            "d.svg",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(dir.path().join("d.svg").is_file());
    assert!(dir.path().join("d.shrank.svg").is_file());
    assert!(stdout(&output).contains("gone"));
}

#[test]
fn export_writes_every_format() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    for (format, file) in [
        ("folded", "a.folded"),
        ("pprof", "a.pb.gz"),
        ("dhat", "a.dhat.json"),
    ] {
        let output = run(
            &[
                "export",
                app.to_str().unwrap(),
                "--format",
                format,
                "-o",
                file,
            ],
            dir.path(),
        );
        assert!(output.status.success(), "{format}: {}", stderr(&output));
        assert!(
            fs::metadata(dir.path().join(file)).unwrap().len() > 0,
            "{format}"
        );
    }
}

#[test]
fn help_exits_zero_and_bad_usage_exits_two() {
    let dir = TempDir::new().unwrap();
    let help = run(&["report", "--help"], dir.path());
    assert_eq!(help.status.code(), Some(0));
    assert!(stdout(&help).contains("--by"));
    let usage = run(&["report"], dir.path());
    assert_eq!(usage.status.code(), Some(2));
    let unknown = run(
        &["export", "x.json", "--format", "xml", "-o", "x"],
        dir.path(),
    );
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    // Folded output of a large-enough dump, to a reader that closes at once.
    let mut child = Command::new(BIN)
        .args([
            "export",
            app.to_str().unwrap(),
            "--format",
            "folded",
            "-o",
            "-",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "status {status}, stderr {err}");
    assert!(err.is_empty(), "{err}");
}

/// Writes `text` into a file in `dir` and returns its name.
fn write_bad(dir: &Path, name: &str, text: &str) -> String {
    fs::write(dir.join(name), text).unwrap();
    name.to_string()
}

/// A valid dump's text with `from` replaced by `to`.
fn edited(from: &str, to: &str) -> String {
    let text = fs::read_to_string(data("app.json")).unwrap();
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn bad_input_gets_one_line_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let d = dir.path();
    let valid = fs::read_to_string(data("app.json")).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("missing.json".to_string(), "missing.json: No such file"),
        (write_bad(d, "empty.json", ""), "empty.json: truncated dump"),
        (
            write_bad(d, "truncated.json", &valid[..valid.len() / 2]),
            "truncated.json: truncated dump",
        ),
        (
            write_bad(d, "other.json", r#"{"hello": [1, 2]}"#),
            "other.json: valid JSON but not",
        ),
        (
            write_bad(
                d,
                "newer.json",
                &edited("\"version\": 1", "\"version\": 99"),
            ),
            "newer.json: dump format version 99 is newer",
        ),
        (
            write_bad(d, "negative.json", &edited("\"pid\": 4242", "\"pid\": -1")),
            "negative.json: not a valid dump at line",
        ),
        (
            write_bad(
                d,
                "absurd.json",
                &edited(
                    "\"live_bytes\": 6815744",
                    "\"live_bytes\": 18446744073709551615",
                ),
            ),
            "absurd.json: inconsistent dump",
        ),
        (
            write_bad(d, "huge.json", &edited("\"pid\": 4242", "\"pid\": 1e400")),
            "huge.json: not a valid dump",
        ),
        (
            write_bad(
                d,
                "badstack.json",
                &edited("\"stack\": 1,", "\"stack\": 7000000,"),
            ),
            "badstack.json: inconsistent dump: sites[1] refers to stack 7000000",
        ),
        (".".to_string(), ".: is a directory"),
    ];
    for (file, needle) in &cases {
        for command in [
            vec!["report", file.as_str(), "--no-flamegraph"],
            vec!["flamegraph", file.as_str(), "-o", "x.svg"],
            vec![
                "export",
                file.as_str(),
                "--format",
                "pprof",
                "-o",
                "x.pb.gz",
            ],
            vec!["diff", file.as_str(), file.as_str(), "--no-flamegraph"],
        ] {
            assert_one_line_error(&command, d, needle);
        }
    }
    assert!(!d.join("x.svg").exists() && !d.join("x.pb.gz").exists());
}

#[test]
fn unwritable_outputs_get_one_line_naming_the_file() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    let app = app.to_str().unwrap();
    // `report` prints its text anyway and warns: see tests/streams.rs.
    assert_one_line_error(
        &["flamegraph", app, "-o", "."],
        dir.path(),
        ".: cannot write: is a directory",
    );
    assert_one_line_error(
        &["export", app, "--format", "dhat", "-o", "/proc/nope/x.json"],
        dir.path(),
        "/proc/nope/x.json: cannot write",
    );
}
