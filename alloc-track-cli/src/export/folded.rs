//! Brendan Gregg's collapsed-stack ("folded") format: one line per stack,
//! frames from the root separated by `;`, then a space and the count. Every
//! flamegraph tool reads it (flamegraph.pl, inferno, speedscope).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use alloc_track::dump::Dump;

use crate::error::CliError;
use crate::stacks::{self, Folder, Order};
use crate::weigh::{self, Measure};

/// The folded lines (`main;f;g 123`) of `dump` weighed by `measure`: one
/// per distinct stack, sorted as whole lines (as inferno sorts), with a
/// non-zero weight. Stacks that differ
/// only in what a folded line does not show (a caller's line number, an
/// address) are one line, as they are one path in a flamegraph. A `;`
/// inside a function name is replaced (see [`stacks::fold_name`]) so that
/// it cannot split the frame. `path` names the dump in errors.
pub fn folded_lines(
    dump: &Dump,
    path: &Path,
    measure: Measure,
    order: Order,
) -> Result<String, CliError> {
    let weights = weigh::weigh(dump, measure, path)?;
    let folder = Folder::new(dump, order);
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut line = String::new();
    for weight in &weights {
        if let Some(stack) = stacks::stack(dump, weight.stack) {
            line.clear();
            folder.fold(stack, &mut line);
            let value = weight.value(measure);
            match counts.get_mut(line.as_str()) {
                Some(count) => *count = count.saturating_add(value),
                None => {
                    counts.insert(line.clone(), value);
                }
            }
        }
    }
    // Whole lines sorted as inferno sorts them, so that it can skip its
    // own sort (`no_sort`) and the output reads the same every run.
    let mut lines: Vec<String> = counts
        .into_iter()
        .map(|(mut stack, count)| {
            let _ = write!(stack, " {count}");
            stack
        })
        .collect();
    lines.sort_unstable();
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(&line);
        text.push('\n');
    }
    Ok(text)
}
