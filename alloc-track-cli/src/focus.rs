//! `--focus` and `--ignore`: keep only the stacks with a frame matching a
//! regular expression, or drop them, as pprof's and heaptrack_print's
//! options of those names do.

use alloc_track::dump::Dump;
use regex::Regex;

use crate::stacks::{self, FrameRef, OVERFLOW_LABEL};

/// Which stacks a command looks at. A frame matches when the expression
/// finds its function name or its source file.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct StackFilter {
    /// Keep only stacks with a matching frame.
    pub focus: Option<Regex>,
    /// Then drop stacks with a matching frame.
    pub ignore: Option<Regex>,
}

impl PartialEq for StackFilter {
    fn eq(&self, other: &Self) -> bool {
        let pattern = |r: &Option<Regex>| r.as_ref().map(|r| r.as_str().to_string());
        pattern(&self.focus) == pattern(&other.focus)
            && pattern(&self.ignore) == pattern(&other.ignore)
    }
}

impl Eq for StackFilter {}

impl StackFilter {
    /// A filter from the two expressions.
    pub fn new(focus: Option<Regex>, ignore: Option<Regex>) -> Self {
        StackFilter { focus, ignore }
    }

    /// True when the filter keeps every stack.
    pub fn keeps_all(&self) -> bool {
        self.focus.is_none() && self.ignore.is_none()
    }

    /// One line saying what the filter keeps, for report headings.
    pub fn describe(&self) -> Option<String> {
        match (&self.focus, &self.ignore) {
            (None, None) => None,
            (Some(f), None) => Some(format!("only stacks with a frame matching /{f}/")),
            (None, Some(i)) => Some(format!("no stack with a frame matching /{i}/")),
            (Some(f), Some(i)) => Some(format!(
                "only stacks with a frame matching /{f}/ and none matching /{i}/"
            )),
        }
    }

    /// Leaves in `dump` only the sites (and peak sites) whose stacks the
    /// filter keeps. The totals stay those of the whole heap, so a report
    /// can say what share the kept stacks hold.
    pub fn apply(&self, dump: &mut Dump) {
        if self.keeps_all() {
            return;
        }
        let keep: Vec<bool> = (0..dump.stacks.len() as u32)
            .map(|stack| self.keeps(dump, stack))
            .collect();
        let kept = |stack: u32| keep.get(stack as usize).copied().unwrap_or(false);
        dump.sites.retain(|site| kept(site.stack));
        dump.peak_sites.retain(|peak| kept(peak.stack));
    }

    fn keeps(&self, dump: &Dump, stack: u32) -> bool {
        let Some(stack) = stacks::stack(dump, stack) else {
            return false;
        };
        let matches = |regex: &Regex| {
            if stack.locations.is_empty() {
                return regex.is_match(OVERFLOW_LABEL);
            }
            stacks::frames_leaf_first(dump, stack).any(|frame| match frame {
                FrameRef::Resolved(f) => {
                    regex.is_match(&f.function)
                        || f.file.as_deref().is_some_and(|file| regex.is_match(file))
                }
                FrameRef::Unresolved(_) => regex.is_match(&frame.function()),
            })
        };
        self.focus.as_ref().map_or(true, matches) && !self.ignore.as_ref().is_some_and(matches)
    }
}
