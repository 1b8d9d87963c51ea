//! The driver: runs every (workload, threads, allocator) as a child
//! process, round after round, then callgrind's counts, and prints one
//! table of medians (`table.rs`).
//!
//! The figures that matter are ratios against `System` *in the same
//! round*: on a shared or throttling machine absolute times drift by tens
//! of percent between minutes, but two runs a second apart see the same
//! machine. Each round runs the configurations back to back, in an order
//! rotated every round so that no configuration always runs first (cold
//! caches) or last (after the others heated the CPU); the table shows the
//! median over rounds of each ratio, which one disturbed round cannot move.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use crate::callgrind;
use crate::table;
use crate::workloads::Workload;
use crate::{ALLOCATOR_VAR, CHILD_LINE_PREFIX};

const USAGE: &str = "\
usage: cargo bench -p alloc-track --bench overhead [-- OPTIONS]

  --rounds N        rounds of measurements (default 5; 3 with --quick)
  --workload NAME   only this workload (repeatable): churn, build, json,
                    crates, depth (the whole depth series) or depth-N
  --threads N       only this many threads: 1 or 2 (repeatable)
  --peers           also time heaptrack and dhat-rs, on the crates workload
  --peers-everywhere  the same, on every workload (slow: dhat is ~30x)
  --callgrind       count instructions with callgrind (default: where
                    valgrind is installed); --no-callgrind to skip
  --quick           small workloads, for a smoke run; figures are noise
  --cpu             compare process CPU time instead of wall time: steadier
                    on a loaded machine, blind to time spent waiting";

/// The thread counts measured: one thread, and two allocating and freeing
/// at once.
const THREADS: [usize; 2] = [1, 2];

/// How a configuration's child is started.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Launch {
    /// The bench binary itself.
    Direct,
    /// Under `heaptrack`, which preloads itself into the process.
    Heaptrack,
}

/// One allocator configuration of a child.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Config {
    /// The column header.
    pub name: &'static str,
    /// `ALLOC_BENCH_ALLOCATOR`.
    pub allocator: &'static str,
    /// `ALLOC_TRACK_MODE`, for the tracker.
    pub mode: Option<&'static str>,
    pub launch: Launch,
}

impl Config {
    pub fn is_peer(&self) -> bool {
        self.allocator == "dhat" || self.launch == Launch::Heaptrack
    }
}

/// The baseline first: ratios are taken against it. The peers last.
pub const CONFIGS: [Config; 6] = [
    Config {
        name: "system",
        allocator: "system",
        mode: None,
        launch: Launch::Direct,
    },
    Config {
        name: "count",
        allocator: "tracker",
        mode: Some("count"),
        launch: Launch::Direct,
    },
    Config {
        name: "sampled",
        allocator: "tracker",
        mode: Some("sampled"),
        launch: Launch::Direct,
    },
    Config {
        name: "full",
        allocator: "tracker",
        mode: Some("full"),
        launch: Launch::Direct,
    },
    Config {
        name: "heaptrack",
        allocator: "system",
        mode: None,
        launch: Launch::Heaptrack,
    },
    Config {
        name: "dhat",
        allocator: "dhat",
        mode: None,
        launch: Launch::Direct,
    },
];
pub const BASELINE: Config = CONFIGS[0];
pub const FULL: Config = CONFIGS[3];
const HEAPTRACK: Config = CONFIGS[4];

/// Which workloads the peers are timed on.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Peers {
    None,
    /// The crates workload only: the one the README compares on.
    Crates,
    Everywhere,
}

#[derive(Debug, PartialEq)]
pub struct Options {
    pub rounds: usize,
    pub quick: bool,
    /// Times and ratios from process CPU time rather than wall time.
    pub cpu: bool,
    pub workloads: Vec<Workload>,
    pub threads: Vec<usize>,
    pub peers: Peers,
    /// None: where valgrind is installed.
    pub callgrind: Option<bool>,
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
        let mut peers = Peers::None;
        let mut callgrind = None;
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
                "--peers" => peers = Peers::Crates,
                "--peers-everywhere" => peers = Peers::Everywhere,
                "--callgrind" => callgrind = Some(true),
                "--no-callgrind" => callgrind = Some(false),
                "--rounds" => {
                    let n = value("--rounds")?;
                    match n.parse::<usize>() {
                        Ok(n) if n > 0 => rounds = Some(n),
                        _ => return Err(format!("--rounds {n}: expected a positive number")),
                    }
                }
                "--workload" => {
                    let name = value("--workload")?;
                    if name == "depth" {
                        workloads.extend(
                            Workload::ALL
                                .iter()
                                .filter(|w| matches!(w, Workload::Depth(_))),
                        );
                    } else {
                        workloads.push(Workload::parse(name).ok_or_else(|| {
                            format!("--workload {name}: expected churn, build, json, crates, depth or depth-N")
                        })?);
                    }
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
        workloads.dedup();
        if threads.is_empty() {
            threads = THREADS.to_vec();
        }
        Ok(Options {
            rounds: rounds.unwrap_or(if quick { 3 } else { 5 }),
            quick,
            cpu,
            workloads,
            threads,
            peers,
            callgrind,
        })
    }

    /// The configurations timed on `workload`.
    fn configs(&self, workload: Workload, heaptrack_installed: bool) -> Vec<Config> {
        CONFIGS
            .into_iter()
            .filter(|config| match (config.is_peer(), self.peers) {
                (false, _) => true,
                (true, Peers::None) => false,
                (true, Peers::Crates) => workload == Workload::Crates,
                (true, Peers::Everywhere) => true,
            })
            .filter(|config| *config != HEAPTRACK || heaptrack_installed)
            .collect()
    }
}

/// What one child reported.
#[derive(Clone, Debug, Default)]
pub struct Measurement {
    pub time: Duration,
    /// The process's CPU time over the same span, where the OS gives it.
    pub cpu: Option<Duration>,
    /// The tracker's mode as the child reports it.
    pub mode: Option<String>,
    /// How the child's tracker captured stacks, as it reports it.
    pub walker: Option<String>,
    /// Allocations in the measured run (count and full modes).
    pub allocations: Option<u64>,
    /// Median captured stack depth and the share of truncated stacks, in
    /// thousandths (full mode).
    pub stack_depth: Option<(u64, u64)>,
    pub bookkeeping: Option<Bookkeeping>,
}

#[derive(Clone, Copy, Debug)]
pub struct Bookkeeping {
    pub bytes: u64,
    pub live_blocks: u64,
    pub live_bytes: u64,
    /// The heap's peak over the run (older children did not say).
    pub peak_bytes: Option<u64>,
}

/// One cell of the table: a (workload, threads) row and a configuration.
pub type Key = (Workload, usize, Config);

pub fn run(options: &Options) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let heaptrack_installed = options.peers != Peers::None && installed("heaptrack", "--version");
    if options.peers != Peers::None && !heaptrack_installed {
        eprintln!("overhead: heaptrack is not installed; its column is skipped");
    }
    let rows: Vec<(Workload, usize)> = options
        .workloads
        .iter()
        .flat_map(|&w| options.threads.iter().map(move |&t| (w, t)))
        .collect();
    let size = if options.quick { "quick" } else { "full" };
    // Per cell, one measurement per round (None where the child failed),
    // so that round r of a configuration pairs with round r of `System`.
    let mut results: HashMap<Key, Vec<Option<Measurement>>> = HashMap::new();
    let mut failures = 0;

    for round in 0..options.rounds {
        for &(workload, threads) in &rows {
            let configs = options.configs(workload, heaptrack_installed);
            for i in 0..configs.len() {
                let config = configs[(i + round) % configs.len()];
                let outcome = run_child(&exe, workload, threads, config, size, None)
                    .and_then(|output| parse_child_output(&output));
                match &outcome {
                    Ok(m) => eprintln!(
                        "round {}/{}  {:9} x{}  {:9}  {:8.3} s",
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

    let want_callgrind = options.callgrind.unwrap_or(true);
    let counts = if want_callgrind && installed("valgrind", "--version") {
        Some(callgrind::run(&exe, &options.workloads, options.quick))
    } else {
        if options.callgrind == Some(true) {
            eprintln!("overhead: valgrind is not installed; no instruction counts");
        }
        None
    };

    print!(
        "{}",
        table::render(&rows, &results, counts.as_ref(), options)
    );
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        eprintln!("overhead: {failures} measurement(s) failed; their cells are left out");
        ExitCode::FAILURE
    })
}

/// Whether `program` runs at all.
fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .output()
        .is_ok_and(|output| output.status.success())
}

/// Runs one child and returns its stdout. `wrapper`, when given, is a
/// command line the child runs under (callgrind's).
pub fn run_child(
    exe: &Path,
    workload: Workload,
    threads: usize,
    config: Config,
    size: &str,
    wrapper: Option<&[String]>,
) -> Result<String, String> {
    // heaptrack's own files, removed once the child is done.
    let heaptrack_output = std::env::temp_dir().join(format!(
        "overhead-heaptrack-{}-{}",
        std::process::id(),
        workload.name()
    ));
    let mut command = match (wrapper, config.launch) {
        (Some([program, args @ ..]), _) => {
            let mut command = Command::new(program);
            command.args(args).arg(exe);
            command
        }
        (_, Launch::Heaptrack) => {
            let mut command = Command::new("heaptrack");
            command.arg("-o").arg(&heaptrack_output).arg(exe);
            command
        }
        _ => Command::new(exe),
    };
    command
        .arg("--child")
        .arg(workload.name())
        .arg(threads.to_string())
        .arg(size);
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
        .map_err(|e| format!("cannot run {}: {e}", exe.display()));
    if config.launch == Launch::Heaptrack {
        remove_heaptrack_files(&heaptrack_output);
    }
    let output = output?;
    if !output.status.success() {
        return Err(format!(
            "{}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// heaptrack appends its compression's suffix to `-o`: removes whatever
/// it wrote.
fn remove_heaptrack_files(prefix: &Path) {
    let (Some(dir), Some(stem)) = (prefix.parent(), prefix.file_name()) else {
        return;
    };
    let stem = stem.to_string_lossy();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&*stem) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Finds and reads the child's `overhead-child: key=value ...` line among
/// whatever else a peer printed.
pub fn parse_child_output(output: &str) -> Result<Measurement, String> {
    let line = output
        .lines()
        .find_map(|line| line.strip_prefix(CHILD_LINE_PREFIX))
        .ok_or_else(|| format!("no figures in the child's output {output:?}"))?;
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
            peak_bytes: number("peak_bytes")?,
        }),
        _ => None,
    };
    Ok(Measurement {
        time: Duration::from_nanos(time_ns),
        cpu: number("cpu_ns")?.map(Duration::from_nanos),
        mode: fields.get("mode").map(|m| m.to_string()),
        walker: fields.get("walker").map(|w| w.to_string()),
        allocations: number("allocations")?,
        stack_depth: number("stack_depth")?.zip(number("truncated_permille")?),
        bookkeeping,
    })
}

/// The median of `values` (the mean of the middle two for an even count);
/// None when empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
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
