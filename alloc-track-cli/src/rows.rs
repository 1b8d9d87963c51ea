//! Site identity: how a dump's stacks become the rows of a table, the same
//! way in every command.
//!
//! A row is what its label shows. Stacks whose labels are equal (two
//! callers of one helper, `alloc` versus `realloc` under one `push`, a
//! caller's line that moved between two builds) are one row in `report`,
//! one row matched across dumps in `diff` and `trend`, and never two rows
//! that look the same. Matching by label rather than by address or stack
//! index also survives ASLR and renumbered stacks.

use std::collections::HashMap;
use std::path::PathBuf;

use alloc_track::dump::Dump;

use crate::stacks::site_label;
use crate::weigh::{Measure, Weight};

/// How stacks are named in tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Naming {
    /// Source files below this directory are shown relative to it.
    pub relative_to: Option<PathBuf>,
}

impl Naming {
    /// The label of stack `stack` of `dump`: its row's identity.
    pub fn label(&self, dump: &Dump, stack: u32) -> String {
        site_label(dump, stack, self.relative_to.as_deref())
    }
}

/// One row: every stack of one dump whose label is `label`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// What the table shows, and what rows are matched by.
    pub label: String,
    /// Bytes under the measure (live, at the peak or allocated).
    pub bytes: u64,
    /// Blocks counted the same way.
    pub blocks: u64,
    /// The stack that weighs the most in this row (the first such on a
    /// tie), for details that need one stack.
    pub heaviest: u32,
    heaviest_value: u64,
}

impl Row {
    /// The figure `measure` ranks by.
    pub fn value(&self, measure: Measure) -> u64 {
        match measure {
            Measure::Blocks => self.blocks,
            _ => self.bytes,
        }
    }
}

/// Groups `weights` (of `dump`, under `measure`) into rows by label, in
/// order of first appearance.
pub fn group(dump: &Dump, weights: &[Weight], measure: Measure, naming: &Naming) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut row_of_label: HashMap<String, usize> = HashMap::new();
    for weight in weights {
        let label = naming.label(dump, weight.stack);
        let value = weight.value(measure);
        match row_of_label.get(&label) {
            Some(&i) => {
                let row = &mut rows[i];
                row.bytes = row.bytes.saturating_add(weight.bytes);
                row.blocks = row.blocks.saturating_add(weight.blocks);
                if value > row.heaviest_value {
                    row.heaviest = weight.stack;
                    row.heaviest_value = value;
                }
            }
            None => {
                row_of_label.insert(label.clone(), rows.len());
                rows.push(Row {
                    label,
                    bytes: weight.bytes,
                    blocks: weight.blocks,
                    heaviest: weight.stack,
                    heaviest_value: value,
                });
            }
        }
    }
    rows
}

/// `1 site`, `2 sites`, `1,000 sites`: a count with its noun agreeing.
pub fn count_of(n: u64, singular: &str, plural: &str) -> String {
    let noun = if n == 1 { singular } else { plural };
    format!("{} {noun}", alloc_track::human::Count(n))
}
