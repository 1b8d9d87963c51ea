//! The files other tools open: the flamegraph SVG holds the expected
//! function names, the pprof export decodes with a protobuf decoder to the
//! dump's totals, and the DHAT export has DHAT's shape.

use std::io::Read;
use std::path::{Path, PathBuf};

use alloc_track::dump::Dump;
use alloc_track_cli::export::{dhat, pprof};
use alloc_track_cli::flamegraph::{render_svg, GraphOptions};
use alloc_track_cli::weigh::Measure;
use flate2::read::GzDecoder;
use prost::Message;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn load(name: &str) -> (Dump, PathBuf) {
    let path = data(name);
    (Dump::load(&path).expect("fixture loads"), path)
}

fn svg(graph: GraphOptions) -> String {
    let (dump, path) = load("app.json");
    String::from_utf8(render_svg(&dump, &path, &graph).expect("svg")).expect("utf-8")
}

#[test]
fn the_flamegraph_names_the_functions() {
    let text = svg(GraphOptions::default());
    for name in [
        "demo_app::main",
        "demo_app::cache::Cache::insert",
        // Inlined into Cache::insert, so a frame of its own above it.
        "alloc::vec::Vec&lt;T,A&gt;::push",
        // The `;` inside the name did not split the frame.
        "&lt;[u8\u{FF1B} 32] as demo_app::hash::Digest&gt;::finish",
        "0x55d4c3a01800",
        "bytes",
    ] {
        assert!(text.contains(name), "SVG lacks {name}");
    }
    // A split frame would show up as a frame named `<[u8` of its own.
    assert!(!text.contains("<title>&lt;[u8 ("));
    assert!(text.contains("Live bytes of demo-app"));
}

#[test]
fn the_inverted_and_icicle_views_differ_from_the_default() {
    let mut at_root = GraphOptions::default();
    at_root.site_at_root = true;
    let text = svg(at_root);
    assert!(text.contains("allocation sites at the root"));
    let mut icicle = GraphOptions::default();
    icicle.icicle = true;
    icicle.measure = Measure::Allocated;
    let icicle = svg(icicle);
    assert!(icicle.contains("Allocated bytes of demo-app"));
    assert_ne!(icicle, svg(GraphOptions::default()));
}

fn decode(name: &str) -> (Dump, pprof::Profile) {
    let (dump, path) = load(name);
    let gz = pprof::encode(&dump, &path).expect("encode");
    let mut raw = Vec::new();
    GzDecoder::new(gz.as_slice())
        .read_to_end(&mut raw)
        .expect("gzip");
    (
        dump,
        pprof::Profile::decode(raw.as_slice()).expect("protobuf"),
    )
}

#[test]
fn the_pprof_export_decodes_to_the_dumps_totals() {
    for name in ["app.json", "after.json"] {
        let (dump, profile) = decode(name);
        let strings = &profile.string_table;
        assert_eq!(strings[0], "");
        let types: Vec<(&str, &str)> = profile
            .sample_type
            .iter()
            .map(|t| {
                (
                    strings[t.r#type as usize].as_str(),
                    strings[t.unit as usize].as_str(),
                )
            })
            .collect();
        assert_eq!(
            types,
            [
                ("alloc_objects", "count"),
                ("alloc_space", "bytes"),
                ("inuse_objects", "count"),
                ("inuse_space", "bytes")
            ]
        );
        let period = profile.period_type.as_ref().expect("period type");
        assert_eq!(strings[period.r#type as usize], "space");
        assert_eq!(strings[period.unit as usize], "bytes");
        let mut sums = [0i64; 4];
        for sample in &profile.sample {
            for (sum, value) in sums.iter_mut().zip(&sample.value) {
                *sum += value;
            }
        }
        let t = dump.totals;
        let expected = [t.total_blocks, t.total_bytes, t.live_blocks, t.live_bytes];
        assert_eq!(sums.map(|s| s as u64), expected, "{name}");
        assert_eq!(strings[profile.mapping[0].filename as usize], "demo-app");
    }
}

#[test]
fn pprof_locations_are_leaf_first_with_inlined_frames_before_their_caller() {
    let (_, profile) = decode("app.json");
    let function_name = |id: u64| {
        let f = profile
            .function
            .iter()
            .find(|f| f.id == id)
            .expect("function");
        profile.string_table[f.name as usize].as_str()
    };
    let location = |id: u64| {
        profile
            .location
            .iter()
            .find(|l| l.id == id)
            .expect("location")
    };
    // The first sample is the cache site: grow_one, then push inlined into
    // Cache::insert, then main.
    let first = &profile.sample[0];
    let leaf = location(first.location_id[0]);
    assert_eq!(
        function_name(leaf.line[0].function_id),
        "alloc::raw_vec::RawVec<T,A>::grow_one"
    );
    let inlined = location(first.location_id[1]);
    let names: Vec<&str> = inlined
        .line
        .iter()
        .map(|l| function_name(l.function_id))
        .collect();
    assert_eq!(
        names,
        [
            "alloc::vec::Vec<T,A>::push",
            "demo_app::cache::Cache::insert"
        ]
    );
    assert_eq!(inlined.line[1].line, 42);
}

fn dhat_json(dump: &Dump, measure: Measure) -> serde_json::Value {
    let bytes = dhat::to_json(dump, measure, Path::new("app.json")).expect("export");
    serde_json::from_slice(&bytes).expect("json")
}

#[test]
fn the_dhat_export_has_dhats_shape() {
    let (dump, _) = load("app.json");
    let json = dhat_json(&dump, Measure::Live);
    assert_eq!(json["dhatFileVersion"], 2);
    let ftbl = json["ftbl"].as_array().expect("ftbl");
    assert_eq!(ftbl[0], "[root]");
    assert!(ftbl.iter().any(|f| f.as_str().is_some_and(
        |f| f.ends_with(": demo_app::cache::Cache::insert (/home/dev/demo-app/src/cache.rs:42:9)")
    )));
    let pps = json["pps"].as_array().expect("pps");
    let sum = |json: &serde_json::Value, field: &str| {
        let pps = json["pps"].as_array().expect("pps");
        pps.iter().map(|p| p[field].as_u64().unwrap()).sum::<u64>()
    };
    assert_eq!(sum(&json, "tb"), dump.totals.live_bytes);
    assert_eq!(sum(&json, "tbk"), dump.totals.live_blocks);
    let allocated = dhat_json(&dump, Measure::Allocated);
    assert_eq!(sum(&allocated, "tb"), dump.totals.total_bytes);
    assert_eq!(allocated["verb"], "Allocated");
    assert_eq!(
        sum(&dhat_json(&dump, Measure::Peak), "tb"),
        11 * 1024 * 1024
    );
    let mut lists: Vec<&serde_json::Value> = pps.iter().map(|p| &p["fs"]).collect();
    lists.sort_by_key(|v| v.to_string());
    lists.dedup();
    assert_eq!(lists.len(), pps.len(), "program points share a frame list");
}

#[test]
fn dhat_merges_stacks_that_symbolize_alike() {
    let (mut dump, _) = load("app.json");
    // A second stack with the same locations as stack 0: one program point.
    let copy = dump.stacks[0].clone();
    dump.stacks.push(copy);
    let mut site = dump.sites[0].clone();
    site.stack = (dump.stacks.len() - 1) as u32;
    dump.sites.push(site);
    let json = dhat_json(&dump, Measure::Allocated);
    assert_eq!(json["pps"].as_array().unwrap().len(), dump.sites.len() - 1);
}
