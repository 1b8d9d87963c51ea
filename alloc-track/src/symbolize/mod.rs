//! Turning raw return addresses into function names and source lines, and
//! trimming the frames that belong to the allocator machinery rather than
//! to the program.
//!
//! Cold path only: resolution reads debug info, allocates freely and takes
//! the `backtrace` crate's lock. Results are cached per address (see
//! [`cache`]: until a library is loaded or unloaded, and safe across
//! `fork`), so displaying or saving a second snapshot costs only its new
//! addresses.

mod cache;
mod objects;

use std::sync::Arc;

pub(crate) use cache::{current_generation, Generation};

use crate::dump::Frame;

/// A return address and the frames it stands for, innermost first. After
/// trimming, the leaf location may keep only some of its inlined frames.
#[derive(Clone, Debug)]
pub(crate) struct ResolvedLocation {
    pub(crate) address: usize,
    pub(crate) frames: Arc<[Frame]>,
}

/// Functions of the allocation machinery itself: the tracker, the
/// unwinder, the `#[global_allocator]` shims and `alloc`'s internals. They
/// are on every stack and say nothing about who allocated.
const MACHINERY: &[&str] = &[
    "alloc_track::",
    "<alloc_track::",
    "backtrace::",
    "<backtrace::",
    "_Unwind_",
    "__rustc::",
    "__rust_alloc",
    "__rust_dealloc",
    "__rust_realloc",
    "__rust_alloc_zeroed",
    "__rg_",
    "__rdl_",
    "alloc::alloc::",
    "<alloc::alloc::",
    "alloc::raw_vec::",
    "<alloc::raw_vec::",
    "core::alloc::global::GlobalAlloc::",
];

fn is_machinery(frame: &Frame) -> bool {
    MACHINERY
        .iter()
        .any(|prefix| frame.function.starts_with(prefix))
}

fn is_unresolved(frame: &Frame) -> bool {
    frame.file.is_none() && frame.function.starts_with("0x")
}

/// Where the runtime hands over to the program: frames outside it (the
/// runtime's start-up, the thread trampoline) are the same on every stack.
const RUNTIME_BOUNDARY: &str = "__rust_begin_short_backtrace";
/// Glue between the boundary and the program's own `main` or closure.
const RUNTIME_GLUE: &[&str] = &[
    "core::ops::function::FnOnce::call_once",
    "core::ops::function::FnMut::call_mut",
    "std::thread::Builder::spawn_unchecked_",
    "std::thread::lifecycle::spawn_unchecked",
];

/// Resolves a stack and trims it: leading frames of the allocation
/// machinery go (so the first frame is the code that asked for memory),
/// and so do the runtime's frames outside the program's `main` or thread
/// closure.
pub(crate) fn resolve_stack(ips: &[usize]) -> Vec<ResolvedLocation> {
    resolve_stack_in(&current_generation(), ips)
}

/// [`resolve_stack`] against one generation of the cache, so that every
/// stack of a dump resolves against the same list of objects.
pub(crate) fn resolve_stack_in(generation: &Generation, ips: &[usize]) -> Vec<ResolvedLocation> {
    let locations: Vec<(usize, Arc<[Frame]>)> =
        ips.iter().map(|&ip| (ip, generation.resolve(ip))).collect();
    // Positions in the flattened frame list, (location, frame in location).
    let flat: Vec<(usize, usize)> = locations
        .iter()
        .enumerate()
        .flat_map(|(l, (_, frames))| (0..frames.len()).map(move |f| (l, f)))
        .collect();
    let frame_at = |i: usize| {
        let (l, f) = flat[i];
        &locations[l].1[f]
    };

    // Lead: everything up to the last machinery frame of the leading run
    // of machinery frames (unresolved unwinder frames may sit among them).
    let mut lead = 0;
    for i in 0..flat.len() {
        if is_machinery(frame_at(i)) {
            lead = i + 1;
        } else if is_unresolved(frame_at(i)) {
            continue;
        } else {
            break;
        }
    }
    let mut tail = flat.len();
    if let Some(boundary) =
        (lead..flat.len()).find(|&i| frame_at(i).function.contains(RUNTIME_BOUNDARY))
    {
        tail = boundary;
        while tail > lead
            && RUNTIME_GLUE
                .iter()
                .any(|glue| frame_at(tail - 1).function.starts_with(glue))
        {
            tail -= 1;
        }
    }

    // Regroup the kept frames by location; a location cut by the lead or
    // tail keeps only its frames inside the cut.
    let mut out: Vec<ResolvedLocation> = Vec::new();
    let kept = &flat[lead..tail];
    let mut start = 0;
    while start < kept.len() {
        let location = kept[start].0;
        let end = start
            + kept[start..]
                .iter()
                .take_while(|(l, _)| *l == location)
                .count();
        let (address, frames) = &locations[location];
        let (first, last) = (kept[start].1, kept[end - 1].1);
        let frames = if first == 0 && last + 1 == frames.len() {
            frames.clone()
        } else {
            frames[first..=last].into()
        };
        out.push(ResolvedLocation {
            address: *address,
            frames,
        });
        start = end;
    }
    out
}
