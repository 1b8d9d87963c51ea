//! Call sites as the public API shows them: raw stacks resolved on demand,
//! and the one-line label ("function (file:line)") tables print.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dump::Frame;
use crate::hot::view::thread::untracked;
use crate::symbolize::{self, ResolvedLocation};

/// A call stack as captured: raw return addresses, leaf first. Cheap to
/// copy; resolved to names only when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Stack {
    pub(crate) addresses: &'static [usize],
    pub(crate) truncated: bool,
}

impl Stack {
    /// The raw return addresses, leaf first, including the allocator's own
    /// frames (which [`frames`](Stack::frames) trims).
    pub fn addresses(&self) -> &[usize] {
        self.addresses
    }

    /// True when the stack was deeper than the capture limit and lost its
    /// outermost frames.
    pub fn is_truncated(&self) -> bool {
        self.truncated
    }

    /// The resolved frames, innermost first (inlined functions expanded),
    /// with the allocator's frames and the runtime's start-up frames
    /// trimmed: the first frame is the code that asked for memory.
    pub fn frames(&self) -> Vec<Frame> {
        untracked(|| {
            symbolize::resolve_stack(self.addresses)
                .iter()
                .flat_map(|location| location.frames.iter().cloned())
                .collect()
        })
    }

    /// `function (file:line)` of the first frame that is not Rust's
    /// standard library, which is where a fix usually goes.
    pub fn label(&self) -> String {
        untracked(|| label(&symbolize::resolve_stack(self.addresses)))
    }

    pub(crate) fn resolve(&self) -> Vec<ResolvedLocation> {
        symbolize::resolve_stack(self.addresses)
    }
}

/// The label of a resolved stack: see [`Stack::label`].
pub(crate) fn label(stack: &[ResolvedLocation]) -> String {
    let frames = stack.iter().flat_map(|location| location.frames.iter());
    match frames
        .clone()
        .find(|frame| !frame.is_standard_library())
        .or_else(|| frames.clone().next())
    {
        Some(frame) => frame_label(frame),
        None if stack.is_empty() => "[other: stack table full]".to_string(),
        None => "[unknown]".to_string(),
    }
}

/// `function (file:line)`, the file shown relative to the current
/// directory when it lies below it.
pub(crate) fn frame_label(frame: &Frame) -> String {
    static CWD: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    let cwd = CWD.get_or_init(|| std::env::current_dir().ok());
    frame.label(cwd.as_deref())
}

/// Groups items whose stacks resolve to the same trimmed frames (raw stacks
/// that differ only inside the allocator, such as `alloc` versus
/// `realloc` under one `Vec::push`), so each place in the program is one
/// row. Returns, per group, the resolved stack and the member indices, in
/// order of first appearance.
pub(crate) fn group_by_resolved_stack(
    stacks: impl Iterator<Item = Stack>,
) -> Vec<(Vec<ResolvedLocation>, Vec<usize>)> {
    type Key = Vec<(usize, Arc<[Frame]>)>;
    let mut groups: Vec<(Vec<ResolvedLocation>, Vec<usize>)> = Vec::new();
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    for (index, stack) in stacks.enumerate() {
        let resolved = stack.resolve();
        let key: Key = resolved
            .iter()
            .map(|l| (l.address, l.frames.clone()))
            .collect();
        match by_key.get(&key) {
            Some(&group) => groups[group].1.push(index),
            None => {
                by_key.insert(key, groups.len());
                groups.push((resolved, vec![index]));
            }
        }
    }
    groups
}

/// Groups items by the label of their resolved stack: the tables people
/// read have one row per place in the source, however many distinct
/// stacks lead there. Returns (label, member indices), in order of first
/// appearance.
pub(crate) fn group_by_label(stacks: impl Iterator<Item = Stack>) -> Vec<(String, Vec<usize>)> {
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    let mut by_label: HashMap<String, usize> = HashMap::new();
    for (stack, members) in group_by_resolved_stack(stacks) {
        let label = label(&stack);
        match by_label.get(&label) {
            Some(&group) => groups[group].1.extend(members),
            None => {
                by_label.insert(label.clone(), groups.len());
                groups.push((label, members));
            }
        }
    }
    groups
}
