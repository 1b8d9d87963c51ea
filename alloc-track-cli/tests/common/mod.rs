//! Helpers shared by the CLI's test files: golden-file comparison and
//! running the binary.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

/// The `alloc-track` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_alloc-track");

/// Compares `actual` with `tests/golden/NAME`. `UPDATE_GOLDENS=1` accepts
/// the new output deliberately; a missing golden is a failure, never
/// silently created.
pub fn check_golden(name: &str, actual: &[u8]) {
    let path = Path::new("tests/golden").join(name);
    let actual = String::from_utf8_lossy(actual);
    if std::env::var_os("UPDATE_GOLDENS").is_some_and(|v| v == "1") {
        fs::write(&path, actual.as_bytes()).expect("write golden");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "golden file {} is missing; run with UPDATE_GOLDENS=1 to create it, then review it",
            path.display()
        )
    });
    assert!(
        expected == actual,
        "output differs from {}; run with UPDATE_GOLDENS=1 to accept it\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

/// Runs the binary with `args` in `dir`.
pub fn run(args: &[&str], dir: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run alloc-track")
}

/// The standard output of a run that must have succeeded (its standard
/// error is the failure message).
pub fn ok_output(output: Output) -> Vec<u8> {
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{err}");
    output.stdout
}

/// [`ok_output`] as text, which must be UTF-8.
pub fn ok_stdout(output: Output) -> String {
    String::from_utf8(ok_output(output)).expect("UTF-8 output")
}

/// The text a successful run with `args` prints, in a fresh directory.
pub fn alloc_track(args: &[&str]) -> String {
    let dir = tempfile::TempDir::new().unwrap();
    ok_stdout(run(args, dir.path()))
}

/// Runs the binary with `args` in `dir`, `stdin` fed to its standard input.
pub fn run_with_stdin(args: &[&str], dir: &Path, stdin: &[u8]) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run alloc-track");
    let mut input = child.stdin.take().expect("stdin");
    // A command that fails early closes its end: that is its answer.
    let _ = input.write_all(stdin);
    drop(input);
    child.wait_with_output().expect("wait for alloc-track")
}

/// The test dumps in `tests/data/`.
pub fn data(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}
