//! Site identity: how a dump's stacks become the rows of a table, the same
//! way in every command.
//!
//! A row is what its label shows. Stacks whose labels are equal (two
//! callers of one helper, `alloc` versus `realloc` under one `push`, a
//! caller's line that moved between two builds) are one row in `report`,
//! one row matched across dumps in `diff` and `trend`, and never two rows
//! that look the same. Matching by label rather than by address or stack
//! index also survives ASLR and renumbered stacks.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;

use alloc_track::dump::{Dump, Frame};

use crate::shorten::shorten_frame;
use crate::stacks::{self, site_label, FrameRef};
use crate::weigh::{Measure, Weight};
use crate::your_code::{self, CrateSource};

/// What a row stands for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// The allocating site: the first frame that is not the standard
    /// library's.
    #[default]
    Site,
    /// The first frame in the program's own crate ("your code"), whatever
    /// library code it called to allocate.
    YourCode,
}

/// How stacks are named in tables.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Naming {
    /// Source files below this directory are shown relative to it.
    pub relative_to: Option<PathBuf>,
    /// What a row stands for.
    pub group_by: GroupBy,
    /// The program's own crate (`--crate`); found from each dump when
    /// `None` (see [`crate::your_code`]).
    pub crate_name: Option<String>,
    /// Keep generic arguments and compiler paths whole (see
    /// [`crate::shorten`]).
    pub full_names: bool,
}

impl Naming {
    /// The names of `dump`'s stacks, with the program's crate resolved once.
    pub fn for_dump<'a>(&'a self, dump: &'a Dump) -> DumpNames<'a> {
        DumpNames {
            naming: self,
            dump,
            program_crate: your_code::program_crate(dump, self.crate_name.as_deref()),
            frame_labels: RefCell::new(HashMap::new()),
        }
    }
}

/// Names for the stacks of one dump (see [`Naming::for_dump`]).
pub struct DumpNames<'a> {
    naming: &'a Naming,
    dump: &'a Dump,
    program_crate: Option<(String, CrateSource)>,
    /// Labels already made, by the address of their frame in the dump:
    /// many stacks share one site frame, and shortening and formatting a
    /// label costs more than looking it up.
    frame_labels: RefCell<HashMap<*const Frame, String>>,
}

impl DumpNames<'_> {
    /// The label of stack `stack`: its row's identity.
    pub fn label(&self, stack: u32) -> String {
        let site = || self.site_label(stack);
        match self.naming.group_by {
            GroupBy::Site => site(),
            GroupBy::YourCode => self.your_code(stack).unwrap_or_else(site),
        }
    }

    /// The site's label (see [`site_label`]), shortened unless full names
    /// were asked for.
    fn site_label(&self, index: u32) -> String {
        let base = self.naming.relative_to.as_deref();
        let site = stacks::stack(self.dump, index)
            .and_then(|stack| Some((stack, stacks::site_frame(self.dump, stack)?)));
        match site {
            // The common case, a frame of the program's or a library's.
            Some((stack, FrameRef::Resolved(frame)))
                if !frame.is_standard_library() || stack.truncated =>
            {
                let mut labels = self.frame_labels.borrow_mut();
                let label = labels.entry(frame as *const Frame).or_insert_with(|| {
                    if self.naming.full_names {
                        frame.label(base)
                    } else {
                        shorten_frame(frame).label(base)
                    }
                });
                label.clone()
            }
            _ => site_label(self.dump, index, base),
        }
    }

    /// `function (file:line)` of the first frame of `stack` in the
    /// program's own crate, if the crate is known and the stack reaches it.
    pub fn your_code(&self, stack: u32) -> Option<String> {
        let (name, _) = self.program_crate.as_ref()?;
        let frame = your_code::first_frame_in(self.dump, stack, name)?;
        let base = self.naming.relative_to.as_deref();
        Some(if self.naming.full_names {
            frame.label(base)
        } else {
            shorten_frame(frame).label(base)
        })
    }

    /// How names are made.
    pub fn naming(&self) -> &Naming {
        self.naming
    }

    /// The program's crate and how it was found.
    pub fn program_crate(&self) -> Option<&(String, CrateSource)> {
        self.program_crate.as_ref()
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

/// Groups `weights` (of the dump `names` names, under `measure`) into rows
/// by label, in order of first appearance.
pub fn group(weights: &[Weight], measure: Measure, names: &DumpNames<'_>) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut row_of_label: HashMap<String, usize> = HashMap::new();
    for weight in weights {
        let label = names.label(weight.stack);
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
