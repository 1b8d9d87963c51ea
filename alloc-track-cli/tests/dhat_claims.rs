//! Issue 12, point 3, end to end: the DHAT export claims only what a dump
//! records. No block lifetimes are recorded, so `bklt` is false and no
//! lifetime, maximum, peak or end figure is written for dh_view.html to
//! show as zero; the one moment of a dump is the end time, never 0 (which
//! the viewer turns into "∞/s" rates).

mod common;

use common::{data, run};
use serde_json::Value;
use tempfile::TempDir;

fn export(args: &[&str]) -> Value {
    let dir = TempDir::new().unwrap();
    let app = data("app.json");
    let mut all = vec!["export", app.to_str().unwrap(), "--format", "dhat"];
    all.extend_from_slice(args);
    let output = run(&all, dir.path());
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("DHAT JSON on stdout")
}

#[test]
fn no_lifetimes_are_claimed_and_rates_are_finite() {
    let json = export(&[]);
    assert_eq!(json["bklt"], false, "lifetimes are not recorded");
    assert_eq!(json["bkacc"], false);
    assert!(json["te"].as_u64().unwrap() > 0, "te 0 makes every rate ∞");
    for pp in json["pps"].as_array().unwrap() {
        let fields: Vec<&str> = pp.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(fields, ["fs", "tb", "tbk"], "{pp}");
    }
    // dh_view.html's checks (checkFields in dh_view.js) for bklt: false.
    for field in [
        "dhatFileVersion",
        "mode",
        "verb",
        "bklt",
        "bkacc",
        "tu",
        "Mtu",
        "cmd",
        "pid",
        "te",
        "pps",
        "ftbl",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    let live: u64 = json["pps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["tb"].as_u64().unwrap())
        .sum();
    assert_eq!(live, 8_667_648, "the default figure is the live heap");
    assert_eq!(json["verb"], "Live");
    assert!(json["mode"].as_str().unwrap().contains("live bytes"));

    let allocated = export(&["--by", "allocated"]);
    assert_eq!(allocated["verb"], "Allocated");
}
