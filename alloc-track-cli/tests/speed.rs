//! Speed of `report` on a large generated dump (100,000 sites, 1,000,000
//! frames). The normal test only proves the generator and the report run
//! (on a small dump); the figure in docs/cli.md comes from
//!
//! ```text
//! cargo test --release -p alloc-track-cli --test speed -- --ignored --nocapture
//! ```
//!
//! which times the release binary's CPU (user + system) on the full size.

use std::path::Path;
use std::process::Command;

use alloc_track::dump::{
    Dump, Frame, Location, SiteRecord, StackRecord, Totals, FORMAT_NAME, FORMAT_VERSION,
};
use alloc_track_cli::output::Output;
use alloc_track_cli::report::{report, ReportOptions};
use tempfile::TempDir;

/// Stack depth in locations; with one location in four holding an inlined
/// frame too, a stack expands to 10 frames on average.
const DEPTH: usize = 8;

/// A deterministic scramble, so the dump is the same on every run.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x
}

/// A dump shaped like a large real program: `sites` sites, each with its
/// own stack of `DEPTH` locations drawn from a pool of code locations that
/// gets wider towards the leaves (a few callers near `main`, many
/// allocating functions), one location in four with an inlined frame.
fn generated_dump(sites: usize, pool: usize) -> Dump {
    let pool = pool.max(DEPTH * 10);
    let locations: Vec<Location> = (0..pool)
        .map(|i| {
            let module = i % 97;
            let frame = |name: String, line: u32| Frame {
                function: name,
                file: Some(format!("/home/dev/big-app/src/module_{module}.rs")),
                line: Some(line),
                column: Some(5),
            };
            let mut frames = vec![frame(
                format!("big_app::module_{module}::Type{}::method_{i}", i % 13),
                (i % 900) as u32 + 1,
            )];
            if i % 4 == 0 {
                frames.insert(0, frame(format!("big_app::module_{module}::helper_{i}"), 7));
            }
            Location {
                address: 0x5555_0000_0000 + 16 * i as u64,
                frames,
            }
        })
        .collect();
    let mut stacks = Vec::with_capacity(sites);
    let mut site_list = Vec::with_capacity(sites);
    let mut totals = Totals::default();
    for k in 0..sites {
        // Depth d (0 = root) draws from the first 10^d-ish locations.
        let locations: Vec<u32> = (0..DEPTH)
            .rev()
            .map(|d| {
                let width = (10u64.pow(d as u32)).min(pool as u64);
                (mix((k * DEPTH + d) as u64) % width) as u32
            })
            .collect();
        stacks.push(StackRecord {
            locations,
            truncated: false,
        });
        let live_bytes = mix(k as u64) % 100_000 + 1;
        let live_blocks = live_bytes / 64 + 1;
        let site = SiteRecord {
            stack: k as u32,
            live_bytes,
            live_blocks,
            total_bytes: live_bytes * 3 + 64,
            total_blocks: live_blocks * 3 + 1,
            births: Vec::new(),
            temporary_blocks: 0,
            scopes: Vec::new(),
        };
        totals.live_bytes += site.live_bytes;
        totals.live_blocks += site.live_blocks;
        totals.total_bytes += site.total_bytes;
        totals.total_blocks += site.total_blocks;
        site_list.push(site);
    }
    totals.peak_bytes = totals.live_bytes * 2;
    Dump {
        format: FORMAT_NAME.to_string(),
        version: FORMAT_VERSION,
        program: "big-app".to_string(),
        pid: 1,
        timestamp_ms: 1_764_042_000_000,
        mode: "full".to_string(),
        sample_mean_bytes: None,
        stack_walker: None,
        epoch: 1,
        totals,
        os: Default::default(),
        allocator: None,
        tracker: Default::default(),
        locations,
        stacks,
        sites: site_list,
        peak_sites: Vec::new(),
        scopes: Vec::new(),
    }
}

fn frame_count(dump: &Dump) -> usize {
    dump.stacks
        .iter()
        .flat_map(|s| &s.locations)
        .map(|&l| dump.locations[l as usize].frames.len())
        .sum()
}

fn write_and_report(sites: usize, dir: &Path) -> std::path::PathBuf {
    let dump = generated_dump(sites, sites / 5);
    dump.validate().expect("the generated dump is valid");
    let path = dir.join("big.json");
    dump.save(&path).expect("save");
    path
}

#[test]
fn a_generated_dump_reports() {
    let dir = TempDir::new().unwrap();
    let path = write_and_report(2_000, dir.path());
    let mut options = ReportOptions::new(&path);
    options.flamegraph = Some(Output::File(dir.path().join("big.svg")));
    let mut out = Vec::new();
    report(&options, &mut out, &mut Vec::new()).expect("report");
    // Rows are per source line: the generated stacks share leaf functions,
    // so fewer rows than sites, but the table is full.
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("2,000 call sites"), "{text}");
    assert!(text.contains("top 10 of "), "{text}");
    assert!(dir.path().join("big.svg").is_file());
}

/// CPU seconds (user + system) used by finished children of this process;
/// `None` where there is no `getrusage`.
#[cfg(unix)]
fn children_cpu_seconds() -> Option<f64> {
    // SAFETY: `getrusage` only writes into the zeroed struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

#[cfg(not(unix))]
fn children_cpu_seconds() -> Option<f64> {
    None
}

/// Times the release binary's `report` on `dump`, three runs.
fn time_report(dump: &Dump, what: &str) {
    let dir = TempDir::new().unwrap();
    let frames = frame_count(dump);
    assert!(frames >= 900_000, "only {frames} frames");
    let path = dir.path().join("big.json");
    dump.save(&path).expect("save");
    let size = std::fs::metadata(&path).unwrap().len();
    for run in 0..3 {
        let before = children_cpu_seconds();
        let wall = std::time::Instant::now();
        let output = Command::new(env!("CARGO_BIN_EXE_alloc-track"))
            .args(["report", path.to_str().unwrap(), "-o"])
            .arg(dir.path().join("big.svg"))
            .output()
            .expect("run");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let cpu = match (before, children_cpu_seconds()) {
            (Some(before), Some(after)) => format!("{:.3} s CPU", after - before),
            _ => "CPU time unknown".to_string(),
        };
        println!(
            "{what}, run {run}: {} sites, {frames} frames in stacks, {} locations, \
             {:.1} MB of JSON: {cpu}, {:.3} s wall",
            dump.sites.len(),
            dump.locations.len(),
            size as f64 / 1e6,
            wall.elapsed().as_secs_f64()
        );
    }
}

#[test]
#[ignore = "takes seconds in debug builds; run with --release --ignored --nocapture"]
fn report_on_100k_sites_and_1m_frames() {
    // Realistic: 20,000 code locations shared by the stacks.
    time_report(&generated_dump(100_000, 20_000), "shared locations");
    // Worst case: 800,000 distinct locations holding a million frames.
    time_report(&generated_dump(100_000, 800_000), "distinct locations");
}
