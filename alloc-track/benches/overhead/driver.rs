//! The driver: runs every (workload, threads, allocator) as a child
//! process, round after round, and prints one table of medians.
//!
//! The figures that matter are ratios against `System` *in the same
//! round*: on a shared or throttling machine absolute times drift by tens
//! of percent between minutes, but two runs a second apart see the same
//! machine. Each round runs the four configurations back to back, in an
//! order rotated every round so that no configuration always runs first
//! (cold caches) or last (after the others heated the CPU); the table shows
//! the median over rounds of each ratio, which one disturbed round cannot
//! move.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::workloads::Workload;
use crate::ALLOCATOR_VAR;

const USAGE: &str = "\
usage: cargo bench -p alloc-track --bench overhead [-- OPTIONS]

  --rounds N        rounds of measurements (default 5; 3 with --quick)
  --workload NAME   only this workload: churn, build or json (repeatable)
  --threads N       only this many threads: 1 or 2 (repeatable)
  --quick           small workloads, for a smoke run; figures are noise
  --cpu             compare process CPU time instead of wall time: steadier
                    on a loaded machine, blind to time spent waiting";

/// The thread counts measured: one thread, and two allocating and freeing
/// at once.
const THREADS: [usize; 2] = [1, 2];

/// One allocator configuration of a child.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Config {
    /// The column header.
    name: &'static str,
    /// `ALLOC_BENCH_ALLOCATOR`.
    allocator: &'static str,
    /// `ALLOC_TRACK_MODE`, for the tracker.
    mode: Option<&'static str>,
}

/// The baseline first: ratios are taken against it.
const CONFIGS: [Config; 4] = [
    Config {
        name: "system",
        allocator: "system",
        mode: None,
    },
    Config {
        name: "count",
        allocator: "tracker",
        mode: Some("count"),
    },
    Config {
        name: "sampled",
        allocator: "tracker",
        mode: Some("sampled"),
    },
    Config {
        name: "full",
        allocator: "tracker",
        mode: Some("full"),
    },
];
const BASELINE: Config = CONFIGS[0];

#[derive(Debug, PartialEq)]
pub struct Options {
    rounds: usize,
    quick: bool,
    /// Times and ratios from process CPU time rather than wall time.
    cpu: bool,
    workloads: Vec<Workload>,
    threads: Vec<usize>,
}

impl Options {
    /// Parses the arguments after the program name. `cargo bench` adds
    /// `--bench`, which means nothing here.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut rounds = None;
        let mut quick = false;
        let mut cpu = false;
        let mut workloads = Vec::new();
        let mut threads = Vec::new();
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let mut value = |flag: &str| {
                args.next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match arg.as_str() {
                "--bench" => {}
                "--quick" => quick = true,
                "--cpu" => cpu = true,
                "--rounds" => {
                    let n = value("--rounds")?;
                    match n.parse::<usize>() {
                        Ok(n) if n > 0 => rounds = Some(n),
                        _ => return Err(format!("--rounds {n}: expected a positive number")),
                    }
                }
                "--workload" => {
                    let name = value("--workload")?;
                    let workload = Workload::parse(name).ok_or_else(|| {
                        format!("--workload {name}: expected churn, build or json")
                    })?;
                    workloads.push(workload);
                }
                "--threads" => {
                    let n = value("--threads")?;
                    match n.parse::<usize>() {
                        Ok(n) if THREADS.contains(&n) => threads.push(n),
                        _ => return Err(format!("--threads {n}: expected 1 or 2")),
                    }
                }
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        if workloads.is_empty() {
            workloads = Workload::ALL.to_vec();
        }
        if threads.is_empty() {
            threads = THREADS.to_vec();
        }
        Ok(Options {
            rounds: rounds.unwrap_or(if quick { 3 } else { 5 }),
            quick,
            cpu,
            workloads,
            threads,
        })
    }
}

/// What one child reported.
#[derive(Clone, Debug, Default)]
struct Measurement {
    time: Duration,
    /// The process's CPU time over the same span, where the OS gives it.
    cpu: Option<Duration>,
    /// The tracker's mode as the child reports it.
    mode: Option<String>,
    /// How the child's tracker captured stacks, as it reports it.
    walker: Option<String>,
    bookkeeping: Option<Bookkeeping>,
}

#[derive(Clone, Copy, Debug)]
struct Bookkeeping {
    bytes: u64,
    live_blocks: u64,
    live_bytes: u64,
}

/// One cell of the table: a (workload, threads) row and a configuration.
type Key = (Workload, usize, Config);

pub fn run(options: &Options) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let rows: Vec<(Workload, usize)> = options
        .workloads
        .iter()
        .flat_map(|&w| options.threads.iter().map(move |&t| (w, t)))
        .collect();
    // Per cell, one measurement per round (None where the child failed),
    // so that round r of a configuration pairs with round r of `System`.
    let mut results: HashMap<Key, Vec<Option<Measurement>>> = HashMap::new();
    let mut failures = 0;

    for round in 0..options.rounds {
        for &(workload, threads) in &rows {
            for i in 0..CONFIGS.len() {
                let config = CONFIGS[(i + round) % CONFIGS.len()];
                let outcome = run_child(&exe, workload, threads, config, options.quick);
                match &outcome {
                    Ok(m) => eprintln!(
                        "round {}/{}  {:5} x{}  {:7}  {:8.3} s",
                        round + 1,
                        options.rounds,
                        workload.name(),
                        threads,
                        config.name,
                        m.time.as_secs_f64()
                    ),
                    Err(message) => {
                        failures += 1;
                        eprintln!(
                            "round {}/{}  {} x{}  {}: FAILED: {message}",
                            round + 1,
                            options.rounds,
                            workload.name(),
                            threads,
                            config.name
                        );
                    }
                }
                results
                    .entry((workload, threads, config))
                    .or_default()
                    .push(outcome.ok());
            }
        }
    }

    print!("{}", table(&rows, &results, options));
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("overhead: {failures} measurement(s) failed; their cells are left out");
        ExitCode::FAILURE
    })
}

fn run_child(
    exe: &std::path::Path,
    workload: Workload,
    threads: usize,
    config: Config,
    quick: bool,
) -> Result<Measurement, String> {
    let mut command = Command::new(exe);
    command
        .arg("--child")
        .arg(workload.name())
        .arg(threads.to_string());
    if quick {
        command.arg("--quick");
    }
    // The child's environment is this one minus every tracker setting the
    // user may have exported (live dumps on an interval would be timed
    // too), plus the configuration's own.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ALLOC_TRACK_") {
            command.env_remove(name);
        }
    }
    command.env(ALLOCATOR_VAR, config.allocator);
    if let Some(mode) = config.mode {
        command.env("ALLOC_TRACK_MODE", mode);
    }
    let output = command
        .output()
        .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    parse_child_line(&String::from_utf8_lossy(&output.stdout))
}

/// Reads the child's `key=value ...` line.
fn parse_child_line(line: &str) -> Result<Measurement, String> {
    let fields: HashMap<&str, &str> = line
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .collect();
    let number = |key: &str| -> Result<Option<u64>, String> {
        fields
            .get(key)
            .map(|v| v.parse().map_err(|_| format!("bad {key} in {line:?}")))
            .transpose()
    };
    let time_ns = number("time_ns")?.ok_or_else(|| format!("no time in {line:?}"))?;
    let bookkeeping = match (
        number("bookkeeping_bytes")?,
        number("live_blocks")?,
        number("live_bytes")?,
    ) {
        (Some(bytes), Some(live_blocks), Some(live_bytes)) => Some(Bookkeeping {
            bytes,
            live_blocks,
            live_bytes,
        }),
        _ => None,
    };
    Ok(Measurement {
        time: Duration::from_nanos(time_ns),
        cpu: number("cpu_ns")?.map(Duration::from_nanos),
        mode: fields.get("mode").map(|m| m.to_string()),
        walker: fields.get("walker").map(|w| w.to_string()),
        bookkeeping,
    })
}

/// The median of `values` (the mean of the middle two for an even count);
/// None when empty.
fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The table, as Markdown so that it pastes into the README unchanged.
fn table(
    rows: &[(Workload, usize)],
    results: &HashMap<Key, Vec<Option<Measurement>>>,
    options: &Options,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} time, medians of {} round(s){}. Ratio: the median over rounds of \
         (time / system's time in the same round), then [lowest-highest].\n",
        if options.cpu { "Process CPU" } else { "Wall" },
        options.rounds,
        if options.quick {
            ", --quick sizes (figures are noise)"
        } else {
            ""
        }
    );
    let seconds = |m: &Measurement| -> Option<f64> {
        if options.cpu {
            m.cpu.map(|cpu| cpu.as_secs_f64())
        } else {
            Some(m.time.as_secs_f64())
        }
    };
    let mut header = String::from("| workload | threads |");
    let mut rule = String::from("|---|---:|");
    for config in CONFIGS {
        header.push_str(&format!(" {} |", config.name));
        rule.push_str("---:|");
    }
    header.push_str(" full: bookkeeping per live block | full: bookkeeping / live heap |");
    rule.push_str("---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");

    let empty = Vec::new();
    for &(workload, threads) in rows {
        let cell = |config: Config| results.get(&(workload, threads, config)).unwrap_or(&empty);
        let baseline = cell(BASELINE);
        let mut line = format!("| {} | {} |", workload.name(), threads);
        for config in CONFIGS {
            let runs = cell(config);
            let time = median(runs.iter().flatten().filter_map(seconds).collect());
            let ratios: Vec<f64> = runs
                .iter()
                .zip(baseline)
                .filter_map(|(m, base)| Some(seconds(m.as_ref()?)? / seconds(base.as_ref()?)?))
                .collect();
            let lowest = ratios.iter().copied().reduce(f64::min);
            let highest = ratios.iter().copied().reduce(f64::max);
            match (time, median(ratios), lowest, highest) {
                (Some(time), ..) if config == BASELINE => line.push_str(&format!(" {time:.3} s |")),
                (Some(time), Some(ratio), Some(lowest), Some(highest)) => line.push_str(&format!(
                    " {time:.3} s ({ratio:.2}x [{lowest:.2}-{highest:.2}]) |"
                )),
                (Some(time), ..) => line.push_str(&format!(" {time:.3} s |")),
                (None, ..) => line.push_str(" failed |"),
            }
        }
        let books: Vec<Bookkeeping> = cell(CONFIGS[3])
            .iter()
            .flatten()
            .filter_map(|m| m.bookkeeping)
            .collect();
        let per_block = median(
            books
                .iter()
                .map(|b| b.bytes as f64 / b.live_blocks.max(1) as f64)
                .collect(),
        );
        let per_heap = median(
            books
                .iter()
                .map(|b| b.bytes as f64 / b.live_bytes.max(1) as f64)
                .collect(),
        );
        match (per_block, per_heap) {
            (Some(per_block), Some(per_heap)) => {
                line.push_str(&format!(" {per_block:.0} B | {per_heap:.2}x |"))
            }
            _ => line.push_str(" | |"),
        }
        let _ = writeln!(out, "{line}");
    }

    // Which mode each tracker column really ran in, and with which stack
    // walker, as its children reported them: a mode the library ignored, or
    // a binary without frame pointers, must show next to the figures.
    let _ = writeln!(out);
    for config in &CONFIGS[1..] {
        let runs: Vec<&Measurement> = results
            .iter()
            .filter(|(key, _)| key.2 == *config)
            .flat_map(|(_, runs)| runs.iter().flatten())
            .collect();
        let distinct = |field: fn(&Measurement) -> Option<&str>| {
            let mut values: Vec<&str> = runs.iter().filter_map(|m| field(m)).collect();
            values.sort_unstable();
            values.dedup();
            if values.is_empty() {
                "none".to_string()
            } else {
                values.join(", ")
            }
        };
        let _ = write!(
            out,
            "{}: ALLOC_TRACK_MODE={}, mode reported: {}",
            config.name,
            config.mode.unwrap_or(""),
            distinct(|m| m.mode.as_deref())
        );
        if config.mode != Some("count") {
            let _ = write!(out, ", stack walker: {}", distinct(|m| m.walker.as_deref()));
        }
        let _ = writeln!(out);
    }
    out
}
