//! Issue 12, point 7, end to end: what a user of pprof, heaptrack and
//! inferno expects: `--json` on report and diff, `--focus`/`--ignore`,
//! flamegraph `--title`/`--min-width`, completions and a man page, a peak
//! section that follows `--top`, truncated stacks reported, count mode
//! claiming no stack walker, and "1 more site".

mod common;

use std::fs;

use common::{alloc_track, data, ok_stdout, run};
use serde_json::Value;
use tempfile::TempDir;

fn scan(n: u32) -> String {
    data(&format!("scan.{n}.json"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn report_and_diff_print_versioned_json_and_write_no_svg() {
    let dir = TempDir::new().unwrap();
    fs::copy(data("scan.1.json"), dir.path().join("scan.json")).unwrap();
    let text = ok_stdout(run(
        &["report", "scan.json", "--json", "--top", "2"],
        dir.path(),
    ));
    let report: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(report["format"], "alloc-track-report");
    assert_eq!(report["version"], 1);
    assert_eq!(report["sites"]["total_rows"], 7);
    assert_eq!(report["sites"]["rows"].as_array().unwrap().len(), 2);
    assert_eq!(report["sites"]["rows"][0]["bytes"], 682_000);
    assert_eq!(report["sites"]["rest"]["rows"], 5);
    assert_eq!(report["truncated"]["sites"], 1);
    assert_eq!(report["peak"]["rows"].as_array().unwrap().len(), 2);
    assert!(
        !dir.path().join("scan.svg").exists(),
        "--json writes no SVG"
    );

    let both = run(&["report", "scan.json", "--json", "-o", "-"], dir.path());
    assert_eq!(both.status.code(), Some(2));

    let diff: Value =
        serde_json::from_str(&alloc_track(&["diff", &scan(1), &scan(2), "--json"])).unwrap();
    assert_eq!(diff["format"], "alloc-track-diff");
    assert_eq!(diff["version"], 1);
    let grew = &diff["grew"][0];
    assert_eq!(
        grew["label"],
        "scan_tool::load_profile (/home/u/scan-tool/src/profile.rs:60)"
    );
    assert_eq!(grew["status"], "changed");
    assert_eq!(grew["change"], 18_000);
    assert_eq!(diff["sites"]["gone"], 2);
}

#[test]
fn focus_and_ignore_keep_and_drop_stacks_by_frame() {
    let focused = alloc_track(&[
        "report",
        &scan(1),
        "--no-flamegraph",
        "--focus",
        "scan_file",
    ]);
    assert!(focused.contains("top 2 of 2 sites"), "{focused}");
    assert!(focused.contains("filter       only stacks with a frame matching /scan_file/"));
    assert!(!focused.contains("load_profile"), "{focused}");

    let folded = alloc_track(&["export", &scan(1), "-f", "folded", "--ignore", "regex"]);
    assert!(!folded.contains("regex"), "{folded}");
    assert!(folded.contains("scan_tool::load_profile"), "{folded}");

    let dir = TempDir::new().unwrap();
    let bad = run(&["report", &scan(1), "--focus", "("], dir.path());
    assert_eq!(bad.status.code(), Some(2), "a bad expression is bad usage");
}

#[test]
fn flamegraph_takes_a_title_and_a_minimum_width() {
    let all = alloc_track(&[
        "flamegraph",
        &scan(1),
        "-o",
        "-",
        "--title",
        "Heap of scan <v2>",
    ]);
    assert!(
        all.contains("Heap of scan &lt;v2&gt;"),
        "the title, escaped"
    );
    // report::print holds 1,000 of 790,588 bytes: 0.13%.
    assert!(all.contains("scan_tool::report::print"));
    let wide = alloc_track(&["flamegraph", &scan(1), "-o", "-", "--min-width", "1"]);
    assert!(!wide.contains("scan_tool::report::print"));
    assert!(wide.contains("scan_tool::load_profile"));
    let dir = TempDir::new().unwrap();
    let bad = run(&["flamegraph", &scan(1), "--min-width", "150"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn completions_and_a_man_page() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = alloc_track(&["completions", shell]);
        assert!(script.contains("flamegraph"), "{shell}: {script}");
    }
    let man = alloc_track(&["man"]);
    assert!(man.contains(".TH alloc-track 1"), "{man}");
    assert!(man.contains("completions"));
}

#[test]
fn the_peak_section_follows_top_and_the_rest_line_agrees_in_number() {
    let report = alloc_track(&["report", &scan(1), "--no-flamegraph", "--top", "7"]);
    assert!(
        report.contains("): top 7 of 7 sites by bytes at the peak"),
        "{report}"
    );
    let report = alloc_track(&["report", &scan(1), "--no-flamegraph", "--top", "6"]);
    assert!(
        report.contains("          1 more site holds 544 B"),
        "{report}"
    );
    assert!(!report.contains("1 more sites"), "{report}");
    // A heap of one block.
    let dir = TempDir::new().unwrap();
    let mut dump: Value = serde_json::from_slice(&fs::read(data("scan.2.json")).unwrap()).unwrap();
    dump["sites"] = serde_json::json!([{
        "stack": 0, "live_bytes": 544, "live_blocks": 1, "total_bytes": 544, "total_blocks": 1
    }]);
    dump["totals"] = serde_json::json!({
        "live_bytes": 544, "live_blocks": 1, "total_bytes": 544, "total_blocks": 1,
        "peak_bytes": 544
    });
    fs::write(dir.path().join("one.json"), dump.to_string()).unwrap();
    let report = ok_stdout(run(&["report", "one.json", "--no-flamegraph"], dir.path()));
    assert!(
        report.contains("live heap    544 B in 1 block\n"),
        "{report}"
    );
    assert!(
        report.contains("allocated    544 B in 1 block since"),
        "{report}"
    );
    assert!(report.contains("top 1 of 1 site by live bytes"), "{report}");
}

#[test]
fn truncated_stacks_are_reported_and_marked() {
    let report = alloc_track(&["report", &scan(1), "--no-flamegraph"]);
    assert!(
        report.contains("truncated    the stacks of 1 site (2.0 KiB live in 4 blocks) were cut"),
        "{report}"
    );
    let folded = alloc_track(&["export", &scan(1), "-f", "folded"]);
    assert!(
        folded.contains("\n[truncated];<scan_tool::stats::Table"),
        "{folded}"
    );
}

#[test]
fn count_mode_claims_no_stack_walker() {
    let dir = TempDir::new().unwrap();
    let mut dump: Value = serde_json::from_slice(&fs::read(data("app.json")).unwrap()).unwrap();
    dump["mode"] = "count".into();
    dump["stack_walker"] = "frame-pointers".into();
    for list in ["locations", "stacks", "sites", "peak_sites"] {
        dump[list] = Value::Array(Vec::new());
    }
    fs::write(dir.path().join("count.json"), dump.to_string()).unwrap();
    let report = ok_stdout(run(
        &["report", "count.json", "--no-flamegraph"],
        dir.path(),
    ));
    assert!(!report.contains("captured by"), "{report}");
    assert!(
        report.contains("sites        none: count mode keeps the totals only"),
        "{report}"
    );
}
