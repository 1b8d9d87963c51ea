//! [`MemoryBreakdown`]: the RSS taken apart into what the tracker, the
//! allocator and the OS each measured, and what is left over.

use crate::dump::{AllocatorStats, Dump, GlibcStats, JemallocStats, OsMemory};
use crate::human::{percent, Bytes};

const MIB: u64 = 1024 * 1024;

/// The process's RSS as a sum: the live heap, the allocator's free memory
/// and overhead, the tracker's own tables, file-backed and shared pages,
/// and a remainder (thread stacks, direct `mmap`, anything not measured).
///
/// Each [`MemoryPart`] is measured, by the figures its
/// [`source`](MemoryPart::source) names; the remainder is the RSS minus
/// them. glibc's figures count virtual bytes, jemalloc's `resident` is a
/// maximum (pages never touched count), and the tracker's tables count
/// mapped bytes, while the RSS counts resident pages: when free memory is
/// not resident (trimmed, or never touched) the measured parts can add up
/// to more than the RSS, and [`overcount_bytes`](Self::overcount_bytes)
/// says by how much instead of a negative remainder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryBreakdown {
    /// The resident set size being explained.
    pub rss_bytes: u64,
    /// The measured parts, in the order of [`MemoryKind`].
    pub parts: Vec<MemoryPart>,
    /// The RSS minus the measured parts, when they sum to less.
    pub remainder_bytes: u64,
    /// The measured parts minus the RSS, when they sum to more.
    pub overcount_bytes: u64,
    /// The allocator's own figures, when known (glibc's malloc, jemalloc).
    pub allocator: Option<AllocatorStats>,
    /// The number of threads in the process, when known.
    pub threads: Option<u64>,
}

/// One measured part of a [`MemoryBreakdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPart {
    /// What it is.
    pub kind: MemoryKind,
    /// Its size.
    pub bytes: u64,
    /// Which figures measured it (`"tracker"`, `"mallinfo2 fordblks,
    /// virtual"`, `"jemalloc stats.metadata"`, …).
    pub source: &'static str,
}

/// The parts of a [`MemoryBreakdown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemoryKind {
    /// Blocks the program allocated and has not freed (the tracker's
    /// count).
    LiveHeap,
    /// Chunks the allocator counts in use beyond the live heap: chunk
    /// headers and rounding, and blocks that did not pass through the
    /// tracker (C libraries' `malloc`; the tracker's own snapshots and
    /// symbol caches, which resolving a dump's stacks fills).
    AllocatorInUseBeyondHeap,
    /// Memory the allocator keeps that no block in use occupies: glibc's
    /// free chunks (virtual bytes: some pages may not be resident);
    /// jemalloc's resident bytes beyond its allocated blocks and metadata
    /// (free regions in active pages, dirty pages).
    AllocatorFree,
    /// The allocator's own bookkeeping (jemalloc's `stats.metadata`; glibc
    /// keeps its chunk headers inside the in-use figure).
    AllocatorMetadata,
    /// The tracker's live and stack tables (mapped bytes, an upper bound
    /// on their resident share).
    TrackerTables,
    /// File-backed pages: the program's code, shared libraries, mapped
    /// files.
    FileBacked,
    /// Shared-memory pages.
    SharedMemory,
}

impl MemoryKind {
    /// A short name for a report's row.
    pub fn label(self) -> &'static str {
        match self {
            MemoryKind::LiveHeap => "live heap",
            MemoryKind::AllocatorInUseBeyondHeap => "allocator in use beyond the live heap",
            MemoryKind::AllocatorFree => "allocator free memory",
            MemoryKind::AllocatorMetadata => "allocator metadata",
            MemoryKind::TrackerTables => "tracker's own tables",
            MemoryKind::FileBacked => "file-backed (code, mapped files)",
            MemoryKind::SharedMemory => "shared memory",
        }
    }
}

/// The allocator's parts of the RSS, as its own figures measure them.
fn allocator_parts(stats: &AllocatorStats, live_heap_bytes: u64) -> Vec<MemoryPart> {
    let part = |kind, bytes, source| MemoryPart {
        kind,
        bytes,
        source,
    };
    match stats {
        AllocatorStats::Glibc(glibc) => vec![
            part(
                MemoryKind::AllocatorInUseBeyondHeap,
                (glibc.in_use_bytes.saturating_add(glibc.mmapped_bytes))
                    .saturating_sub(live_heap_bytes),
                "mallinfo2 uordblks+hblkhd - live heap",
            ),
            part(
                MemoryKind::AllocatorFree,
                glibc.free_bytes,
                "mallinfo2 fordblks, virtual",
            ),
        ],
        // Together these are jemalloc's `resident` (when `allocated`
        // covers the live heap): it counts metadata, active pages and
        // dirty pages, nothing else.
        AllocatorStats::Jemalloc(jemalloc) => vec![
            part(
                MemoryKind::AllocatorInUseBeyondHeap,
                jemalloc.allocated_bytes.saturating_sub(live_heap_bytes),
                "jemalloc stats.allocated - live heap",
            ),
            part(
                MemoryKind::AllocatorFree,
                jemalloc.free_bytes(),
                "jemalloc stats.resident - allocated - metadata",
            ),
            part(
                MemoryKind::AllocatorMetadata,
                jemalloc.metadata_bytes,
                "jemalloc stats.metadata",
            ),
        ],
    }
}

impl MemoryBreakdown {
    /// Builds the breakdown from a snapshot's or a dump's figures; `None`
    /// when the OS gave no RSS.
    pub fn new(
        live_heap_bytes: u64,
        os: &OsMemory,
        tracker_tables_bytes: u64,
        allocator: Option<&AllocatorStats>,
    ) -> Option<MemoryBreakdown> {
        let rss_bytes = os.rss_bytes?;
        let mut parts = vec![MemoryPart {
            kind: MemoryKind::LiveHeap,
            bytes: live_heap_bytes,
            source: "tracker",
        }];
        if let Some(stats) = allocator {
            parts.extend(allocator_parts(stats, live_heap_bytes));
        }
        parts.push(MemoryPart {
            kind: MemoryKind::TrackerTables,
            bytes: tracker_tables_bytes,
            source: "tracker, mapped",
        });
        for (kind, bytes, source) in [
            (MemoryKind::FileBacked, os.rss_file_bytes, "RssFile"),
            (MemoryKind::SharedMemory, os.rss_shmem_bytes, "RssShmem"),
        ] {
            if let Some(bytes) = bytes {
                parts.push(MemoryPart {
                    kind,
                    bytes,
                    source,
                });
            }
        }
        let measured = parts
            .iter()
            .fold(0u64, |sum, part| sum.saturating_add(part.bytes));
        Some(MemoryBreakdown {
            rss_bytes,
            parts,
            remainder_bytes: rss_bytes.saturating_sub(measured),
            overcount_bytes: measured.saturating_sub(rss_bytes),
            allocator: allocator.copied(),
            threads: os.threads,
        })
    }

    /// The breakdown of a dump's figures.
    pub fn of_dump(dump: &Dump) -> Option<MemoryBreakdown> {
        MemoryBreakdown::new(
            dump.totals.live_bytes,
            &dump.os,
            dump.tracker.bookkeeping_bytes,
            dump.allocator.as_ref(),
        )
    }

    /// The size of one part, 0 if it was not measured.
    pub fn part(&self, kind: MemoryKind) -> u64 {
        self.parts
            .iter()
            .find(|part| part.kind == kind)
            .map_or(0, |part| part.bytes)
    }

    /// What the remainder holds: with the allocator's figures, memory from
    /// outside it; without, everything the tracker and the OS do not tell
    /// apart.
    pub fn remainder_label(&self) -> &'static str {
        if self.allocator.is_some() {
            "remainder: thread stacks, direct mmap, other anonymous memory"
        } else {
            "remainder: allocator free memory and overhead (not known for this allocator), \
             thread stacks, direct mmap"
        }
    }

    /// Advice stated from this process's own figures: what trimming would
    /// return, whether fragmentation keeps it from returning more, whether
    /// many arenas each keep their own free memory. Empty when nothing
    /// stands out or the allocator's figures are not known.
    pub fn advice(&self) -> Vec<String> {
        let Some(stats) = self.allocator else {
            return Vec::new();
        };
        let free = stats.free_bytes();
        if free < MIB || percent(free as f64, self.rss_bytes as f64) < 10.0 {
            return Vec::new();
        }
        match &stats {
            AllocatorStats::Glibc(glibc) => self.glibc_advice(glibc),
            AllocatorStats::Jemalloc(jemalloc) => self.jemalloc_advice(jemalloc),
        }
    }

    fn glibc_advice(&self, stats: &GlibcStats) -> Vec<String> {
        let mut advice = Vec::new();
        let free = stats.free_bytes;
        let live = self.part(MemoryKind::LiveHeap);
        let arenas = match stats.arenas {
            Some(n) if n > 1 => format!(" across {n} arenas"),
            _ => String::new(),
        };
        let mut line = format!(
            "The allocator keeps {} of freed memory{arenas} ({:.0}% of RSS, {:.1}x the live heap).",
            Bytes(free),
            percent(free as f64, self.rss_bytes as f64),
            free as f64 / live.max(1) as f64,
        );
        if let Some(trimmable) = stats.trimmable_estimate_bytes {
            line.push_str(&format!(
                " alloc_track::trim() (glibc's malloc_trim(0)) would return up to {} of it \
                 (an estimate: the whole pages inside free chunks; pages already not resident count too).",
                Bytes(trimmable)
            ));
            let stuck = free.saturating_sub(trimmable);
            if stuck >= MIB && stuck * 4 >= free && free > live {
                advice.push(line.clone());
                line = format!(
                    "{} of it ({:.0}%) lies in pieces of free chunks that fill no whole page, between \
                     live blocks: fragmentation that trimming cannot return. For a long-running process, an \
                     allocator that keeps blocks of one size together (jemalloc, mimalloc as the \
                     Tracker's inner allocator) holds less of it.",
                    Bytes(stuck),
                    percent(stuck as f64, free as f64)
                );
            }
        }
        advice.push(line);
        if let Some(arenas) = stats.arenas.filter(|&n| n >= 4) {
            let threads = self
                .threads
                .map_or(String::new(), |t| format!(" for {t} threads"));
            advice.push(format!(
                "glibc runs {arenas} arenas{threads}, each keeping its own free memory ({} in all): \
                 MALLOC_ARENA_MAX=2 in the environment caps them, at some cost in lock contention.",
                Bytes(free)
            ));
        }
        advice
    }

    fn jemalloc_advice(&self, stats: &JemallocStats) -> Vec<String> {
        let free = stats.free_bytes();
        let live = self.part(MemoryKind::LiveHeap);
        let mut advice = vec![format!(
            "jemalloc keeps {} resident beyond its allocated blocks and metadata ({:.0}% of RSS, \
             {:.1}x the live heap): {} in dirty pages and {} in free regions of pages that still \
             hold live blocks.",
            Bytes(free),
            percent(free as f64, self.rss_bytes as f64),
            free as f64 / live.max(1) as f64,
            Bytes(stats.dirty_bytes()),
            Bytes(stats.free_in_active_bytes()),
        )];
        if stats.dirty_bytes() >= MIB {
            advice.push(format!(
                "alloc_track::trim() (jemalloc's arena.<all>.purge) would return the {} of dirty pages \
                 now; jemalloc returns them by itself after dirty_decay_ms (10 s by default; \
                 _RJEM_MALLOC_CONF=dirty_decay_ms:1000 for tikv-jemallocator shortens it).",
                Bytes(stats.dirty_bytes())
            ));
        }
        let stuck = stats.free_in_active_bytes();
        if stuck >= MIB && stuck * 4 >= free {
            advice.push(format!(
                "{} ({:.0}%) lies in free regions of pages that still hold live blocks: \
                 fragmentation that purging cannot return, only freeing or moving the blocks \
                 that keep those pages active.",
                Bytes(stuck),
                percent(stuck as f64, free as f64)
            ));
        }
        advice
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(rss: u64) -> OsMemory {
        OsMemory {
            rss_bytes: Some(rss),
            rss_file_bytes: Some(4 * MIB),
            rss_shmem_bytes: Some(0),
            threads: Some(2),
            ..OsMemory::default()
        }
    }

    fn glibc_stats(free: u64, trimmable: u64) -> GlibcStats {
        GlibcStats {
            arena_bytes: 10 * MIB + free,
            in_use_bytes: 10 * MIB,
            free_bytes: free,
            arenas: Some(1),
            trimmable_estimate_bytes: Some(trimmable),
            ..GlibcStats::default()
        }
    }

    fn glibc(free: u64, trimmable: u64) -> AllocatorStats {
        AllocatorStats::Glibc(glibc_stats(free, trimmable))
    }

    /// 10 MiB allocated in 12 MiB of active pages, 2 MiB of metadata, 80
    /// MiB of dirty pages.
    fn jemalloc() -> AllocatorStats {
        AllocatorStats::Jemalloc(JemallocStats {
            allocated_bytes: 10 * MIB,
            active_bytes: 12 * MIB,
            metadata_bytes: 2 * MIB,
            resident_bytes: 94 * MIB,
            mapped_bytes: 100 * MIB,
            retained_bytes: 300 * MIB,
            arenas: 8,
        })
    }

    #[test]
    fn jemalloc_parts_add_up_to_its_resident_bytes() {
        let breakdown =
            MemoryBreakdown::new(9 * MIB, &os(130 * MIB), MIB, Some(&jemalloc())).unwrap();
        assert_eq!(breakdown.part(MemoryKind::AllocatorInUseBeyondHeap), MIB);
        assert_eq!(breakdown.part(MemoryKind::AllocatorFree), 82 * MIB);
        assert_eq!(breakdown.part(MemoryKind::AllocatorMetadata), 2 * MIB);
        let heap_and_allocator = breakdown.parts[..4].iter().map(|p| p.bytes).sum::<u64>();
        assert_eq!(heap_and_allocator, 94 * MIB);
        // 130 = 94 resident + 1 tables + 4 file + 31 rest.
        assert_eq!(breakdown.remainder_bytes, 31 * MIB);
        assert!(breakdown.parts[2].source.contains("stats.resident"));
    }

    #[test]
    fn jemalloc_advice_tells_dirty_pages_from_fragmentation() {
        let breakdown =
            MemoryBreakdown::new(9 * MIB, &os(130 * MIB), MIB, Some(&jemalloc())).unwrap();
        let advice = breakdown.advice().join("\n");
        assert!(
            advice.contains("jemalloc keeps 82.0 MiB resident"),
            "{advice}"
        );
        assert!(advice.contains("80.0 MiB in dirty pages"), "{advice}");
        assert!(advice.contains("2.0 MiB in free regions"), "{advice}");
        assert!(advice.contains("arena.<all>.purge"), "{advice}");
        assert!(!advice.contains("malloc_trim"), "{advice}");
    }

    #[test]
    fn parts_and_remainder_add_up_to_the_rss() {
        let stats = glibc(100 * MIB, 90 * MIB);
        let breakdown = MemoryBreakdown::new(9 * MIB, &os(130 * MIB), MIB, Some(&stats)).unwrap();
        assert_eq!(breakdown.part(MemoryKind::AllocatorInUseBeyondHeap), MIB);
        assert_eq!(breakdown.part(MemoryKind::AllocatorFree), 100 * MIB);
        let measured: u64 = breakdown.parts.iter().map(|p| p.bytes).sum();
        assert_eq!(measured + breakdown.remainder_bytes, 130 * MIB);
        assert_eq!(breakdown.overcount_bytes, 0);
    }

    #[test]
    fn free_memory_that_is_not_resident_is_an_overcount_not_a_negative() {
        let stats = glibc(100 * MIB, 90 * MIB);
        let breakdown = MemoryBreakdown::new(9 * MIB, &os(40 * MIB), MIB, Some(&stats)).unwrap();
        assert_eq!(breakdown.remainder_bytes, 0);
        assert_eq!(breakdown.overcount_bytes, 115 * MIB - 40 * MIB);
    }

    #[test]
    fn advice_names_the_figures() {
        let trimmable = glibc(100 * MIB, 90 * MIB);
        let breakdown = MemoryBreakdown::new(MIB, &os(130 * MIB), 0, Some(&trimmable)).unwrap();
        let advice = breakdown.advice();
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(advice[0].contains("keeps 100.0 MiB"), "{advice:?}");
        assert!(advice[0].contains("up to 90.0 MiB"), "{advice:?}");

        let fragmented = glibc(100 * MIB, 10 * MIB);
        let breakdown = MemoryBreakdown::new(MIB, &os(130 * MIB), 0, Some(&fragmented)).unwrap();
        let advice = breakdown.advice();
        assert!(advice[1].contains("90.0 MiB of it (90%)"), "{advice:?}");
        assert!(advice[1].contains("jemalloc"), "{advice:?}");
    }

    #[test]
    fn many_arenas_name_malloc_arena_max_with_the_figures() {
        let stats = AllocatorStats::Glibc(GlibcStats {
            arenas: Some(16),
            ..glibc_stats(100 * MIB, 90 * MIB)
        });
        let breakdown = MemoryBreakdown::new(MIB, &os(130 * MIB), 0, Some(&stats)).unwrap();
        let advice = breakdown.advice();
        assert!(advice[0].contains("across 16 arenas"), "{advice:?}");
        let arenas = advice.last().unwrap();
        assert!(arenas.contains("16 arenas for 2 threads"), "{advice:?}");
        assert!(arenas.contains("MALLOC_ARENA_MAX=2"), "{advice:?}");
        assert!(arenas.contains("100.0 MiB in all"), "{advice:?}");
    }

    #[test]
    fn without_the_allocator_figures_there_is_no_advice() {
        let breakdown = MemoryBreakdown::new(MIB, &os(130 * MIB), 0, None).unwrap();
        assert!(breakdown.advice().is_empty());
        assert!(breakdown.remainder_label().contains("not known"));
        assert_eq!(breakdown.remainder_bytes, 125 * MIB);
    }
}
