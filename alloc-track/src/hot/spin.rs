//! A spin lock for the hot path's short critical sections.
//!
//! Why not `parking_lot` or `std::sync::Mutex`: parking_lot's contended path
//! allocates its thread data and parking table, which inside an allocator
//! recurses; std's mutex poisons, which brings panicking paths. The critical
//! sections guarded here are a few hash-table probes long, so spinning
//! (with a yield once the owner is evidently descheduled) is the cheap and
//! safe choice.

use std::cell::UnsafeCell;
use std::hint::spin_loop;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins before yielding the CPU: enough to outlast a critical section of
/// a few probes, short enough not to burn a time slice when the owner was
/// preempted.
const SPINS_BEFORE_YIELD: u32 = 100;

pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out access to `value` to one thread at a time, so
// sharing the lock between threads is sound whenever `T` may move between
// threads.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T` it owns.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        SpinLock {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock: one atomic swap when it is free, which every lock
    /// on the hot path is nearly always, so that part is inlined.
    #[inline(always)]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        // Acquire pairs with the Release in `SpinGuard::drop`, so that the
        // previous owner's writes to `value` are visible.
        if !self.locked.swap(true, Ordering::Acquire) {
            return SpinGuard { lock: self };
        }
        self.lock_contended()
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) -> SpinGuard<'_, T> {
        loop {
            let mut spins = 0;
            // Wait on a plain load so that waiting does not bounce the
            // cache line between cores.
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if !self.locked.swap(true, Ordering::Acquire) {
                return SpinGuard { lock: self };
            }
        }
    }

    /// Forcibly releases the lock. Only for a forked child, whose copy of
    /// the lock may be held by a thread that does not exist in the child.
    ///
    /// # Safety
    /// No thread of this process may hold the lock or use its value.
    #[allow(dead_code)]
    pub(crate) unsafe fn force_unlock(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock, so no other
        // reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` keeps this access unique.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Pads a value to its own cache line so that neighbouring locks in an
/// array do not contend through false sharing.
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
