//! A mutex for the cold path that a forked child never finds held.
//!
//! `fork` copies one thread, the caller, and every lock word as it was. A
//! std or `parking_lot` mutex that another thread held at that moment stays
//! held forever in the child, whose first dump (or symbol lookup) then
//! waits forever. The hot path's spin locks are taken around the fork by
//! the handlers in `hot::fork`, which suits locks held for a few hash
//! probes; the cold path's locks are held for as long as a dump takes,
//! seconds, and `fork` must not wait for that.
//!
//! So the lock word records who holds it: the fork generation of the
//! process that took it ([`generation`]). All threads of one process write
//! the same value, so among them this is an ordinary mutex. A child's
//! generation is one more than its parent's, and the handler that sets it
//! runs before any of the child's code, so a child that finds the word
//! holding another generation knows the holder is a thread it does not
//! have: it takes the lock over. That thread may have stopped half-way
//! through an update, so the protected value is replaced by a fresh one
//! (the old one is leaked, never read or dropped).
//!
//! Waiting spins briefly, then sleeps up to a millisecond at a time: the
//! locks it serves are rarely contended, and whoever waits for a dump
//! waits far longer than that anyway.
//!
//! # Using it
//!
//! ```ignore
//! static CACHE: ForkSafeOnce<ForkSafeMutex<HashMap<usize, Frames>>> = ForkSafeOnce::new();
//! let cache = CACHE.get_or_init(|| ForkSafeMutex::new(HashMap::new(), HashMap::new));
//! cache.lock().insert(address, frames);
//! ```
//!
//! The one rule: never `fork` while holding a guard (nothing in this crate
//! does). The child's copy of the forking thread would still hold it, and
//! a second `lock` there would take it over under that guard's feet.
//! Without the fork handlers (their registration failed, or the child was
//! made by a raw `clone` that runs none) the generation does not change
//! and a lock held at the fork stays held, as a std mutex would.

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{back_off, generation};

/// The lock word of a free lock; generations start at 1.
const FREE: u64 = 0;

/// A mutual-exclusion lock that a forked child can always take: see the
/// module documentation. No poisoning: a panic while holding it releases
/// it (the cold path's critical sections leave their data consistent or
/// do not panic).
pub(crate) struct ForkSafeMutex<T> {
    /// [`FREE`], or the fork generation of the process whose thread holds
    /// the lock.
    holder: AtomicU64,
    value: UnsafeCell<T>,
    /// Makes the value a child starts with when it takes the lock over
    /// from a thread that did not survive the fork.
    fresh: fn() -> T,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time (the
// `holder` word is taken with an Acquire compare-exchange and released with
// a Release store), which is what `Mutex<T>` needs of `T`: `Send`.
unsafe impl<T: Send> Sync for ForkSafeMutex<T> {}
// SAFETY: as above; moving the lock moves the `T`.
unsafe impl<T: Send> Send for ForkSafeMutex<T> {}

impl<T> ForkSafeMutex<T> {
    /// A free lock around `value`. `fresh` makes the replacement value a
    /// forked child uses when the parent held the lock at the fork.
    pub(crate) const fn new(value: T, fresh: fn() -> T) -> Self {
        ForkSafeMutex {
            holder: AtomicU64::new(FREE),
            value: UnsafeCell::new(value),
            fresh,
        }
    }

    /// Takes the lock, waiting for a holder of this process to release
    /// it, or taking it over from a holder that did not survive a fork.
    pub(crate) fn lock(&self) -> ForkSafeGuard<'_, T> {
        let me = generation();
        let mut waited = 0u32;
        loop {
            match self
                .holder
                .compare_exchange_weak(FREE, me, Ordering::Acquire, Ordering::Relaxed)
            {
                Ok(_) => return self.guard(),
                Err(FREE) => {} // a spurious failure: try again
                Err(holder) if holder != me => {
                    // Held by a thread of an ancestor process: it is not in
                    // this one, and will never release it.
                    if self
                        .holder
                        .compare_exchange(holder, me, Ordering::Acquire, Ordering::Relaxed)
                        .is_ok()
                    {
                        // SAFETY: this thread now holds the lock, and no
                        // guard of this process refers to the value (its
                        // only holder was a thread this process lacks).
                        // `write` drops nothing: the old value may be
                        // half-updated, so it is leaked unread.
                        unsafe { self.value.get().write((self.fresh)()) };
                        return self.guard();
                    }
                }
                Err(_) => back_off(&mut waited),
            }
        }
    }

    fn guard(&self) -> ForkSafeGuard<'_, T> {
        ForkSafeGuard {
            lock: self,
            _exclusive: PhantomData,
        }
    }
}

/// Access to the value while the lock is held; releases it when dropped.
pub(crate) struct ForkSafeGuard<'a, T> {
    lock: &'a ForkSafeMutex<T>,
    /// Shares and sends like the `&mut T` it stands for.
    _exclusive: PhantomData<&'a mut T>,
}

impl<T> Deref for ForkSafeGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while its thread holds the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for ForkSafeGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only
        // reference through this guard.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for ForkSafeGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.holder.store(FREE, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threads_take_turns() {
        let counter = Arc::new(ForkSafeMutex::new(0u64, || 0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        let mut value = counter.lock();
                        let read = *value;
                        std::thread::yield_now();
                        *value = read + 1;
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(*counter.lock(), 400);
    }

    #[test]
    fn a_lock_held_in_an_earlier_generation_is_taken_over_with_a_fresh_value() {
        // A value that owns no memory: the one taken over is leaked, which
        // Miri would report.
        let lock = ForkSafeMutex::new(7u64, || 0);
        // What a child sees when its parent's other thread held the lock
        // at the fork: the word names the parent's generation.
        std::mem::forget(lock.lock());
        lock.holder.store(generation() + 1, Ordering::Relaxed);
        let mut taken = lock.lock();
        assert_eq!(*taken, 0, "the half-updated value is not reused");
        *taken = 9;
        drop(taken);
        assert_eq!(*lock.lock(), 9);
    }
}
