//! The reader against hostile and broken input: every case gets a typed
//! error with a message that says what is wrong, never a panic.

use super::*;

fn valid() -> Dump {
    Dump {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        program: "demo".to_string(),
        pid: 42,
        timestamp_ms: 1_700_000_000_000,
        mode: "full".to_string(),
        sample_mean_bytes: None,
        stack_walker: None,
        epoch: 3,
        totals: Totals {
            live_bytes: 100,
            live_blocks: 2,
            total_bytes: 300,
            total_blocks: 5,
            peak_bytes: 250,
        },
        os: OsMemory::default(),
        allocator: None,
        tracker: TrackerHealth::default(),
        locations: vec![Location {
            address: 0x1000,
            frames: vec![Frame {
                function: "<[u8; 32] as demo::Fill>::fill".to_string(),
                file: Some("src/main.rs".to_string()),
                line: Some(7),
                column: None,
            }],
        }],
        stacks: vec![StackRecord {
            locations: vec![0],
            truncated: false,
        }],
        sites: vec![SiteRecord {
            stack: 0,
            live_bytes: 100,
            live_blocks: 2,
            total_bytes: 300,
            total_blocks: 5,
            temporary_blocks: 2,
            births: vec![
                Birth {
                    epoch: 0,
                    bytes: 60,
                    blocks: 1,
                },
                Birth {
                    epoch: 2,
                    bytes: 40,
                    blocks: 1,
                },
            ],
            scopes: vec![SiteScope {
                scope: 0,
                bytes: 40,
                blocks: 1,
            }],
        }],
        peak_sites: vec![PeakSite {
            stack: 0,
            bytes: 250,
            blocks: 4,
        }],
        scopes: vec![Scope {
            name: "request".to_string(),
            live_bytes: 40,
            live_blocks: 1,
            total_bytes: 90,
            total_blocks: 3,
        }],
    }
}

fn json(dump: &Dump) -> Vec<u8> {
    serde_json::to_vec(dump).unwrap()
}

fn error_of(bytes: &[u8]) -> String {
    Dump::from_slice(bytes).unwrap_err().to_string()
}

#[test]
fn a_valid_dump_round_trips() {
    let dump = valid();
    assert_eq!(Dump::from_slice(&json(&dump)).unwrap(), dump);
}

#[test]
fn empty_and_truncated_input_say_so() {
    assert!(
        error_of(b"").contains("truncated dump"),
        "{}",
        error_of(b"")
    );
    let bytes = json(&valid());
    let text = error_of(&bytes[..bytes.len() / 2]);
    assert!(text.contains("truncated dump"), "{text}");
}

#[test]
fn json_that_is_not_a_dump_is_named_as_such() {
    assert!(
        error_of(b"[1, 2, 3]").contains("not a valid dump"),
        "{}",
        error_of(b"[1,2,3]")
    );
    assert!(error_of(br#"{"hello": "world"}"#).contains("not an alloc-track dump"));
    assert!(error_of(br#"{"format": "pprof", "version": 1}"#).contains("not an alloc-track dump"));
    assert!(error_of(b"\x00\xff garbage").contains("not a valid dump"));
}

#[test]
fn a_newer_version_asks_for_an_upgrade() {
    let mut value: serde_json::Value = serde_json::from_slice(&json(&valid())).unwrap();
    value["version"] = serde_json::json!(FORMAT_VERSION + 1);
    // A newer version may also change fields: the version error wins.
    value["sites"] = serde_json::json!("restructured");
    let text = error_of(&serde_json::to_vec(&value).unwrap());
    assert!(
        text.contains("newer than this alloc-track understands"),
        "{text}"
    );
}

#[test]
fn negative_and_out_of_range_numbers_are_rejected() {
    let mut value: serde_json::Value = serde_json::from_slice(&json(&valid())).unwrap();
    value["totals"]["live_bytes"] = serde_json::json!(-5);
    let text = error_of(&serde_json::to_vec(&value).unwrap());
    assert!(text.contains("invalid value: integer `-5`"), "{text}");

    let mut value: serde_json::Value = serde_json::from_slice(&json(&valid())).unwrap();
    value["sites"][0]["stack"] = serde_json::json!(1u64 << 40);
    let text = error_of(&serde_json::to_vec(&value).unwrap());
    assert!(text.contains("not a valid dump"), "{text}");
}

#[test]
fn indices_out_of_range_are_named() {
    let mut dump = valid();
    dump.sites[0].stack = 7;
    let text = error_of(&json(&dump));
    assert!(
        text.contains("sites[0] refers to stack 7, but there are only 1 stacks"),
        "{text}"
    );

    let mut dump = valid();
    dump.stacks[0].locations.push(99);
    let text = error_of(&json(&dump));
    assert!(text.contains("stacks[0] refers to location 99"), "{text}");

    let mut dump = valid();
    dump.sites[0].scopes[0].scope = 3;
    assert!(error_of(&json(&dump)).contains("sites[0] refers to scope 3"));

    let mut dump = valid();
    dump.sites[0].scopes[0].bytes = 1000;
    assert!(error_of(&json(&dump)).contains("scopes add up to more"));

    let mut dump = valid();
    dump.peak_sites[0].stack = 5;
    assert!(error_of(&json(&dump)).contains("peak_sites[0] refers to stack 5"));
}

#[test]
fn figures_that_contradict_each_other_are_rejected() {
    let mut dump = valid();
    dump.sites[0].live_bytes = 1000;
    assert!(error_of(&json(&dump)).contains("more live"));

    let mut dump = valid();
    dump.totals.total_bytes += 1;
    let text = error_of(&json(&dump));
    assert!(
        text.contains("totals.total_bytes is 301 but the sites add up to 300"),
        "{text}"
    );

    let mut dump = valid();
    dump.sites[0].births[0].bytes = 1;
    assert!(error_of(&json(&dump)).contains("births do not add up"));

    let mut dump = valid();
    dump.totals.peak_bytes = 50;
    assert!(error_of(&json(&dump)).contains("peak"));

    let mut dump = valid();
    dump.sites.push(dump.sites[0].clone());
    dump.sites[0].total_bytes = u64::MAX;
    dump.sites[1].total_bytes = u64::MAX;
    dump.totals.total_bytes = u64::MAX;
    assert!(error_of(&json(&dump)).contains("overflow"));
}

#[test]
fn load_names_the_file_and_refuses_directories() {
    let dir = std::env::temp_dir();
    let text = Dump::load(&dir).unwrap_err().to_string();
    assert!(text.contains("is a directory"), "{text}");
    assert!(text.starts_with(&dir.display().to_string()), "{text}");
    let missing = dir.join("alloc-track-no-such-dump.json");
    let text = Dump::load(&missing).unwrap_err().to_string();
    assert!(text.starts_with(&missing.display().to_string()), "{text}");
}

#[test]
fn save_replaces_atomically_and_reports_unwritable_paths() {
    let dir = std::env::temp_dir().join(format!("alloc-track-dump-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dump.json");
    valid().save(&path).unwrap();
    assert_eq!(Dump::load(&path).unwrap(), valid());
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    let text = valid()
        .save(dir.join("missing/dump.json"))
        .unwrap_err()
        .to_string();
    assert!(text.contains("missing/dump.json"), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
