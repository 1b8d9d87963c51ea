//! The inner allocator's own figures, as the dump carries them.

use serde::{Deserialize, Serialize};

/// What the inner allocator says of its own memory at the moment of the
/// snapshot. Known for glibc's malloc (the `System` allocator on
/// linux-gnu); absent from a dump, and `None` from
/// [`Snapshot::allocator`](crate::Snapshot::allocator), for any other.
///
/// The figures are glibc's `mallinfo2()`, summed over every arena. They
/// count *virtual* bytes: a free chunk counts in full whether or not its
/// pages are resident (pages `malloc_trim` returned, or the top of the heap
/// never touched, count too), so they bound the RSS they explain from
/// above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorStats {
    /// Bytes the allocator got from the system for its arenas (`arena`):
    /// `in_use_bytes + free_bytes`.
    pub arena_bytes: u64,
    /// Bytes in blocks the allocator mapped one by one (`hblkhd`), large
    /// blocks, all in use.
    pub mmapped_bytes: u64,
    /// Bytes in chunks in use in the arenas (`uordblks`), chunk headers and
    /// rounding included: the live heap plus the allocator's per-block
    /// overhead plus blocks that did not pass through the tracker.
    pub in_use_bytes: u64,
    /// Bytes in free chunks (`fordblks`), the top of each heap included:
    /// memory freed by the program and kept by the allocator.
    pub free_bytes: u64,
    /// The part of `free_bytes` in fast bins (`fsmblks`): small chunks
    /// kept for reuse, not merged with their neighbours.
    pub fastbin_free_bytes: u64,
    /// The free top of the main arena (`keepcost`), which shrinking the
    /// heap gives back first.
    pub releasable_top_bytes: u64,
    /// Number of free chunks outside the fast bins (`ordblks`).
    pub free_chunks: u64,
    /// Number of arenas (`<heap nr=…>` in `malloc_info`'s report): glibc
    /// adds arenas as threads contend, up to 8 per core by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arenas: Option<u64>,
    /// An estimate of what `malloc_trim(0)` (and `alloc_track::trim()`)
    /// could return to the system: the whole pages inside free chunks,
    /// estimated from `malloc_info`'s chunk-size histogram, plus the main
    /// arena's top. An upper bound on the RSS it would drop: pages already
    /// not resident count too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trimmable_estimate_bytes: Option<u64>,
}
