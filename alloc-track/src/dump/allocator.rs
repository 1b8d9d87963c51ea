//! The inner allocator's own figures, as the dump carries them.

use serde::{Deserialize, Serialize};

/// What the inner allocator says of its own memory at the moment of the
/// snapshot: glibc's malloc (the `System` allocator on linux-gnu) or
/// jemalloc (`tikv_jemallocator::Jemalloc`, with the crate's `jemalloc`
/// feature). Absent from a dump, and `None` from
/// [`Snapshot::allocator`](crate::Snapshot::allocator), for any other.
///
/// In the dump, glibc's figures are the object as it was before jemalloc's
/// were added (no tag, so older dumps load unchanged); jemalloc's carry
/// `"kind": "jemalloc"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "AllocatorStatsJson", into = "AllocatorStatsJson")]
#[non_exhaustive]
pub enum AllocatorStats {
    /// glibc's `mallinfo2()` and `malloc_info`.
    Glibc(GlibcStats),
    /// jemalloc's `stats.*` mallctls.
    Jemalloc(JemallocStats),
}

impl AllocatorStats {
    /// The allocator's name for a report.
    pub fn name(&self) -> &'static str {
        match self {
            AllocatorStats::Glibc(_) => "glibc malloc",
            AllocatorStats::Jemalloc(_) => "jemalloc",
        }
    }

    /// Memory the allocator holds that no block in use occupies: glibc's
    /// free chunks (`fordblks`, virtual bytes); jemalloc's resident pages
    /// beyond its allocated bytes and metadata (free regions in active
    /// pages, dirty pages not yet purged).
    pub fn free_bytes(&self) -> u64 {
        match self {
            AllocatorStats::Glibc(glibc) => glibc.free_bytes,
            AllocatorStats::Jemalloc(jemalloc) => jemalloc.free_bytes(),
        }
    }

    /// glibc's figures, if these are glibc's.
    pub fn glibc(&self) -> Option<&GlibcStats> {
        match self {
            AllocatorStats::Glibc(glibc) => Some(glibc),
            AllocatorStats::Jemalloc(_) => None,
        }
    }

    /// jemalloc's figures, if these are jemalloc's.
    pub fn jemalloc(&self) -> Option<&JemallocStats> {
        match self {
            AllocatorStats::Jemalloc(jemalloc) => Some(jemalloc),
            AllocatorStats::Glibc(_) => None,
        }
    }
}

/// glibc's `mallinfo2()`, summed over every arena. The figures count
/// *virtual* bytes: a free chunk counts in full whether or not its pages
/// are resident (pages `malloc_trim` returned, or the top of the heap never
/// touched, count too), so they bound the RSS they explain from above.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlibcStats {
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

/// jemalloc's own statistics (`stats.*` after advancing `epoch`), in the
/// names jemalloc gives them. Each is one of jemalloc's `size_t` counters:
/// `allocated <= active`, and `resident` covers `metadata`, `active` and the
/// dirty pages not yet purged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JemallocStats {
    /// `stats.allocated`: bytes in blocks the program has allocated (sizes
    /// rounded up to jemalloc's size classes), the live heap plus blocks
    /// that did not pass through the tracker.
    pub allocated_bytes: u64,
    /// `stats.active`: bytes in pages that hold allocated blocks; beyond
    /// `allocated_bytes`, the free regions of those pages.
    pub active_bytes: u64,
    /// `stats.metadata`: bytes of jemalloc's own bookkeeping.
    pub metadata_bytes: u64,
    /// `stats.resident`: bytes in resident pages jemalloc maps (metadata,
    /// active pages, dirty pages not yet purged). A maximum: a page never
    /// touched counts too.
    pub resident_bytes: u64,
    /// `stats.mapped`: bytes in the extents jemalloc has mapped and in use
    /// (at least `active_bytes`).
    pub mapped_bytes: u64,
    /// `stats.retained`: virtual memory jemalloc keeps mapped for reuse
    /// but has returned to the OS (not resident, not in `mapped_bytes`).
    pub retained_bytes: u64,
    /// `arenas.narenas`: the number of arenas.
    pub arenas: u64,
}

impl JemallocStats {
    /// Resident bytes beyond the allocated blocks and the metadata: free
    /// regions in active pages (`active - allocated`) and dirty pages
    /// (`resident - active - metadata`).
    pub fn free_bytes(&self) -> u64 {
        self.resident_bytes
            .saturating_sub(self.allocated_bytes)
            .saturating_sub(self.metadata_bytes)
    }

    /// Free regions inside pages that hold live blocks (`active -
    /// allocated`): fragmentation that purging cannot return.
    pub fn free_in_active_bytes(&self) -> u64 {
        self.active_bytes.saturating_sub(self.allocated_bytes)
    }

    /// Dirty pages, free and resident, that purging returns (`resident -
    /// active - metadata`; an upper bound, as `resident` is).
    pub fn dirty_bytes(&self) -> u64 {
        self.resident_bytes
            .saturating_sub(self.active_bytes)
            .saturating_sub(self.metadata_bytes)
    }
}

/// The JSON shapes: jemalloc's figures tagged `"kind": "jemalloc"`,
/// glibc's untagged as dumps wrote them before jemalloc's existed.
#[derive(Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum AllocatorStatsJson {
    Tagged(TaggedStats),
    Glibc(GlibcStats),
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum TaggedStats {
    Jemalloc(JemallocStats),
}

impl From<AllocatorStatsJson> for AllocatorStats {
    fn from(json: AllocatorStatsJson) -> Self {
        match json {
            AllocatorStatsJson::Glibc(glibc) => AllocatorStats::Glibc(glibc),
            AllocatorStatsJson::Tagged(TaggedStats::Jemalloc(jemalloc)) => {
                AllocatorStats::Jemalloc(jemalloc)
            }
        }
    }
}

impl From<AllocatorStats> for AllocatorStatsJson {
    fn from(stats: AllocatorStats) -> Self {
        match stats {
            AllocatorStats::Glibc(glibc) => AllocatorStatsJson::Glibc(glibc),
            AllocatorStats::Jemalloc(jemalloc) => {
                AllocatorStatsJson::Tagged(TaggedStats::Jemalloc(jemalloc))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_figures_keep_their_untagged_shape() {
        let old = r#"{"arena_bytes":1,"mmapped_bytes":2,"in_use_bytes":3,"free_bytes":4,
            "fastbin_free_bytes":5,"releasable_top_bytes":6,"free_chunks":7,"arenas":8}"#;
        let stats: AllocatorStats = serde_json::from_str(old).unwrap();
        let glibc = stats.glibc().expect("an untagged object is glibc's");
        assert_eq!((glibc.free_bytes, glibc.arenas), (4, Some(8)));
        let written = serde_json::to_string(&stats).unwrap();
        assert!(!written.contains("kind"), "{written}");
        assert_eq!(
            serde_json::from_str::<AllocatorStats>(&written).unwrap(),
            stats
        );
    }

    #[test]
    fn jemalloc_figures_are_tagged_and_read_back() {
        let stats = AllocatorStats::Jemalloc(JemallocStats {
            allocated_bytes: 10,
            active_bytes: 16,
            metadata_bytes: 2,
            resident_bytes: 30,
            mapped_bytes: 20,
            retained_bytes: 100,
            arenas: 4,
        });
        let written = serde_json::to_string(&stats).unwrap();
        assert!(written.starts_with(r#"{"kind":"jemalloc","#), "{written}");
        assert_eq!(
            serde_json::from_str::<AllocatorStats>(&written).unwrap(),
            stats
        );
        assert_eq!(stats.free_bytes(), 30 - 10 - 2);
        let jemalloc = stats.jemalloc().unwrap();
        assert_eq!(jemalloc.free_in_active_bytes(), 6);
        assert_eq!(jemalloc.dirty_bytes(), 30 - 16 - 2);
    }

    #[test]
    fn an_unknown_kind_is_an_error_not_glibc() {
        let unknown = r#"{"kind":"mimalloc","allocated_bytes":1}"#;
        assert!(serde_json::from_str::<AllocatorStats>(unknown).is_err());
    }
}
