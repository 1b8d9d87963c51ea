//! The long-running-service examples do what their docs promise, run as a
//! user runs them: `worker_trend`'s numbered dumps show its leak growing,
//! `report_job`'s two peaks differ by orders of magnitude and the collect
//! peak is made of the rows, `fragmentation`'s heap drops while its RSS
//! does not. `cargo test` builds the examples beside the test binaries.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use alloc_track::dump::Dump;
use common::example;

fn run_in_temp_dir(name: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("alloc-track-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(example(name)).arg(&dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    (dir, stdout)
}

/// Live bytes of the dump's sites whose stack passes through `function`.
fn live_in(dump: &Dump, function: &str) -> u64 {
    dump.sites
        .iter()
        .filter(|site| passes_through(dump, site.stack, function))
        .map(|site| site.live_bytes)
        .sum()
}

fn passes_through(dump: &Dump, stack: u32, function: &str) -> bool {
    dump.stacks[stack as usize]
        .locations
        .iter()
        .flat_map(|&l| &dump.locations[l as usize].frames)
        .any(|f| f.function.contains(function))
}

fn load(dir: &Path, name: &str) -> Dump {
    Dump::load(dir.join(name)).unwrap()
}

#[test]
fn worker_trend_writes_a_series_in_which_only_the_leak_keeps_growing() {
    let (dir, stdout) = run_in_temp_dir("worker_trend");
    let dumps: Vec<Dump> = (1..=8)
        .map(|n| load(&dir, &format!("worker_trend.{n}.json")))
        .collect();
    assert!(stdout.contains("alloc-track trend"), "{stdout}");
    // The leak: 2,000 tasks per dump, a quarter of them logins, each
    // keeping a 512-byte history. It grows at every step.
    let sessions: Vec<u64> = dumps.iter().map(|d| live_in(d, "new_session")).collect();
    assert!(sessions.windows(2).all(|w| w[1] > w[0]), "{sessions:?}");
    assert!(sessions[7] - sessions[0] >= 7 * 500 * 512, "{sessions:?}");
    // The templates: absent from the first dump, then constant.
    let templates: Vec<u64> = dumps.iter().map(|d| live_in(d, "load_templates")).collect();
    assert_eq!(templates[0], 0, "{templates:?}");
    assert!(templates[1] > 0 && templates[1..].iter().all(|&t| t == templates[1]));
    // Timestamps increase, so `trend` can order them.
    assert!(dumps
        .windows(2)
        .all(|w| w[1].timestamp_ms >= w[0].timestamp_ms));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn report_job_collect_peaks_at_the_rows_and_stream_barely_peaks() {
    let (dir, stdout) = run_in_temp_dir("report_job");
    let collect = load(&dir, "report_job.collect.json");
    let stream = load(&dir, "report_job.stream.json");
    // 40,000 rows of about 250 bytes held at once, against one row.
    assert!(collect.totals.peak_bytes > 8 << 20, "{stdout}");
    assert!(stream.totals.peak_bytes < 64 << 10, "{stdout}");
    // Both end with nothing of the job left.
    assert!(collect.totals.live_bytes < 4096 && stream.totals.live_bytes < 4096);
    // The peak breakdown says what the collect peak was made of: rows.
    let rows_at_peak: u64 = collect
        .peak_sites
        .iter()
        .filter(|p| passes_through(&collect, p.stack, "fetch_row"))
        .map(|p| p.bytes)
        .sum();
    assert!(
        rows_at_peak > collect.totals.peak_bytes / 2,
        "rows hold {rows_at_peak} of a {}-byte peak",
        collect.totals.peak_bytes
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fragmentation_frees_the_heap_but_not_the_rss() {
    let (dir, stdout) = run_in_temp_dir("fragmentation");
    let full = load(&dir, "fragmentation.full.json");
    let after = load(&dir, "fragmentation.after.json");
    assert!(full.totals.live_bytes > 40 << 20, "{stdout}");
    assert!(after.totals.live_bytes < 1 << 20, "{stdout}");
    // The survivors are the audit records, 9,000 of them.
    assert_eq!(
        after
            .sites
            .iter()
            .filter(|s| passes_through(&after, s.stack, "audit_record"))
            .map(|s| s.live_blocks)
            .sum::<u64>(),
        9_000
    );
    if let (Some(full_rss), Some(after_rss)) = (full.os.rss_bytes, after.os.rss_bytes) {
        // The heap gave back 98% of its bytes; the RSS kept most of its.
        assert!(after_rss > full_rss / 2, "{stdout}");
        assert!(after_rss > 20 * after.totals.live_bytes, "{stdout}");
    }
    // On glibc the allocator's figures say where the RSS went, and the
    // trim gives back part of it.
    if let Some(allocator) = after.allocator.as_ref().and_then(|a| a.glibc()) {
        assert!(allocator.free_bytes > 50 << 20, "{stdout}");
        assert!(allocator.trimmable_estimate_bytes.is_some(), "{stdout}");
        let trimmed = load(&dir, "fragmentation.trimmed.json");
        assert!(trimmed.os.rss_bytes < after.os.rss_bytes, "{stdout}");
        assert!(stdout.contains("alloc_track::trim(): RSS"), "{stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
