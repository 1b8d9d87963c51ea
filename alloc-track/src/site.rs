//! Call sites as the public API shows them: a [`Site`]'s figures, its raw
//! stack resolved on demand, and the one-line label ("function
//! (file:line)") tables print.

use std::collections::HashMap;
use std::sync::Arc;

use crate::dump::{Birth, Frame, OVERFLOW_LABEL, RUNTIME_LABEL};
use crate::hot::view::sampler;
use crate::hot::view::stacks::SiteId;
use crate::hot::view::thread::untracked;
use crate::live_by_site::LiveTally;
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
    /// standard library, which is where a fix usually goes;
    /// [`RUNTIME_LABEL`] for a whole stack that
    /// never leaves it, as the CLI's reports say.
    pub fn label(&self) -> String {
        untracked(|| label(&symbolize::resolve_stack(self.addresses), self.truncated))
    }

    pub(crate) fn resolve(&self) -> Vec<ResolvedLocation> {
        symbolize::resolve_stack(self.addresses)
    }
}

/// The label of a resolved stack: see [`Stack::label`]. A truncated stack
/// whose frames are all the standard library's is labelled by its leaf:
/// the frames it lost may have been the program's.
pub(crate) fn label(stack: &[ResolvedLocation], truncated: bool) -> String {
    let mut frames = stack.iter().flat_map(|location| location.frames.iter());
    match frames.clone().find(|frame| !frame.is_standard_library()) {
        Some(frame) => frame_label(frame),
        None if stack.is_empty() => OVERFLOW_LABEL.to_string(),
        None if !truncated => RUNTIME_LABEL.to_string(),
        None => frames
            .next()
            .map_or_else(|| "[unknown]".to_string(), frame_label),
    }
}

/// `function (file:line)`, the file shown relative to the current
/// directory when it lies below it.
pub(crate) fn frame_label(frame: &Frame) -> String {
    static CWD: crate::fork_safe::ForkSafeOnce<Option<std::path::PathBuf>> =
        crate::fork_safe::ForkSafeOnce::new();
    let cwd = CWD.get_or_init(|| std::env::current_dir().ok());
    frame.label(cwd.as_deref())
}

/// Groups items whose stacks resolve to the same trimmed frames (raw stacks
/// that differ only inside the allocator, such as `alloc` versus
/// `realloc` under one `Vec::push`) and are alike truncated or whole, so
/// each place in the program is one row. Returns, per group, the resolved
/// stack, whether it is truncated, and the member indices, in order of
/// first appearance.
pub(crate) fn group_by_resolved_stack(
    stacks: impl Iterator<Item = Stack>,
) -> Vec<(Vec<ResolvedLocation>, bool, Vec<usize>)> {
    type Key = (bool, Vec<(usize, Arc<[Frame]>)>);
    let mut groups: Vec<(Vec<ResolvedLocation>, bool, Vec<usize>)> = Vec::new();
    let mut by_key: HashMap<Key, usize> = HashMap::new();
    for (index, stack) in stacks.enumerate() {
        let resolved = stack.resolve();
        let key: Key = (
            stack.truncated,
            resolved
                .iter()
                .map(|l| (l.address, l.frames.clone()))
                .collect(),
        );
        match by_key.get(&key) {
            Some(&group) => groups[group].2.push(index),
            None => {
                by_key.insert(key, groups.len());
                groups.push((resolved, stack.truncated, vec![index]));
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
    for (stack, truncated, members) in group_by_resolved_stack(stacks) {
        let label = label(&stack, truncated);
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

/// One call site in a [`Snapshot`](crate::Snapshot): one unique stack and its figures.
#[derive(Clone, Debug)]
pub struct Site {
    pub(crate) id: SiteId,
    pub(crate) stack: Stack,
    pub(crate) live_bytes: u64,
    pub(crate) live_blocks: u64,
    pub(crate) total_bytes: u64,
    pub(crate) total_blocks: u64,
    pub(crate) peak_bytes: u64,
    pub(crate) peak_blocks: u64,
    /// Blocks freed before their thread's next allocation.
    pub(crate) temporary_blocks: u64,
    /// Live blocks by birth epoch, oldest first.
    pub(crate) births: Births,
    /// Live (bytes, blocks) by scope id, for blocks allocated in a scope.
    pub(crate) scopes: Vec<(u16, u64, u64)>,
}

/// A site's live blocks by birth epoch. Most sites' live blocks were all
/// born in one epoch: that one is kept inline, so that a snapshot of many
/// sites does not make one small heap block per site (about 40 bytes each
/// with the allocator's own header).
#[derive(Clone, Debug, Default)]
pub(crate) enum Births {
    #[default]
    None,
    One(Birth),
    Many(Box<[Birth]>),
}

impl Births {
    /// The births of a site whose `tally` met several epochs, `others`
    /// being (row, epoch, bytes, blocks) of the epochs but the tally's:
    /// the tally's epoch holds the rest. Blocks in 1/1024ths until here.
    pub(crate) fn mixed(tally: LiveTally, others: &[(u32, u32, u64, u64)]) -> Births {
        let (other_bytes, other_blocks) = others
            .iter()
            .fold((0u64, 0u64), |(b, n), &(_, _, bytes, blocks)| {
                (b + bytes, n + blocks)
            });
        let mut births: Vec<Birth> = others
            .iter()
            .map(|&(_, epoch, bytes, blocks)| Birth {
                epoch,
                bytes,
                blocks: sampler::whole_blocks(blocks),
            })
            .collect();
        births.push(Birth {
            epoch: tally.epoch,
            bytes: tally.bytes.saturating_sub(other_bytes),
            blocks: sampler::whole_blocks(tally.blocks.saturating_sub(other_blocks)),
        });
        births.sort_by_key(|birth| birth.epoch);
        Births::Many(births.into_boxed_slice())
    }

    pub(crate) fn as_slice(&self) -> &[Birth] {
        match self {
            Births::None => &[],
            Births::One(birth) => std::slice::from_ref(birth),
            Births::Many(births) => births,
        }
    }
}

impl Site {
    /// Bytes allocated here and still live.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }
    /// Blocks allocated here and still live.
    pub fn live_blocks(&self) -> u64 {
        self.live_blocks
    }
    /// Bytes allocated here since tracking began.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    /// Blocks allocated here since tracking began.
    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }
    /// Bytes this site held live when the heap was at its peak (see
    /// [`Snapshot::peak_bytes`](crate::Snapshot::peak_bytes); the breakdown is taken within a small
    /// margin of the exact peak, see [`Tracker::peak_margin_permille`]).
    ///
    /// [`Tracker::peak_margin_permille`]: crate::Tracker::peak_margin_permille
    pub fn peak_bytes(&self) -> u64 {
        self.peak_bytes
    }
    /// Blocks this site held live when the heap was at its peak.
    pub fn peak_blocks(&self) -> u64 {
        self.peak_blocks
    }
    /// Blocks allocated here and freed by the same thread before it
    /// allocated anything else: "temporary" allocations, the churn that
    /// reusing a buffer or keeping a value on the stack removes. Counted
    /// since tracking began; exact in [`Mode::Full`](crate::Mode::Full), an estimate from the
    /// samples in [`Mode::Sampled`](crate::Mode::Sampled) (each sample is tracked exactly, and
    /// weighs as many blocks as it stands for), 0 in [`Mode::Count`](crate::Mode::Count).
    /// A realloc that moves a block does not make the old one temporary;
    /// the new block can be.
    pub fn temporary_blocks(&self) -> u64 {
        self.temporary_blocks
    }
    /// The call stack that allocated.
    pub fn stack(&self) -> Stack {
        self.stack
    }
    /// Live bytes and blocks born after the snapshot of epoch `epoch`.
    pub(crate) fn born_after(&self, epoch: u32) -> (u64, u64) {
        self.births
            .as_slice()
            .iter()
            .filter(|b| b.epoch > epoch)
            .fold((0, 0), |(bytes, blocks), b| {
                (bytes + b.bytes, blocks + b.blocks)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(function: &str, file: &str) -> ResolvedLocation {
        ResolvedLocation {
            address: 0x1000,
            frames: Arc::from(vec![Frame {
                function: function.into(),
                file: Some(file.into()),
                line: Some(7),
                column: None,
            }]),
        }
    }

    #[test]
    fn labels_name_the_program_the_runtime_or_the_overflow_as_the_cli_does() {
        let std_frame = || location("std::thread::spawn", "/rustc/abc/library/std/src/thread.rs");
        let program = [std_frame(), location("app::load", "/nowhere/src/load.rs")];
        assert_eq!(label(&program, false), "app::load (/nowhere/src/load.rs:7)");
        assert_eq!(label(&[std_frame(), std_frame()], false), RUNTIME_LABEL);
        // Cut at the capture limit: the lost callers may be the program's.
        assert_eq!(
            label(&[std_frame()], true),
            "std::thread::spawn (/rustc/abc/library/std/src/thread.rs:7)"
        );
        assert_eq!(label(&[], false), OVERFLOW_LABEL);
    }
}
