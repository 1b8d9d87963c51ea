//! Where the calling thread's stack begins and ends, for the walkers: the
//! frame-pointer and CFI walks read only between the capturing frame and
//! the stack's top, and the CFI walk, which needs tens of KiB of stack
//! itself, runs only where that much is left below the capturing frame.
//!
//! Linux with glibc. Looked up once per thread, without I/O. The bottom
//! (the room below a frame) is the CFI walker's alone, so it is compiled
//! only where that walker is.

use std::cell::Cell;

struct Bounds {
    /// One past the highest address of this thread's stack; 0 until
    /// looked up, 1 if it could not be.
    top: Cell<usize>,
    /// The lowest usable address of this thread's stack; 0 until looked
    /// up, `usize::MAX` if it could not be.
    #[cfg(cfi_walk)]
    bottom: Cell<usize>,
}

thread_local! {
    static BOUNDS: Bounds = const {
        Bounds {
            top: Cell::new(0),
            #[cfg(cfi_walk)]
            bottom: Cell::new(0),
        }
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
/// Every capture asks: the looked-up case stays inline.
#[inline]
pub(super) fn top() -> Option<usize> {
    let top = BOUNDS
        .try_with(|bounds| match bounds.top.get() {
            0 => look_up_top(bounds),
            top => top,
        })
        .ok()?;
    (top > 1).then_some(top)
}

#[cold]
#[inline(never)]
fn look_up_top(bounds: &Bounds) -> usize {
    bounds.top.set(find_stack_top().unwrap_or(1));
    bounds.top.get()
}

/// True when at least `needed` bytes of this thread's stack lie below the
/// caller's frame. The lowest usable address is looked up once per thread
/// (see `find_stack_bottom`); a thread whose stack cannot be measured has
/// no room.
#[cfg(cfi_walk)]
#[inline]
pub(super) fn has_room(needed: usize) -> bool {
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize;
    BOUNDS
        .try_with(|bounds| {
            if bounds.bottom.get() == 0 {
                bounds.bottom.set(find_stack_bottom().unwrap_or(usize::MAX));
            }
            here.checked_sub(bounds.bottom.get())
                .is_some_and(|room| room >= needed)
        })
        .unwrap_or(false)
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
    stack_top_below_thread_pointer().or_else(|| stack_from_attributes().map(|stack| stack.end))
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

/// The thread's stack as its attributes report it, lowest address to one
/// past the highest: the fallback of both lookups (a thread not made by
/// glibc's `pthread_create`; a system call refused). glibc allocates a
/// little here; the caller is busy, so that passes untracked.
fn stack_from_attributes() -> Option<std::ops::Range<usize>> {
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
        (status == 0 && !address.is_null())
            .then(|| address as usize..(address as usize).saturating_add(size))
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

/// The lowest address known to be usable stack below the caller, or a
/// bound above it: enough to tell whether a walker has room.
///
/// The main thread's stack grows down from `__libc_stack_end` as far as
/// its resource limit allows (8 MiB unless set; an unlimited stack is taken
/// as 8 MiB, room enough for any walker). Every other thread's is probed
/// (see [`probe_room`]): glibc's way to ask, `pthread_getattr_np`,
/// allocates and frees a buffer through glibc's own `malloc`, and that
/// stray block in the middle of the program's heap made glibc's allocator
/// 4% slower for the rest of the `json` benchmark. It stays the fallback
/// where the probe's system call is not allowed.
#[cfg(cfi_walk)]
fn find_stack_bottom() -> Option<usize> {
    // SAFETY: plain system calls and a read of a glibc variable.
    unsafe {
        if libc::getpid() == libc::gettid() {
            let end = __libc_stack_end as usize;
            let mut limit = std::mem::MaybeUninit::<libc::rlimit>::uninit();
            let size = if libc::getrlimit(libc::RLIMIT_STACK, limit.as_mut_ptr()) == 0 {
                let limit = limit.assume_init().rlim_cur;
                if limit == libc::RLIM_INFINITY {
                    8 << 20
                } else {
                    usize::try_from(limit).unwrap_or(8 << 20)
                }
            } else {
                8 << 20
            };
            return (end != 0).then(|| end.saturating_sub(size));
        }
    }
    match probe_room() {
        Probe::Room(bottom) => Some(bottom),
        Probe::None => None,
        Probe::NotAllowed => stack_from_attributes().map(|stack| stack.start),
    }
}

/// What probing the stack below the caller found.
#[cfg(cfi_walk)]
enum Probe {
    /// Every page from this address up to the caller's frame is readable.
    Room(usize),
    /// Not even the smallest probe's pages are.
    None,
    /// The system call is refused here (a seccomp filter, an old kernel).
    NotAllowed,
}

/// How far below the caller the probe looks: the walkers ask for up to
/// 256 KiB, and a thread's work goes deeper than the frame of its first
/// allocation, where this runs. A capture deeper than this finds no room
/// and uses the platform unwinder.
#[cfg(cfi_walk)]
const PROBE_LIMIT: usize = 1 << 20;

/// Probes how far below the caller the thread's stack reaches, up to
/// [`PROBE_LIMIT`]: reads one byte of every page, going down, with
/// `process_vm_readv` on this process, which stops at the first page it
/// cannot read (the guard page below a thread's stack, or anything not
/// mapped). The stack is one mapping above its guard, so pages read without
/// a gap are all stack. Reading an untouched stack page maps the shared
/// zero page: no memory is used. At most 4 system calls, once per thread.
#[cfg(cfi_walk)]
fn probe_room() -> Probe {
    const BATCH: usize = 64;
    let marker = 0u8;
    let here = std::ptr::addr_of!(marker) as usize & !(PAGE - 1);
    let mut bytes = [0u8; BATCH];
    // The lowest address read so far; everything from it up to `here` is
    // readable.
    let mut low = here;
    while here - low < PROBE_LIMIT {
        let count = BATCH.min((low / PAGE).saturating_sub(1));
        if count == 0 {
            break;
        }
        // Pages `low - PAGE`, `low - 2 * PAGE`, ...: going down, so that a
        // partial read still leaves one unbroken readable range.
        let remote: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
            iov_base: low.wrapping_sub((i + 1) * PAGE) as *mut libc::c_void,
            iov_len: 1,
        });
        let local = libc::iovec {
            iov_base: bytes.as_mut_ptr().cast(),
            iov_len: count,
        };
        // SAFETY: reads from this process into `bytes`, which has room for
        // the `count` bytes asked for; the kernel checks the remote
        // addresses and reports how many it could read, in order.
        let read = unsafe {
            libc::process_vm_readv(libc::getpid(), &local, 1, remote.as_ptr(), count as u64, 0)
        };
        if read < 0 {
            let refused = matches!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM | libc::ENOSYS)
            );
            if refused && low == here {
                return Probe::NotAllowed;
            }
            break;
        }
        low -= read as usize * PAGE;
        if (read as usize) < count {
            break;
        }
    }
    if low == here {
        Probe::None
    } else {
        Probe::Room(low)
    }
}

/// Page size for the probe; a larger real page size only makes the probe
/// read more than one byte per page.
#[cfg(cfi_walk)]
const PAGE: usize = 4096;

#[cfg(test)]
mod tests {
    use super::*;

    // A spawned thread's bound from the thread pointer lies above the
    // current frame and within the stack block glibc reports: the walk
    // reads only its own thread's mapped stack, and finds all of it.
    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_threads_bound_lies_within_its_stack_block() {
        let (bound, exact) = std::thread::spawn(|| {
            (
                stack_top_below_thread_pointer(),
                stack_from_attributes().map(|stack| stack.end),
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

    // A spawned thread with a stack of at least 512 KiB (glibc may hand it
    // a larger cached one): the room below a frame is found, and it is not
    // unbounded.
    #[test]
    #[cfg_attr(miri, ignore)]
    #[cfg(cfi_walk)]
    fn a_threads_room_is_measured_within_its_stack() {
        let (some, half, unbounded) = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| (has_room(1024), has_room(256 * 1024), has_room(1 << 40)))
            .unwrap()
            .join()
            .unwrap();
        assert!(some, "a fresh thread has 1 KiB to spare");
        assert!(half, "and half its stack");
        assert!(!unbounded, "but not a terabyte");
    }
}
