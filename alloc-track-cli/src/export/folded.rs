//! Brendan Gregg's collapsed-stack ("folded") format: one line per stack,
//! frames from the root separated by `;`, then a space and the count. Every
//! flamegraph tool reads it (flamegraph.pl, inferno, speedscope).

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
    // Every stack folded into one buffer, as (start, end, count): a
    // hundred thousand stacks of a few hundred bytes each would otherwise
    // be as many allocations.
    let mut arena = String::new();
    let mut folded: Vec<(usize, usize, u64)> = Vec::with_capacity(weights.len());
    for weight in &weights {
        if let Some(stack) = stacks::stack(dump, weight.stack) {
            let start = arena.len();
            folder.fold(stack, &mut arena);
            folded.push((start, arena.len(), weight.value(measure)));
        }
    }
    // Stacks that fold alike become one line, their counts summed.
    folded.sort_unstable_by(|a, b| arena[a.0..a.1].cmp(&arena[b.0..b.1]));
    let mut text = String::with_capacity(arena.len() + folded.len() * 12);
    let mut index = 0;
    while let Some(&(start, end, mut count)) = folded.get(index) {
        let stack = &arena[start..end];
        index += 1;
        while let Some(&(s, e, more)) = folded.get(index) {
            if &arena[s..e] != stack {
                break;
            }
            count = count.saturating_add(more);
            index += 1;
        }
        let _ = writeln!(text, "{stack} {count}");
    }
    // inferno sorts whole lines, which differs from the stacks' order only
    // where one stack's last frame name is a prefix of another's followed
    // by a space or punctuation; re-sort then, so that the flamegraph can
    // skip inferno's own sort (`no_sort`).
    let in_line_order = text.lines().zip(text.lines().skip(1)).all(|(a, b)| a <= b);
    if !in_line_order {
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        let mut sorted = String::with_capacity(text.len());
        for line in lines {
            sorted.push_str(line);
            sorted.push('\n');
        }
        text = sorted;
    }
    Ok(text)
}
