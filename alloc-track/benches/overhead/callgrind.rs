//! Instruction counts: one child per (workload, configuration), one
//! thread, at a reduced size, under `valgrind --tool=callgrind`. Unlike
//! times, the counts do not move with the machine's load, so they are the
//! figures to compare across runs and commits.
//!
//! Only the measured run is counted: collection is off at start and
//! toggled on entry to and exit from `measured_work`, the function each
//! worker thread runs its share of the measured work in, so neither the
//! warm-up nor the process's start and end count.

use std::collections::HashMap;
use std::path::Path;

use crate::driver::{self, Config, CONFIGS};
use crate::workloads::Workload;

/// What callgrind counted for one (workload, configuration).
#[derive(Clone, Copy, Debug)]
pub struct Count {
    /// Instructions executed inside the measured run.
    pub instructions: u64,
    /// Allocations in the measured run, as the tracker counted them (count
    /// and full modes).
    pub allocations: Option<u64>,
}

pub type Counts = HashMap<(Workload, Config), Count>;

/// The configurations counted: the tracker's modes and their baseline.
/// The peers are left out, being far too slow under valgrind.
pub fn configs() -> impl Iterator<Item = Config> {
    CONFIGS.into_iter().filter(|config| !config.is_peer())
}

pub fn run(exe: &Path, workloads: &[Workload], quick: bool) -> Counts {
    let out_file =
        std::env::temp_dir().join(format!("overhead-callgrind-{}.out", std::process::id()));
    let wrapper = [
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        "--quiet".to_string(),
        "--collect-atstart=no".to_string(),
        "--toggle-collect=*measured_work*".to_string(),
        format!("--callgrind-out-file={}", out_file.display()),
    ];
    // `--quick` keeps the smoke run's callgrind pass short too.
    let size = if quick { "smoke" } else { "callgrind" };
    let mut counts = Counts::new();
    for &workload in workloads {
        for config in configs() {
            let outcome = driver::run_child(exe, workload, 1, config, size, Some(&wrapper))
                .and_then(|output| driver::parse_child_output(&output))
                .and_then(|measurement| {
                    let text = std::fs::read_to_string(&out_file)
                        .map_err(|e| format!("cannot read {}: {e}", out_file.display()))?;
                    Ok(Count {
                        instructions: total_instructions(&text)
                            .ok_or("no totals in callgrind's output")?,
                        allocations: measurement.allocations,
                    })
                });
            let _ = std::fs::remove_file(&out_file);
            match outcome {
                Ok(count) => {
                    eprintln!(
                        "callgrind  {:9} x1  {:9}  {:>14} instructions",
                        workload.name(),
                        config.name,
                        count.instructions
                    );
                    counts.insert((workload, config), count);
                }
                Err(message) => eprintln!(
                    "callgrind  {} x1  {}: FAILED: {message}",
                    workload.name(),
                    config.name
                ),
            }
        }
    }
    counts
}

/// The `Ir` total of a callgrind output file: its `totals:` line (or the
/// older `summary:`), whose first event is `Ir` by default.
fn total_instructions(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| {
            line.strip_prefix("totals:")
                .or_else(|| line.strip_prefix("summary:"))
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|ir| ir.parse().ok())
}

/// Per workload: the allocations the counts divide by, from the full or
/// count child (both count exactly, and run the same work).
pub fn allocations(counts: &Counts, workload: Workload) -> Option<u64> {
    configs()
        .filter_map(|config| counts.get(&(workload, config))?.allocations)
        .max()
}
