//! `alloc-track trend`: the golden table over six dumps of one service
//! (one site of every shape, addresses shifted and stacks renumbered from
//! dump to dump), the chart, and the binary's behaviour on bad input.
//!
//! To accept new output deliberately, run
//! `UPDATE_GOLDENS=1 cargo test -p alloc-track-cli --test trend`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use alloc_track_cli::output::Output;
use alloc_track_cli::trend::{trend, TrendOptions};
use common::{check_golden, run};
use tempfile::TempDir;

/// The six fixture dumps, deliberately out of order.
fn series() -> Vec<PathBuf> {
    [3, 1, 6, 4, 2, 5]
        .iter()
        .map(|n| Path::new("tests/data/trend").join(format!("service.{n}.json")))
        .collect()
}

#[test]
fn golden_table_ranks_the_leak_first_and_names_every_shape() {
    let mut out = Vec::new();
    trend(&TrendOptions::new(series()), &mut out, &mut Vec::new()).expect("trend");
    let text = String::from_utf8(out).unwrap();
    check_golden("trend.txt", text.as_bytes());

    // What the golden file must say, whatever else changes in it.
    let rows: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("shape"))
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect();
    let shapes: Vec<(&str, &str)> = rows
        .iter()
        .map(|r| {
            let shape = if r.starts_with("grew once") {
                "grew once"
            } else {
                r.split_whitespace().next().unwrap()
            };
            let site = r.rsplit("  ").next().unwrap();
            (shape, site)
        })
        .collect();
    assert_eq!(
        shapes,
        [
            ("growing", "svc::sessions::remember (src/sessions.rs:88)"),
            ("steps", "svc::index::Index::insert (src/index.rs:140)"),
            ("grew once", "svc::templates::load (src/templates.rs:12)"),
            ("varies", "svc::worker::scratch (src/worker.rs:51)"),
            ("shrinking", "svc::startup::warm (src/startup.rs:77)"),
        ],
        "{text}"
    );
    // Put in time order whatever the order given: 25 minutes, first to last.
    assert!(text.contains("service.1.json: svc (pid 777)"), "{text}");
    assert!(
        text.contains("service.6.json: svc (pid 777), 25 min later"),
        "{text}"
    );
    // 5 MiB in 25 minutes.
    assert!(rows[0].contains("+204.8 KiB/min"), "{text}");
    assert!(text.contains("1 flat"), "{text}");
}

#[test]
fn the_chart_draws_one_line_per_site_with_escaped_labels() {
    let dir = TempDir::new().unwrap();
    let svg = dir.path().join("chart.svg");
    let mut options = TrendOptions::new(series());
    options.chart = Some(Output::File(svg.clone()));
    options.chart_sites = 3;
    let mut out = Vec::new();
    trend(&options, &mut out, &mut Vec::new()).expect("trend");
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.ends_with(&format!(
            "line chart of the top 3 sites: {}\n",
            svg.display()
        )),
        "{text}"
    );
    let chart = fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<?xml"));
    assert!(chart.trim_end().ends_with("</svg>"));
    assert_eq!(chart.matches("<polyline").count(), 3);
    // Six points per line, each with its figure as a tooltip.
    assert_eq!(chart.matches("<circle").count(), 18);
    assert!(chart.contains("25 min: 6.0 MiB in 6,144 blocks"), "{chart}");
    assert!(chart.contains("svc::sessions::remember"));
    assert!(!chart.contains("svc::worker::scratch"), "only the top 3");
    // The y axis is labelled in round IEC figures.
    assert!(chart.contains(">6.0 MiB</text>"), "{chart}");
}

#[test]
fn the_binary_writes_the_chart_beside_the_first_dump() {
    let dir = TempDir::new().unwrap();
    for n in 1..=6 {
        let name = format!("service.{n}.json");
        fs::copy(
            Path::new("tests/data/trend").join(&name),
            dir.path().join(&name),
        )
        .unwrap();
    }
    let output = run(
        &[
            "trend",
            "service.1.json",
            "service.2.json",
            "service.3.json",
        ],
        dir.path(),
    );
    assert!(output.status.success(), "{:?}", output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("line chart of the top 6 sites: service.trend.svg"),
        "{stdout}"
    );
    assert!(dir.path().join("service.trend.svg").exists());
}

/// Bad input: exit code 1 and one line on stderr naming the problem.
fn assert_one_line_error(args: &[&str], dir: &Path, needle: &str) {
    let output = run(args, dir);
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "args {args:?}, stderr {err}");
    assert_eq!(err.lines().count(), 1, "one line expected, got {err:?}");
    assert!(err.starts_with("alloc-track: "), "{err}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
}

#[test]
fn bad_input_is_one_line_and_exit_code_1() {
    let dir = TempDir::new().unwrap();
    let good = fs::canonicalize("tests/data/trend/service.1.json").unwrap();
    let good = good.to_str().unwrap();
    fs::write(
        dir.path().join("broken.json"),
        "{\"format\": \"alloc-track-dump\"",
    )
    .unwrap();
    fs::write(dir.path().join("other.json"), "{\"hello\": 1}").unwrap();
    assert_one_line_error(&["trend", good, "missing.json"], dir.path(), "missing.json");
    assert_one_line_error(&["trend", good, "broken.json"], dir.path(), "broken.json");
    assert_one_line_error(&["trend", "other.json", good], dir.path(), "other.json");
    fs::create_dir(dir.path().join("chart.svg")).unwrap();
    assert_one_line_error(
        &["trend", good, good, "-o", "chart.svg"],
        dir.path(),
        "chart.svg",
    );
    // One dump is no series: a usage error from clap (exit code 2).
    let output = run(&["trend", good], dir.path());
    assert_eq!(output.status.code(), Some(2));
}
