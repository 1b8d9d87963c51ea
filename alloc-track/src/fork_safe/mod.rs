//! Cold-path primitives that a forked child never finds stuck: a mutex
//! ([`ForkSafeMutex`]) and a once-initialised cell ([`ForkSafeOnce`]).
//!
//! `fork` copies one thread, the caller, and every lock word as it was. A
//! std lock that another thread held at that moment, or a `OnceLock` that
//! another thread was initialising, stays so forever in the child, whose
//! first dump then waits forever. Both types here record in their state
//! word the fork generation ([`generation`]) of the process whose thread
//! holds them: a child, whose generation is one more than its parent's,
//! that finds another generation there knows the holder is a thread it
//! does not have, and takes over.

mod mutex;
mod once;

pub(crate) use mutex::ForkSafeMutex;
pub(crate) use once::ForkSafeOnce;

use std::time::Duration;

#[cfg(unix)]
use crate::hot::view::fork::generation;

/// No `fork` here: one process image, one generation.
#[cfg(not(unix))]
fn generation() -> u64 {
    1
}

/// Spins for a while, then yields, then sleeps for longer and longer up
/// to a millisecond.
fn back_off(waited: &mut u32) {
    const SPINS: u32 = 64;
    const YIELDS: u32 = 16;
    match *waited {
        n if n < SPINS => std::hint::spin_loop(),
        n if n < SPINS + YIELDS => std::thread::yield_now(),
        n => {
            let micros = 10u64 << (n - SPINS - YIELDS).min(7);
            std::thread::sleep(Duration::from_micros(micros.min(1000)));
        }
    }
    *waited = waited.saturating_add(1);
}
