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

#[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
mod cfi;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod frame_pointers;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod stack_bounds;
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
pub(crate) mod trust;

/// The deepest stack recorded; deeper stacks keep their innermost frames
/// and are marked truncated.
pub(crate) const MAX_DEPTH: usize = 64;

/// A captured stack: `len` return addresses, leaf first.
pub(crate) struct CapturedStack {
    pub(crate) ips: [usize; MAX_DEPTH],
    pub(crate) len: usize,
    pub(crate) truncated: bool,
}

impl CapturedStack {
    fn new() -> Self {
        CapturedStack {
            ips: [0; MAX_DEPTH],
            len: 0,
            truncated: false,
        }
    }

    pub(crate) fn frames(&self) -> &[usize] {
        &self.ips[..self.len]
    }

    /// Appends a return address; false once full (and marked truncated).
    #[inline]
    fn push(&mut self, ip: usize) -> bool {
        if self.len == MAX_DEPTH {
            self.truncated = true;
            return false;
        }
        self.ips[self.len] = ip;
        self.len += 1;
        true
    }
}

/// Captures the current stack. Never allocates through the tracked path,
/// never takes a lock of this crate's.
#[inline(never)]
pub(crate) fn capture() -> CapturedStack {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    if let Some(stack) = frame_pointers::capture() {
        return stack;
    }
    // Only once the frame-pointer walk is ruled out, so that a build with
    // frame pointers never pays for the CFI walker's tables.
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    if frame_pointers::distrusted() {
        if let Some(stack) = cfi::capture() {
            return stack;
        }
    }
    unwind()
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
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    {
        frame_pointers::prepare_thread();
        #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
        if !frame_pointers::trusted() {
            cfi::prepare_thread(frame_pointers::distrusted());
        }
    }
}

/// Frees what [`prepare_thread`] set up for this thread, at its exit.
pub(crate) fn release_thread() {
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    cfi::release_thread();
}

/// Captures the current stack with the platform unwinder.
#[inline(never)]
pub(crate) fn unwind() -> CapturedStack {
    let mut stack = CapturedStack::new();
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not
    // serialise concurrent unwinds; the platform unwinders it uses on the
    // targets we support (libgcc/libunwind `_Unwind_Backtrace`) are
    // thread-safe, and the closure touches nothing but `stack`.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            ip != 0 && stack.push(ip)
        });
    }
    stack
}

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
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    if frame_pointers::trusted() {
        return Walker::FramePointers;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    if cfi::trusted() {
        return Walker::Cfi;
    }
    Walker::Unwinder
}

/// The walker in use, once the first capture has settled it.
pub(crate) fn walker_if_settled() -> Option<Walker> {
    #[cfg(all(
        target_os = "linux",
        target_env = "gnu",
        any(target_arch = "x86_64", target_arch = "aarch64")
    ))]
    if !frame_pointers::settled() {
        return None;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", target_arch = "x86_64"))]
    if frame_pointers::distrusted() && !cfi::settled() {
        return None;
    }
    Some(walker())
}
