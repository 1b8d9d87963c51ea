//! Issue 12, point 6, end to end: stacks that never reach the program are
//! one `[Rust runtime]` row, start-up frames are trimmed from folded lines,
//! labels fold generic arguments and compiler paths unless `--full-names`,
//! and pprof gets function names its simplifier leaves alone.

mod common;

use std::io::Read;

use alloc_track_cli::export::pprof::Profile;
use common::{alloc_track, data, ok_output, run};
use flate2::read::GzDecoder;
use prost::Message;
use tempfile::TempDir;

#[test]
fn stacks_that_never_reach_the_program_are_one_runtime_row() {
    let app = data("app.json");
    let report = alloc_track(&["report", app.to_str().unwrap(), "--no-flamegraph"]);
    assert!(
        report.contains("512 B   0.0% 100.0%  [Rust runtime]\n"),
        "{report}"
    );
    assert!(
        !report.contains("/rustc/"),
        "no compiler paths in rows: {report}"
    );
}

#[test]
fn folded_lines_start_at_the_program_and_runtime_stacks_share_a_root() {
    let scan = data("scan.1.json");
    let folded = alloc_track(&["export", scan.to_str().unwrap(), "-f", "folded"]);
    for line in folded.lines() {
        assert!(!line.starts_with("main;"), "start-up frames kept: {line}");
        assert!(!line.contains("lang_start"), "start-up frames kept: {line}");
    }
    assert!(
        folded.contains("\nscan_tool::main;scan_tool::load_profile;"),
        "{folded}"
    );
    assert!(
        folded.starts_with(
            "[Rust runtime];std::rt::init;std::thread::Thread::new;alloc::vec::Vec<T,A>::push;"
        ),
        "{folded}"
    );
}

#[test]
fn labels_fold_generics_unless_full_names_are_asked_for() {
    let scan = data("scan.1.json");
    let scan = scan.to_str().unwrap();
    let short = alloc_track(&["report", scan, "--no-flamegraph"]);
    assert!(
        short.contains("<scan_tool::stats::Table<…> as core::iter::traits::collect::Extend<…>>::extend (/home/u/scan-tool/src/stats.rs:20)"),
        "{short}"
    );
    assert!(short.contains("SparseSet::new (…/regex-automata-0.4.9/src/util/sparse_set.rs:40)"));
    let full = alloc_track(&["report", scan, "--no-flamegraph", "--full-names"]);
    assert!(full.contains(
        "<scan_tool::stats::Table<K,V> as core::iter::traits::collect::Extend<(K,V)>>::extend"
    ));
    assert!(full.contains("/home/u/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/"));
}

#[test]
fn pprof_names_are_not_left_to_its_cpp_simplifier() {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    let gz = ok_output(run(
        &["export", app.to_str().unwrap(), "-f", "pprof"],
        dir.path(),
    ));
    let mut bytes = Vec::new();
    GzDecoder::new(&gz[..]).read_to_end(&mut bytes).unwrap();
    let profile = Profile::decode(&bytes[..]).unwrap();
    let name = |i: i64| profile.string_table[i as usize].as_str();
    // pprof rewrites a name only when it equals the system name.
    for function in &profile.function {
        assert_ne!(name(function.name), name(function.system_name));
    }
    assert!(profile
        .function
        .iter()
        .any(|f| name(f.name) == "<[u8; 32] as demo_app::hash::Digest>::finish"));
}

#[test]
fn the_inverted_flamegraph_trims_the_same_frames() {
    let scan = data("scan.1.json");
    let svg = alloc_track(&[
        "flamegraph",
        scan.to_str().unwrap(),
        "--site-at-root",
        "-o",
        "-",
    ]);
    assert!(!svg.contains("lang_start"), "start-up frames kept");
    assert!(
        svg.contains("<title>[Rust runtime] (544 bytes"),
        "no runtime frame"
    );
    assert!(
        svg.contains("<title>scan_tool::main (682,000 bytes"),
        "{svg}"
    );
}
