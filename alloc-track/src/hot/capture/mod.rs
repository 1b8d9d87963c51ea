//! Stack capture: the return addresses of the current call stack, leaf
//! first, into a fixed array on the caller's stack.
//!
//! Three walkers, the first that is trusted chosen per capture:
//!
//! - **Frame pointers** (`frame_pointers.rs`): follows the chain of saved
//!   frame pointers, a few nanoseconds a frame. Only valid when the code
//!   on the stack keeps frame pointers (Rust's std does since 1.79; the
//!   program's crates need `-C force-frame-pointers=yes`). Every read is
//!   bounds-checked against the thread's stack, so a binary without frame
//!   pointers gets a short or failed walk, never a crash.
//! - **Cached DWARF CFI** (`cfi.rs`, Linux/glibc x86_64): the unwinder's
//!   own tables read by `framehop`, with each thread caching the rule of
//!   every return address it has seen: the fast walker of a binary built
//!   without frame pointers.
//! - **The unwinder** (`backtrace::trace_unsynchronized`): reads the
//!   binary's unwind tables afresh every time, about 100 ns a frame, works
//!   everywhere. Unlike `backtrace::trace` it takes no global lock (the
//!   lock that makes other profilers serialise every allocation). It may
//!   allocate on its first use (libgcc sorts its tables); the caller holds
//!   the thread's `Busy` flag, so those allocations pass through untracked.
//!
//! Both fast walkers are compared with the unwinder at the first capture
//! and periodically (`trust.rs`), and turned off for good at the first
//! disagreement; a walk that cannot finish hands its capture to the
//! unwinder. `ALLOC_TRACK_UNWIND=unwinder` turns both off,
//! `ALLOC_TRACK_UNWIND=cfi` the frame-pointer walk only.

#[cfg(cfi_walk)]
mod cfi;
#[cfg(stack_walk)]
mod frame_pointers;
#[cfg(stack_walk)]
mod stack_bounds;
#[cfg(stack_walk)]
pub(crate) mod trust;

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The deepest stack recorded; deeper stacks keep their innermost frames
/// and are marked truncated. Async runtimes reach 80-150 frames. The
/// buffer is never initialised up front, so a shallow stack pays nothing
/// for the room a deep one needs.
pub(crate) const MAX_DEPTH: usize = 128;

/// A captured stack: `len` return addresses, leaf first, with their hash,
/// computed while the walker pushes them so that interning never reads the
/// frames again to hash them.
///
/// The caller owns it (on its own stack) and the walkers write into it in
/// place: no zeroing of the whole array, no copy on return.
pub(crate) struct CapturedStack {
    ips: [MaybeUninit<usize>; MAX_DEPTH],
    len: usize,
    /// The running hash of `ips[..len]` (see [`hash_step`]).
    running_hash: RunningHash,
    pub(crate) truncated: bool,
}

/// The running hash of a stack: two lanes, the frame being pushed going
/// into the lane that took the frame before the last, so that each lane's
/// chain of dependent steps (a rotate, an xor and a multiply: 5 cycles)
/// advances every other frame, and does not set the walk's pace. Slot 0
/// is the lane the next frame goes into.
type RunningHash = [u64; 2];

/// The hash of an empty stack, before any frame is pushed.
const HASH_SEED: RunningHash = [0xcbf2_9ce4_8422_2325, 0x8422_2325_cbf2_9ce4];
const HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

/// One frame's step of the stack hash: order-dependent, a rotate, an xor
/// and a multiply into one lane, the lanes then swapped (see
/// [`RunningHash`]), cheap enough to run inside the frame-pointer walk
/// without lengthening its chain of dependent loads.
#[inline(always)]
fn hash_step(hash: RunningHash, ip: usize) -> RunningHash {
    [hash[1], mix(hash[0], ip as u64)]
}

/// A bijection of `hash` for every `value`, and of `value` for every
/// `hash`.
#[inline(always)]
fn mix(hash: u64, value: u64) -> u64 {
    (hash.rotate_left(5) ^ value).wrapping_mul(HASH_MULTIPLIER)
}

/// The stack hash of `frames`, as [`CapturedStack::hash`] computes it.
#[cfg(test)]
fn hash_frames(frames: &[usize]) -> u64 {
    finish_hash(
        frames.iter().fold(HASH_SEED, |h, &ip| hash_step(h, ip)),
        frames.len(),
    )
}

#[inline(always)]
fn finish_hash(running: RunningHash, len: usize) -> u64 {
    let h = (mix(running[0], running[1]) ^ len as u64).wrapping_mul(HASH_MULTIPLIER);
    h ^ (h >> 32)
}

impl CapturedStack {
    /// An empty stack. Costs a few stores: the frame array stays
    /// uninitialised until the walk writes it.
    #[inline(always)]
    pub(crate) const fn new() -> Self {
        CapturedStack {
            ips: [const { MaybeUninit::uninit() }; MAX_DEPTH],
            len: 0,
            running_hash: HASH_SEED,
            truncated: false,
        }
    }

    #[inline(always)]
    pub(crate) fn frames(&self) -> &[usize] {
        // SAFETY: `ips[..len]` were written by `push` (and `len` never
        // exceeds `MAX_DEPTH`); `MaybeUninit<usize>` has `usize`'s layout.
        unsafe { std::slice::from_raw_parts(self.ips.as_ptr().cast::<usize>(), self.len) }
    }

    /// For the frame-pointer walker's tests.
    #[cfg(all(
        test,
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The hash of the frames, as the tests' `hash_frames` gives it.
    #[inline(always)]
    pub(crate) fn hash(&self) -> u64 {
        finish_hash(self.running_hash, self.len)
    }

    /// Appends a return address; false once full (and marked truncated).
    #[inline(always)]
    fn push(&mut self, ip: usize) -> bool {
        self.push_with(|stack| stack.push(ip))
    }

    /// Runs a walk that pushes through a [`Pusher`], which keeps the length
    /// and hash in locals (registers) rather than in the stack's fields,
    /// which the compiler must otherwise store after every frame because
    /// they sit beside the array being written.
    #[inline(always)]
    fn push_with<R>(&mut self, walk: impl FnOnce(&mut Pusher<'_>) -> R) -> R {
        let mut pusher = Pusher {
            ips: &mut self.ips,
            len: self.len,
            running_hash: self.running_hash,
            truncated: self.truncated,
        };
        let result = walk(&mut pusher);
        let (len, running_hash, truncated) = (pusher.len, pusher.running_hash, pusher.truncated);
        self.len = len;
        self.running_hash = running_hash;
        self.truncated = truncated;
        result
    }

    /// Makes this stack a copy of `other` from its frame `start` on. For
    /// [`keep_the_walk`], so compiled where it is.
    #[cfg(stack_walk)]
    fn copy_from(&mut self, other: &CapturedStack, start: usize) {
        self.clear();
        for &ip in other.frames().get(start..).unwrap_or(&[]) {
            self.push(ip);
        }
        self.truncated = other.truncated;
    }

    /// Empties the stack for another walk.
    fn clear(&mut self) {
        self.len = 0;
        self.running_hash = HASH_SEED;
        self.truncated = false;
    }
}

/// A [`CapturedStack`] being written by a walk: see
/// [`CapturedStack::push_with`].
struct Pusher<'a> {
    ips: &'a mut [MaybeUninit<usize>; MAX_DEPTH],
    len: usize,
    running_hash: RunningHash,
    truncated: bool,
}

impl Pusher<'_> {
    /// Appends a return address; false once full (and marked truncated).
    #[inline(always)]
    fn push(&mut self, ip: usize) -> bool {
        let Some(slot) = self.ips.get_mut(self.len) else {
            self.truncated = true;
            return false;
        };
        slot.write(ip);
        self.len += 1;
        self.running_hash = hash_step(self.running_hash, ip);
        true
    }
}

/// Captures the current stack into `stack` (empty on entry), leaf first,
/// starting at the return address into the caller of this function: every
/// walker gives the same frames for the same call. Never allocates through
/// the tracked path, never takes a lock of this crate's.
#[inline(never)]
pub(crate) fn capture(stack: &mut CapturedStack) {
    capture_with_first_walker(stack);
    // Keeps this function's frame on the stack for as long as a walker
    // runs: a tail call into the last walker would remove it, and the
    // unwinder finds where the program's stack starts by it.
    std::hint::black_box(());
}

#[inline(always)]
fn capture_with_first_walker(stack: &mut CapturedStack) {
    #[cfg(stack_walk)]
    if frame_pointers::capture(stack) {
        return;
    }
    // Only once the frame-pointer walk is ruled out, so that a build with
    // frame pointers never pays for the CFI walker's tables.
    #[cfg(cfi_walk)]
    if frame_pointers::distrusted() {
        stack.clear();
        if cfi::capture(stack) {
            return;
        }
    }
    stack.clear();
    unwind(stack);
}

/// Does, at a thread's first allocation, the one-time work a capture may
/// need: looking up the thread's stack bounds and, in the process's first
/// thread, checking the frame-pointer walk against the unwinder (whose
/// first use may allocate), and, unless frame pointers are trusted, the CFI
/// walker's rule cache (allocated) and first check (which builds its module
/// list).
/// Done here, where the thread's start-up allocates anyway, rather than at
/// a sampled mode's first sample, where a stray allocation and free in the
/// middle of the program's work can change how the inner allocator lays out
/// the program's heap for the rest of the run. The caller is busy.
pub(crate) fn prepare_thread() {
    #[cfg(stack_walk)]
    {
        // The checks run inside a real capture, so that the unwinder's
        // stack and the walk start from the same frame.
        let mut scratch = CapturedStack::new();
        if frame_pointers::prepare_thread() {
            capture(&mut scratch);
        }
        #[cfg(cfi_walk)]
        if !frame_pointers::trusted() && cfi::prepare_thread() && frame_pointers::distrusted() {
            scratch.clear();
            capture(&mut scratch);
        }
    }
}

/// Frees what [`prepare_thread`] set up for this thread, at its exit.
pub(crate) fn release_thread() {
    #[cfg(cfi_walk)]
    cfi::release_thread();
}

/// After a check that compared a walk with the unwinder's stack (in
/// `stack`): where they agree (`start`: where the unwinder's first frame is
/// in the walk), leaves the walk's frames from there in `stack`, as every
/// other walk of the same call gives them (the two may differ in the C
/// runtime's last frames). A walk that filled up is the exception: it
/// started a frame or two deeper, so it holds that many frames fewer than
/// a walk from `capture`, and the unwinder's stack is the closer one.
/// Used by the fast walkers only, so compiled where they are.
#[cfg(stack_walk)]
fn keep_the_walk(stack: &mut CapturedStack, walked: &CapturedStack, start: Option<usize>) {
    if let Some(start) = start {
        if !walked.truncated {
            stack.copy_from(walked, start);
        }
    }
}

/// Captures the current stack with the platform unwinder into `stack`
/// (empty on entry), from the same frame the fast walkers start at: the
/// unwinder's own frames and the tracker's down to [`capture`] are
/// dropped, so that a stack is the same whichever walker took it (sites
/// would otherwise split, and tracker internals show in flamegraphs).
#[inline(never)]
pub(crate) fn unwind(stack: &mut CapturedStack) {
    let mut seen = 0;
    let mut searching = true;
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not
    // serialise concurrent unwinds; the platform unwinders it uses on the
    // targets we support (libgcc/libunwind `_Unwind_Backtrace`) are
    // thread-safe, and the closure touches nothing but its locals, `stack`
    // and the atomics of `is_in_capture`.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip == 0 {
                return false;
            }
            seen += 1;
            // Once `capture`'s frame is passed, what was kept so far is
            // the unwinder's and the tracker's: start again from its
            // caller. Only the first few frames can be the tracker's own.
            if searching && seen <= INNER_FRAMES_SEARCHED && is_in_capture(ip, frame) {
                searching = false;
                stack.clear();
                return true;
            }
            stack.push(ip)
        });
    }
}

/// Addresses inside [`capture`] seen as return addresses while unwinding
/// (one per call in it that can reach the unwinder): matching one costs a
/// load, where finding a frame's function costs a search of the unwind
/// tables. 0 marks a free slot.
static CAPTURE_RETURN_ADDRESSES: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];

/// Whether the unwound `frame`, at `ip`, is [`capture`]'s.
#[inline]
fn is_in_capture(ip: usize, frame: &backtrace::Frame) -> bool {
    // Relaxed: each slot is written once with a value that is right
    // whenever it is read; a reader that misses it searches the tables.
    if CAPTURE_RETURN_ADDRESSES
        .iter()
        .any(|known| known.load(Ordering::Relaxed) == ip)
    {
        return true;
    }
    let capture_start = capture as fn(&mut CapturedStack) as usize;
    if frame.symbol_address() as usize != capture_start {
        return false;
    }
    for slot in &CAPTURE_RETURN_ADDRESSES {
        match slot.compare_exchange(0, ip, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break,
            Err(known) if known == ip => break,
            Err(_) => {}
        }
    }
    true
}

/// How many of an unwound stack's innermost frames may be the unwinder's
/// and the tracker's own (the trace closure, `backtrace`'s frames, the
/// verification's, `capture`); a stack without `capture` among them (the
/// unwinder called from a test) is kept whole.
const INNER_FRAMES_SEARCHED: usize = 24;

/// Which walker captures stacks, for reports and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Walker {
    /// The frame-pointer walk (the common case on a binary built with
    /// frame pointers).
    FramePointers,
    /// The cached DWARF CFI unwinder (`framehop`): the common case on
    /// Linux x86_64 without frame pointers.
    Cfi,
    /// The platform unwinder.
    Unwinder,
}

/// The walker in use: the first whose start-up check passed.
pub(crate) fn walker() -> Walker {
    #[cfg(stack_walk)]
    if frame_pointers::trusted() {
        return Walker::FramePointers;
    }
    #[cfg(cfi_walk)]
    if cfi::trusted() {
        return Walker::Cfi;
    }
    Walker::Unwinder
}

/// The walker in use, once the first capture has settled it.
pub(crate) fn walker_if_settled() -> Option<Walker> {
    #[cfg(stack_walk)]
    if !frame_pointers::settled() {
        return None;
    }
    #[cfg(cfi_walk)]
    if frame_pointers::distrusted() && !cfi::settled() {
        return None;
    }
    Some(walker())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_hash_is_the_hash_of_the_frames() {
        let mut stack = CapturedStack::new();
        assert_eq!(stack.hash(), hash_frames(&[]));
        for ip in [0x1000, 0x2000, 0x3000] {
            assert!(stack.push(ip));
        }
        assert_eq!(stack.frames(), [0x1000, 0x2000, 0x3000]);
        assert_eq!(stack.hash(), hash_frames(&[0x1000, 0x2000, 0x3000]));
        // Order and length both count.
        assert_ne!(stack.hash(), hash_frames(&[0x3000, 0x2000, 0x1000]));
        assert_ne!(stack.hash(), hash_frames(&[0x1000, 0x2000]));
        stack.clear();
        assert_eq!((stack.frames().len(), stack.hash()), (0, hash_frames(&[])));
    }

    /// The thread cache of `site_cache.rs` trusts a hit on the hash and depth
    /// alone: stacks of one depth that differ in one frame must never share
    /// a hash. Every step is a bijection of the running hash, so this holds
    /// for all of them; checked here on addresses like real ones (close
    /// together, differing in low bits) and on random ones.
    #[test]
    fn stacks_that_differ_in_one_frame_never_share_a_hash() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..if cfg!(miri) { 20 } else { 20_000 } {
            let depth = 1 + next() as usize % 40;
            let base = 0x5555_0000_0000 + (next() as usize % 0x100_0000);
            let frames: Vec<usize> = (0..depth)
                .map(|_| base + (next() as usize % 0x10_0000))
                .collect();
            let mut changed = frames.clone();
            let at = next() as usize % depth;
            changed[at] = if round % 2 == 0 {
                changed[at] ^ (1 << (next() % 20))
            } else {
                next() as usize
            };
            if changed[at] != frames[at] {
                assert_ne!(hash_frames(&frames), hash_frames(&changed), "{frames:x?}");
            }
        }
    }

    #[test]
    fn a_deep_stack_keeps_its_innermost_frames_and_says_so() {
        let mut stack = CapturedStack::new();
        let pushed = (1..=MAX_DEPTH + 10)
            .take_while(|&ip| stack.push(ip))
            .count();
        assert_eq!(pushed, MAX_DEPTH);
        assert!(stack.truncated);
        assert_eq!(stack.frames().first(), Some(&1));
        assert_eq!(stack.frames().last(), Some(&MAX_DEPTH));
        assert_eq!(stack.hash(), hash_frames(stack.frames()));
    }
}
