//! Issue 12, point 5, end to end: each row names the first frame in the
//! program's own crate, and `--group-by your-code` ranks by it. In
//! `scan.1.json` the regex crate's internals allocate on behalf of
//! `scan_tool::scan::scan_file`.

mod common;

use std::fs;

use common::{alloc_track, data, ok_stdout, run};
use serde_json::Value;
use tempfile::TempDir;

fn report(dump: &str, extra: &[&str]) -> String {
    let mut args = vec!["report", dump, "--no-flamegraph"];
    args.extend_from_slice(extra);
    alloc_track(&args)
}

/// The line after the first line containing `needle`.
fn line_after<'t>(text: &'t str, needle: &str) -> &'t str {
    let mut lines = text.lines().skip_while(|l| !l.contains(needle));
    lines.next().expect("the line");
    lines.next().unwrap_or("")
}

const SCAN_FILE: &str = "scan_tool::scan::scan_file (/home/u/scan-tool/src/scan.rs:33)";

#[test]
fn a_library_site_names_the_users_call_that_led_there() {
    let scan = data("scan.1.json");
    let text = report(scan.to_str().unwrap(), &[]);
    assert!(
        text.contains("your code    crate scan_tool (the program's name"),
        "{text}"
    );
    let after = line_after(&text, "SparseSet::new");
    assert_eq!(
        after.trim(),
        format!("from your code: {SCAN_FILE}"),
        "{text}"
    );
    // A site in the user's crate is its own answer: no second line.
    assert!(!line_after(&text, "load_profile").contains("from your code"));

    let json: Value = serde_json::from_str(&report(scan.to_str().unwrap(), &["--json"])).unwrap();
    assert_eq!(json["your_crate"], "scan_tool");
    assert_eq!(json["sites"]["rows"][1]["your_code"], SCAN_FILE);
}

#[test]
fn rows_group_by_the_users_frame_on_request() {
    let scan = data("scan.1.json");
    let text = report(scan.to_str().unwrap(), &["--group-by", "your-code"]);
    // The regex internals' 100,000 bytes and scan_file's own 900.
    let row = text
        .lines()
        .find(|l| l.ends_with(SCAN_FILE))
        .expect("a row");
    assert!(row.contains("98.5 KiB"), "{text}");
    assert!(!text.contains("SparseSet"), "{text}");
}

#[test]
fn the_crate_comes_from_main_or_from_the_command_line() {
    let dir = TempDir::new().unwrap();
    let text = fs::read_to_string(data("scan.1.json")).unwrap();
    let renamed = text.replacen("\"program\": \"scan-tool\"", "\"program\": \"a.out\"", 1);
    assert_ne!(text, renamed);
    let path = dir.path().join("renamed.json");
    fs::write(&path, renamed).unwrap();
    let text = report(path.to_str().unwrap(), &[]);
    assert!(
        text.contains("your code    crate scan_tool (the crate of main"),
        "{text}"
    );

    let scan = data("scan.1.json");
    let text = report(scan.to_str().unwrap(), &["--crate", "regex"]);
    assert!(
        text.contains("your code    crate regex (given with --crate)"),
        "{text}"
    );
    assert!(
        line_after(&text, "SparseSet::new")
            .contains("from your code: regex::regex::string::Regex::new"),
        "{text}"
    );
}

#[test]
fn diff_rows_name_your_code_too() {
    let dir = TempDir::new().unwrap();
    let (first, second) = (data("scan.1.json"), data("scan.2.json"));
    let (first, second) = (first.to_str().unwrap(), second.to_str().unwrap());
    let text = ok_stdout(run(&["diff", first, second, "--no-flamegraph"], dir.path()));
    let after = line_after(&text, "SparseSet::new");
    assert_eq!(
        after.trim(),
        format!("from your code: {SCAN_FILE}"),
        "{text}"
    );
    // Aligned under the site column.
    let row = text.lines().find(|l| l.contains("SparseSet::new")).unwrap();
    assert_eq!(
        row.find("regex_automata"),
        after.find("from your code"),
        "{text}"
    );

    let json = ok_stdout(run(&["diff", first, second, "--json"], dir.path()));
    let json: Value = serde_json::from_str(&json).unwrap();
    let regex = json["grew"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["label"].as_str().unwrap().contains("SparseSet"))
        .expect("the regex row grew");
    assert_eq!(regex["your_code"], SCAN_FILE);
}
