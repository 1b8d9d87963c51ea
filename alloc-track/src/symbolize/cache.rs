//! The symbol cache: the frames of every return address resolved so far,
//! shared by every stack, snapshot and dump of the process, so that each
//! distinct address is resolved once.
//!
//! Two things make it more than a map.
//!
//! **Objects come and go.** The cache is kept per *generation* of the list
//! of loaded objects: when a library is loaded or unloaded
//! ([`objects::stamp`] changes) the next resolution starts a new, empty
//! generation, since an address may now hold other code. `backtrace` never
//! re-reads its list of objects, so an address in an object it does not
//! know (loaded after its first resolution, or reloaded elsewhere) is not
//! asked of it: it is named from the dynamic loader's exported symbols
//! ([`objects::exported_symbol`]), without file and line.
//!
//! **`fork`.** A child inherits every lock in the state the parent's
//! threads left it. The cache's locks live in a per-process instance
//! stamped with its pid: a child never takes its parent's locks, it builds
//! its own instance and copies the parent's entries only if it can take
//! their lock without waiting. `backtrace::resolve` takes `backtrace`'s
//! own global lock and mutates its own caches under it; a child forked
//! while a thread of the parent was inside it can use neither (the lock is
//! held forever, the caches may be half-written; the crate's
//! `resolve_unsynchronized` avoids the lock but not the half-written
//! caches). Such a child names new addresses from exported symbols only,
//! and says so once on standard error.

use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use super::objects::{self, Object, ObjectsStamp};
use crate::dump::Frame;

/// The resolved addresses of one generation of the object list.
pub(crate) struct Generation {
    stamp: ObjectsStamp,
    frames: Mutex<HashMap<usize, Arc<[Frame]>>>,
}

/// The cache of one process.
struct Symbols {
    pid: u32,
    /// False in a child forked while a thread of an ancestor was inside
    /// `backtrace::resolve`.
    backtrace_usable: bool,
    /// How many threads are inside `backtrace::resolve` now.
    in_backtrace: AtomicUsize,
    warned: AtomicBool,
    current: Mutex<Arc<Generation>>,
    /// The objects `backtrace` knows: the list at this process's (or its
    /// ancestor's) first call into it. `None` until then.
    backtrace_objects: Mutex<Option<Arc<HashSet<Object>>>>,
}

/// This process's instance. Instances are never freed: a child leaves its
/// parent's copy alone, and a reader may still hold a reference.
static SYMBOLS: AtomicPtr<Symbols> = AtomicPtr::new(ptr::null_mut());

fn symbols() -> &'static Symbols {
    let pid = std::process::id();
    loop {
        let installed = SYMBOLS.load(Ordering::Acquire);
        // SAFETY: a non-null pointer in `SYMBOLS` came from `Box::into_raw`
        // below and is never freed.
        let parent = unsafe { installed.as_ref() };
        if let Some(symbols) = parent.filter(|s| s.pid == pid) {
            return symbols;
        }
        let fresh = Box::into_raw(Box::new(Symbols::new(pid, parent)));
        match SYMBOLS.compare_exchange(installed, fresh, Ordering::AcqRel, Ordering::Acquire) {
            // SAFETY: just installed; never freed from now on.
            Ok(_) => return unsafe { &*fresh },
            // Another thread of this process installed one first.
            // SAFETY: `fresh` was never shared.
            Err(_) => drop(unsafe { Box::from_raw(fresh) }),
        }
    }
}

impl Symbols {
    /// A new instance for process `pid`; `parent` is the instance copied
    /// at `fork` (another pid), if any.
    fn new(pid: u32, parent: Option<&Symbols>) -> Symbols {
        let stamp = objects::stamp();
        let mut frames = HashMap::new();
        let mut backtrace_objects = None;
        let mut backtrace_usable = true;
        if let Some(parent) = parent {
            backtrace_usable =
                parent.backtrace_usable && parent.in_backtrace.load(Ordering::Acquire) == 0;
            // Only what can be had without waiting: a lock held at the
            // fork stays held in this process forever.
            if let Some(current) = parent.current.try_lock().map(|c| c.clone()) {
                if current.stamp == stamp {
                    if let Some(parent_frames) = current.frames.try_lock() {
                        frames = parent_frames.clone();
                    }
                }
            }
            match parent.backtrace_objects.try_lock() {
                Some(known) => backtrace_objects = known.clone(),
                // A thread of the parent was reading or building the list,
                // maybe on its way into `backtrace`: assume the worst.
                None => backtrace_usable = false,
            }
        }
        Symbols {
            pid,
            backtrace_usable,
            in_backtrace: AtomicUsize::new(0),
            warned: AtomicBool::new(false),
            current: Mutex::new(Arc::new(Generation {
                stamp,
                frames: Mutex::new(frames),
            })),
            backtrace_objects: Mutex::new(backtrace_objects),
        }
    }

    /// Whether `backtrace` can be asked about `address`: it is usable in
    /// this process and knows the object that holds the address.
    fn backtrace_knows(&self, address: usize) -> bool {
        if !self.backtrace_usable {
            if !self.warned.swap(true, Ordering::Relaxed) {
                warn_raw(
                    "alloc-track: forked while another thread was resolving symbols; \
                     addresses not resolved before the fork are named from exported symbols only\n",
                );
            }
            return false;
        }
        let known = self
            .backtrace_objects
            .lock()
            .get_or_insert_with(|| Arc::new(objects::loaded().into_iter().collect()))
            .clone();
        // No list (a platform without one) or an address in no object:
        // `backtrace` is as good a judge as any.
        known.is_empty() || objects::containing(address).map_or(true, |o| known.contains(&o))
    }

    fn resolve_uncached(&self, address: usize) -> Arc<[Frame]> {
        let mut frames = Vec::new();
        // A return address points after the call, possibly at the next
        // line's code; the call itself is one byte before.
        let call = address.saturating_sub(1);
        if self.backtrace_knows(call) {
            self.in_backtrace.fetch_add(1, Ordering::AcqRel);
            // `resolve` looks up `address - 1` itself.
            backtrace::resolve(address as *mut c_void, |symbol| {
                let function = match symbol.name() {
                    // `{:#}` drops the `::h0123abcd` hash suffix.
                    Some(name) => format!("{name:#}"),
                    None => return,
                };
                frames.push(Frame {
                    function,
                    file: symbol.filename().map(|p| p.display().to_string()),
                    line: symbol.lineno(),
                    column: symbol.colno(),
                });
            });
            self.in_backtrace.fetch_sub(1, Ordering::AcqRel);
        }
        if frames.is_empty() {
            if let Some(function) = objects::exported_symbol(call) {
                frames.push(Frame {
                    function,
                    ..Frame::default()
                });
            }
        }
        if frames.is_empty() {
            // No symbol (a stripped library, JIT code): name it by address,
            // as other profilers do, so the stack keeps its shape.
            frames.push(Frame {
                function: format!("{address:#x}"),
                ..Frame::default()
            });
        }
        frames.into()
    }
}

/// The generation for the object list as it is now: a new, empty one if
/// an object was loaded or unloaded since the last.
pub(crate) fn current_generation() -> Arc<Generation> {
    let symbols = symbols();
    let stamp = objects::stamp();
    let mut current = symbols.current.lock();
    if current.stamp != stamp {
        *current = Arc::new(Generation {
            stamp,
            frames: Mutex::new(HashMap::new()),
        });
    }
    current.clone()
}

impl Generation {
    /// The frames at one return address, innermost (inlined) first.
    pub(crate) fn resolve(&self, address: usize) -> Arc<[Frame]> {
        if let Some(frames) = self.frames.lock().get(&address) {
            return frames.clone();
        }
        // Resolved without the cache's lock held: it can take milliseconds.
        let frames = symbols().resolve_uncached(address);
        self.frames.lock().insert(address, frames.clone());
        frames
    }
}

/// One line on standard error without `std`'s stderr lock, which a thread
/// of the parent may have held at the fork.
fn warn_raw(message: &str) {
    #[cfg(unix)]
    // SAFETY: writes `message.len()` bytes from a live buffer to fd 2.
    unsafe {
        libc::write(2, message.as_ptr() as *const c_void, message.len());
    }
    #[cfg(not(unix))]
    {
        use std::io::Write;
        let _ = std::io::stderr().write_all(message.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(function: &str) -> Arc<[Frame]> {
        vec![Frame {
            function: function.into(),
            ..Frame::default()
        }]
        .into()
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads the loaded objects through the C library")]
    fn a_child_instance_never_waits_for_its_parents_locks() {
        let parent = Symbols::new(1, None);
        let generation = parent.current.lock().clone();
        generation.frames.lock().insert(0x10, frames("f"));

        // The parent's locks free at the fork: the child keeps its names
        // and may use `backtrace`.
        let child = Symbols::new(2, Some(&parent));
        assert!(child.backtrace_usable);
        assert_eq!(child.current.lock().frames.lock().len(), 1);

        // A lock held at the fork (by a thread the child does not have):
        // the child starts empty instead of waiting.
        {
            let _held = generation.frames.lock();
            let child = Symbols::new(2, Some(&parent));
            assert!(child.current.lock().frames.lock().is_empty());
            assert!(child.backtrace_usable);
        }
        {
            let _held = parent.backtrace_objects.lock();
            assert!(!Symbols::new(2, Some(&parent)).backtrace_usable);
        }

        // A thread inside `backtrace` at the fork: never again in the
        // child, nor in its own children.
        parent.in_backtrace.fetch_add(1, Ordering::AcqRel);
        let child = Symbols::new(2, Some(&parent));
        assert!(!child.backtrace_usable);
        parent.in_backtrace.fetch_sub(1, Ordering::AcqRel);
        assert!(!Symbols::new(3, Some(&child)).backtrace_usable);
        // It still names every address, by address at worst.
        let address = a_child_instance_never_waits_for_its_parents_locks as *const () as usize + 1;
        assert!(!child.resolve_uncached(address).is_empty());
    }
}
