//! `alloc-track run -- CMD ARGS`: runs a program built with alloc-track
//! with a heap dump at its exit (`ALLOC_TRACK_DUMP`, see the library's
//! `live_dump` module), then prints the report of each dump it wrote.
//!
//! For `cargo run`, `cargo test` and `cargo bench` the build gets frame
//! pointers, limited debug info and v0 symbol names (`-C
//! force-frame-pointers=yes -C debuginfo=limited -C
//! symbol-mangling-version=v0`, appended to any `RUSTFLAGS`): the cheap
//! stack walk, `function (file:line)` labels, and the concrete types of
//! generic functions that `report --by type` reads from the allocating
//! frames, in a target directory of its own
//! (`target/alloc-track`, or `$CARGO_TARGET_DIR/alloc-track`), so that the
//! user's normal build is not thrown away and rebuilt. The child's exit
//! code is passed on; the report is printed whatever it was.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use crate::error::CliError;
use crate::focus::StackFilter;
use crate::output::{beside, Output};
use crate::report::{report, ReportOptions};
use crate::rows::Naming;
use crate::weigh::Measure;

/// The flags `run` adds to a cargo build. `limited`, not
/// `line-tables-only`: line tables alone name inlined functions without
/// their module path (`load_profile`, not `app::load_profile`), which hides
/// both the standard library and the tracker's own frames from the
/// functions that recognise them by path. v0 mangling keeps generic
/// arguments in symbol names (`Box<app::Node>::new`, not `Box<T>::new`).
pub const PROFILING_RUSTFLAGS: &str =
    "-C force-frame-pointers=yes -C debuginfo=limited -C symbol-mangling-version=v0";

/// The `run` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunOptions {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// Where the dump goes (`{pid}` is replaced by each process's id); a
    /// temporary directory, removed afterwards, when `None`.
    pub out: Option<PathBuf>,
    /// What the reports rank by.
    pub measure: Measure,
    /// How many rows each report shows.
    pub top: usize,
    /// How rows are named.
    pub naming: Naming,
    /// Which stacks the reports look at.
    pub filter: StackFilter,
}

impl RunOptions {
    /// Defaults: a temporary dump, live bytes, 10 rows.
    pub fn new(command: Vec<OsString>) -> Self {
        RunOptions {
            command,
            out: None,
            measure: Measure::Live,
            top: 10,
            naming: Naming::default(),
            filter: StackFilter::default(),
        }
    }
}

/// True for `cargo run`, `cargo test` and `cargo bench` (by the program's
/// file name, so `~/.cargo/bin/cargo` counts, and `cargo +nightly test`).
pub fn is_cargo_run(command: &[OsString]) -> bool {
    let Some((program, args)) = command.split_first() else {
        return false;
    };
    if Path::new(program).file_stem() != Some(OsStr::new("cargo")) {
        return false;
    }
    let subcommand = args.iter().find(|a| !a.to_string_lossy().starts_with('+'));
    matches!(
        subcommand.and_then(|s| s.to_str()),
        Some("run" | "r" | "test" | "t" | "bench")
    )
}

/// `RUSTFLAGS` for the profiling build: the user's, then ours.
pub fn profiling_rustflags(existing: Option<&OsStr>) -> OsString {
    match existing.filter(|e| !e.is_empty()) {
        Some(flags) => {
            let mut all = flags.to_os_string();
            all.push(" ");
            all.push(PROFILING_RUSTFLAGS);
            all
        }
        None => OsString::from(PROFILING_RUSTFLAGS),
    }
}

/// The profiling build's own target directory.
pub fn profiling_target_dir(existing: Option<&OsStr>) -> PathBuf {
    match existing.filter(|e| !e.is_empty()) {
        Some(dir) => Path::new(dir).join("alloc-track"),
        None => PathBuf::from("target").join("alloc-track"),
    }
}

/// Runs the command, reports each dump it wrote on `out` (notes and
/// warnings on `err`), and returns the child's exit code.
pub fn run(
    options: &RunOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<u8, CliError> {
    let Some((program, args)) = options.command.split_first() else {
        return Err(CliError::Usage(
            "run needs a command: alloc-track run -- CMD ARGS".into(),
        ));
    };
    // `{pid}`: a `cargo test` runs several test binaries, each its own dump.
    let (pattern, temporary) = match &options.out {
        Some(path) => (path.clone(), None),
        None => {
            let dir = TempDir::new()?;
            (dir.path.join("dump.{pid}.json"), Some(dir))
        }
    };
    let mut child = Command::new(program);
    child.args(args).env("ALLOC_TRACK_DUMP", &pattern);
    if is_cargo_run(&options.command) {
        let flags = profiling_rustflags(std::env::var_os("RUSTFLAGS").as_deref());
        let target = profiling_target_dir(std::env::var_os("CARGO_TARGET_DIR").as_deref());
        let _ = writeln!(
            err,
            "alloc-track: building with RUSTFLAGS={:?} into {}",
            flags,
            target.display()
        );
        child
            .env("RUSTFLAGS", flags)
            .env("CARGO_TARGET_DIR", target);
    }
    let status = child.status().map_err(|source| CliError::Run {
        program: program.to_string_lossy().into_owned(),
        source,
    })?;
    let code = exit_code(status);
    let dumps = written_dumps(&pattern);
    if dumps.is_empty() {
        let _ = writeln!(
            err,
            "alloc-track: {} wrote no heap dump (exit code {code}): is alloc_track::Tracker its \
             #[global_allocator], and did it exit normally?",
            program.to_string_lossy()
        );
    }
    for (index, dump) in dumps.iter().enumerate() {
        if index > 0 {
            writeln!(out).map_err(CliError::Stdout)?;
        }
        let mut report_options = ReportOptions::new(dump);
        report_options.measure = options.measure;
        report_options.top = options.top;
        report_options.naming = options.naming.clone();
        report_options.filter = options.filter.clone();
        // A kept dump gets its flamegraph beside it; a temporary one none.
        if temporary.is_none() {
            report_options.flamegraph = Some(Output::File(beside(dump, ".svg")));
        }
        report(&report_options, out, err)?;
    }
    if temporary.is_some() && !dumps.is_empty() {
        let _ = writeln!(
            err,
            "alloc-track: the dump was temporary; --out PATH keeps it (and a flamegraph beside it)"
        );
    }
    Ok(code)
}

/// The child's exit code, or 128 + the signal that ended it, as shells do.
fn exit_code(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        return u8::try_from(code).unwrap_or(1);
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return u8::try_from(128 + signal).unwrap_or(255);
        }
    }
    1
}

/// The dumps the pattern stands for: the file itself, or with `{pid}` every
/// file in its directory that matches around it, oldest first.
fn written_dumps(pattern: &Path) -> Vec<PathBuf> {
    let text = pattern.to_string_lossy();
    let Some((prefix, suffix)) = text.split_once("{pid}") else {
        return if pattern.is_file() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    };
    let prefix = Path::new(prefix);
    let (dir, stem) = match prefix.file_name() {
        Some(stem) if !text.ends_with('/') => (
            prefix.parent().unwrap_or(Path::new(".")),
            stem.to_string_lossy().into_owned(),
        ),
        _ => (prefix, String::new()),
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.len() > stem.len() + suffix.len()
                && name.starts_with(&stem)
                && name.ends_with(suffix)
                && name[stem.len()..name.len() - suffix.len()]
                    .bytes()
                    .all(|b| b.is_ascii_digit())
        })
        .map(|entry| {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (modified, entry.path())
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, path)| path).collect()
}

/// A directory under the system's temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<TempDir, CliError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("alloc-track-run-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).map_err(CliError::output(&path))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn cargo_run_test_and_bench_are_recognised() {
        assert!(is_cargo_run(&args(&["cargo", "run", "--release"])));
        assert!(is_cargo_run(&args(&["/home/u/.cargo/bin/cargo", "test"])));
        assert!(is_cargo_run(&args(&["cargo", "+nightly", "bench"])));
        assert!(!is_cargo_run(&args(&["cargo", "build"])));
        assert!(!is_cargo_run(&args(&["./target/release/app"])));
        assert!(!is_cargo_run(&args(&[])));
    }

    #[test]
    fn flags_are_appended_and_the_target_dir_is_our_own() {
        assert_eq!(profiling_rustflags(None), PROFILING_RUSTFLAGS);
        assert_eq!(
            profiling_rustflags(Some(OsStr::new("-C target-cpu=native"))),
            format!("-C target-cpu=native {PROFILING_RUSTFLAGS}").as_str()
        );
        assert_eq!(profiling_target_dir(None), Path::new("target/alloc-track"));
        assert_eq!(
            profiling_target_dir(Some(OsStr::new("/build"))),
            Path::new("/build/alloc-track")
        );
    }
}
