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
use super::{keep_the_walk, stack_bounds, unwind, CapturedStack};

/// Whether the walk may be used: checked at the process's first capture.
static TRUST: Trust = Trust::new();

thread_local! {
    /// Captures until this thread's next check against the unwinder.
    static UNTIL_CHECK: Cell<u32> = const { trust::countdown() };
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

/// Walks the frame-pointer chain from the caller's frame into `stack`
/// (empty on entry). False if the thread's stack bounds are unknown.
///
/// The loop is the hot part of full tracking: per frame, two loads from
/// the frame record (the next one depends on the previous), a store into
/// the caller's buffer and the hash step, which runs beside the loads: the
/// chain of dependent loads sets the pace, about 1.1 ns a frame.
#[inline(always)]
fn walk(stack: &mut CapturedStack) -> bool {
    let Some(top) = stack_bounds::top() else {
        return false;
    };
    let mut fp = frame_pointer();
    let marker = 0u8;
    // Everything between here and the top of the stack is mapped.
    let low = std::ptr::addr_of!(marker) as usize;
    let highest_record = top.saturating_sub(2 * std::mem::size_of::<usize>());
    // The frame record must lie inside the live part of this stack;
    // anything else means the chain is broken here. Callers sit higher on
    // the stack, so past the first record only the upper bound can fail:
    // the chain must climb. Records are read unaligned, so a misaligned
    // pointer in a broken chain reads garbage inside the stack, never
    // faults, and needs no test of its own in the loop.
    if fp < low {
        return true;
    }
    stack.push_with(|stack| {
        // One frame: false where the walk ends.
        let mut step = |fp: &mut usize| {
            if *fp > highest_record {
                return false;
            }
            // SAFETY: `fp .. fp + 16` lies within `[low, top)`, the mapped
            // part of this thread's stack above the current frame.
            let (next, ip) = unsafe {
                let record = *fp as *const usize;
                (record.read_unaligned(), record.add(1).read_unaligned())
            };
            if ip == 0 || !stack.push(ip) {
                return false;
            }
            // A chain that does not climb is not a frame-pointer chain.
            if next <= *fp {
                return false;
            }
            *fp = next;
            true
        };
        // Two frames a turn: the hash's two lanes then stay in their
        // registers, with no swap between frames.
        while step(&mut fp) && step(&mut fp) {}
    });
    true
}

/// Captures with frame pointers into `stack` if they are trusted; false
/// means "use another walker".
#[inline(always)]
pub(super) fn capture(stack: &mut CapturedStack) -> bool {
    match TRUST.gate() {
        Gate::Walk => {}
        Gate::FirstCheck => return first_check(stack),
        Gate::Skip => return false,
    }
    let due = UNTIL_CHECK.try_with(trust::check_due).unwrap_or(false);
    if due {
        return TRUST.verify(stack, compare);
    }
    walk(stack)
}

/// See [`super::prepare_thread`]: whether this thread's capture will
/// settle the walker's first check.
pub(super) fn prepare_thread() -> bool {
    let _ = stack_bounds::top();
    matches!(TRUST.gate(), Gate::FirstCheck)
}

/// The process's first capture decides whether the walk is trusted; either
/// `ALLOC_TRACK_UNWIND` setting turns it off.
#[cold]
fn first_check(stack: &mut CapturedStack) -> bool {
    TRUST.first_check(trust::forced().is_some(), stack, compare)
}

/// Walks and unwinds from the same capture and returns whether the walk
/// agrees with the unwinder (`None`: the walk declined). Leaves in `stack`
/// the walk's stack where they agree, so that this capture gives the same
/// stack as every other walk of the same call (the two may differ in the
/// C runtime's last frames), else the unwinder's, the one known to be
/// right.
#[inline(always)]
fn compare(stack: &mut CapturedStack) -> Option<bool> {
    let mut walked = CapturedStack::new();
    let walked_ok = walk(&mut walked);
    unwind(stack);
    if !walked_ok {
        return None;
    }
    let start = agree(walked.frames(), stack.frames());
    keep_the_walk(stack, &walked, start);
    Some(start.is_some())
}

/// The walk agrees with the unwinder when, from the unwinder's first frame
/// on (the walk starts a frame or two deeper, inside the check), its
/// frames but for the last two (the C runtime's entry frames, often built
/// without frame pointers, may end a chain with garbage) are the start of
/// the unwinder's stack: a function without a frame pointer would be
/// missing from the walk. At least three frames must be compared. Returns
/// where in the walk the unwinder's first frame is, if they agree.
fn agree(walked: &[usize], unwound: &[usize]) -> Option<usize> {
    let start = unwound
        .first()
        .and_then(|first| walked.iter().take(4).position(|ip| ip == first))?;
    let from_start = &walked[start..];
    let compared = &from_start[..from_start.len().saturating_sub(2).min(16)];
    (compared.len() >= 3 && unwound.starts_with(compared)).then_some(start)
}

/// True once the first capture has decided for or against the walk.
pub(super) fn settled() -> bool {
    TRUST.settled()
}

/// True once the start-up check passed and no check has failed since.
pub(super) fn trusted() -> bool {
    TRUST.trusted()
}

/// True once the walk is off for good: the other walkers' turn. Asked
/// only where the CFI walker is the next one.
#[cfg(cfi_walk)]
pub(super) fn distrusted() -> bool {
    TRUST.distrusted()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_needs_an_unbroken_run() {
        let unwound = [3, 4, 5, 6, 7, 8];
        // The walk starts inside the check, a frame or two deeper.
        assert_eq!(agree(&[1, 2, 3, 4, 5, 6, 99, 98], &unwound), Some(2));
        assert_eq!(agree(&[3, 4, 5, 6, 99, 98], &unwound), Some(0));
        // A frame missing from the walk (no frame pointer) breaks the run.
        assert_eq!(agree(&[2, 3, 5, 6, 7, 99, 98], &unwound), None);
        // A walk that never reaches the unwinder's first frame.
        assert_eq!(agree(&[1, 2, 9, 4, 5, 6, 7, 8], &unwound), None);
        // Too short to tell.
        assert_eq!(agree(&[3, 4, 99, 98], &unwound), None);
    }

    // Miri cannot run inline assembly or `pthread_getattr_np`.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn the_walk_finds_its_callers() {
        #[inline(never)]
        fn outer(stack: &mut CapturedStack) -> bool {
            std::hint::black_box(inner(stack))
        }
        #[inline(never)]
        fn inner(stack: &mut CapturedStack) -> bool {
            std::hint::black_box(walk(stack))
        }
        let mut walked = CapturedStack::new();
        assert!(outer(&mut walked), "stack bounds on Linux");
        // Whether or not this test binary keeps frame pointers, the walk
        // stays within the stack and never crashes; with them, it finds
        // several frames.
        assert!(walked.len() <= super::super::MAX_DEPTH);
    }
}
