//! Stack capture: the return addresses of the current call stack, leaf
//! first, into a fixed array on the caller's stack.
//!
//! Today this uses `backtrace::trace_unsynchronized`, which walks the stack
//! with the platform unwinder and, unlike `backtrace::trace`, takes no
//! global lock (the lock that makes other profilers serialise every
//! allocation). The unwinder may allocate on its first use (libgcc sorts
//! its unwind tables); the caller holds the thread's `Busy` flag, so those
//! allocations pass through untracked.

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
    pub(crate) fn frames(&self) -> &[usize] {
        &self.ips[..self.len]
    }
}

/// Captures the current stack. Never allocates through the tracked path,
/// never takes a lock of this crate's.
#[inline(never)]
pub(crate) fn capture() -> CapturedStack {
    let mut stack = CapturedStack {
        ips: [0; MAX_DEPTH],
        len: 0,
        truncated: false,
    };
    // SAFETY: `trace_unsynchronized` is unsafe only because it does not
    // serialise concurrent unwinds; the platform unwinders it uses on the
    // targets we support (libgcc/libunwind `_Unwind_Backtrace`) are
    // thread-safe, and the closure touches nothing but `stack`.
    unsafe {
        backtrace::trace_unsynchronized(|frame| {
            let ip = frame.ip() as usize;
            if ip == 0 {
                return false;
            }
            if stack.len == MAX_DEPTH {
                stack.truncated = true;
                return false;
            }
            stack.ips[stack.len] = ip;
            stack.len += 1;
            true
        });
    }
    stack
}
