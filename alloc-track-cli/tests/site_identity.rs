//! Issue 12, point 4 (and issue 11, 8a), end to end: one site identity in
//! every command. `scan.1.json` has two stacks that differ only in the line
//! of `main` that calls `load_profile`; `scan.2.json` keeps one of them.
//! The label `load_profile (profile.rs:60)` must be one row everywhere, with
//! the same figures, and the stack table's catch-all has one name.

mod common;

use common::{alloc_track, data};

fn lines_with<'t>(text: &'t str, needle: &str) -> Vec<&'t str> {
    text.lines().filter(|l| l.contains(needle)).collect()
}

/// The report up to its peak section.
fn live_table(report: &str) -> &str {
    report.split("\nat the peak").next().unwrap_or(report)
}

const LABEL: &str = "scan_tool::load_profile (/home/u/scan-tool/src/profile.rs:60)";

#[test]
fn one_label_is_one_row_in_report_diff_and_trend() {
    let (first, second) = (data("scan.1.json"), data("scan.2.json"));
    let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());

    let report = alloc_track(&["report", first, "--no-flamegraph"]);
    let rows = lines_with(live_table(&report), LABEL);
    assert_eq!(rows.len(), 1, "{report}");
    assert!(rows[0].contains("666.0 KiB"), "{report}");

    let diff = alloc_track(&["diff", first, second, "--no-flamegraph"]);
    let rows = lines_with(&diff, LABEL);
    assert_eq!(rows.len(), 1, "{diff}");
    // The same 666 KiB the report shows as BEFORE, and no new/gone pair.
    assert!(rows[0].contains("666.0 KiB  683.6 KiB"), "{diff}");
    assert!(
        !rows[0].contains("new") && !rows[0].contains("gone"),
        "{diff}"
    );

    let trend = alloc_track(&["trend", first, second, "--no-chart"]);
    let rows = lines_with(&trend, LABEL);
    assert_eq!(rows.len(), 1, "{trend}");
    assert!(rows[0].contains("666.0 KiB  683.6 KiB"), "{trend}");
}

#[test]
fn folded_output_has_one_line_per_distinct_stack_sorted() {
    let first = data("scan.1.json");
    let folded = alloc_track(&["export", first.to_str().unwrap(), "--format", "folded"]);
    let stacks: Vec<&str> = folded
        .lines()
        .map(|l| l.rsplit_once(' ').expect("stack and count").0)
        .collect();
    let mut sorted = stacks.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(stacks, sorted, "{folded}");
    // Both callers' 400,000 + 282,000 bytes on the one line they fold to.
    let load = lines_with(&folded, "scan_tool::main;scan_tool::load_profile;");
    assert_eq!(load.len(), 1, "{folded}");
    assert!(load[0].ends_with(" 682000"), "{folded}");
}

#[test]
fn the_stack_table_catch_all_has_one_name_everywhere() {
    let first = data("scan.1.json");
    let first = first.to_str().unwrap();
    let report = alloc_track(&["report", first, "--no-flamegraph"]);
    let live = live_table(&report);
    assert_eq!(
        lines_with(live, "[other: stack table full]").len(),
        1,
        "{report}"
    );
    assert!(!report.contains("<empty stack>"), "{report}");
    let folded = alloc_track(&["export", first, "--format", "folded"]);
    assert!(
        folded
            .lines()
            .any(|l| l == "[other: stack table full] 4096"),
        "{folded}"
    );
}

#[test]
fn the_catch_all_is_named_in_the_dhat_and_pprof_exports_too() {
    let first = data("scan.1.json");
    let dhat = alloc_track(&["export", first.to_str().unwrap(), "--format", "dhat"]);
    let dhat: serde_json::Value = serde_json::from_str(&dhat).unwrap();
    let ftbl = dhat["ftbl"].as_array().unwrap();
    let overflow = ftbl
        .iter()
        .position(|f| f.as_str().unwrap().ends_with(": [other: stack table full]"))
        .expect("a frame for the catch-all");
    let pps = dhat["pps"].as_array().unwrap();
    assert!(pps.iter().any(|p| p["fs"] == serde_json::json!([overflow])));
    assert!(pps.iter().all(|p| !p["fs"].as_array().unwrap().is_empty()));

    let dump = alloc_track::dump::Dump::load(&first).unwrap();
    let profile = alloc_track_cli::export::pprof::build(&dump, &first).unwrap();
    assert!(profile.sample.iter().all(|s| !s.location_id.is_empty()));
    assert!(profile
        .string_table
        .iter()
        .any(|s| s == "[other: stack table full]"));
}
