//! `report --by type` and `report --by temporary` on a real program: one
//! holding known numbers of `Box<Node>`, `Vec<Widget>` buffers,
//! `Arc<Session>`, `String` and `HashMap<u64, Item>`, compiled here with
//! `rustc` against the workspace's own `alloc_track` (one file, about a
//! second) in both symbol manglings: v0 names every type; legacy names the
//! containers and `String` only.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use alloc_track::dump::Dump;
use alloc_track_cli::by_type::write_diff;
use alloc_track_cli::report::{report, ReportOptions};
use alloc_track_cli::weigh::Measure;

/// The `alloc_track` library this test was linked with: the newest
/// `liballoc_track-*.rlib` beside the test binary.
fn alloc_track_rlib(deps: &Path) -> PathBuf {
    std::fs::read_dir(deps)
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.starts_with("liballoc_track-") && name.ends_with(".rlib")
        })
        .max_by_key(|path| path.metadata().and_then(|m| m.modified()).ok())
        .expect("liballoc_track rlib beside the test binary")
}

/// Runs `command`, failing the test rather than hanging it.
fn run(mut command: Command, what: &str) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            assert!(
                status.success(),
                "{what} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return;
        }
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("{what} did not finish in 300 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Compiles the program with `mangling`, runs it, and returns the report
/// of its dump by `measure`.
fn report_of(mangling: &str, measure: Measure) -> String {
    let dump = dump_of(mangling, measure.name());
    let mut options = ReportOptions::new(&dump);
    options.measure = measure;
    options.top = 50;
    options.type_sites = 1;
    let mut out = Vec::new();
    report(&options, &mut out, &mut std::io::sink()).unwrap();
    String::from_utf8(out).unwrap()
}

/// Compiles the program with `mangling` in a directory of its own (`use_`
/// names it, so that tests running at once do not share one), runs it,
/// and returns the path of its dump.
fn dump_of(mangling: &str, use_: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("by_type_{mangling}_{use_}"));
    std::fs::create_dir_all(&dir).unwrap();
    let program = dir.join("types_program");
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/types_program.rs");
    let mut rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()));
    rustc
        .args([
            "--edition",
            "2021",
            "-C",
            "debuginfo=1",
            "-C",
            "opt-level=1",
        ])
        .arg(&source)
        .arg("-o")
        .arg(&program)
        .arg("--extern")
        .arg(format!("alloc_track={}", alloc_track_rlib(deps).display()))
        .arg("-L")
        .arg(format!("dependency={}", deps.display()));
    if mangling == "v0" {
        rustc.args(["-C", "symbol-mangling-version=v0"]);
    }
    run(rustc, "rustc");
    let dump = dir.join("types_program.json");
    let mut program = Command::new(&program);
    program.arg(&dump);
    run(program, "types_program");
    dump
}

/// The live blocks of the row whose type is exactly `name`.
fn blocks_of(report: &str, name: &str) -> Option<u64> {
    report.lines().find_map(|line| {
        let (figures, row_name) = line.split_once("%  ")?;
        let row_name = row_name.rsplit_once("%  ").map_or(row_name, |(_, n)| n);
        (row_name.trim() == name).then(|| {
            figures
                .split_whitespace()
                .next()
                .unwrap()
                .replace(',', "")
                .parse()
                .unwrap()
        })
    })
}

#[test]
fn v0_mangling_names_every_type_with_exact_counts() {
    let report = report_of("v0", Measure::Type);
    let expect = [
        ("Box<types_program::Node>", 10),
        ("Vec<types_program::Widget>", 7),
        ("Arc<types_program::Session>", 5),
        ("String", 4),
        ("HashMap<u64, types_program::Item>", 1),
        ("Vec<Box<types_program::Node>>", 1),
    ];
    for (name, blocks) in expect {
        assert_eq!(blocks_of(&report, name), Some(blocks), "{name}:\n{report}");
    }
    // Each type lists its top site.
    assert!(report.contains("types_program::hold"), "{report}");
}

#[test]
fn legacy_mangling_names_containers_and_says_how_to_get_types() {
    let report = report_of("legacy", Measure::Type);
    assert_eq!(blocks_of(&report, "String"), Some(4), "{report}");
    assert!(
        report.contains("[unknown Box: allocated in types_program::hold]"),
        "{report}"
    );
    assert!(
        report.contains("[unknown Arc: allocated in types_program::hold]"),
        "{report}"
    );
    assert!(report.contains("symbol-mangling-version=v0"), "{report}");
}

#[test]
fn temporary_allocations_are_reported_per_site() {
    let report = report_of("v0", Measure::Temporary);
    let churn = report
        .lines()
        .find(|line| line.contains("types_program::churn"))
        .unwrap_or_else(|| panic!("no churn row:\n{report}"));
    let figures: Vec<&str> = churn.split_whitespace().collect();
    // temporary, %, allocated, temp%
    assert_eq!(figures[0], "250", "{churn}");
    assert_eq!(figures[2], "250", "{churn}");
    assert!(!report.contains("types_program::hold"), "{report}");
}

#[test]
fn diff_by_type_shows_which_types_grew() {
    let after = Dump::load(dump_of("v0", "diff")).unwrap();
    // Against itself nothing changed; against the same heap without its
    // `Box<Node>`s, those grew.
    let mut before = after.clone();
    let report = {
        let mut out = Vec::new();
        write_diff(&mut out, &before, &after, 10).unwrap();
        String::from_utf8(out).unwrap()
    };
    assert!(
        report.contains("types whose live heap changed: 0"),
        "{report}"
    );
    for site in &mut before.sites {
        let stack = &before.stacks[site.stack as usize];
        let boxed = stack.locations.iter().any(|&l| {
            before.locations[l as usize]
                .frames
                .iter()
                .any(|f| f.function.contains("Box<types_program::Node>>::new"))
        });
        if boxed {
            site.live_bytes = 0;
            site.live_blocks = 0;
        }
    }
    let mut out = Vec::new();
    write_diff(&mut out, &before, &after, 10).unwrap();
    let report = String::from_utf8(out).unwrap();
    let row = report
        .lines()
        .find(|line| line.ends_with("  Box<types_program::Node>"))
        .unwrap_or_else(|| panic!("no Box<Node> row:\n{report}"));
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>()[..3],
        ["+160", "B", "+10"],
        "{report}"
    );
}
