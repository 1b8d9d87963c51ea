//! Whether a fast walker may be used, shared by the frame-pointer walk and
//! the CFI walker: each is compared with the unwinder (the reference, slow
//! but right) at the process's first capture and then every
//! [`VERIFY_EVERY`]th capture of each thread, and one disagreement turns it
//! off for the rest of the process. A walker that cannot be trusted costs
//! speed, never correctness.

use std::cell::Cell;
use std::sync::atomic::{AtomicU8, Ordering};

use super::CapturedStack;

/// How often each thread re-checks a walker against the unwinder. An
/// unwind costs about as much as 100 frame-pointer walks, so this keeps the
/// check's cost near 1% while catching code the walker gets wrong soon
/// after it first allocates.
const VERIFY_EVERY: u32 = 8192;

const UNCHECKED: u8 = 0;
const CHECKING: u8 = 1;
const TRUSTED: u8 = 2;
const DISTRUSTED: u8 = 3;

/// What a capture should do with a walker.
pub(super) enum Gate {
    /// Trusted: walk (and count down to the next check).
    Walk,
    /// Nobody has checked the walker yet: this capture does.
    FirstCheck,
    /// Distrusted, or being checked by another thread: use the unwinder.
    Skip,
}

/// One walker's standing, for the whole process.
pub(super) struct Trust(AtomicU8);

impl Trust {
    pub(super) const fn new() -> Self {
        Trust(AtomicU8::new(UNCHECKED))
    }

    /// What this capture should do. Relaxed: the state only ever moves
    /// forward, and a capture that reads a stale state either walks once
    /// more or uses the unwinder once more, both harmless.
    #[inline(always)]
    pub(super) fn gate(&self) -> Gate {
        match self.0.load(Ordering::Relaxed) {
            TRUSTED => Gate::Walk,
            UNCHECKED => Gate::FirstCheck,
            _ => Gate::Skip,
        }
    }

    /// The process's first capture with this walker decides whether it is
    /// trusted. `compare` walks and unwinds from the same capture, leaves
    /// the unwinder's stack in `stack` and returns whether they agree
    /// (`None`: the walk declined). False means "use the unwinder": `stack`
    /// is left empty.
    #[cold]
    #[inline(never)]
    pub(super) fn first_check(
        &self,
        disabled: bool,
        stack: &mut CapturedStack,
        compare: impl FnOnce(&mut CapturedStack) -> Option<bool>,
    ) -> bool {
        if self
            .0
            .compare_exchange(UNCHECKED, CHECKING, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Another thread is checking: use the unwinder meanwhile.
            return false;
        }
        if disabled {
            self.0.store(DISTRUSTED, Ordering::Release);
            return false;
        }
        let agrees = compare(stack);
        let trusted = agrees == Some(true);
        self.0.store(
            if trusted { TRUSTED } else { DISTRUSTED },
            Ordering::Release,
        );
        true
    }

    /// A periodic check: on disagreement the walker is off for good. A walk
    /// that declined gave no stack at all, so it proves nothing either way.
    #[cold]
    #[inline(never)]
    pub(super) fn verify(
        &self,
        stack: &mut CapturedStack,
        compare: impl FnOnce(&mut CapturedStack) -> Option<bool>,
    ) -> bool {
        if compare(stack) == Some(false) {
            self.0.store(DISTRUSTED, Ordering::Release);
        }
        true
    }

    /// True once the first check has decided for or against the walker.
    pub(super) fn settled(&self) -> bool {
        matches!(self.0.load(Ordering::Relaxed), TRUSTED | DISTRUSTED)
    }

    /// True once the first check passed and no check has failed since.
    pub(super) fn trusted(&self) -> bool {
        self.0.load(Ordering::Relaxed) == TRUSTED
    }

    /// True once a check has failed (or the walker was turned off). Asked
    /// only where the CFI walker exists (of itself, and of the frame-pointer
    /// walk, which it follows).
    #[cfg(cfi_walk)]
    pub(super) fn distrusted(&self) -> bool {
        self.0.load(Ordering::Relaxed) == DISTRUSTED
    }
}

/// A per-thread countdown to the next check, starting full.
pub(super) const fn countdown() -> Cell<u32> {
    Cell::new(VERIFY_EVERY)
}

/// Counts one capture down; true when a check is due (and restarts it).
#[inline(always)]
pub(super) fn check_due(countdown: &Cell<u32>) -> bool {
    let left = countdown.get().saturating_sub(1);
    countdown.set(if left == 0 { VERIFY_EVERY } else { left });
    left == 0
}

/// A walker forced by `ALLOC_TRACK_UNWIND`, for comparisons and debugging.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Forced {
    /// `unwinder`: both fast walkers off.
    Unwinder,
    /// `cfi`: the frame-pointer walk off, so that the CFI walker is used
    /// where it exists.
    Cfi,
}

/// Reads `ALLOC_TRACK_UNWIND`; done at a walker's first check only.
pub(super) fn forced() -> Option<Forced> {
    // SAFETY: a NUL-terminated name; `getenv` returns null or a pointer
    // to a NUL-terminated value, valid while the environment is unchanged,
    // and read at once.
    let value = unsafe {
        let value = libc::getenv(c"ALLOC_TRACK_UNWIND".as_ptr());
        if value.is_null() {
            return None;
        }
        std::ffi::CStr::from_ptr(value).to_bytes()
    };
    parse_forced(value).unwrap_or(None)
}

/// An `ALLOC_TRACK_UNWIND` value: `unwinder` or `cfi` in any case, blanks
/// around it ignored; empty or blank means unset. `Err` for anything else,
/// which forces nothing (the cold path, `settings.rs`, says so once on
/// stderr). Never allocates.
fn parse_forced(value: &[u8]) -> Result<Option<Forced>, ()> {
    let value = value.trim_ascii();
    if value.is_empty() {
        Ok(None)
    } else if value.eq_ignore_ascii_case(b"unwinder") {
        Ok(Some(Forced::Unwinder))
    } else if value.eq_ignore_ascii_case(b"cfi") {
        Ok(Some(Forced::Cfi))
    } else {
        Err(())
    }
}

/// False when `ALLOC_TRACK_UNWIND` holds `value` and it names no walker.
pub(crate) fn is_valid_unwind_setting(value: &[u8]) -> bool {
    parse_forced(value).is_ok()
}
