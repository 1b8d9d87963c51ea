//! The inner allocator's own view of its memory, beside the live heap and
//! the OS's RSS, and [`trim`], which asks it to give free memory back.
//!
//! Known for glibc's malloc (the installed [`Tracker`](crate::Tracker)
//! wraps `System` on linux-gnu and `malloc` is glibc's own, no `LD_PRELOAD`
//! allocator interposed) and, with the crate's `jemalloc` feature, for
//! jemalloc (the tracker wraps `tikv_jemallocator::Jemalloc`). Which one is
//! told by the inner allocator's type name, which `Tracker::new` records.
//! Anything else is "not known" (`None`): mimalloc's statistics are not
//! read (yet).

use crate::dump::AllocatorStats;
use crate::hot::view::thread::untracked;

/// The reader of glibc's `malloc_info` report. Pure text parsing: compiled
/// for the unit tests on every platform, so that a change to it is checked
/// on any machine, and into the library only where glibc's figures are read.
#[cfg(any(test, all(target_os = "linux", target_env = "gnu")))]
mod malloc_info;

#[cfg(feature = "jemalloc")]
mod jemalloc;

/// Without the `jemalloc` feature jemalloc's figures are not read.
#[cfg(not(feature = "jemalloc"))]
mod jemalloc {
    use crate::dump::AllocatorStats;

    pub(super) struct Purged {
        pub(super) free_bytes_before: Option<u64>,
        pub(super) returned_memory: bool,
    }

    pub(super) fn is_inner() -> bool {
        false
    }

    pub(super) fn stats() -> Option<AllocatorStats> {
        None
    }

    pub(super) fn purge() -> Option<Purged> {
        None
    }
}

/// What [`trim`] did: the RSS before and after `malloc_trim(0)` (glibc) or
/// `arena.<all>.purge` (jemalloc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trimmed {
    /// The RSS just before, when the OS tells it.
    pub rss_before: Option<u64>,
    /// The RSS just after.
    pub rss_after: Option<u64>,
    /// The allocator's free bytes before, when known
    /// ([`AllocatorStats::free_bytes`]): what trimming could at best have
    /// returned.
    pub free_bytes_before: Option<u64>,
    /// Whether the allocator says it returned any memory: glibc's
    /// `malloc_trim` result; jemalloc's `stats.resident` dropping.
    pub returned_memory: bool,
}

impl Trimmed {
    /// By how much the RSS dropped, when both figures are known (0 if it
    /// did not drop: other threads may have grown it meanwhile).
    pub fn rss_dropped(&self) -> Option<u64> {
        Some(self.rss_before?.saturating_sub(self.rss_after?))
    }
}

/// Asks the allocator to return its free memory to the OS. glibc's
/// `malloc_trim(0)` returns every whole page inside a free chunk, in every
/// arena, and the top of the main heap. jemalloc's `arena.<all>.purge`
/// (with the `jemalloc` feature) returns every arena's dirty pages now
/// rather than after their decay time (`dirty_decay_ms`, 10 s by default);
/// free regions in pages that still hold live blocks stay. The program's
/// live blocks are not touched; a later allocation that reuses a returned
/// page takes a page fault to get it back.
///
/// Returns what the RSS did, or `None` when the inner allocator is neither
/// (nothing is done then). It walks every arena under its locks: call it
/// between tasks, not on a latency-critical path.
///
/// ```no_run
/// # use std::alloc::System;
/// # #[global_allocator]
/// # static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);
/// # fn main() {
/// if let Some(trimmed) = alloc_track::trim() {
///     println!("trim returned {:?} bytes of RSS", trimmed.rss_dropped());
/// }
/// # }
/// ```
pub fn trim() -> Option<Trimmed> {
    crate::is_installed();
    untracked(|| {
        if jemalloc::is_inner() {
            let rss_before = crate::os_memory::read().rss_bytes;
            let purged = jemalloc::purge()?;
            return Some(Trimmed {
                rss_before,
                rss_after: crate::os_memory::read().rss_bytes,
                free_bytes_before: purged.free_bytes_before,
                returned_memory: purged.returned_memory,
            });
        }
        let glibc = glibc::malloc()?;
        let free_bytes_before = glibc.stats().map(|s| s.free_bytes());
        let rss_before = crate::os_memory::read().rss_bytes;
        let returned_memory = glibc.trim();
        let rss_after = crate::os_memory::read().rss_bytes;
        Some(Trimmed {
            rss_before,
            rss_after,
            free_bytes_before,
            returned_memory,
        })
    })
}

/// The inner allocator's figures now, `None` where not known.
pub(crate) fn read() -> Option<AllocatorStats> {
    jemalloc::stats().or_else(|| glibc::malloc()?.stats())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::{c_char, c_int, c_void};

    use super::malloc_info::parse_malloc_info;
    use crate::dump::{AllocatorStats, GlibcStats};

    type Mallinfo2 = unsafe extern "C" fn() -> libc::mallinfo2;

    /// glibc's malloc, when it is the inner allocator.
    #[derive(Clone, Copy)]
    pub(super) struct Glibc {
        /// Looked up rather than linked: glibc before 2.33 lacks it.
        mallinfo2: Option<Mallinfo2>,
    }

    static GLIBC: crate::fork_safe::ForkSafeOnce<Option<Glibc>> =
        crate::fork_safe::ForkSafeOnce::new();

    /// glibc's malloc if the installed tracker wraps `System` and `malloc`
    /// is glibc's own; `None` when unsure.
    pub(super) fn malloc() -> Option<Glibc> {
        let inner = crate::hot::view::config::inner_allocator_type_name()?;
        if inner != std::any::type_name::<std::alloc::System>() {
            return None;
        }
        *GLIBC.get_or_init(detect)
    }

    fn detect() -> Option<Glibc> {
        // SAFETY: `dlopen` with RTLD_NOLOAD only returns a handle to
        // libc.so.6 if it is already loaded (it is: this process links it);
        // `dlsym` is given that handle or RTLD_DEFAULT and NUL-terminated
        // names; the handle is closed once, after its last use.
        unsafe {
            let libc_handle =
                libc::dlopen(c"libc.so.6".as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
            if libc_handle.is_null() {
                return None;
            }
            let glibc_malloc = libc::dlsym(libc_handle, c"malloc".as_ptr());
            let mallinfo2 = libc::dlsym(libc_handle, c"mallinfo2".as_ptr());
            libc::dlclose(libc_handle);
            // An allocator preloaded or linked in ahead of glibc (jemalloc,
            // tcmalloc through LD_PRELOAD) defines `malloc` first: then
            // glibc's figures describe an allocator nobody uses.
            let used_malloc = libc::dlsym(libc::RTLD_DEFAULT, c"malloc".as_ptr());
            if glibc_malloc.is_null() || glibc_malloc != used_malloc {
                return None;
            }
            let mallinfo2 = (!mallinfo2.is_null()).then(|| {
                // SAFETY: glibc's `mallinfo2` has this signature.
                std::mem::transmute::<*mut c_void, Mallinfo2>(mallinfo2)
            });
            Some(Glibc { mallinfo2 })
        }
    }

    impl Glibc {
        pub(super) fn stats(self) -> Option<AllocatorStats> {
            // SAFETY: a glibc function without arguments, callable at any
            // time; it takes each arena's lock in turn.
            let info = unsafe { (self.mallinfo2?)() };
            let page = page_size();
            let histogram = malloc_info().map(|xml| parse_malloc_info(&xml, page));
            let releasable_top_bytes = info.keepcost as u64;
            Some(AllocatorStats::Glibc(GlibcStats {
                arena_bytes: info.arena as u64,
                mmapped_bytes: info.hblkhd as u64,
                in_use_bytes: info.uordblks as u64,
                free_bytes: info.fordblks as u64,
                fastbin_free_bytes: info.fsmblks as u64,
                releasable_top_bytes,
                free_chunks: info.ordblks as u64,
                arenas: histogram.as_ref().map(|h| h.arenas),
                // The top of the main heap goes back but for a page.
                trimmable_estimate_bytes: histogram.map(|h| {
                    let top = releasable_top_bytes.saturating_sub(page) / page * page;
                    (h.whole_free_pages_bytes + top).min(info.fordblks as u64)
                }),
            }))
        }

        /// `malloc_trim(0)`: true if glibc returned any memory.
        pub(super) fn trim(self) -> bool {
            // SAFETY: callable at any time; it takes each arena's lock.
            unsafe { libc::malloc_trim(0) == 1 }
        }
    }

    fn page_size() -> u64 {
        // SAFETY: `sysconf` has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
    }

    /// `malloc_info(0, …)`'s XML, written into a memory stream. The stream's
    /// buffer comes from glibc's malloc directly, never through the Rust
    /// global allocator.
    fn malloc_info() -> Option<String> {
        let mut buffer: *mut c_char = std::ptr::null_mut();
        let mut length: usize = 0;
        // SAFETY: `buffer` and `length` outlive the stream, which is closed
        // before they are read; after `fclose` the buffer holds `length`
        // bytes and belongs to us, freed with `free` once copied.
        unsafe {
            let stream = libc::open_memstream(&mut buffer, &mut length);
            if stream.is_null() {
                return None;
            }
            let status: c_int = libc::malloc_info(0, stream);
            libc::fclose(stream);
            if buffer.is_null() {
                return None;
            }
            let text = (status == 0).then(|| {
                String::from_utf8_lossy(std::slice::from_raw_parts(buffer.cast::<u8>(), length))
                    .into_owned()
            });
            libc::free(buffer.cast());
            text
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    use super::AllocatorStats;

    #[derive(Clone, Copy)]
    pub(super) enum Glibc {}

    pub(super) fn malloc() -> Option<Glibc> {
        None
    }

    impl Glibc {
        pub(super) fn stats(self) -> Option<AllocatorStats> {
            match self {}
        }
        pub(super) fn trim(self) -> bool {
            match self {}
        }
    }
}
