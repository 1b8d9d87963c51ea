//! Turning a dump's stacks into frames people read: inlined frames
//! expanded, standard-library frames recognised, folded lines for
//! flamegraph tools.

use std::borrow::Cow;
use std::path::Path;

use alloc_track::dump::{Dump, Frame, Location, StackRecord};

/// One frame of an expanded stack: a resolved source frame, or a bare
/// address the tracker could not resolve.
#[derive(Clone, Copy, Debug)]
pub enum FrameRef<'d> {
    /// A frame with a function name and perhaps a file and line.
    Resolved(&'d Frame),
    /// A code address with no debug information.
    Unresolved(u64),
}

impl<'d> FrameRef<'d> {
    /// The name shown in flamegraphs and tables.
    pub fn function(&self) -> Cow<'d, str> {
        match self {
            FrameRef::Resolved(frame) => Cow::Borrowed(frame.function.as_str()),
            FrameRef::Unresolved(address) => Cow::Owned(format!("{address:#x}")),
        }
    }

    /// The source frame, if resolved.
    pub fn frame(&self) -> Option<&'d Frame> {
        match self {
            FrameRef::Resolved(frame) => Some(frame),
            FrameRef::Unresolved(_) => None,
        }
    }
}

/// The frames of one location in stack order: innermost (inlined) first,
/// or the bare address when there are none.
fn location_frames(location: &Location) -> impl Iterator<Item = FrameRef<'_>> {
    let unresolved = location
        .frames
        .is_empty()
        .then_some(FrameRef::Unresolved(location.address));
    location
        .frames
        .iter()
        .map(FrameRef::Resolved)
        .chain(unresolved)
}

/// Every frame of `stack`, leaf (the allocating function) first, with
/// inlined frames before the function they were inlined into. Location
/// indices out of range are skipped (a validated dump has none).
pub fn frames_leaf_first<'d>(
    dump: &'d Dump,
    stack: &'d StackRecord,
) -> impl Iterator<Item = FrameRef<'d>> {
    stack
        .locations
        .iter()
        .filter_map(|&l| dump.locations.get(l as usize))
        .flat_map(location_frames)
}

/// The stack at `index`, if there is one.
pub fn stack(dump: &Dump, index: u32) -> Option<&StackRecord> {
    dump.stacks.get(index as usize)
}

/// True for standard-library code and allocator plumbing: see
/// [`Frame::is_standard_library`], which the tracker's own tables use too.
pub fn is_std(frame: &Frame) -> bool {
    frame.is_standard_library()
}

/// The frame that best answers "who allocated this": the first frame from
/// the leaf that is not standard-library code, or the leaf itself when
/// every frame is (see [`site_label`] for what such a stack is called).
pub fn site_frame<'d>(dump: &'d Dump, stack: &'d StackRecord) -> Option<FrameRef<'d>> {
    let mut leaf = None;
    for frame in frames_leaf_first(dump, stack) {
        leaf.get_or_insert(frame);
        match frame {
            FrameRef::Resolved(f) if is_std(f) => {}
            _ => return Some(frame),
        }
    }
    leaf
}

/// The labels of the catch-all site (empty stack) and of stacks that
/// never reach the program, as the library's own tables call them.
pub use alloc_track::dump::{OVERFLOW_LABEL, RUNTIME_LABEL};

/// The frame standing for the callers a truncated stack lost.
pub const TRUNCATED_FRAME: &str = "[truncated]";

/// A site's label for tables: `function (file:line)`, the file shortened
/// against `base`; [`OVERFLOW_LABEL`] for the catch-all site and
/// [`RUNTIME_LABEL`] for a whole stack with no frame outside the standard
/// library.
pub fn site_label(dump: &Dump, stack_index: u32, base: Option<&Path>) -> String {
    let Some(stack) = stack(dump, stack_index) else {
        return format!("<stack {stack_index} missing>");
    };
    match site_frame(dump, stack) {
        None => OVERFLOW_LABEL.to_string(),
        // Every frame is the standard library's, and the stack is whole:
        // it never reached the program.
        Some(FrameRef::Resolved(frame)) if is_std(frame) && !stack.truncated => {
            RUNTIME_LABEL.to_string()
        }
        Some(frame) => frame_label(frame, base),
    }
}

/// `function (file:line)` for one frame (see [`Frame::label`]), or the
/// bare address of an unresolved one.
pub fn frame_label(frame: FrameRef<'_>, base: Option<&Path>) -> String {
    match frame {
        FrameRef::Resolved(frame) => frame.label(base),
        FrameRef::Unresolved(address) => format!("{address:#x}"),
    }
}

/// Makes a function name safe inside a folded line, where `;` separates
/// frames and a line ends the record. A `;` inside a Rust name (`[u8; 32]`)
/// becomes the fullwidth semicolon `；` (U+FF1B), which reads the same and
/// splits nothing; control characters become spaces.
pub fn fold_name(name: &str, out: &mut String) {
    for c in name.chars() {
        match c {
            ';' => out.push('\u{FF1B}'),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

/// Which end of a stack a folded line starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// `main;...;allocating_fn`: the usual flamegraph, callers at the root.
    RootFirst,
    /// `allocating_fn;...;main`: the allocation site at the root (what
    /// memray calls an inverted flamegraph).
    LeafFirst,
}

/// One location's frames for folded lines, joined with `;` once in the
/// folder's order so that folding a stack is mostly copying; names are made
/// safe for the format, so a `;` in the text always separates frames.
struct Part {
    joined: String,
    /// Where the location's root-most frame of the program's own (not the
    /// standard library's; an unresolved address may be anyone's, so it
    /// counts as own) begins in `joined` (root first), or ends (leaf first).
    own_cut: Option<usize>,
}

/// Builds folded-stack lines (`a;b;c`) for a dump's stacks. Each location's
/// part is built once and reused: a dump with a million stack entries has
/// far fewer distinct locations.
///
/// The start-up frames every stack shares (`_start`, `main`,
/// `std::rt::lang_start`, ...) are trimmed: a line starts at the first frame
/// that is not the standard library's. A stack with no such frame never
/// reached the program: it is put under one `[Rust runtime]` frame.
pub struct Folder {
    parts: Vec<Part>,
    order: Order,
}

impl Folder {
    /// Prepares the per-location parts of `dump` for lines in `order`.
    pub fn new(dump: &Dump, order: Order) -> Folder {
        let parts = dump
            .locations
            .iter()
            .map(|location| Part::new(location, order))
            .collect();
        Folder { parts, order }
    }

    /// Appends the folded frames of `stack` to `out` (no count). A stack cut
    /// at the capture limit gets a `[truncated]` frame where its missing
    /// callers would be, so that it is not drawn as a root of its own, and
    /// keeps all its frames (what it lost may have been the program's).
    pub fn fold(&self, stack: &StackRecord, out: &mut String) {
        // Positions in the stack, so that `keep` below indexes the same way
        // from either end; a location out of range (a validated dump has
        // none) is skipped.
        let parts = || {
            stack
                .locations
                .iter()
                .enumerate()
                .filter_map(|(i, &l)| Some((i, self.parts.get(l as usize)?)))
        };
        // The root-most location with a frame of the program's.
        let first_own = parts().rev().find_map(|(i, p)| p.own_cut.map(|_| i));
        let start = out.len();
        let mut push = |text: &str| {
            if !text.is_empty() {
                if out.len() > start {
                    out.push(';');
                }
                out.push_str(text);
            }
        };
        let (root, keep) = match first_own {
            _ if stack.truncated => (Some(TRUNCATED_FRAME), None),
            Some(index) => (None, Some(index)),
            None if stack.locations.is_empty() => (Some(OVERFLOW_LABEL), None),
            None => return self.fold_runtime(stack, out),
        };
        match self.order {
            Order::RootFirst => {
                root.into_iter().for_each(&mut push);
                for (i, &l) in stack.locations.iter().enumerate().rev() {
                    let Some(part) = self.parts.get(l as usize) else {
                        continue;
                    };
                    match (keep, part.own_cut) {
                        (Some(k), _) if i > k => {}
                        (Some(k), Some(from)) if i == k => push(&part.joined[from..]),
                        _ => push(&part.joined),
                    }
                }
            }
            Order::LeafFirst => {
                for (i, part) in parts() {
                    match (keep, part.own_cut) {
                        (Some(k), _) if i > k => break,
                        (Some(k), Some(to)) if i == k => push(&part.joined[..to]),
                        _ => push(&part.joined),
                    }
                }
                root.into_iter().for_each(&mut push);
            }
        }
    }

    /// A stack that never reached the program: `[Rust runtime]` at the
    /// root, then its frames without the start-up ones.
    fn fold_runtime(&self, stack: &StackRecord, out: &mut String) {
        let mut names: Vec<&str> = stack
            .locations
            .iter()
            .rev()
            .filter_map(|&l| self.parts.get(l as usize))
            .flat_map(|p| {
                let mut names: Vec<&str> = p.joined.split(';').collect();
                if self.order == Order::LeafFirst {
                    names.reverse();
                }
                names
            })
            .skip_while(|name| is_entry_frame(name))
            .collect();
        names.insert(0, RUNTIME_LABEL);
        if self.order == Order::LeafFirst {
            names.reverse();
        }
        out.push_str(&names.join(";"));
    }
}

impl Part {
    fn new(location: &Location, order: Order) -> Part {
        let frames: Vec<FrameRef<'_>> = location_frames(location).collect();
        let mut part = Part {
            joined: String::new(),
            own_cut: None,
        };
        // `frames` is leaf first; the own frame that matters is the
        // root-most one.
        let root_most_own = frames.iter().rposition(is_own);
        let in_order: Box<dyn Iterator<Item = (usize, &FrameRef<'_>)>> = match order {
            Order::RootFirst => Box::new(frames.iter().enumerate().rev()),
            Order::LeafFirst => Box::new(frames.iter().enumerate()),
        };
        for (i, frame) in in_order {
            if !part.joined.is_empty() {
                part.joined.push(';');
            }
            if order == Order::RootFirst && Some(i) == root_most_own {
                part.own_cut = Some(part.joined.len());
            }
            fold_name(&frame.function(), &mut part.joined);
            if order == Order::LeafFirst && Some(i) == root_most_own {
                part.own_cut = Some(part.joined.len());
            }
        }
        part
    }
}

/// The frames through which every Rust program and thread starts.
fn is_entry_frame(function: &str) -> bool {
    matches!(
        function,
        "main"
            | "_start"
            | "__libc_start_main"
            | "__libc_start_main_impl"
            | "__libc_start_call_main"
            | "start_thread"
            | "clone"
            | "clone3"
    ) || function.starts_with("std::rt::lang_start")
}

/// Whether a frame is the program's own (see [`Part`]).
fn is_own(frame: &FrameRef<'_>) -> bool {
    frame.frame().map_or(true, |frame| !is_std(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, file: Option<&str>) -> Frame {
        Frame {
            function: function.to_string(),
            file: file.map(str::to_string),
            line: Some(7),
            column: None,
        }
    }

    #[test]
    fn std_frames_are_recognised_by_file_or_name() {
        assert!(is_std(&frame("alloc::vec::Vec<T>::push", None)));
        assert!(is_std(&frame(
            "<hashbrown::map::HashMap<K,V> as Clone>::clone",
            None
        )));
        assert!(is_std(&frame("whatever", Some("/rustc/abc/library/x.rs"))));
        assert!(is_std(&frame(
            "foo",
            Some("/cargo/registry/src/x/hashbrown-0.14.0/src/a.rs")
        )));
        // A dependency of the user's program is an answer, not plumbing.
        assert!(!is_std(&frame(
            "serde_json::de::from_str",
            Some("/home/u/.cargo/registry/src/x/serde_json-1.0.0/src/de.rs")
        )));
        assert!(!is_std(&frame(
            "myapp::main",
            Some("/home/u/app/src/main.rs")
        )));
    }

    #[test]
    fn semicolons_in_names_do_not_split_frames() {
        let mut out = String::new();
        fold_name("<[u8; 32] as Foo>::bar\n", &mut out);
        assert_eq!(out, "<[u8\u{FF1B} 32] as Foo>::bar ");
    }
}
