//! Issue 12, points 1 and 2, end to end: the report comes first and always
//! (a flamegraph that cannot be written is a warning), and `-` is standard
//! input as an input and standard output as an output in every command.

mod common;

use std::fs;
use std::process::Output;

use common::{data, run, run_with_stdin};
use tempfile::TempDir;

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn app_bytes() -> Vec<u8> {
    fs::read(data("app.json")).unwrap()
}

/// Nothing in `dir` but what was put there: no file named `-`, no SVG.
fn assert_dir_empty(dir: &TempDir) {
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.is_empty(), "files left behind: {names:?}");
}

#[test]
fn report_prints_the_text_when_the_side_svg_cannot_be_written() {
    let dir = TempDir::new().unwrap();
    // `report <(cat dump.json)`: the dump is a pipe under /proc/self/fd (as
    // /dev/fd/63 is), so the SVG beside it cannot be created, even by root.
    let output = run_with_stdin(&["report", "/proc/self/fd/0"], dir.path(), &app_bytes());
    let (text, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert!(
        text.starts_with("alloc-track report of /proc/self/fd/0"),
        "{text}"
    );
    assert!(text.contains("top 6 of 6 sites"), "{text}");
    assert_eq!(err.lines().count(), 1, "one warning line: {err:?}");
    assert!(
        err.starts_with("alloc-track: warning: no flamegraph written: /proc/self/fd/0.svg"),
        "{err}"
    );

    // An explicit output in a directory that does not exist: the same.
    let app = data("app.json");
    let output = run(
        &["report", app.to_str().unwrap(), "-o", "no/such/dir/g.svg"],
        dir.path(),
    );
    let (text, err) = (stdout(&output), stderr(&output));
    assert_eq!(output.status.code(), Some(0), "stderr: {err}");
    assert!(text.contains("live heap    8.3 MiB"), "{text}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("no/such/dir/g.svg: cannot write"), "{err}");
}

#[test]
fn a_dash_reads_the_dump_from_standard_input_in_every_command() {
    let dir = TempDir::new().unwrap();
    let app = app_bytes();
    let after = data("after.json");
    let after = after.to_str().unwrap();
    let trend_1 = data("trend/service.1.json");
    let trend_1 = trend_1.to_str().unwrap();

    let report = run_with_stdin(&["report", "-"], dir.path(), &app);
    assert!(report.status.success(), "{}", stderr(&report));
    let text = stdout(&report);
    assert!(
        text.starts_with("alloc-track report of standard input"),
        "{text}"
    );
    assert!(text.contains("live heap    8.3 MiB"), "{text}");

    let graph = run_with_stdin(&["flamegraph", "-"], dir.path(), &app);
    assert!(graph.status.success(), "{}", stderr(&graph));
    assert!(stdout(&graph).starts_with("<?xml"), "the SVG on stdout");

    let diff = run_with_stdin(&["diff", "-", after, "--no-flamegraph"], dir.path(), &app);
    assert!(diff.status.success(), "{}", stderr(&diff));
    assert!(
        stdout(&diff).contains("before       standard input"),
        "{}",
        stdout(&diff)
    );

    let service = fs::read(data("trend/service.2.json")).unwrap();
    let trend = run_with_stdin(&["trend", trend_1, "-", "--no-chart"], dir.path(), &service);
    assert!(trend.status.success(), "{}", stderr(&trend));
    assert!(
        stdout(&trend).contains("over 2 dumps"),
        "{}",
        stdout(&trend)
    );

    let export = run_with_stdin(&["export", "-", "--format", "dhat"], dir.path(), &app);
    assert!(export.status.success(), "{}", stderr(&export));
    assert!(stdout(&export).starts_with("{\"dhatFileVersion\":2"));

    // Bad input on standard input is named as such.
    let bad = run_with_stdin(&["report", "-"], dir.path(), b"{");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).starts_with("alloc-track: standard input: truncated dump"),
        "{}",
        stderr(&bad)
    );
    // Standard input can be read once.
    let twice = run_with_stdin(&["diff", "-", "-"], dir.path(), &app);
    assert_eq!(twice.status.code(), Some(1));
    assert_eq!(stderr(&twice).lines().count(), 1, "{}", stderr(&twice));
    assert!(stderr(&twice).contains("standard input can be read only once"));
    assert_dir_empty(&dir);
}

#[test]
fn a_dash_output_is_standard_output_in_every_command() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    let app = app.to_str().unwrap();
    let after = data("after.json");
    let after = after.to_str().unwrap();
    let trend_1 = data("trend/service.1.json");
    let trend_2 = data("trend/service.2.json");

    // report: the SVG takes stdout, the report goes to stderr.
    let report = run(&["report", app, "-o", "-"], dir.path());
    assert!(report.status.success(), "{}", stderr(&report));
    assert!(stdout(&report).starts_with("<?xml"));
    assert!(stderr(&report).contains("live heap    8.3 MiB"));

    let graph = run(&["flamegraph", app, "-o", "-"], dir.path());
    assert!(graph.status.success(), "{}", stderr(&graph));
    assert!(stdout(&graph).starts_with("<?xml"));

    let diff = run(&["diff", app, after, "-o", "-"], dir.path());
    assert!(diff.status.success(), "{}", stderr(&diff));
    assert!(stdout(&diff).starts_with("<?xml"));
    assert!(stderr(&diff).contains("alloc-track diff of live bytes"));

    let trend = run(
        &[
            "trend",
            trend_1.to_str().unwrap(),
            trend_2.to_str().unwrap(),
            "-o",
            "-",
        ],
        dir.path(),
    );
    assert!(trend.status.success(), "{}", stderr(&trend));
    assert!(stdout(&trend).starts_with("<svg") || stdout(&trend).starts_with("<?xml"));
    assert!(stderr(&trend).contains("alloc-track trend"));

    // export writes to stdout with no -o at all.
    let export = run(&["export", app, "--format", "folded"], dir.path());
    assert!(export.status.success(), "{}", stderr(&export));
    assert!(
        stdout(&export).contains("demo_app::main"),
        "{}",
        stdout(&export)
    );
    assert_dir_empty(&dir);
}
