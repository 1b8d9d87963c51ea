//! Golden-file tests of the text every command prints, on the small dumps
//! in `tests/data/`.
//!
//! To accept new output deliberately, run
//! `UPDATE_GOLDENS=1 cargo test -p alloc-track-cli --test golden` and review
//! the diff. Without it a missing golden is a failure, never created
//! silently.

mod common;

use std::path::{Path, PathBuf};

use alloc_track::dump::Dump;
use alloc_track_cli::diff::{diff, DiffOptions};
use alloc_track_cli::export::{export, ExportFormat, ExportOptions};
use alloc_track_cli::output::Output;
use alloc_track_cli::report::{write_report, ReportOptions};
use alloc_track_cli::weigh::Measure;
use common::check_golden;

fn data(name: &str) -> PathBuf {
    Path::new("tests/data").join(name)
}

fn report_text(dump: &str, measure: Measure, top: usize) -> Vec<u8> {
    let path = data(dump);
    let loaded = Dump::load(&path).expect("fixture dump loads");
    let mut options = ReportOptions::new(path);
    options.measure = measure;
    options.top = top;
    let mut out = Vec::new();
    write_report(&loaded, &options, &mut out).expect("report");
    out
}

#[test]
fn report_live() {
    check_golden(
        "report-live.txt",
        &report_text("app.json", Measure::Live, 10),
    );
}

#[test]
fn report_top_rows_and_the_rest() {
    check_golden(
        "report-top3.txt",
        &report_text("app.json", Measure::Live, 3),
    );
}

#[test]
fn report_allocated() {
    check_golden(
        "report-allocated.txt",
        &report_text("app.json", Measure::Allocated, 10),
    );
}

#[test]
fn report_blocks() {
    check_golden(
        "report-blocks.txt",
        &report_text("app.json", Measure::Blocks, 10),
    );
}

#[test]
fn report_peak() {
    check_golden(
        "report-peak.txt",
        &report_text("app.json", Measure::Peak, 10),
    );
}

#[test]
fn report_without_peak_breakdown() {
    check_golden(
        "report-after.txt",
        &report_text("after.json", Measure::Live, 10),
    );
}

#[test]
fn diff_live() {
    let options = DiffOptions::new(data("app.json"), data("after.json"));
    let mut out = Vec::new();
    diff(&options, &mut out, &mut Vec::new()).expect("diff");
    check_golden("diff-live.txt", &out);
}

#[test]
fn export_folded() {
    let options = ExportOptions::new(data("app.json"), ExportFormat::Folded, Output::Stdout);
    let mut out = Vec::new();
    export(&options, &mut out).expect("export");
    check_golden("app.folded", &out);
}
