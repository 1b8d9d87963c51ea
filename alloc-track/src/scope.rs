//! Scopes: name what a thread allocates while a request, a task or a test
//! runs, to see the live heap by scope in snapshots, dumps and reports.

use std::collections::HashMap;
use std::io::Write;
use std::marker::PhantomData;

use crate::hot::view::measuring::MAX_NESTING;
use crate::hot::view::scopes::MAX_SCOPES;
use crate::hot::view::spin::SpinLock;
use crate::hot::view::thread::{self, untracked};
use crate::human::{Bytes, Count, SignedBytes, SignedCount};
use crate::measure::OpenFrame;

struct Registry {
    /// Scope names by id; id 0 is "no scope".
    names: Vec<String>,
    ids: HashMap<String, u16>,
}

/// A spin lock, not a parking one: across `fork` (below) a parking lock
/// may hand itself to a waiter that the child does not have. Scopes are
/// named rarely and the lock is held for one map probe. A plain static,
/// so that the fork handlers can always take it: a registry created
/// lazily behind a once cell was not there to be taken by a fork that
/// raced with its creation, and the child found it held.
static REGISTRY: SpinLock<Option<Registry>> = SpinLock::new(None);

/// Runs `f` on the registry, under its lock.
fn with_registry<R>(f: impl FnOnce(&mut Registry) -> R) -> R {
    #[cfg(unix)]
    fork::register();
    let mut registry = REGISTRY.lock();
    f(registry.get_or_insert_with(|| Registry {
        names: vec![String::new()],
        ids: HashMap::new(),
    }))
}

/// The registry across `fork`: a child forked while another thread held
/// its lock (registering a scope, or a dump reading names) would find it
/// held forever. Resetting it in the child is not an option, since the
/// scope ids in the live records would then name other scopes; so the
/// forking thread takes the lock before the fork and both processes
/// release it after, the way `hot/fork.rs` treats the hot path's locks.
///
/// The handlers are registered before `main`, where the platform has a
/// constructor section (else at the first use of a scope): registering
/// them at the first use raced with a fork on another thread, whose
/// handler list could miss them while the new registry's lock was held.
/// They are registered after the hot path's, so their prepare step runs
/// earlier (handlers registered later run it first) and this lock is
/// taken before the hot path's: a holder that allocates can finish.
#[cfg(unix)]
mod fork {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::REGISTRY;

    static REGISTERED: AtomicBool = AtomicBool::new(false);

    pub(super) fn register() {
        if REGISTERED.load(Ordering::Acquire) || REGISTERED.swap(true, Ordering::AcqRel) {
            return;
        }
        crate::hot::view::fork::register();
        // SAFETY: the handlers are `extern "C"` functions without arguments
        // that never unwind, as `pthread_atfork` requires. A failure (no
        // memory for the handler list) leaves fork as it was.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
    }

    extern "C" fn prepare() {
        std::mem::forget(REGISTRY.lock());
    }

    extern "C" fn release() {
        // SAFETY: `prepare` took the lock on this thread (in a child, on
        // the thread it was copied from) and forgot its guard, so it is
        // held with no guard alive.
        unsafe { REGISTRY.force_unlock() };
    }

    // Before `main`, before any other thread exists (see above).
    crate::hot::view::fork::run_before_main!(register_before_main);

    #[allow(dead_code)] // unused on targets without a constructor section
    extern "C" fn register_before_main() {
        register();
    }
}

/// The name every scope past the table's capacity shares.
const OVERFLOW_NAME: &str = "(other scopes)";

fn intern(name: &str) -> u16 {
    untracked(|| with_registry(|registry| intern_locked(registry, name)))
}

/// The id of `name`, registering it if new; the caller holds the lock.
fn intern_locked(registry: &mut Registry, name: &str) -> u16 {
    if let Some(&id) = registry.ids.get(name) {
        return id;
    }
    if registry.names.len() >= MAX_SCOPES - 1 {
        if registry.names.len() == MAX_SCOPES - 1 {
            registry.names.push(OVERFLOW_NAME.to_string());
        }
        return (MAX_SCOPES - 1) as u16;
    }
    let id = registry.names.len() as u16;
    registry.names.push(name.to_string());
    registry.ids.insert(name.to_string(), id);
    id
}

/// The name of scope `id` (empty for 0).
pub(crate) fn name(id: u16) -> String {
    with_registry(|registry| {
        registry
            .names
            .get(usize::from(id))
            .cloned()
            .unwrap_or_default()
    })
}

/// Tags every allocation the calling thread makes while the guard lives
/// with `name`; the previous scope comes back when it drops (scopes nest).
///
/// [`Snapshot::scopes`](crate::Snapshot::scopes) then shows the live heap
/// and the allocations of each scope, [`Snapshot::in_scope`](crate::Snapshot::in_scope)
/// restricts a snapshot to one, and dumps carry the breakdown for
/// `alloc-track report --scope NAME`. Up to 1,022 distinct names; later
/// ones share one "(other scopes)".
///
/// ```
/// # use std::alloc::System;
/// # #[global_allocator]
/// # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
/// # fn main() {
/// let kept = {
///     let _scope = alloc_track::scope("load config");
///     vec![0u8; 4096]
/// };
/// let snapshot = alloc_track::snapshot();
/// let config = snapshot.scopes().iter().find(|s| s.name() == "load config").unwrap();
/// assert_eq!(config.live_bytes(), 4096);
/// # drop(kept);
/// # }
/// ```
pub fn scope(name: &str) -> ScopeGuard {
    let id = intern(name);
    ScopeGuard {
        id,
        previous: thread::set_scope(id),
        _thread_bound: PhantomData,
    }
}

/// The guard of a [`scope`]. Not `Send`: the scope belongs to the thread
/// that opened it.
#[must_use = "the scope ends when the guard drops"]
pub struct ScopeGuard {
    id: u16,
    previous: u16,
    _thread_bound: PhantomData<*const ()>,
}

impl ScopeGuard {
    /// Also logs, when the scope ends, one line to standard error with what
    /// this thread allocated and kept inside it (exact, as
    /// [`measure`](fn@crate::measure) counts): per-task memory logging in a
    /// worker's loop is `let _task = alloc_track::scope("task").log();`.
    ///
    /// ```text
    /// alloc-track: scope "task": +2.0 KiB live in +1 blocks, 14.5 KiB allocated in 23 blocks, peak +8.0 KiB; RSS 48.2 MiB -> 52.1 MiB (+3.9 MiB), the live heap explains +2.0 KiB of it (0%)
    /// ```
    ///
    /// The RSS is the process's (read from `/proc/self/statm` when the
    /// scope opens and when it ends; absent where the OS does not tell it),
    /// so other threads' work shows in it too; the heap figures are the
    /// thread's own. When the RSS rose, the line says how much of the rise
    /// the thread's live heap explains: a small share points at the
    /// allocator keeping freed memory, or at memory from outside it (see
    /// [`Snapshot::memory_breakdown`](crate::Snapshot::memory_breakdown)).
    ///
    /// Every figure on the line is the thread's own flow, so it stays
    /// exact however many threads log at once (past 1,023 only retained
    /// figures, which the line does not show, become approximate: see
    /// [`measure`](fn@crate::measure)). Nested more than 32 deep with
    /// `measure` and other logged scopes, the scope is still named but not
    /// measured, and its line says so instead of panicking.
    pub fn log(self) -> LoggedScope {
        let rss_before = untracked(crate::os_memory::rss_bytes);
        LoggedScope {
            rss_before,
            frame: OpenFrame::open(),
            scope: self,
        }
    }
}

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        thread::set_scope(self.previous);
    }
}

/// A [`ScopeGuard`] that logs a line when it drops; see
/// [`ScopeGuard::log`].
#[must_use = "the scope ends (and logs) when the guard drops"]
pub struct LoggedScope {
    rss_before: Option<u64>,
    frame: Option<OpenFrame>,
    scope: ScopeGuard,
}

impl Drop for LoggedScope {
    fn drop(&mut self) {
        let line = match self.frame.take() {
            Some(frame) => {
                let diff = frame.close();
                untracked(|| {
                    let rss = rss_change(
                        self.rss_before,
                        crate::os_memory::rss_bytes(),
                        diff.live_bytes(),
                    );
                    format!(
                        "alloc-track: scope {:?}: {} live in {} blocks, {} allocated in {} blocks, peak +{}{rss}",
                        name(self.scope.id),
                        SignedBytes(diff.live_bytes()),
                        SignedCount(diff.live_blocks()),
                        Bytes(diff.total_bytes()),
                        Count(diff.total_blocks()),
                        Bytes(diff.peak_bytes().unwrap_or(0)),
                    )
                })
            }
            None => untracked(|| {
                format!(
                    "alloc-track: scope {:?}: not measured: measure, limits and scope(..).log() \
                     nest deeper than {MAX_NESTING} on this thread",
                    name(self.scope.id),
                )
            }),
        };
        untracked(|| {
            // No panic if standard error is closed (`eprintln!` would).
            let _ = writeln!(std::io::stderr(), "{line}");
        });
    }
}

/// "; RSS 48.2 MiB -> 52.1 MiB (+3.9 MiB), the live heap explains +2.0 KiB
/// of it (0%)", or nothing when the RSS is not known.
fn rss_change(before: Option<u64>, after: Option<u64>, live_change: i64) -> String {
    let (Some(before), Some(after)) = (before, after) else {
        return String::new();
    };
    let change =
        i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(i64::MAX);
    let mut text = format!(
        "; RSS {} -> {} ({})",
        Bytes(before),
        Bytes(after),
        SignedBytes(change)
    );
    if change > 0 {
        let explained = live_change.clamp(0, change);
        text.push_str(&format!(
            ", the live heap explains {} of it ({:.0}%)",
            SignedBytes(live_change),
            crate::human::percent(explained as f64, change as f64)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::rss_change;

    #[test]
    fn an_rss_rise_says_how_much_the_live_heap_explains() {
        const MIB: u64 = 1 << 20;
        assert_eq!(
            rss_change(Some(48 * MIB), Some(52 * MIB), MIB as i64),
            "; RSS 48.0 MiB -> 52.0 MiB (+4.0 MiB), the live heap explains +1.0 MiB of it (25%)"
        );
        assert_eq!(
            rss_change(Some(52 * MIB), Some(48 * MIB), -(MIB as i64)),
            "; RSS 52.0 MiB -> 48.0 MiB (-4.0 MiB)"
        );
        assert_eq!(rss_change(None, Some(MIB), 0), "");
    }
}
