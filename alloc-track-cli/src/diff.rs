//! `alloc-track diff`: what changed between two dumps, site by site, and
//! differential flamegraphs of the change.
//!
//! Sites are matched by their symbolized stacks (function, file and line of
//! every frame), never by stack index or address: indices are assigned per
//! dump, and addresses move between runs with ASLR.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use alloc_track::dump::Dump;
use alloc_track::human::{Bytes, Count, SignedBytes, SignedCount};
use inferno::flamegraph;

use crate::error::CliError;
use crate::flamegraph::{capitalised, inferno_options};
use crate::matching::StackKeys;
use crate::output::{beside, write_file};
use crate::report::utc;
use crate::stacks::{self, site_label, Folder, Order};
use crate::weigh::{self, Measure};

/// The `diff` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    /// The earlier dump.
    pub before: PathBuf,
    /// The later dump.
    pub after: PathBuf,
    /// What is compared.
    pub measure: Measure,
    /// How many growing and how many shrinking sites the tables show.
    pub top: usize,
    /// The differential flamegraph sized by AFTER; the one sized by BEFORE
    /// goes beside it (see [`shrank_path`]). `None` writes neither.
    pub flamegraph: Option<PathBuf>,
    /// Source files below this directory are shown relative to it.
    pub relative_to: Option<PathBuf>,
}

impl DiffOptions {
    /// Defaults: live bytes, 20 rows each way, no flamegraphs.
    pub fn new(before: impl Into<PathBuf>, after: impl Into<PathBuf>) -> Self {
        DiffOptions {
            before: before.into(),
            after: after.into(),
            measure: Measure::Live,
            top: 20,
            flamegraph: None,
            relative_to: None,
        }
    }
}

/// Where the graph sized by BEFORE goes: `d.svg` gives `d.shrank.svg`.
pub fn shrank_path(svg: &Path) -> PathBuf {
    beside(svg, ".shrank.svg")
}

/// Which dump a row's stack comes from, for its label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Before,
    After,
}

/// One site's figures in both dumps.
#[derive(Clone, Debug)]
struct Row {
    side: Side,
    stack: u32,
    before: u64,
    after: u64,
    before_blocks: u64,
    after_blocks: u64,
}

impl Row {
    fn delta(&self) -> i128 {
        i128::from(self.after) - i128::from(self.before)
    }
}

/// Matches the sites of two dumps under `measure`; rows in no order.
fn compare(
    before: &Dump,
    before_path: &Path,
    after: &Dump,
    after_path: &Path,
    measure: Measure,
) -> Result<Vec<Row>, CliError> {
    let mut keys = StackKeys::default();
    let mut rows: Vec<Row> = Vec::new();
    let mut by_key: HashMap<Vec<u32>, usize> = HashMap::new();
    for (side, dump, path) in [
        (Side::Before, before, before_path),
        (Side::After, after, after_path),
    ] {
        for weight in weigh::weigh(dump, measure, path)? {
            let key = keys.stack_key(dump, weight.stack);
            let index = *by_key.entry(key).or_insert_with(|| {
                rows.push(Row {
                    side,
                    stack: weight.stack,
                    before: 0,
                    after: 0,
                    before_blocks: 0,
                    after_blocks: 0,
                });
                rows.len() - 1
            });
            let Some(row) = rows.get_mut(index) else {
                continue;
            };
            let (value, blocks) = match side {
                Side::Before => (&mut row.before, &mut row.before_blocks),
                Side::After => {
                    // Label from the later dump, the one the user has now.
                    row.side = Side::After;
                    row.stack = weight.stack;
                    (&mut row.after, &mut row.after_blocks)
                }
            };
            *value = value.saturating_add(weight.value(measure));
            *blocks = blocks.saturating_add(weight.blocks);
        }
    }
    Ok(rows)
}

/// The `diff` command: writes the two differential flamegraphs, then the
/// change tables to `out`.
pub fn diff(options: &DiffOptions, out: &mut impl Write) -> Result<(), CliError> {
    let before = Dump::load(&options.before)?;
    let after = Dump::load(&options.after)?;
    let rows = compare(
        &before,
        &options.before,
        &after,
        &options.after,
        options.measure,
    )?;
    let mut graphs = Vec::new();
    if let Some(svg) = &options.flamegraph {
        let lines = differential_lines(
            (&before, &options.before),
            (&after, &options.after),
            options.measure,
        )?;
        graphs = write_graphs(options, &lines, svg)?;
    }
    if options.measure == Measure::Type {
        crate::by_type::write_diff(out, &before, &after, options.top).map_err(CliError::Stdout)?;
    } else {
        write_text(options, &before, &after, rows, out).map_err(CliError::Stdout)?;
    }
    if !graphs.is_empty() {
        writeln!(out).map_err(CliError::Stdout)?;
    }
    for graph in graphs {
        writeln!(out, "{graph}").map_err(CliError::Stdout)?;
    }
    Ok(())
}

/// `stack before after` counts per folded stack, for inferno's
/// differential mode. Frames are merged by function name, as in any
/// flamegraph.
fn differential_lines(
    before: (&Dump, &Path),
    after: (&Dump, &Path),
    measure: Measure,
) -> Result<BTreeMap<String, (u64, u64)>, CliError> {
    let mut lines: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for ((dump, path), is_after) in [(before, false), (after, true)] {
        let weights = weigh::weigh(dump, measure, path)?;
        let folder = Folder::new(dump, Order::RootFirst);
        for weight in weights {
            let Some(stack) = stacks::stack(dump, weight.stack) else {
                continue;
            };
            let mut line = String::new();
            folder.fold(stack, &mut line);
            let counts = lines.entry(line).or_default();
            let slot = if is_after {
                &mut counts.1
            } else {
                &mut counts.0
            };
            *slot = slot.saturating_add(weight.value(measure));
        }
    }
    Ok(lines)
}

/// Writes the graph sized by AFTER (what grew) and the one sized by BEFORE
/// with inputs swapped and differentials negated (what shrank or vanished:
/// inferno sizes frames by the second count, so a vanished stack has no
/// width in the first graph). Returns one line per graph for the user.
fn write_graphs(
    options: &DiffOptions,
    lines: &BTreeMap<String, (u64, u64)>,
    svg: &Path,
) -> Result<Vec<String>, CliError> {
    let measure = options.measure;
    let mut notes = Vec::new();
    for sized_by_after in [true, false] {
        let path = if sized_by_after {
            svg.to_path_buf()
        } else {
            shrank_path(svg)
        };
        let text: String = lines
            .iter()
            .map(|(stack, &(b, a))| {
                let (first, second) = if sized_by_after { (b, a) } else { (a, b) };
                format!("{stack} {first} {second}\n")
            })
            .collect();
        let sized = if sized_by_after { "AFTER" } else { "BEFORE" };
        let shows = if sized_by_after {
            "what grew and what is new"
        } else {
            "what shrank and what vanished"
        };
        if !lines
            .values()
            .any(|&(b, a)| if sized_by_after { a > 0 } else { b > 0 })
        {
            notes.push(format!(
                "no flamegraph sized by {sized}: it has no {}",
                measure.describe()
            ));
            continue;
        }
        let title = format!(
            "{}: change from BEFORE to AFTER, sized by {sized} (red grew, blue shrank)",
            capitalised(measure.describe())
        );
        let mut inferno = inferno_options(title, measure.unit(), false);
        inferno.subtitle = Some(format!(
            "BEFORE {}, AFTER {}",
            options.before.display(),
            options.after.display()
        ));
        inferno.negate_differentials = !sized_by_after;
        let mut bytes = Vec::new();
        flamegraph::from_lines(&mut inferno, text.lines(), &mut bytes)
            .map_err(CliError::output(&path))?;
        write_file(&path, |w| w.write_all(&bytes))?;
        notes.push(format!(
            "differential flamegraph sized by {sized} ({shows}): {}",
            path.display()
        ));
    }
    Ok(notes)
}

fn value_text(measure: Measure, value: u64) -> String {
    match measure {
        Measure::Blocks | Measure::Temporary => Count(value).to_string(),
        _ => Bytes(value).to_string(),
    }
}

fn delta_text(measure: Measure, delta: i128) -> String {
    let clamped = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
    match measure {
        Measure::Blocks | Measure::Temporary => SignedCount(clamped).to_string(),
        _ => SignedBytes(clamped).to_string(),
    }
}

fn write_text(
    options: &DiffOptions,
    before: &Dump,
    after: &Dump,
    rows: Vec<Row>,
    out: &mut impl Write,
) -> io::Result<()> {
    let measure = options.measure;
    let base = options.relative_to.as_deref();
    writeln!(out, "alloc-track diff of {}", measure.describe())?;
    for (name, path, dump) in [
        ("before", &options.before, before),
        ("after ", &options.after, after),
    ] {
        writeln!(
            out,
            "{name}       {}: {} (pid {}), dumped {}, epoch {}",
            path.display(),
            dump.program,
            dump.pid,
            utc(dump.timestamp_ms),
            dump.epoch
        )?;
    }
    let (b, a) = (&before.totals, &after.totals);
    let change = |x: u64, y: u64| i128::from(y) - i128::from(x);
    writeln!(
        out,
        "live heap    {} -> {} ({}), blocks {} -> {} ({})",
        Bytes(b.live_bytes),
        Bytes(a.live_bytes),
        delta_text(Measure::Live, change(b.live_bytes, a.live_bytes)),
        Count(b.live_blocks),
        Count(a.live_blocks),
        delta_text(Measure::Blocks, change(b.live_blocks, a.live_blocks)),
    )?;
    writeln!(
        out,
        "allocated    {} -> {} ({}), peak {} -> {}",
        Bytes(b.total_bytes),
        Bytes(a.total_bytes),
        delta_text(Measure::Live, change(b.total_bytes, a.total_bytes)),
        Bytes(b.peak_bytes),
        Bytes(a.peak_bytes),
    )?;
    if let (Some(x), Some(y)) = (before.os.rss_bytes, after.os.rss_bytes) {
        writeln!(
            out,
            "RSS          {} -> {} ({})",
            Bytes(x),
            Bytes(y),
            delta_text(Measure::Live, change(x, y))
        )?;
    }
    if let Some((bytes, blocks)) = retained_since(before, after) {
        writeln!(
            out,
            "retained     {} in {} blocks allocated after BEFORE was taken and still live",
            Bytes(bytes),
            Count(blocks)
        )?;
    }
    let new = rows.iter().filter(|r| r.before == 0).count();
    let gone = rows.iter().filter(|r| r.after == 0).count();
    let unchanged = rows.iter().filter(|r| r.delta() == 0).count();
    writeln!(
        out,
        "sites        {} new, {} gone, {} changed, {} unchanged",
        Count(new as u64),
        Count(gone as u64),
        Count((rows.len() - new - gone - unchanged) as u64),
        Count(unchanged as u64)
    )?;

    let (mut grew, mut shrank): (Vec<Row>, Vec<Row>) = rows
        .into_iter()
        .filter(|r| r.delta() != 0)
        .partition(|r| r.delta() > 0);
    let label = |row: &Row| match row.side {
        Side::Before => site_label(before, row.stack, base),
        Side::After => site_label(after, row.stack, base),
    };
    // Largest change first; ties by label so the output is stable.
    grew.sort_by_cached_key(|r| (std::cmp::Reverse(r.delta()), label(r)));
    shrank.sort_by_cached_key(|r| (r.delta(), label(r)));
    for (heading, rows) in [("grew", grew), ("shrank", shrank)] {
        writeln!(out)?;
        let shown = options.top.min(rows.len());
        writeln!(
            out,
            "{heading}: {shown} of {} sites",
            Count(rows.len() as u64)
        )?;
        if shown == 0 {
            continue;
        }
        writeln!(
            out,
            "{:>11} {:>10} {:>10} {:>9}       site",
            "change", "before", "after", "blocks"
        )?;
        for row in &rows[..shown] {
            let mark = match (row.before, row.after) {
                (0, _) => "new ",
                (_, 0) => "gone",
                _ => "    ",
            };
            writeln!(
                out,
                "{:>11} {:>10} {:>10} {:>9}  {mark} {}",
                delta_text(measure, row.delta()),
                value_text(measure, row.before),
                value_text(measure, row.after),
                delta_text(Measure::Blocks, change(row.before_blocks, row.after_blocks)),
                label(row)
            )?;
        }
    }
    Ok(())
}

/// Live bytes and blocks in AFTER that were born after BEFORE was taken:
/// only meaningful for two dumps of one process whose tracker recorded
/// births.
fn retained_since(before: &Dump, after: &Dump) -> Option<(u64, u64)> {
    if before.pid != after.pid || after.epoch <= before.epoch {
        return None;
    }
    if after.sites.iter().all(|s| s.births.is_empty()) {
        return None;
    }
    let births = after.sites.iter().flat_map(|s| &s.births);
    Some(
        births
            .filter(|b| b.epoch > before.epoch)
            .fold((0u64, 0u64), |(bytes, blocks), b| {
                (
                    bytes.saturating_add(b.bytes),
                    blocks.saturating_add(b.blocks),
                )
            }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> (Dump, PathBuf) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        (Dump::load(&path).expect("fixture loads"), path)
    }

    #[test]
    fn sites_match_by_symbols_not_addresses_or_indices() {
        let (before, path) = fixture("app.json");
        // Another run: code loaded elsewhere (ASLR) and stacks renumbered.
        let mut after = before.clone();
        for location in &mut after.locations {
            location.address += 0x1000_0000;
        }
        after.stacks.reverse();
        let last = after.stacks.len() as u32 - 1;
        for site in &mut after.sites {
            site.stack = last - site.stack;
        }
        after.validate().expect("still valid");
        let rows = compare(&before, &path, &after, &path, Measure::Live).expect("compare");
        // Only the unresolved frame (known by address alone) fails to match.
        let unmatched: Vec<&Row> = rows.iter().filter(|r| r.delta() != 0).collect();
        assert_eq!(unmatched.len(), 2, "{rows:?}");
        assert!(unmatched
            .iter()
            .all(|r| r.before == 4096 || r.after == 4096));
    }

    #[test]
    fn retained_needs_one_process_and_births() {
        let (before, _) = fixture("app.json");
        let (after, _) = fixture("after.json");
        assert!(retained_since(&before, &after).is_some());
        let mut other = after.clone();
        other.pid += 1;
        assert_eq!(retained_since(&before, &other), None);
        assert_eq!(retained_since(&after, &before), None);
    }
}
