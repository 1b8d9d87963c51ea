//! The bench's output: one Markdown table of times and ratios (so that it
//! pastes into docs/performance.md unchanged), the depth series' per-frame cost,
//! callgrind's instructions per allocation, and what the children said
//! about how they ran.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::callgrind::{self, Counts};
use crate::driver::{median, Config, Key, Measurement, Options, BASELINE, CONFIGS, FULL};
use crate::workloads::Workload;

type Results = HashMap<Key, Vec<Option<Measurement>>>;

pub fn render(
    rows: &[(Workload, usize)],
    results: &Results,
    counts: Option<&Counts>,
    options: &Options,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n{} time, medians of {} round(s){}. Ratio: the median over rounds of \
         (time / system's time in the same round), then [lowest-highest].",
        if options.cpu { "Process CPU" } else { "Wall" },
        options.rounds,
        if options.quick {
            ", --quick sizes (figures are noise)"
        } else {
            ""
        }
    );
    let _ = writeln!(out, "{}\n", frame_pointer_note(results));
    ratios(&mut out, rows, results, options);
    depth_series(&mut out, rows, results, options);
    if let Some(counts) = counts {
        instructions(&mut out, counts, options);
    }
    modes(&mut out, results);
    out
}

/// Whether the binary has frame pointers, as the tracker found: its
/// frame-pointer walk is used only where its start-up check passed.
fn frame_pointer_note(results: &Results) -> String {
    let mut walkers: Vec<&str> = results
        .values()
        .flatten()
        .flatten()
        .filter_map(|m| m.walker.as_deref())
        .collect();
    walkers.sort_unstable();
    walkers.dedup();
    let answer = match walkers.as_slice() {
        [] => "unknown (no full or sampled run)",
        ["FramePointers"] => "yes",
        walkers if walkers.contains(&"FramePointers") => "mixed",
        _ => "no",
    };
    format!(
        "Built with frame pointers: {answer} (stack walker in use: {}).",
        if walkers.is_empty() {
            "none".to_string()
        } else {
            walkers.join(", ")
        }
    )
}

fn seconds(m: &Measurement, options: &Options) -> Option<f64> {
    if options.cpu {
        m.cpu.map(|cpu| cpu.as_secs_f64())
    } else {
        Some(m.time.as_secs_f64())
    }
}

fn ratios(out: &mut String, rows: &[(Workload, usize)], results: &Results, options: &Options) {
    // The peers' columns only where some row timed them.
    let columns: Vec<Config> = CONFIGS
        .into_iter()
        .filter(|config| {
            !config.is_peer()
                || rows
                    .iter()
                    .any(|&(w, t)| results.contains_key(&(w, t, *config)))
        })
        .collect();
    let mut header = String::from("| workload | threads | full: stack depth |");
    let mut rule = String::from("|---|---:|---:|");
    for config in &columns {
        header.push_str(&format!(" {} |", config.name));
        rule.push_str("---:|");
    }
    header.push_str(
        " full: bookkeeping per live block | full: bookkeeping / live heap | full: bookkeeping / peak heap |",
    );
    rule.push_str("---:|---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");

    let empty = Vec::new();
    for &(workload, threads) in rows {
        let cell = |config: Config| results.get(&(workload, threads, config)).unwrap_or(&empty);
        let baseline = cell(BASELINE);
        let mut line = format!("| {} | {} |", workload.name(), threads);
        // Captured frames, allocator and thread start-up frames included;
        // "cut" when some stacks lost frames at the capture limit.
        let depths: Vec<(u64, u64)> = cell(FULL)
            .iter()
            .flatten()
            .filter_map(|m| m.stack_depth)
            .collect();
        match median(depths.iter().map(|d| d.0 as f64).collect()) {
            Some(depth) => {
                let cut = median(depths.iter().map(|d| d.1 as f64).collect()).unwrap_or(0.0);
                if cut > 0.0 {
                    line.push_str(&format!(" {depth:.0} ({:.0}% cut) |", cut / 10.0));
                } else {
                    line.push_str(&format!(" {depth:.0} |"));
                }
            }
            None => line.push_str(" |"),
        }
        for config in &columns {
            let runs = cell(*config);
            if runs.is_empty() {
                line.push_str(" |");
                continue;
            }
            let time = median(
                runs.iter()
                    .flatten()
                    .filter_map(|m| seconds(m, options))
                    .collect(),
            );
            let ratios: Vec<f64> = runs
                .iter()
                .zip(baseline)
                .filter_map(|(m, base)| {
                    Some(seconds(m.as_ref()?, options)? / seconds(base.as_ref()?, options)?)
                })
                .collect();
            let lowest = ratios.iter().copied().reduce(f64::min);
            let highest = ratios.iter().copied().reduce(f64::max);
            match (time, median(ratios), lowest, highest) {
                (Some(time), ..) if *config == BASELINE => {
                    line.push_str(&format!(" {time:.3} s |"))
                }
                (Some(time), Some(ratio), Some(lowest), Some(highest)) => line.push_str(&format!(
                    " {time:.3} s ({ratio:.2}x [{lowest:.2}-{highest:.2}]) |"
                )),
                (Some(time), ..) => line.push_str(&format!(" {time:.3} s |")),
                (None, ..) => line.push_str(" failed |"),
            }
        }
        let books: Vec<_> = cell(FULL)
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
        let per_peak = median(
            books
                .iter()
                .filter_map(|b| Some(b.bytes as f64 / b.peak_bytes?.max(1) as f64))
                .collect(),
        );
        let ratio = |r: Option<f64>| r.map_or(String::new(), |r| format!("{r:.2}x"));
        match per_block {
            Some(per_block) => line.push_str(&format!(
                " {per_block:.0} B | {} | {} |",
                ratio(per_heap),
                ratio(per_peak)
            )),
            None => line.push_str(" | | |"),
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The depth series' cost per frame: (time at the deepest - time at the
/// shallowest) / frames between them / allocations per thread, for full
/// mode and for System (whose own cost is the recursion's), and the
/// difference, which is what each frame costs the tracker.
///
/// That difference is taken round by round, from full mode's extra time
/// over System's in the same round at each depth: on a VM whose speed
/// shifts between rounds, the difference of the two columns' medians can
/// land anywhere (even below zero), while each round's extra moves with
/// the machine much less.
fn depth_series(
    out: &mut String,
    rows: &[(Workload, usize)],
    results: &Results,
    options: &Options,
) {
    let median_of =
        |workload, threads, config: Config, field: &dyn Fn(&Measurement) -> Option<f64>| {
            median(
                results
                    .get(&(workload, threads, config))?
                    .iter()
                    .flatten()
                    .filter_map(field)
                    .collect(),
            )
        };
    for &threads in &options.threads {
        let mut depths: Vec<u32> = rows
            .iter()
            .filter_map(|&(w, t)| match w {
                Workload::Depth(depth) if t == threads => Some(depth),
                _ => None,
            })
            .collect();
        depths.sort_unstable();
        let (Some(&shallow), Some(&deep)) = (depths.first(), depths.last()) else {
            continue;
        };
        if shallow == deep {
            continue;
        }
        let time = |depth, config| {
            median_of(Workload::Depth(depth), threads, config, &|m| {
                seconds(m, options)
            })
        };
        let allocations = median_of(Workload::Depth(deep), threads, FULL, &|m| {
            m.allocations.map(|a| a as f64)
        });
        let per_frame = |config, shallow: u32, deep: u32| {
            let (deep_time, shallow_time, allocations) =
                (time(deep, config)?, time(shallow, config)?, allocations?);
            let per_thread = allocations / threads as f64;
            Some((deep_time - shallow_time) * 1e9 / f64::from(deep - shallow) / per_thread)
        };
        // Full mode's extra seconds over System's at `depth` in each round
        // (None for a round missing either).
        let extra = |depth| -> Vec<Option<f64>> {
            let rounds = |config| results.get(&(Workload::Depth(depth), threads, config));
            let (Some(full), Some(system)) = (rounds(FULL), rounds(BASELINE)) else {
                return Vec::new();
            };
            full.iter()
                .zip(system)
                .map(|(full, system)| {
                    Some(seconds(full.as_ref()?, options)? - seconds(system.as_ref()?, options)?)
                })
                .collect()
        };
        let tracker_share = |shallow: u32, deep: u32| {
            let per_round: Vec<f64> = extra(deep)
                .into_iter()
                .zip(extra(shallow))
                .filter_map(|(deep, shallow)| Some(deep? - shallow?))
                .collect();
            let per_thread = allocations? / threads as f64;
            Some(median(per_round)? * 1e9 / f64::from(deep - shallow) / per_thread)
        };
        let span = |shallow: u32, deep: u32| {
            match (
                per_frame(FULL, shallow, deep),
                per_frame(BASELINE, shallow, deep),
                tracker_share(shallow, deep),
            ) {
                (Some(full), Some(system), Some(share)) => format!(
                    "(depth {deep} - depth {shallow}) / {} frames: full {full:.2} ns, system {system:.2} ns, \
                     the tracker's share {share:.2} ns (round by round)",
                    deep - shallow,
                ),
                _ => format!("depth {shallow} to {deep}: not measured"),
            }
        };
        let _ = write!(
            out,
            "\nDepth series, {threads} thread(s), cost per frame per allocation: {}",
            span(shallow, deep)
        );
        // Past the capture limit a deeper stack costs the tracker nothing
        // more, which the whole span averages in: the span up to the
        // deepest depth whose stacks were all whole says what a frame costs.
        let whole = depths.iter().copied().filter(|&depth| {
            let cut = median_of(Workload::Depth(depth), threads, FULL, &|m| {
                m.stack_depth.map(|(_, cut)| cut as f64)
            });
            cut == Some(0.0)
        });
        match whole.max() {
            Some(whole) if whole < deep && whole > shallow => {
                let _ = writeln!(out, "; stacks whole, {}.", span(shallow, whole));
            }
            _ => {
                let _ = writeln!(out, ".");
            }
        }
    }
}

/// Instructions per allocation over System's, from callgrind.
fn instructions(out: &mut String, counts: &Counts, options: &Options) {
    let _ = writeln!(
        out,
        "\nInstructions (callgrind, 1 thread, {} size): extra instructions per allocation over \
         system, (Ir(mode) - Ir(system)) / allocations.\n",
        if options.quick { "smoke" } else { "reduced" }
    );
    let _ = writeln!(
        out,
        "| workload | allocations | system: Ir per allocation | count | sampled | full |\n|---|---:|---:|---:|---:|---:|"
    );
    for &workload in &options.workloads {
        let allocations = callgrind::allocations(counts, workload);
        let system = counts.get(&(workload, BASELINE)).map(|c| c.instructions);
        let mut line = format!("| {} |", workload.name());
        match (allocations, system) {
            (Some(allocations), Some(system)) if allocations > 0 => {
                let _ = write!(
                    line,
                    " {allocations} | {:.0} |",
                    system as f64 / allocations as f64
                );
                for config in callgrind::configs().filter(|c| *c != BASELINE) {
                    match counts.get(&(workload, config)) {
                        Some(count) => {
                            let extra =
                                (count.instructions as f64 - system as f64) / allocations as f64;
                            let _ = write!(line, " {extra:+.0} |");
                        }
                        None => line.push_str(" failed |"),
                    }
                }
            }
            _ => line.push_str(" failed | | | | |"),
        }
        let _ = writeln!(out, "{line}");
    }
    instructions_per_frame(out, counts, options);
}

/// The depth series' cost per frame in instructions: full mode's extra
/// over System at the deepest and at the shallowest depth, per frame
/// between them. Stacks cut at the capture limit make the deep end flat.
fn instructions_per_frame(out: &mut String, counts: &Counts, options: &Options) {
    let mut depths: Vec<u32> = options
        .workloads
        .iter()
        .filter_map(|w| match w {
            Workload::Depth(depth) => Some(*depth),
            _ => None,
        })
        .collect();
    depths.sort_unstable();
    let (Some(&shallow), Some(&deep)) = (depths.first(), depths.last()) else {
        return;
    };
    let extra = |depth| {
        let workload = Workload::Depth(depth);
        let full = counts.get(&(workload, FULL))?.instructions as f64;
        let system = counts.get(&(workload, BASELINE))?.instructions as f64;
        Some((full - system) / callgrind::allocations(counts, workload)? as f64)
    };
    if let (true, Some(deep_extra), Some(shallow_extra)) =
        (deep > shallow, extra(deep), extra(shallow))
    {
        let _ = write!(
            out,
            "\nDepth series: full mode's extra instructions per allocation grow by {:.1} per frame \
             from depth {shallow} to depth {deep}; step by step:",
            (deep_extra - shallow_extra) / f64::from(deep - shallow)
        );
        // Step by step, where stacks cut at the capture limit show flat.
        for pair in depths.windows(2) {
            if let (Some(high), Some(low)) = (extra(pair[1]), extra(pair[0])) {
                let per_frame = (high - low) / f64::from(pair[1] - pair[0]);
                let separator = if pair[0] == shallow { "" } else { "," };
                let _ = write!(out, "{separator} {}-{}: {per_frame:.1}", pair[0], pair[1]);
            }
        }
        let _ = writeln!(out, ".");
    }
}

/// Which mode each tracker column really ran in, and with which stack
/// walker, as its children reported them: a mode the library ignored, or a
/// binary without frame pointers, must show next to the figures.
fn modes(out: &mut String, results: &Results) {
    let _ = writeln!(out);
    for config in CONFIGS.iter().filter(|c| c.mode.is_some()) {
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
    let _ = writeln!(
        out,
        "full: stack depth is the median over allocations of the frames captured, the \
         allocator's and the thread's start-up frames included; \"cut\": stacks that lost frames at the capture limit."
    );
}
