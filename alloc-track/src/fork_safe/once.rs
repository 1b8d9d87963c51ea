//! A once-initialised cell that a forked child never finds stuck half-way.
//!
//! `std::sync::OnceLock` marks itself "running" while its closure runs. A
//! `fork` from another thread at that moment gives a child whose copy
//! stays "running" forever, since the thread running the closure is not in
//! the child: the child's first access (its first scope, its first dump)
//! waits for good. Here the state word holds the fork generation of the
//! process whose thread is initialising, so a child that finds another
//! generation there runs the initialisation itself. Whatever the vanished
//! thread had written is never read (a value it wrote completely but had
//! not yet marked done is leaked, never dropped).
//!
//! Among the threads of one process it behaves as `OnceLock`: one runs the
//! closure, the others wait for it. A closure that panics leaves the cell
//! empty, and the next caller runs its own.

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{back_off, generation};

/// The state of a cell nobody has started to fill; generations start at 1.
const EMPTY: u64 = 0;
/// The state of a filled cell.
const DONE: u64 = u64::MAX;

pub(crate) struct ForkSafeOnce<T> {
    /// [`EMPTY`], [`DONE`], or the fork generation of the process whose
    /// thread is running the initialisation.
    state: AtomicU64,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written by one thread (the one that moved `state`
// from EMPTY or from an older generation to its own) before `state`
// becomes DONE with Release, and only read after an Acquire load of DONE;
// after that it is shared by reference, which needs `T: Sync`, and it may
// have been made on another thread, which needs `T: Send`: as `OnceLock`.
unsafe impl<T: Send + Sync> Sync for ForkSafeOnce<T> {}
// SAFETY: moving the cell moves the `T` it holds.
unsafe impl<T: Send> Send for ForkSafeOnce<T> {}

impl<T> ForkSafeOnce<T> {
    pub(crate) const fn new() -> Self {
        ForkSafeOnce {
            state: AtomicU64::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// The value, if the cell is filled.
    #[cfg_attr(not(unix), allow(dead_code))] // read by fork handlers
    pub(crate) fn get(&self) -> Option<&T> {
        (self.state.load(Ordering::Acquire) == DONE).then(|| {
            // SAFETY: DONE is stored (Release) only after the value was
            // written, and the value never changes afterwards.
            unsafe { (*self.value.get()).assume_init_ref() }
        })
    }

    /// The value, running `init` first if the cell is empty, or if the
    /// thread filling it did not survive a `fork` into this process.
    pub(crate) fn get_or_init(&self, init: impl FnOnce() -> T) -> &T {
        let me = generation();
        let mut waited = 0u32;
        loop {
            match self.state.load(Ordering::Acquire) {
                // SAFETY: as in `get`.
                DONE => return unsafe { (*self.value.get()).assume_init_ref() },
                // A thread of this process is at it: wait for it.
                state if state == me => back_off(&mut waited),
                // Empty, or left half-way by a thread of an ancestor
                // process, which is not in this one.
                state => {
                    if self
                        .state
                        .compare_exchange(state, me, Ordering::Acquire, Ordering::Acquire)
                        .is_ok()
                    {
                        return self.fill(init);
                    }
                }
            }
        }
    }

    /// Runs `init` and publishes its value; the caller has claimed the
    /// state word for this process.
    fn fill(&self, init: impl FnOnce() -> T) -> &T {
        /// Empties the cell again if `init` panics, so that the next
        /// caller runs its own instead of waiting forever.
        struct Reset<'a>(&'a AtomicU64);
        impl Drop for Reset<'_> {
            fn drop(&mut self) {
                self.0.store(EMPTY, Ordering::Release);
            }
        }
        let reset = Reset(&self.state);
        let value = init();
        std::mem::forget(reset);
        // SAFETY: this thread claimed the state word, so no other thread
        // of this process writes or reads the value until DONE; what a
        // thread of an ancestor process may have written is overwritten
        // without being dropped or read.
        let value = unsafe { (*self.value.get()).write(value) };
        self.state.store(DONE, Ordering::Release);
        value
    }
}

impl<T> Drop for ForkSafeOnce<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == DONE {
            // SAFETY: DONE means the value was written, and `&mut self`
            // means no reference to it is left.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    #[test]
    fn one_thread_fills_it_and_every_thread_sees_that_value() {
        let cell = Arc::new(ForkSafeOnce::new());
        let runs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let (cell, runs) = (cell.clone(), runs.clone());
                std::thread::spawn(move || {
                    *cell.get_or_init(|| {
                        runs.fetch_add(1, Ordering::Relaxed);
                        std::thread::yield_now();
                        thread
                    })
                })
            })
            .collect();
        let seen: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(runs.load(Ordering::Relaxed), 1);
        assert!(seen.iter().all(|&value| value == seen[0]));
        assert_eq!(cell.get(), Some(&seen[0]));
    }

    #[test]
    fn a_cell_left_half_way_by_an_earlier_generation_is_filled_again() {
        let cell = ForkSafeOnce::<String>::new();
        assert_eq!(cell.get(), None);
        // What a child sees when its parent's other thread was running the
        // initialisation at the fork: the word names another generation.
        cell.state.store(generation() + 1, Ordering::Relaxed);
        assert_eq!(cell.get(), None);
        assert_eq!(cell.get_or_init(|| "mine".to_string()), "mine");
        assert_eq!(cell.get_or_init(|| "later".to_string()), "mine");
    }

    /// A fork while another thread runs the initialisation: the child's
    /// copy of the cell is "being filled" by a thread the child lacks.
    /// With `std::sync::OnceLock` in its place the child waits forever
    /// (the watchdog below kills it and the test fails).
    #[test]
    #[cfg(unix)]
    #[cfg_attr(miri, ignore)] // fork
    fn a_child_forked_during_the_initialisation_fills_its_own_copy() {
        use std::sync::atomic::AtomicBool;
        use std::time::{Duration, Instant};

        static CELL: ForkSafeOnce<u64> = ForkSafeOnce::new();
        static STARTED: AtomicBool = AtomicBool::new(false);
        static RELEASE: AtomicBool = AtomicBool::new(false);
        let filler = std::thread::spawn(|| {
            *CELL.get_or_init(|| {
                STARTED.store(true, Ordering::Release);
                while !RELEASE.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                7
            })
        });
        while !STARTED.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        // SAFETY: the child only reads and fills the cell (no allocation)
        // and leaves with `_exit`, running nothing of the parent's.
        let child = unsafe { libc::fork() };
        if child == 0 {
            let value = *CELL.get_or_init(|| 42);
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(if value == 42 { 0 } else { 1 }) };
        }
        assert!(child > 0, "fork failed");
        RELEASE.store(true, Ordering::Release);
        assert_eq!(filler.join().unwrap(), 7, "the parent keeps its own value");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut status = 0;
        loop {
            // SAFETY: waits for our own child, writing into a local.
            let done = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if done == child {
                break;
            }
            if Instant::now() > deadline {
                // SAFETY: kills and reaps our own child.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, &mut status, 0);
                }
                panic!("the child waited forever for a thread it does not have");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child got another value (status {status})"
        );
    }

    #[test]
    fn a_panicking_initialisation_leaves_it_empty() {
        let cell = ForkSafeOnce::<u32>::new();
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cell.get_or_init(|| panic!("no value"));
        }));
        assert!(caught.is_err());
        assert_eq!(cell.get(), None);
        assert_eq!(*cell.get_or_init(|| 3), 3);
    }
}
