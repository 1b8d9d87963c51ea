//! The frame-pointer walk, with the checks that make it safe on any
//! binary: reads stay inside the thread's stack, frames must move up the
//! stack, depth is capped, and the walk is compared with the unwinder at
//! the first capture and then periodically (`trust.rs`). One disagreement
//! turns it off for the rest of the process: a binary (or a crate in it)
//! built without frame pointers gets the other walkers' stacks instead of
//! short wrong ones.
//!
//! Linux with glibc on x86_64 and aarch64, where a frame is laid out as
//! `[fp] = caller's fp` and `[fp + 8] = return address` (aarch64's frame
//! record `x29, x30` has the same shape).

use std::cell::Cell;

use super::trust::{self, Gate, Trust};
use super::{unwind, CapturedStack};

/// Whether the walk may be used: checked at the process's first capture.
static TRUST: Trust = Trust::new();

struct ThreadStack {
    /// One past the highest address of this thread's stack; 0 until
    /// looked up, 1 if it could not be.
    top: Cell<usize>,
    /// Captures until the next check against the unwinder.
    until_check: Cell<u32>,
}

thread_local! {
    static THREAD_STACK: ThreadStack = const {
        ThreadStack { top: Cell::new(0), until_check: trust::countdown() }
    };
}

extern "C" {
    /// glibc: the stack pointer at the process's entry, at or above every
    /// frame of the main thread.
    static __libc_stack_end: *mut libc::c_void;
}

/// The top of the calling thread's stack, or a bound below it with
/// everything between the current frame and it mapped. Looked up once per
/// thread, without I/O and without allocating (see `find_stack_top`).
pub(super) fn stack_top() -> Option<usize> {
    let top = THREAD_STACK
        .try_with(|stack| {
            if stack.top.get() == 0 {
                stack.top.set(find_stack_top().unwrap_or(1));
            }
            stack.top.get()
        })
        .ok()?;
    (top > 1).then_some(top)
}

/// Most threads' stacks are a few MiB; a thread pointer further than this
/// above the current frame is not the one glibc laid out above the stack.
const MAX_PLAUSIBLE_STACK: usize = 1 << 30;

fn find_stack_top() -> Option<usize> {
    // SAFETY: plain system calls and a read of a glibc variable.
    unsafe {
        if libc::getpid() == libc::gettid() {
            let end = __libc_stack_end as usize;
            return (end != 0).then_some(end);
        }
    }
    stack_top_below_thread_pointer().or_else(stack_top_from_attributes)
}

/// Every other thread's: glibc puts a thread's control block and static
/// TLS at the top of the block it maps (or the caller supplies) for the
/// thread's stack, right above the stack, and the thread pointer points
/// there. So everything from the current frame up to the thread pointer
/// is the thread's own stack block, which one `msync` call (it fails with
/// `ENOMEM` on any unmapped page, and with `MS_ASYNC` does nothing else)
/// confirms. `pthread_getattr_np` would give the exact bounds, but it
/// allocates and frees a CPU-set buffer: a stray allocation in the
/// program's heap, in the middle of its work in sampled mode, which on the
/// `json` benchmark made glibc's allocator 4% slower for the rest of the
/// run.
fn stack_top_below_thread_pointer() -> Option<usize> {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    let top = thread_pointer();
    if top <= here || top - here > MAX_PLAUSIBLE_STACK {
        return None;
    }
    // SAFETY: `sysconf` reads a constant.
    let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).ok()?;
    if !page.is_power_of_two() {
        return None;
    }
    let start = here & !(page - 1);
    // SAFETY: `msync` only inspects the range's mappings; with `MS_ASYNC`
    // it neither writes nor waits for anything, and fails on a gap.
    let mapped = unsafe { libc::msync(start as *mut libc::c_void, top - start, libc::MS_ASYNC) };
    (mapped == 0).then_some(top)
}

/// The exact bounds from the thread's attributes: the fallback when the
/// thread pointer is not above the stack (a thread not made by glibc's
/// `pthread_create`). glibc allocates a little here; the caller is busy, so
/// that passes untracked.
fn stack_top_from_attributes() -> Option<usize> {
    // SAFETY: the attribute object is initialised by `pthread_getattr_np`
    // before it is read and destroyed after.
    unsafe {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
            return None;
        }
        let mut address = std::ptr::null_mut();
        let mut size = 0;
        let status = libc::pthread_attr_getstack(attr.as_ptr(), &mut address, &mut size);
        libc::pthread_attr_destroy(attr.as_mut_ptr());
        (status == 0 && !address.is_null()).then(|| address as usize + size)
    }
}

/// The thread pointer: the address of the thread's control block.
#[inline(always)]
fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: reads the thread pointer; on x86_64 the control block's
    // first word is its own address (the TLS ABI requires it), on aarch64
    // it is a register read. Nothing is written.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp, options(nomem, nostack, preserves_flags));
    }
    tp
}

#[inline(always)]
fn frame_pointer() -> usize {
    let fp: usize;
    // SAFETY: reads a register into a variable; no memory is touched.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        std::arch::asm!("mov {}, rbp", out(reg) fp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        std::arch::asm!("mov {}, x29", out(reg) fp, options(nomem, nostack, preserves_flags));
    }
    fp
}

/// Walks the frame-pointer chain from the caller's frame. `None` if the
/// thread's stack bounds are unknown.
#[inline(always)]
fn walk() -> Option<CapturedStack> {
    let top = stack_top()?;
    let mut fp = frame_pointer();
    let marker = 0u8;
    // Everything between here and the top of the stack is mapped.
    let low = std::ptr::addr_of!(marker) as usize;
    let mut stack = CapturedStack::new();
    loop {
        // The frame record must lie inside the live part of this stack and
        // be aligned; anything else means the chain is broken here.
        if fp < low
            || fp % std::mem::align_of::<usize>() != 0
            || fp > top.saturating_sub(2 * std::mem::size_of::<usize>())
        {
            break;
        }
        // SAFETY: `fp .. fp + 16` lies within `[low, top)`, the mapped part
        // of this thread's stack above the current frame, and is aligned.
        let (next, ip) = unsafe {
            let record = fp as *const usize;
            (record.read(), record.add(1).read())
        };
        if ip == 0 || !stack.push(ip) {
            break;
        }
        // Callers sit higher on the stack: a chain that does not climb is
        // not a frame-pointer chain.
        if next <= fp {
            break;
        }
        fp = next;
    }
    Some(stack)
}

/// Captures with frame pointers if they are trusted; `None` means "use
/// another walker".
#[inline(always)]
pub(super) fn capture() -> Option<CapturedStack> {
    match TRUST.gate() {
        Gate::Walk => {}
        Gate::FirstCheck => return first_check(),
        Gate::Skip => return None,
    }
    let due = THREAD_STACK
        .try_with(|stack| trust::check_due(&stack.until_check))
        .unwrap_or(false);
    if due {
        return TRUST.verify(compare);
    }
    walk()
}

/// See [`super::prepare_thread`].
pub(super) fn prepare_thread() {
    let _ = stack_top();
    if matches!(TRUST.gate(), Gate::FirstCheck) {
        let _ = first_check();
    }
}

/// The process's first capture decides whether the walk is trusted; either
/// `ALLOC_TRACK_UNWIND` setting turns it off.
#[cold]
fn first_check() -> Option<CapturedStack> {
    TRUST.first_check(trust::forced().is_some(), compare)
}

/// Walks both ways from the same frame; returns whether they agree and
/// the unwinder's stack (the one known to be right).
#[inline(always)]
fn compare() -> (Option<bool>, CapturedStack) {
    let walked = walk();
    let unwound = unwind();
    let agrees = walked.map(|walked| agree(walked.frames(), unwound.frames()));
    (agrees, unwound)
}

/// The walk agrees with the unwinder when its frames, but for the last two
/// (the C runtime's entry frames, often built without frame pointers, may
/// end a chain with garbage), appear in the unwinder's stack as one
/// unbroken run: a function without a frame pointer would be missing from
/// the walk and break the run. At least three frames must be compared.
fn agree(walked: &[usize], unwound: &[usize]) -> bool {
    let compared = &walked[..walked.len().saturating_sub(2).min(16)];
    if compared.len() < 3 {
        return false;
    }
    unwound
        .windows(compared.len())
        .any(|window| window == compared)
}

/// True once the first capture has decided for or against the walk.
pub(super) fn settled() -> bool {
    TRUST.settled()
}

/// True once the start-up check passed and no check has failed since.
pub(super) fn trusted() -> bool {
    TRUST.trusted()
}

/// True once the walk is off for good: the other walkers' turn.
pub(super) fn distrusted() -> bool {
    TRUST.distrusted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_needs_an_unbroken_run() {
        let unwound = [1, 2, 3, 4, 5, 6, 7, 8];
        assert!(agree(&[3, 4, 5, 6, 99, 98], &unwound));
        // A frame missing from the walk (no frame pointer) breaks the run.
        assert!(!agree(&[3, 5, 6, 7, 99, 98], &unwound));
        // Too short to tell.
        assert!(!agree(&[3, 4, 99, 98], &unwound));
    }

    // Miri cannot run inline assembly or `pthread_getattr_np`.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_walk_finds_its_callers() {
        #[inline(never)]
        fn outer() -> Option<CapturedStack> {
            std::hint::black_box(inner())
        }
        #[inline(never)]
        fn inner() -> Option<CapturedStack> {
            std::hint::black_box(walk())
        }
        let walked = outer().expect("stack bounds on Linux");
        // Whether or not this test binary keeps frame pointers, the walk
        // stays within the stack and never crashes; with them, it finds
        // several frames.
        assert!(walked.len <= super::super::MAX_DEPTH);
    }

    // A spawned thread's bound from the thread pointer lies above the
    // current frame and within the stack block glibc reports: the walk
    // reads only its own thread's mapped stack, and finds all of it.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_threads_bound_lies_within_its_stack_block() {
        let (bound, exact) = std::thread::spawn(|| {
            (
                stack_top_below_thread_pointer(),
                stack_top_from_attributes(),
            )
        })
        .join()
        .unwrap();
        let bound = bound.expect("glibc threads keep their thread pointer above the stack");
        let exact = exact.expect("pthread_getattr_np on a glibc thread");
        assert!(
            bound <= exact,
            "{bound:#x} above the stack's top {exact:#x}"
        );
        // Only the control block and static TLS lie between them.
        assert!(exact - bound < 1 << 20, "{bound:#x} far below {exact:#x}");
        // Whichever route applies to the test's own thread, it finds one.
        assert!(find_stack_top().is_some());
    }
}
