//! Fork safety: a child forked while another thread held one of the hot
//! path's spin locks would inherit that lock held by a thread that does not
//! exist in the child, and its first allocation or snapshot would spin
//! forever.
//!
//! `pthread_atfork` handlers close that window. Before the fork, the forking
//! thread takes every hot-path lock (so no other thread is inside a
//! critical section when the address space is copied); afterwards the
//! parent releases them and the child, whose copies are all held by the
//! forking thread, releases its own. The locks are nested in two places: a
//! table growing under its owner's lock takes the table memory arena's
//! lock (`table_memory.rs`), which is therefore taken last; and gathering
//! full mode's headroom (`headroom.rs`) takes the fold lock under the
//! headroom's, which is therefore taken just before it. So taking them all
//! in one fixed order cannot deadlock with any other holder: each holder
//! releases its lock after a few probes, a table resize, or a pass over
//! the threads' slots.
//!
//! The handlers are registered once, before `main`, from an `.init_array`
//! constructor: registration itself may allocate (glibc keeps handlers in a
//! malloc'd array), so it must not happen inside the allocator. glibc runs
//! prepare handlers before it takes malloc's own locks, so a lock holder
//! that is growing a table (a system call) can always finish.
//!
//! Covered: the live table's shards, the stack index's shards, the flag
//! held while a peak breakdown is copied, full mode's headroom lock, the
//! lock that folds an exiting thread's totals, and the table memory arena.
//! Any lock added to the hot path must be added to `lock_all` and
//! `unlock_all` below.
//!
//! The cold path's locks are not taken here: a dump may hold its lock for
//! seconds, and `fork` must not wait for it. Instead the child handler
//! advances [`generation`], and
//! [`ForkSafeMutex`](crate::fork_safe::ForkSafeMutex) treats a lock
//! taken in an earlier generation as held by a thread that did not survive
//! the fork, and takes it over. A cold-path lock that a child can reach
//! (the dump lock in `live_dump` is one) must be a `ForkSafeMutex`, or be
//! taken and released around the fork like the ones above.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{counters, headroom, live, stacks, table_memory, thread_life, thread_totals};

/// Set once the handlers are registered, so that calling `register` again
/// (it is idempotent) never installs them twice.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// Which process image this is in a line of forks: 1 in the process that
/// started, one more in each child than in its parent (the child handler
/// adds one). Never 0, so that 0 can mean "nobody" in a lock word.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// This process's fork generation (see [`GENERATION`]). Every thread of a
/// process sees the same value; a value read before a fork is never the
/// child's. Without the handlers (registration failed, or a raw `clone`
/// system call that runs none) the child keeps its parent's value.
pub(crate) fn generation() -> u64 {
    // Relaxed: the value only changes in the child handler, while the
    // child has one thread, before any code of the child's can read it.
    GENERATION.load(Ordering::Relaxed)
}

/// Registers the fork handlers, once per process. Cold path only.
pub(crate) fn register() {
    if REGISTERED.swap(true, Ordering::AcqRel) {
        return;
    }
    // SAFETY: the three handlers are `extern "C"` functions with no
    // arguments that never unwind, as `pthread_atfork` requires.
    let status = unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
    if status != 0 {
        // Out of memory for the handler list: fork stays as unsafe as it
        // is without the tracker's locks in mind, but nothing else breaks.
        REGISTERED.store(false, Ordering::Release);
    }
}

fn lock_all() {
    counters::lock_breakdown_for_fork();
    // Before the fold lock: gathering full mode's headroom takes both.
    headroom::lock_for_fork();
    thread_totals::lock_for_fork();
    live::lock_all_for_fork();
    stacks::lock_all_for_fork();
    // Last: it is taken inside the table locks above (a table resizes
    // under its owner's lock).
    table_memory::lock_for_fork();
}

/// # Safety
/// Only after `lock_all`, by the thread that called it (or, in the child,
/// its copy): every lock is held by this thread and no guard exists.
unsafe fn unlock_all() {
    // SAFETY: the caller's contract.
    unsafe {
        table_memory::unlock_after_fork();
        stacks::unlock_all_after_fork();
        live::unlock_all_after_fork();
        thread_totals::unlock_after_fork();
        headroom::unlock_after_fork();
    }
    counters::unlock_breakdown_after_fork();
}

extern "C" fn prepare() {
    lock_all();
}

extern "C" fn parent() {
    // SAFETY: `prepare` ran on this thread just before the fork and took
    // every lock.
    unsafe { unlock_all() }
}

extern "C" fn child() {
    GENERATION.fetch_add(1, Ordering::Relaxed);
    // Before the locks open: the lost threads' totals move to the retired
    // figures while nothing else can sum them.
    // SAFETY: the child's fork handler, first thing, holding every lock
    // (the fold lock among them) since `prepare`.
    let after = unsafe { thread_totals::fold_lost_threads_after_fork() };
    counters::COUNTERS.rebuild_after_fork(after);
    // SAFETY: the child has only the forking thread, which took every lock
    // in `prepare`; the copies are held by it and by no one else.
    unsafe { unlock_all() }
    // The blocks the other threads held back from the live table are the
    // child's too; their slots' owners are not.
    live::adopt_held_after_fork(thread_life::count_held_move);
}

/// Has the platform's loader call `$function` (an `extern "C" fn()`)
/// before `main`, while the process has one thread, through its
/// constructor section; nothing where the platform has none. For fork
/// handlers, which must be registered before any thread can hold the
/// locks they take.
macro_rules! run_before_main {
    ($function:path) => {
        #[cfg(any(
            target_os = "linux",
            target_os = "android",
            target_os = "freebsd",
            target_os = "netbsd",
            target_os = "openbsd",
            target_os = "dragonfly",
            target_os = "illumos"
        ))]
        #[used]
        #[link_section = ".init_array"]
        static RUN_BEFORE_MAIN: extern "C" fn() = $function;

        #[cfg(any(target_os = "macos", target_os = "ios"))]
        #[used]
        #[link_section = "__DATA,__mod_init_func"]
        static RUN_BEFORE_MAIN: extern "C" fn() = $function;
    };
}
pub(crate) use run_before_main;

// Every fork of a process that links the tracker is covered, even if it
// never takes a snapshot.
run_before_main!(register_before_main);

#[allow(dead_code)] // unused on targets without a constructor section
extern "C" fn register_before_main() {
    register();
}
