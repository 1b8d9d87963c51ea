//! The RSS taken apart, for `report` (one dump) and `trend` (a series):
//! live heap, the allocator's free memory and overhead, the tracker's own
//! tables, file-backed pages, and the remainder, each marked with what
//! measured it, plus advice stated from the dump's own figures. The
//! arithmetic lives in the library ([`MemoryBreakdown`]); this is its text.

use std::io::{self, Write};

use alloc_track::dump::{AllocatorStats, Dump};
use alloc_track::human::{percent, Bytes, Count, SignedBytes};
use alloc_track::{MemoryBreakdown, MemoryKind};
use serde::Serialize;

/// `report`'s lines on the allocator and the RSS breakdown; nothing when
/// the dump has no RSS.
pub fn write_report_section(out: &mut dyn Write, dump: &Dump) -> io::Result<()> {
    let Some(breakdown) = MemoryBreakdown::of_dump(dump) else {
        return Ok(());
    };
    write_allocator_line(out, dump.allocator.as_ref())?;
    writeln!(out, "RSS {} taken apart:", Bytes(breakdown.rss_bytes))?;
    let row = |out: &mut dyn Write, label: &str, bytes: u64, source: &str| {
        writeln!(
            out,
            "  {label:<40} {:>10} {:>4.0}%  {source}",
            Bytes(bytes).to_string(),
            percent(bytes as f64, breakdown.rss_bytes as f64)
        )
    };
    for part in &breakdown.parts {
        row(
            out,
            part.kind.label(),
            part.bytes,
            &format!("measured: {}", part.source),
        )?;
    }
    let remainder = breakdown.remainder_label();
    let (short, detail) = remainder.split_once(": ").unwrap_or((remainder, ""));
    row(
        out,
        short,
        breakdown.remainder_bytes,
        &format!("RSS minus the above: {detail}"),
    )?;
    if breakdown.overcount_bytes > 0 {
        writeln!(
            out,
            "  the measured parts exceed the RSS by {}: the allocator counts free memory whose pages \
             are not resident (trimmed or never touched), the tracker its tables as mapped",
            Bytes(breakdown.overcount_bytes)
        )?;
    }
    for advice in breakdown.advice() {
        writeln!(out, "advice       {advice}")?;
    }
    Ok(())
}

/// The allocator's own figures, by the names it gives them.
fn write_allocator_line(out: &mut dyn Write, stats: Option<&AllocatorStats>) -> io::Result<()> {
    let plural = |n: u64| if n == 1 { "" } else { "s" };
    match stats {
        Some(AllocatorStats::Glibc(stats)) => {
            let arenas = stats
                .arenas
                .map_or(String::new(), |n| format!(", {} arena{}", Count(n), plural(n)));
            writeln!(
                out,
                "allocator    glibc malloc{arenas}: {} free in {} chunks (fast bins {}), {} in use, {} mapped one by one",
                Bytes(stats.free_bytes),
                Count(stats.free_chunks),
                Bytes(stats.fastbin_free_bytes),
                Bytes(stats.in_use_bytes),
                Bytes(stats.mmapped_bytes),
            )
        }
        Some(AllocatorStats::Jemalloc(stats)) => writeln!(
            out,
            "allocator    jemalloc, {} arena{}: allocated {}, active {}, metadata {}, resident {}, mapped {}, retained {}",
            Count(stats.arenas),
            plural(stats.arenas),
            Bytes(stats.allocated_bytes),
            Bytes(stats.active_bytes),
            Bytes(stats.metadata_bytes),
            Bytes(stats.resident_bytes),
            Bytes(stats.mapped_bytes),
            Bytes(stats.retained_bytes),
        ),
        Some(other) => writeln!(out, "allocator    {}", other.name()),
        None => writeln!(
            out,
            "allocator    its own figures not known (read from glibc's malloc as the System allocator, \
             and from tikv_jemallocator::Jemalloc with alloc-track's jemalloc feature)"
        ),
    }
}

/// The breakdown as `report --json` writes it (`docs/json-output.md`).
#[derive(Clone, Debug, Serialize)]
pub struct BreakdownJson {
    /// The RSS being taken apart.
    pub rss_bytes: u64,
    /// The measured parts.
    pub parts: Vec<PartJson>,
    /// The RSS minus the parts, when they sum to less.
    pub remainder_bytes: u64,
    /// What the remainder holds.
    pub remainder: &'static str,
    /// The parts minus the RSS, when they sum to more (free memory that
    /// is not resident).
    pub overcount_bytes: u64,
    /// Advice stated from the dump's figures.
    pub advice: Vec<String>,
}

/// One measured part in [`BreakdownJson`].
#[derive(Clone, Debug, Serialize)]
pub struct PartJson {
    /// What it is.
    pub part: &'static str,
    /// Its size.
    pub bytes: u64,
    /// Which figure measured it.
    pub measured_by: &'static str,
}

/// The dump's breakdown for `report --json`; `None` without an RSS.
pub fn breakdown_json(dump: &Dump) -> Option<BreakdownJson> {
    let breakdown = MemoryBreakdown::of_dump(dump)?;
    Some(BreakdownJson {
        rss_bytes: breakdown.rss_bytes,
        parts: breakdown
            .parts
            .iter()
            .map(|part| PartJson {
                part: part.kind.label(),
                bytes: part.bytes,
                measured_by: part.source,
            })
            .collect(),
        remainder_bytes: breakdown.remainder_bytes,
        remainder: breakdown.remainder_label(),
        overcount_bytes: breakdown.overcount_bytes,
        advice: breakdown.advice(),
    })
}

/// One dump's figures for the trend: live heap, allocator free memory,
/// and everything else in the RSS.
struct Point {
    live: u64,
    free: Option<u64>,
    rss: u64,
}

impl Point {
    fn other(&self) -> u64 {
        self.rss
            .saturating_sub(self.live)
            .saturating_sub(self.free.unwrap_or(0))
    }
}

/// `trend`'s lines on the RSS over the series: live heap, the allocator's
/// free memory, the rest, first to last, and which of them the RSS's
/// growth came from. Nothing unless every dump has an RSS.
pub fn write_trend_section(out: &mut dyn Write, dumps: &[&Dump]) -> io::Result<()> {
    let points: Option<Vec<Point>> = dumps
        .iter()
        .map(|dump| {
            let breakdown = MemoryBreakdown::of_dump(dump)?;
            Some(Point {
                live: breakdown.part(MemoryKind::LiveHeap),
                free: dump.allocator.map(|a| a.free_bytes()),
                rss: breakdown.rss_bytes,
            })
        })
        .collect();
    let Some(points) = points else {
        return Ok(());
    };
    let (Some(first), Some(last)) = (points.first(), points.last()) else {
        return Ok(());
    };
    let all_known = points.iter().all(|p| p.free.is_some());
    let change = |a: u64, b: u64| {
        let delta = i128::from(b) - i128::from(a);
        SignedBytes(i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX }))
    };
    let line = |out: &mut dyn Write, label: &str, a: u64, b: u64| {
        writeln!(
            out,
            "  {label:<44} {:>10} -> {:>10} ({})",
            Bytes(a).to_string(),
            Bytes(b).to_string(),
            change(a, b)
        )
    };
    writeln!(out, "RSS over the dumps, taken apart:")?;
    line(out, "live heap", first.live, last.live)?;
    if all_known {
        let source = match dumps.last().and_then(|dump| dump.allocator) {
            Some(AllocatorStats::Jemalloc(_)) => "jemalloc resident beyond allocated",
            _ => "glibc fordblks",
        };
        line(
            out,
            &format!("allocator free memory ({source})"),
            first.free.unwrap_or(0),
            last.free.unwrap_or(0),
        )?;
        line(
            out,
            "other (RSS minus both: overhead, tables, code)",
            first.other(),
            last.other(),
        )?;
    } else {
        line(
            out,
            "RSS minus live heap (allocator not known)",
            first.other(),
            last.other(),
        )?;
    }
    line(out, "RSS", first.rss, last.rss)?;
    if let Some(verdict) = verdict(first, last, all_known) {
        writeln!(out, "memory       {verdict}")?;
    }
    Ok(())
}

/// Which part the RSS's rise came from, when it rose.
fn verdict(first: &Point, last: &Point, allocator_known: bool) -> Option<String> {
    let rise = last.rss.checked_sub(first.rss).filter(|&r| r > 0)?;
    let grew = |a: u64, b: u64| b.saturating_sub(a);
    let live = grew(first.live, last.live);
    let free = grew(first.free.unwrap_or(0), last.free.unwrap_or(0));
    let share = |part: u64| percent(part.min(rise) as f64, rise as f64);
    let text = if live * 2 >= rise {
        format!(
            "the RSS rose {}; the live heap rose {} ({:.0}% of it): live objects grow (see the sites below)",
            Bytes(rise),
            Bytes(live),
            share(live)
        )
    } else if allocator_known && free * 2 >= rise {
        format!(
            "the RSS rose {}; the allocator's free memory rose {} ({:.0}% of it), the live heap {}: \
             the allocator keeps what was freed (see `report` on the last dump for what trimming would return)",
            Bytes(rise),
            Bytes(free),
            share(free),
            Bytes(live)
        )
    } else if allocator_known {
        format!(
            "the RSS rose {}; the live heap explains {} and the allocator's free memory {}: the rest is \
             outside the heap (allocator overhead, the tracker's tables, thread stacks, mmap)",
            Bytes(rise),
            Bytes(live),
            Bytes(free)
        )
    } else {
        format!(
            "the RSS rose {}; the live heap explains {} ({:.0}%): the rest is the allocator's free memory \
             or memory outside the heap, not told apart without the allocator's figures",
            Bytes(rise),
            Bytes(live),
            share(live)
        )
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A dump of a process that freed 99% of 100 MiB: its allocator keeps
    /// 96 MiB, 60 MiB of it in whole pages.
    fn fragmented(allocator: &str) -> Dump {
        let json = format!(
            r#"{{"format":"alloc-track-dump","version":1,"program":"fragmentation","pid":1,
            "timestamp_ms":1,"mode":"count","epoch":1,
            "totals":{{"live_bytes":{live},"live_blocks":9000,"total_bytes":{total},"total_blocks":900000,"peak_bytes":{total}}},
            "os":{{"rss_bytes":{rss},"rss_anon_bytes":{anon},"rss_file_bytes":{file},"rss_shmem_bytes":0,"threads":1}}
            {allocator},
            "tracker":{{"bookkeeping_bytes":{books}}},
            "locations":[],"stacks":[],"sites":[]}}"#,
            live = MIB,
            total = 100 * MIB,
            rss = 130 * MIB,
            anon = 114 * MIB,
            file = 16 * MIB,
            books = 8 * MIB,
        );
        Dump::from_reader(json.as_bytes()).expect("a valid dump")
    }

    fn report_lines(dump: &Dump) -> String {
        let mut out = Vec::new();
        write_report_section(&mut out, dump).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// glibc's figures: 96 MiB free, 60 MiB of it in whole pages.
    fn glibc_figures() -> String {
        format!(
            r#","allocator":{{"arena_bytes":{arena},"mmapped_bytes":0,"in_use_bytes":{in_use},
            "free_bytes":{free},"fastbin_free_bytes":0,"releasable_top_bytes":0,"free_chunks":9000,
            "arenas":1,"trimmable_estimate_bytes":{trimmable}}}"#,
            arena = 98 * MIB,
            in_use = 2 * MIB,
            free = 96 * MIB,
            trimmable = 60 * MIB,
        )
    }

    #[test]
    fn the_json_report_carries_the_parts_and_the_advice() {
        let json = breakdown_json(&fragmented(&glibc_figures())).unwrap();
        assert_eq!(json.rss_bytes, 130 * MIB);
        let free = json
            .parts
            .iter()
            .find(|p| p.part == "allocator free memory")
            .unwrap();
        assert_eq!(free.bytes, 96 * MIB);
        assert_eq!(json.remainder_bytes, 8 * MIB);
        assert!(
            json.advice[0].contains("up to 60.0 MiB"),
            "{:?}",
            json.advice
        );
    }

    #[test]
    fn the_report_names_the_free_memory_and_what_trimming_would_return() {
        let allocator = glibc_figures();
        let text = report_lines(&fragmented(&allocator));
        assert!(
            text.contains("glibc malloc, 1 arena: 96.0 MiB free in 9,000 chunks"),
            "{text}"
        );
        assert!(text.contains("allocator free memory"), "{text}");
        assert!(text.contains("keeps 96.0 MiB of freed memory"), "{text}");
        assert!(text.contains("would return up to 60.0 MiB"), "{text}");
        // 130 = 1 live + 1 overhead + 96 free + 8 tables + 16 file + 8 rest.
        assert!(
            text.lines()
                .any(|l| l.starts_with("  remainder") && l.contains("8.0 MiB")),
            "{text}"
        );
    }

    #[test]
    fn the_report_names_jemallocs_figures_by_their_names() {
        let allocator = format!(
            r#","allocator":{{"kind":"jemalloc","allocated_bytes":{allocated},"active_bytes":{active},
            "metadata_bytes":{metadata},"resident_bytes":{resident},"mapped_bytes":{mapped},
            "retained_bytes":{retained},"arenas":4}}"#,
            allocated = 2 * MIB,
            active = 20 * MIB,
            metadata = 4 * MIB,
            resident = 90 * MIB,
            mapped = 95 * MIB,
            retained = 300 * MIB,
        );
        let text = report_lines(&fragmented(&allocator));
        assert!(
            text.contains(
                "jemalloc, 4 arenas: allocated 2.0 MiB, active 20.0 MiB, metadata 4.0 MiB, \
                 resident 90.0 MiB, mapped 95.0 MiB, retained 300.0 MiB"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "84.0 MiB   65%  measured: jemalloc stats.resident - allocated - metadata"
            ),
            "{text}"
        );
        assert!(text.contains("allocator metadata"), "{text}");
        assert!(text.contains("66.0 MiB of dirty pages"), "{text}");
        assert!(!text.contains("glibc"), "{text}");
    }

    #[test]
    fn without_the_allocator_figures_the_report_says_not_known() {
        let text = report_lines(&fragmented(""));
        assert!(text.contains("its own figures not known"), "{text}");
        assert!(!text.contains("advice"), "{text}");
        // 130 - 1 live - 8 tables - 16 file.
        assert!(
            text.lines()
                .any(|l| l.starts_with("  remainder") && l.contains("105.0 MiB")),
            "{text}"
        );
    }

    #[test]
    fn growth_is_told_apart_as_live_objects_or_freed_memory_kept() {
        let first = Point {
            live: 10 * MIB,
            free: Some(MIB),
            rss: 40 * MIB,
        };
        let leak = Point {
            live: 60 * MIB,
            free: Some(MIB),
            rss: 90 * MIB,
        };
        assert!(verdict(&first, &leak, true)
            .unwrap()
            .contains("live objects grow"));
        let kept = Point {
            live: 11 * MIB,
            free: Some(50 * MIB),
            rss: 90 * MIB,
        };
        assert!(verdict(&first, &kept, true)
            .unwrap()
            .contains("the allocator keeps what was freed"));
        assert!(verdict(&first, &kept, false)
            .unwrap()
            .contains("not told apart"));
        assert_eq!(verdict(&leak, &first, true), None);
    }
}
