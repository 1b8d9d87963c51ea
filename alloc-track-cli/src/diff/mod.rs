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

mod json;

pub use json::{DIFF_JSON_FORMAT, DIFF_JSON_VERSION};

use crate::error::CliError;
use crate::flamegraph::{capitalised, inferno_options};
use crate::focus::StackFilter;
use crate::input;
use crate::output::{beside, Output};
use crate::report::utc;
use crate::rows::{self, GroupBy, Naming};
use crate::stacks::{self, Folder, Order};
use crate::weigh::{self, Measure};

/// The `diff` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    /// The earlier dump; `-` is standard input.
    pub before: PathBuf,
    /// The later dump; `-` is standard input.
    pub after: PathBuf,
    /// What is compared.
    pub measure: Measure,
    /// How many growing and how many shrinking sites the tables show.
    pub top: usize,
    /// The differential flamegraph sized by AFTER; the one sized by BEFORE
    /// goes beside it (see [`shrank_path`]). `None` writes neither; with
    /// [`Output::Stdout`] the graph sized by AFTER goes to standard output,
    /// the tables to the error stream, and the other graph is not drawn.
    pub flamegraph: Option<Output>,
    /// How stacks are named (and so which stacks are one row).
    pub naming: Naming,
    /// Which stacks to compare (`--focus`, `--ignore`).
    pub filter: StackFilter,
    /// Print the comparison as JSON (see `docs/json-output.md`).
    pub json: bool,
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
            naming: Naming::default(),
            filter: StackFilter::default(),
            json: false,
        }
    }
}

/// Where the graph sized by BEFORE goes: `d.svg` gives `d.shrank.svg`.
pub fn shrank_path(svg: &Path) -> PathBuf {
    beside(svg, ".shrank.svg")
}

/// One row's figures in both dumps (see [`crate::rows`]: rows are matched
/// by label, the same identity `report` shows).
#[derive(Clone, Debug)]
struct Row {
    label: String,
    /// The row's heaviest stack, in AFTER when the row is there (true) or
    /// else in BEFORE: where "your code" is looked up.
    heaviest: (bool, u32),
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

/// The rows of a comparison sorted into what grew and what shrank.
struct Changes {
    new: usize,
    gone: usize,
    changed: usize,
    unchanged: usize,
    /// Largest growth first; ties by label so the output is stable.
    grew: Vec<Row>,
    /// Largest shrinkage first, likewise.
    shrank: Vec<Row>,
}

impl Changes {
    fn split(rows: Vec<Row>) -> Changes {
        let new = rows.iter().filter(|r| r.before == 0).count();
        let gone = rows.iter().filter(|r| r.after == 0).count();
        let unchanged = rows.iter().filter(|r| r.delta() == 0).count();
        let changed = rows.len() - new - gone - unchanged;
        let (mut grew, mut shrank): (Vec<Row>, Vec<Row>) = rows
            .into_iter()
            .filter(|r| r.delta() != 0)
            .partition(|r| r.delta() > 0);
        grew.sort_by(|a, b| {
            b.delta()
                .cmp(&a.delta())
                .then_with(|| a.label.cmp(&b.label))
        });
        shrank.sort_by(|a, b| {
            a.delta()
                .cmp(&b.delta())
                .then_with(|| a.label.cmp(&b.label))
        });
        Changes {
            new,
            gone,
            changed,
            unchanged,
            grew,
            shrank,
        }
    }
}

/// Matches the rows of two dumps under `measure`; rows in no order.
fn compare(
    (before, before_path): (&Dump, &Path),
    (after, after_path): (&Dump, &Path),
    measure: Measure,
    naming: &Naming,
) -> Result<Vec<Row>, CliError> {
    let mut rows: Vec<Row> = Vec::new();
    let mut by_label: HashMap<String, usize> = HashMap::new();
    for (is_after, dump, path) in [(false, before, before_path), (true, after, after_path)] {
        let weights = weigh::weigh(dump, measure, path)?;
        for group in rows::group(&weights, measure, &naming.for_dump(dump)) {
            let index = *by_label.entry(group.label.clone()).or_insert_with(|| {
                rows.push(Row {
                    label: group.label.clone(),
                    heaviest: (is_after, group.heaviest),
                    before: 0,
                    after: 0,
                    before_blocks: 0,
                    after_blocks: 0,
                });
                rows.len() - 1
            });
            let row = &mut rows[index];
            if is_after {
                row.heaviest = (true, group.heaviest);
            }
            let (value, blocks) = if is_after {
                (&mut row.after, &mut row.after_blocks)
            } else {
                (&mut row.before, &mut row.before_blocks)
            };
            *value = value.saturating_add(group.value(measure));
            *blocks = blocks.saturating_add(group.blocks);
        }
    }
    Ok(rows)
}

/// The `diff` command: writes the two differential flamegraphs, then the
/// change tables to `out` (to `err` when the graph takes standard output).
pub fn diff(
    options: &DiffOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    input::at_most_one_stdin([&options.before, &options.after])?;
    if options.json && options.flamegraph == Some(Output::Stdout) {
        return Err(CliError::Usage(
            "--json and -o - both want standard output; give the SVG a file name".into(),
        ));
    }
    let mut before = input::load(&options.before)?;
    let mut after = input::load(&options.after)?;
    options.filter.apply(&mut before);
    options.filter.apply(&mut after);
    let rows = compare(
        (&before, &options.before),
        (&after, &options.after),
        options.measure,
        &options.naming,
    )?;
    let mut graphs = Vec::new();
    if let Some(svg) = &options.flamegraph {
        let lines = differential_lines(
            (&before, &options.before),
            (&after, &options.after),
            options.measure,
        )?;
        graphs = write_graphs(options, &lines, svg, out)?;
    }
    let text_out: &mut dyn Write = match options.flamegraph {
        Some(Output::Stdout) => err,
        _ => out,
    };
    if options.json {
        return json::write_json(options, &before, &after, Changes::split(rows), text_out)
            .map_err(CliError::Stdout);
    }
    if options.measure == Measure::Type {
        crate::by_type::write_diff(&mut &mut *text_out, &before, &after, options.top)
            .map_err(CliError::Stdout)?;
    } else {
        write_text(options, &before, &after, rows, text_out).map_err(CliError::Stdout)?;
    }
    if !graphs.is_empty() {
        writeln!(text_out).map_err(CliError::Stdout)?;
    }
    for graph in graphs {
        writeln!(text_out, "{graph}").map_err(CliError::Stdout)?;
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
    svg: &Output,
    stdout: &mut impl Write,
) -> Result<Vec<String>, CliError> {
    let measure = options.measure;
    let mut notes = Vec::new();
    for sized_by_after in [true, false] {
        let output = match (svg, sized_by_after) {
            (Output::File(path), true) => Output::File(path.clone()),
            (Output::File(path), false) => Output::File(shrank_path(path)),
            (Output::Stdout, true) => Output::Stdout,
            (Output::Stdout, false) => {
                notes.push(
                    "the graph sized by BEFORE (what shrank) is drawn only into a file: -o FILE"
                        .to_string(),
                );
                continue;
            }
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
            input::display_name(&options.before),
            input::display_name(&options.after)
        ));
        inferno.negate_differentials = !sized_by_after;
        let mut bytes = Vec::new();
        let name = match &output {
            Output::File(path) => path.display().to_string(),
            Output::Stdout => "standard output".to_string(),
        };
        flamegraph::from_lines(&mut inferno, text.lines(), &mut bytes)
            .map_err(CliError::output(&name))?;
        output.write_with(stdout, |w| w.write_all(&bytes))?;
        notes.push(format!(
            "differential flamegraph sized by {sized} ({shows}): {name}"
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
    out: &mut dyn Write,
) -> io::Result<()> {
    let measure = options.measure;
    writeln!(out, "alloc-track diff of {}", measure.describe())?;
    for (name, path, dump) in [
        ("before", &options.before, before),
        ("after ", &options.after, after),
    ] {
        writeln!(
            out,
            "{name}       {}: {} (pid {}), dumped {}, epoch {}",
            input::display_name(path),
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
    let before_names = options.naming.for_dump(before);
    let after_names = options.naming.for_dump(after);
    let changes = Changes::split(rows);
    writeln!(
        out,
        "sites        {} new, {} gone, {} changed, {} unchanged",
        Count(changes.new as u64),
        Count(changes.gone as u64),
        Count(changes.changed as u64),
        Count(changes.unchanged as u64)
    )?;
    for (heading, rows) in [("grew", changes.grew), ("shrank", changes.shrank)] {
        writeln!(out)?;
        let shown = options.top.min(rows.len());
        writeln!(
            out,
            "{heading}: {shown} of {}",
            crate::rows::count_of(rows.len() as u64, "site", "sites")
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
                row.label
            )?;
            if options.naming.group_by == GroupBy::Site {
                let (in_after, stack) = row.heaviest;
                let names = if in_after {
                    &after_names
                } else {
                    &before_names
                };
                if let Some(yours) = names.your_code(stack).filter(|y| *y != row.label) {
                    writeln!(out, "{:50}from your code: {yours}", "")?;
                }
            }
        }
    }
    Ok(())
}

/// Live bytes and blocks in AFTER that were born after BEFORE was taken:
/// only meaningful for two dumps of one process whose tracker recorded
/// births.
pub(crate) fn retained_since(before: &Dump, after: &Dump) -> Option<(u64, u64)> {
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
        let rows = compare(
            (&before, &path),
            (&after, &path),
            Measure::Live,
            &Naming::default(),
        )
        .expect("compare");
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
