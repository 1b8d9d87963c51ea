//! Brendan Gregg's collapsed-stack ("folded") format: one line per stack,
//! frames from the root separated by `;`, then a space and the count. Every
//! flamegraph tool reads it (flamegraph.pl, inferno, speedscope).

use std::path::Path;

use alloc_track::dump::Dump;

use crate::error::CliError;
use crate::stacks::{self, Folder, Order};
use crate::weigh::{self, Measure};

/// The folded lines (`main;f;g 123`) of `dump` weighed by `measure`, one
/// per stack with a non-zero weight, in stack order. A `;` inside a
/// function name is replaced (see [`stacks::fold_name`]) so that it cannot
/// split the frame. `path` names the dump in errors.
pub fn folded_lines(
    dump: &Dump,
    path: &Path,
    measure: Measure,
    order: Order,
) -> Result<String, CliError> {
    let weights = weigh::weigh(dump, measure, path)?;
    let folder = Folder::new(dump, order);
    let mut text = String::new();
    for weight in &weights {
        if let Some(stack) = stacks::stack(dump, weight.stack) {
            folder.fold(stack, &mut text);
            text.push(' ');
            text.push_str(&weight.value(measure).to_string());
            text.push('\n');
        }
    }
    Ok(text)
}
