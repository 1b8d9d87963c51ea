//! Brendan Gregg's collapsed-stack ("folded") format: one line per stack,
//! frames from the root separated by `;`, then a space and the count. Every
//! flamegraph tool reads it (flamegraph.pl, inferno, speedscope).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use alloc_track::dump::Dump;

use crate::error::CliError;
use crate::stacks::{self, Folder, Order};
use crate::weigh::{self, Measure};

/// The folded lines (`main;f;g 123`) of `dump` weighed by `measure`: one
/// per distinct line, sorted, with a non-zero weight. Stacks that differ
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
    let mut lines: BTreeMap<String, u64> = BTreeMap::new();
    for weight in &weights {
        if let Some(stack) = stacks::stack(dump, weight.stack) {
            let mut line = String::new();
            folder.fold(stack, &mut line);
            let count = lines.entry(line).or_default();
            *count = count.saturating_add(weight.value(measure));
        }
    }
    let mut text = String::new();
    for (line, count) in lines {
        let _ = writeln!(text, "{line} {count}");
    }
    Ok(text)
}
