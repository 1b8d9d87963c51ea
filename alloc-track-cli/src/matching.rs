//! Matching call sites across dumps: by symbolized stack (function, file
//! and line of every frame), never by stack index or address. Indices are
//! assigned per dump, and addresses move between runs with ASLR, so only
//! the symbols say that two stacks are the same code path.

use std::collections::HashMap;

use alloc_track::dump::Dump;

use crate::stacks::{self, FrameRef};

/// A frame as sites are compared: function, file and line, not address.
type FrameKey<'d> = (&'d str, Option<&'d str>, Option<u32>);

/// Interns the symbolized frames of any number of dumps so that a stack's
/// key is a short list of integers: equal keys, same code path.
#[derive(Default)]
pub struct StackKeys<'d> {
    ids: HashMap<FrameKey<'d>, u32>,
    /// Unresolved addresses get keys of their own; they only match an
    /// identical address (the same process, or no ASLR).
    addresses: HashMap<u64, u32>,
}

impl<'d> StackKeys<'d> {
    /// The key of stack `stack` of `dump`; empty for a missing stack (a
    /// validated dump has none).
    pub fn stack_key(&mut self, dump: &'d Dump, stack: u32) -> Vec<u32> {
        let Some(stack) = stacks::stack(dump, stack) else {
            return Vec::new();
        };
        let mut key = Vec::new();
        for frame in stacks::frames_leaf_first(dump, stack) {
            let next = (self.ids.len() + self.addresses.len()) as u32;
            let id = match frame {
                FrameRef::Resolved(f) => *self
                    .ids
                    .entry((f.function.as_str(), f.file.as_deref(), f.line))
                    .or_insert(next),
                FrameRef::Unresolved(address) => *self.addresses.entry(address).or_insert(next),
            };
            key.push(id);
        }
        key
    }
}
