//! jemalloc's own figures, when the tracker wraps
//! `tikv_jemallocator::Jemalloc` and the crate's `jemalloc` feature is on.
//!
//! The mallctls read the jemalloc that `tikv-jemalloc-sys` links: Cargo
//! allows one version of that crate in a build (`links = "jemalloc"`), so
//! it is the one `tikv_jemallocator` allocates from. Cold path only: every
//! call goes through jemalloc's control interface, which takes locks and
//! may allocate inside jemalloc (never through the Rust global allocator).

use crate::dump::{AllocatorStats, JemallocStats};

/// The inner allocator's type name as `Tracker::new` records it.
const JEMALLOCATOR_TYPE_NAME: &str = "tikv_jemallocator::Jemalloc";

/// Whether the installed tracker wraps `tikv_jemallocator::Jemalloc`.
pub(super) fn is_inner() -> bool {
    crate::hot::view::config::inner_allocator_type_name() == Some(JEMALLOCATOR_TYPE_NAME)
}

/// jemalloc's statistics now, `None` if the tracker wraps another
/// allocator or a mallctl fails (jemalloc built without statistics).
pub(super) fn stats() -> Option<AllocatorStats> {
    if !is_inner() {
        return None;
    }
    read().map(AllocatorStats::Jemalloc)
}

fn read() -> Option<JemallocStats> {
    use tikv_jemalloc_ctl::{arenas, epoch, stats};
    // Small blocks move between the arenas and each thread's cache in
    // batches, and the statistics count them as they move: this thread's
    // cache is flushed first, so that at least its own figures are exact
    // (other threads' caches hold at most a few hundred KiB each).
    // SAFETY: a NUL-terminated mallctl name; `thread.tcache.flush` takes
    // and returns no value, so every pointer is null and the length 0.
    let _ = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"thread.tcache.flush".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    // The statistics are a copy jemalloc refreshes when the epoch advances.
    epoch::advance().ok()?;
    let bytes = |value: usize| value as u64;
    Some(JemallocStats {
        allocated_bytes: bytes(stats::allocated::read().ok()?),
        active_bytes: bytes(stats::active::read().ok()?),
        metadata_bytes: bytes(stats::metadata::read().ok()?),
        resident_bytes: bytes(stats::resident::read().ok()?),
        mapped_bytes: bytes(stats::mapped::read().ok()?),
        retained_bytes: bytes(stats::retained::read().ok()?),
        arenas: u64::from(arenas::narenas::read().ok()?),
    })
}

/// What purging did: jemalloc's resident bytes before and after.
pub(super) struct Purged {
    pub(super) free_bytes_before: Option<u64>,
    pub(super) returned_memory: bool,
}

/// `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena returns its unused
/// dirty (and muzzy) pages to the OS now instead of after their decay
/// time. Free regions inside pages that still hold live blocks stay.
pub(super) fn purge() -> Option<Purged> {
    if !is_inner() {
        return None;
    }
    let before = read();
    // SAFETY: a NUL-terminated mallctl name; `arena.<i>.purge` takes and
    // returns no value, so every pointer is null and the length 0. 4096 is
    // MALLCTL_ARENAS_ALL, "every arena".
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    let after = read();
    let returned_memory = status == 0
        && matches!((before, after), (Some(b), Some(a)) if a.resident_bytes < b.resident_bytes);
    Some(Purged {
        free_bytes_before: before.map(|b| b.free_bytes()),
        returned_memory,
    })
}
