//! [`measure`]: what one closure allocated on its own thread, exact even
//! while other threads allocate.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::diff::SiteDiff;
use crate::hot::view::live::{self, MAX_TAG};
use crate::hot::view::measuring::{Frame, MeasureState, MAX_NESTING};
use crate::hot::view::stacks::{self, SiteId};
use crate::hot::view::thread::{self, untracked};
use crate::site::Stack;
use crate::Diff;

/// Runs `f` and returns its value with a [`Diff`] of what the calling
/// thread allocated and freed while it ran.
///
/// Only the calling thread's allocations count, so the figures are exact
/// even while other threads (other tests under `cargo test`) allocate at
/// the same time. Blocks the closure allocated and another thread freed
/// before it returned are not in the retained figures: retained means
/// still alive when the closure returned. Calls nest; each sees its own
/// span.
///
/// The Rust answer to Django's `assertNumQueries`:
///
/// ```
/// use std::alloc::System;
/// #[global_allocator]
/// static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
///
/// fn main() {
///     let (total, diff) = alloc_track::measure(|| {
///         let mut names = Vec::with_capacity(4);
///         names.extend(["a", "b", "c", "d"].map(String::from));
///         names.iter().map(|n| n.len()).sum::<usize>()
///     });
///     assert_eq!(total, 4);
///     // One buffer for the Vec and one per String.
///     assert_eq!(diff.total_blocks(), 5, "{diff}");
///     // All of it was dropped inside the closure.
///     assert_eq!(diff.retained_blocks(), 0, "{diff}");
///     assert_eq!(diff.live_bytes(), 0);
/// }
/// ```
///
/// # Many threads at once
///
/// Up to 1,023 threads can be inside `measure`, [`limits`](fn@crate::limits)
/// or [`scope(..).log()`](crate::ScopeGuard::log) at once with every figure
/// exact. Past that, a thread's allocated, freed, net and peak figures stay
/// exact (they are the thread's own flow), but its **retained** figures
/// become an upper bound: the diff says so with
/// [`Diff::approximation`] and in its `Display`, and the first time it
/// happens the process gets one line on standard error. See
/// [`Approximation::TooManyMeasuringThreads`] for what exactly may be
/// counted too much.
///
/// # Panics
///
/// If the [`Tracker`](crate::Tracker) is not the program's global
/// allocator (the figures would be silently zero), or if `measure`,
/// `limits` and `scope(..).log()` calls nest deeper than 32 on one thread.
/// A panic inside `f` propagates after the measurement is closed.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Diff) {
    crate::ensure_installed("measure");
    let Some(frame) = OpenFrame::open() else {
        panic!(
            "alloc_track::measure: measure, limits and scope(..).log() nest deeper than \
             {MAX_NESTING} on this thread"
        );
    };
    let result = f();
    let diff = frame.close();
    (result, diff)
}

/// Why a [`Diff`]'s figures are not all exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Approximation {
    /// More than 1,023 threads were inside [`measure`],
    /// [`limits`](fn@crate::limits) or [`scope(..).log()`](crate::ScopeGuard::log)
    /// at once when this thread's outermost one opened, so no tag was left
    /// to mark the blocks born inside it.
    ///
    /// Exact still: everything allocated and freed by the thread (total,
    /// net and peak figures, by site). Approximate: the **retained**
    /// figures, which are an upper bound. A block born inside and freed by
    /// this thread is never counted; one freed by another thread is not
    /// counted either, unless its address was handed out again, before the
    /// measure ended, to a block from the same call site allocated outside
    /// every tagged measure: that block is then counted as if it were the
    /// one born here.
    TooManyMeasuringThreads,
}

impl fmt::Display for Approximation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Approximation::TooManyMeasuringThreads => write!(
                f,
                "retained figures are an upper bound: more than {MAX_TAG} threads were \
                 measuring at once (allocated, freed and peak figures stay exact)"
            ),
        }
    }
}

/// The measure tags in use, one bit each: a tag marks the blocks born in
/// one thread's outermost open measure, and must be unique among the
/// measures open at once (not forever: a finished measure's blocks are
/// never looked up by tag again). Tag 0 means "no measure" and is never
/// handed out; live records have room for tags up to `MAX_TAG`.
static TAGS_IN_USE: [AtomicU64; (MAX_TAG as usize + 1) / 64] =
    [const { AtomicU64::new(0) }; (MAX_TAG as usize + 1) / 64];

/// A free tag, or `None` when all `MAX_TAG` are in use: the measure then
/// runs untagged (tag 0) and its retained figures are approximate.
fn claim_tag() -> Option<u32> {
    for (word_index, word) in TAGS_IN_USE.iter().enumerate() {
        let mut bits = word.load(Ordering::Relaxed);
        loop {
            // Bit 0 of word 0 is tag 0: never free.
            let taken = if word_index == 0 { bits | 1 } else { bits };
            if taken == u64::MAX {
                break;
            }
            let bit = (!taken).trailing_zeros();
            match word.compare_exchange_weak(
                bits,
                bits | 1 << bit,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some((word_index * 64) as u32 + bit),
                Err(now) => bits = now,
            }
        }
    }
    warn_tags_exhausted_once();
    None
}

/// Says once per process that some measures run untagged: a service with a
/// thread per connection may reach the limit under load, and its operators
/// should learn why some figures are marked approximate, but not once per
/// connection.
#[cold]
fn warn_tags_exhausted_once() {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if WARNED.swap(true, Ordering::Relaxed) {
        return;
    }
    // `writeln!`, not `eprintln!`: no panic if standard error is closed.
    let _ = writeln!(
        std::io::stderr(),
        "alloc-track: more than {MAX_TAG} threads are inside measure, limits or \
         scope(..).log() at once; the ones past that limit report approximate retained \
         figures (marked in their Diff), all other figures stay exact"
    );
}

fn release_tag(tag: u32) {
    if tag == 0 {
        return; // an untagged measure: nothing was claimed
    }
    let word = &TAGS_IN_USE[tag as usize / 64];
    word.fetch_and(!(1 << (tag % 64)), Ordering::Release);
}

/// An open measure frame on this thread; closing it (or dropping it while
/// unwinding) pops the frame and, for the outermost, frees the state.
pub(crate) struct OpenFrame {
    state: *mut MeasureState,
}

impl OpenFrame {
    /// Opens a frame, or returns `None` when 32 are already open on this
    /// thread (each caller says so in its own words).
    pub(crate) fn open() -> Option<OpenFrame> {
        let state = untracked(|| {
            let mut state = thread::measuring();
            if state.is_null() {
                state = new_state(claim_tag().unwrap_or(0));
                thread::set_measuring(state);
            }
            state
        });
        // SAFETY: `state` is this thread's live measure state (just read or
        // created above); the hot path touches it only from this thread,
        // never while this function runs.
        if unsafe { (*state).push() } {
            return Some(OpenFrame { state });
        }
        // A state this call created has its first frame pushed (push only
        // fails at depth 32), so there is nothing to free here.
        None
    }

    pub(crate) fn close(self) -> Diff {
        let diff = untracked(|| {
            // SAFETY: as in `open`; this thread is busy, so the hot path
            // does not touch the state while it is borrowed here.
            let state = unsafe { &mut *self.state };
            state.pop().map(|frame| frame_diff(state, &frame))
        });
        self.release();
        std::mem::forget(self);
        diff.unwrap_or_else(|| Diff::from_sites(Vec::new(), Some(0), false))
    }

    /// Frees the state once the outermost frame has closed.
    fn release(&self) {
        untracked(|| {
            // SAFETY: as in `close`.
            if unsafe { (*self.state).depth } == 0 {
                thread::set_measuring(std::ptr::null_mut());
                // SAFETY: as in `close`; read before the state is freed.
                release_tag(unsafe { (*self.state).tag });
                free_state(self.state);
            }
        });
    }
}

impl Drop for OpenFrame {
    /// Reached only when the closure panicked: close the frame unseen.
    fn drop(&mut self) {
        untracked(|| {
            // SAFETY: as in `close`.
            unsafe { (*self.state).pop() };
        });
        self.release();
    }
}

fn new_state(tag: u32) -> *mut MeasureState {
    let layout = Layout::new::<MeasureState>();
    // SAFETY: the layout is non-zero in size.
    let state = unsafe { System.alloc(layout) }.cast::<MeasureState>();
    if state.is_null() {
        std::alloc::handle_alloc_error(layout);
    }
    // SAFETY: `state` is freshly allocated, aligned and large enough.
    unsafe { state.write(MeasureState::new(tag)) };
    state
}

fn free_state(state: *mut MeasureState) {
    // SAFETY: `state` came from `new_state`, and the thread's pointer to it
    // was cleared before this call, so this is the last use.
    unsafe {
        state.drop_in_place();
        System.dealloc(state.cast(), Layout::new::<MeasureState>());
    }
}

/// The frame's figures as a [`Diff`]; retained blocks are the births since
/// the frame opened that are still live under this measure's tag (for an
/// untagged measure, tag 0, shared with every block born outside a
/// measure: hence the approximation).
fn frame_diff(state: &MeasureState, frame: &Frame) -> Diff {
    let mut sites: HashMap<SiteId, SiteDiff> = HashMap::new();
    frame.sites.for_each(|key, flow| {
        let entry = site_entry(&mut sites, (key - 1) as SiteId);
        entry.live_bytes = flow.alloc_bytes as i64 - flow.freed_bytes as i64;
        entry.live_blocks = flow.alloc_blocks as i64 - flow.freed_blocks as i64;
        entry.total_bytes = flow.alloc_bytes;
        entry.total_blocks = flow.alloc_blocks;
    });
    state.births.for_each(|address, birth| {
        if birth.seq < frame.start_seq {
            return;
        }
        let Some(block) = live::get(address) else {
            return;
        };
        if block.tag() != state.tag || block.site() != birth.site {
            return;
        }
        let entry = site_entry(&mut sites, birth.site);
        entry.retained_bytes += block.size() as u64;
        entry.retained_blocks += 1;
    });
    let mut diff = Diff::from_sites(
        sites.into_values().collect(),
        Some(frame.peak_bytes.max(0) as u64),
        !frame.incomplete,
    );
    if state.tag == 0 {
        diff.approximation = Some(Approximation::TooManyMeasuringThreads);
    }
    diff
}

fn site_entry(sites: &mut HashMap<SiteId, SiteDiff>, id: SiteId) -> &mut SiteDiff {
    sites.entry(id).or_insert_with(|| SiteDiff {
        id,
        stack: Some(Stack {
            addresses: stacks::frames(id),
            truncated: stacks::is_truncated(id),
        }),
        ..SiteDiff::default()
    })
}
