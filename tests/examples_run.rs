//! The examples do what their docs promise, run as a user runs them.
//! `cargo test` builds the examples beside the test binaries.

mod common;

use std::process::Command;

use alloc_track::dump::Dump;
use common::example;

#[test]
fn leaky_worker_names_its_leak_and_writes_dumps() {
    let dir = std::env::temp_dir().join(format!("alloc-track-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let output = Command::new(example("leaky_worker"))
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Memory climbs batch after batch.
    let live: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("after batch"))
        .collect();
    assert_eq!(live.len(), 5, "{stdout}");

    // The first row of the diff table names the leaking function.
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with("Index"));
    lines.next();
    let top = lines.next().unwrap_or_default();
    assert!(
        top.contains("load_profile"),
        "top row is {top:?}:\n{stdout}"
    );

    let before = Dump::load(dir.join("leaky_worker.before.json")).unwrap();
    let after = Dump::load(dir.join("leaky_worker.after.json")).unwrap();
    // 5 batches of 3,000 tasks, a third of them lookups of new users, each
    // keeping a 2 KiB profile.
    assert!(after.totals.live_bytes >= before.totals.live_bytes + 5_000 * 2048);
    assert!(after.epoch > before.epoch);
    std::fs::remove_dir_all(&dir).unwrap();
}
