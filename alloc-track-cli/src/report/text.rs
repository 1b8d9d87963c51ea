//! The report as text: the summary lines and the ranked tables.

use std::io::{self, Write};
use std::path::Path;

use alloc_track::dump::Dump;
use alloc_track::human::{percent, Bytes, Count};

use super::ReportOptions;
use crate::input;
use crate::rows::{self, count_of, DumpNames, GroupBy};
use crate::weigh::{self, Measure, Weight};
use crate::your_code::CrateSource;
use crate::{by_type, scopes, temporary};

pub(super) fn write_text(
    dump: &Dump,
    options: &ReportOptions,
    weights: Vec<Weight>,
    peak: Option<Vec<Weight>>,
    out: &mut impl Write,
) -> io::Result<()> {
    write_summary(dump, &options.dump, out)?;
    if let Some(name) = &options.scope {
        writeln!(
            out,
            "scope        only the live blocks allocated inside scope {name:?}"
        )?;
    } else {
        scopes::write_table(dump, out)?;
    }
    if let Some(filter) = options.filter.describe() {
        writeln!(out, "filter       {filter}")?;
    }
    // Finding the program's crate may walk every stack: once per report.
    let names = options.naming.for_dump(dump);
    write_your_code(&names, out)?;
    writeln!(out)?;
    let base = options.naming.relative_to.as_deref();
    match options.measure {
        Measure::Type => by_type::write_table(out, dump, options.top, options.type_sites, base)?,
        Measure::Temporary => temporary::write_table(out, dump, options.top, base)?,
        _ => write_table(out, &names, weights, options.measure, options.top)?,
    }
    if matches!(options.measure, Measure::Peak | Measure::Temporary) {
        return Ok(());
    }
    writeln!(out)?;
    write!(out, "at the peak ({}): ", Bytes(dump.totals.peak_bytes))?;
    match peak {
        Some(peak) => write_table(out, &names, peak, Measure::Peak, options.top),
        None => writeln!(out, "this dump has no breakdown by site"),
    }
}

fn write_summary(dump: &Dump, path: &Path, out: &mut impl Write) -> io::Result<()> {
    let totals = &dump.totals;
    writeln!(out, "alloc-track report of {}", input::display_name(path))?;
    writeln!(
        out,
        "program      {} (pid {}), dumped {}, epoch {}, mode {}",
        dump.program,
        dump.pid,
        utc(dump.timestamp_ms),
        dump.epoch,
        dump.mode
    )?;
    writeln!(
        out,
        "live heap    {} in {}",
        Bytes(totals.live_bytes),
        count_of(totals.live_blocks, "block", "blocks")
    )?;
    writeln!(
        out,
        "allocated    {} in {} since tracking began",
        Bytes(totals.total_bytes),
        count_of(totals.total_blocks, "block", "blocks")
    )?;
    writeln!(out, "peak heap    {}", Bytes(totals.peak_bytes))?;
    let os = &dump.os;
    let mut memory = Vec::new();
    if let Some(rss) = os.rss_bytes {
        let mut parts = Vec::new();
        if let Some(anon) = os.rss_anon_bytes {
            parts.push(format!("anon {}", Bytes(anon)));
        }
        if let Some(file) = os.rss_file_bytes {
            parts.push(format!("file {}", Bytes(file)));
        }
        if let Some(shmem) = os.rss_shmem_bytes {
            parts.push(format!("shmem {}", Bytes(shmem)));
        }
        if parts.is_empty() {
            memory.push(format!("RSS {}", Bytes(rss)));
        } else {
            memory.push(format!("RSS {} ({})", Bytes(rss), parts.join(", ")));
        }
    }
    if let Some(peak) = os.peak_rss_bytes {
        memory.push(format!("peak RSS {}", Bytes(peak)));
    }
    if let Some(vsz) = os.virtual_bytes {
        memory.push(format!("VSZ {}", Bytes(vsz)));
    }
    if memory.is_empty() {
        writeln!(out, "OS memory    not reported by the operating system")?;
    } else {
        writeln!(out, "OS memory    {}", memory.join(", "))?;
    }
    if let Some(rss) = os.rss_bytes {
        writeln!(out, "heap vs RSS  {}", heap_vs_rss(totals.live_bytes, rss))?;
        let books = dump.tracker.bookkeeping_bytes;
        if books > 0 {
            writeln!(
                out,
                "tracker      its own tables map {} (live and stack tables): up to that much of the RSS is in no heap figure",
                Bytes(books)
            )?;
        }
    }
    crate::memory::write_report_section(out, dump)?;
    if dump.mode == "count" {
        // Count mode keeps totals only: no site, and no stack was walked,
        // whatever walker the build would have used.
        writeln!(
            out,
            "sites        none: count mode keeps the totals only (ALLOC_TRACK_MODE=full or \
             sampled records sites)"
        )?;
    } else {
        writeln!(
            out,
            "sites        {} ({}, {})",
            count_of(dump.sites.len() as u64, "call site", "call sites"),
            count_of(dump.stacks.len() as u64, "stack", "stacks"),
            count_of(
                dump.locations.len() as u64,
                "code location",
                "code locations"
            )
        )?;
    }
    let truncated = truncated_sites(dump);
    if truncated.sites > 0 {
        writeln!(
            out,
            "truncated    the stacks of {} ({} live in {}) were cut at the capture \
             limit; their missing callers show as [truncated]",
            count_of(truncated.sites, "site", "sites"),
            Bytes(truncated.live_bytes),
            count_of(truncated.live_blocks, "block", "blocks"),
        )?;
    }
    if let Some(walker) = dump.stack_walker.as_ref().filter(|_| dump.mode != "count") {
        writeln!(
            out,
            "stacks       captured by {}",
            walker_line(walker, &dump.mode)
        )?;
    }
    let health = &dump.tracker;
    if health.overflowed_allocations > 0 || health.unrecorded_allocations > 0 {
        writeln!(
            out,
            "warning      {} allocations were counted under a catch-all site (stack table \
             full) and {} were not recorded at all",
            Count(health.overflowed_allocations),
            Count(health.unrecorded_allocations)
        )?;
    }
    Ok(())
}

/// Which crate is "your code", and how that was decided.
fn write_your_code(names: &DumpNames<'_>, out: &mut impl Write) -> io::Result<()> {
    let naming = names.naming();
    match names.program_crate() {
        Some((name, source)) => {
            let how = match source {
                CrateSource::Given => "given with --crate",
                CrateSource::ProgramName => "the program's name; --crate NAME picks another",
                CrateSource::MainFunction => "the crate of main; --crate NAME picks another",
            };
            writeln!(out, "your code    crate {name} ({how})")
        }
        None if naming.group_by == GroupBy::YourCode || naming.crate_name.is_some() => writeln!(
            out,
            "your code    unknown: no frame of the program's crate in this dump (--crate NAME)"
        ),
        None => Ok(()),
    }
}

/// Sites whose stacks were cut at the capture limit, and what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Truncated {
    /// How many sites.
    pub sites: u64,
    /// Their live bytes.
    pub live_bytes: u64,
    /// Their live blocks.
    pub live_blocks: u64,
}

/// Counts the sites whose stack is marked truncated in the dump.
pub fn truncated_sites(dump: &Dump) -> Truncated {
    let mut truncated = Truncated::default();
    for site in &dump.sites {
        if dump
            .stacks
            .get(site.stack as usize)
            .is_some_and(|s| s.truncated)
        {
            truncated.sites += 1;
            truncated.live_bytes = truncated.live_bytes.saturating_add(site.live_bytes);
            truncated.live_blocks = truncated.live_blocks.saturating_add(site.live_blocks);
        }
    }
    truncated
}

/// One honest line on the gap between the live heap and the RSS; the
/// breakdown that follows it (`memory.rs`) says what the gap is made of.
fn heap_vs_rss(live: u64, rss: u64) -> String {
    if rss >= live {
        format!(
            "RSS exceeds the live heap by {} ({:.0}% of RSS is live heap), taken apart below",
            Bytes(rss - live),
            percent(live as f64, rss as f64)
        )
    } else {
        format!(
            "the live heap exceeds RSS by {}: part of the heap was never touched or is \
             swapped out",
            Bytes(live - rss)
        )
    }
}

/// Writes a top-`top` table of `weights` ranked by `measure`, with a
/// heading, and a line for the rows left out.
fn write_table(
    out: &mut impl Write,
    names: &DumpNames<'_>,
    weights: Vec<Weight>,
    measure: Measure,
    top: usize,
) -> io::Result<()> {
    let total_value = weigh::total(&weights, measure);
    let total_bytes = weights.iter().fold(0u64, |s, w| s.saturating_add(w.bytes));
    let total_blocks = weights.iter().fold(0u64, |s, w| s.saturating_add(w.blocks));
    let rows = ranked(&weights, measure, names);
    let shown = top.min(rows.len());
    writeln!(
        out,
        "top {shown} of {} by {}",
        count_of(rows.len() as u64, "site", "sites"),
        measure.describe()
    )?;
    if shown == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "{:>11} {:>6} {:>10} {:>6} {:>6}  site",
        "blocks", "%", "bytes", "%", "cum%"
    )?;
    let mut cumulative = 0u64;
    for row in &rows[..shown] {
        cumulative = cumulative.saturating_add(row.value(measure));
        writeln!(
            out,
            "{:>11} {:>5.1}% {:>10} {:>5.1}% {:>5.1}%  {}",
            Count(row.blocks),
            percent(row.blocks as f64, total_blocks as f64),
            Bytes(row.bytes),
            percent(row.bytes as f64, total_bytes as f64),
            percent(cumulative as f64, total_value as f64),
            row.label
        )?;
        // The user's own call that led to a site inside a library.
        if names.naming().group_by == GroupBy::Site {
            if let Some(yours) = names.your_code(row.heaviest).filter(|y| *y != row.label) {
                writeln!(out, "{:45}from your code: {yours}", "")?;
            }
        }
    }
    let rest = &rows[shown..];
    if !rest.is_empty() {
        let rest_value = rest
            .iter()
            .fold(0u64, |sum, row| sum.saturating_add(row.value(measure)));
        let rest_text = match measure {
            Measure::Blocks => format!("{} blocks", Count(rest_value)),
            _ => Bytes(rest_value).to_string(),
        };
        let noun = if rest.len() == 1 {
            "site holds"
        } else {
            "sites hold"
        };
        writeln!(
            out,
            "{:>11} more {noun} {rest_text} ({:.1}%)",
            Count(rest.len() as u64),
            percent(rest_value as f64, total_value as f64)
        )?;
    }
    Ok(())
}

/// The rows of `weights`, largest first. One row per label (see
/// [`crate::rows`]): distinct stacks that end in the same function and line
/// are one answer to "who allocated this". Ties are broken by the other
/// figure and then the label, so the order is the same on every run.
pub(super) fn ranked(
    weights: &[Weight],
    measure: Measure,
    names: &DumpNames<'_>,
) -> Vec<rows::Row> {
    let mut rows = rows::group(weights, measure, names);
    rows.sort_unstable_by(|a, b| {
        (b.value(measure), b.bytes, b.blocks)
            .cmp(&(a.value(measure), a.bytes, a.blocks))
            .then_with(|| a.label.cmp(&b.label))
    });
    rows
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch, by
/// Howard Hinnant's days-to-civil algorithm (no time crate needed for one
/// line of output).
pub fn utc(ms: u64) -> String {
    let seconds = ms / 1000;
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// How the report names the walker a dump's stacks came from, with advice
/// where it is the slow one. Walkers this version does not know (a newer
/// library's) are printed as they are.
fn walker_line(walker: &str, mode: &str) -> String {
    match (walker, mode) {
        ("unwinder", "full") => "the unwinder, ~100 ns a frame: build with \
             -C force-frame-pointers=yes for the frame-pointer walk"
            .to_string(),
        ("frame-pointers", _) => "the frame-pointer walk".to_string(),
        ("cfi", _) => "the cached DWARF CFI unwinder".to_string(),
        (other, _) => format!("the {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_walker_has_a_name() {
        assert_eq!(walker_line("cfi", "full"), "the cached DWARF CFI unwinder");
        assert_eq!(
            walker_line("frame-pointers", "sampled"),
            "the frame-pointer walk"
        );
        assert!(walker_line("unwinder", "full").contains("force-frame-pointers"));
        assert_eq!(walker_line("unwinder", "sampled"), "the unwinder");
        assert_eq!(walker_line("lbr", "full"), "the lbr");
    }

    #[test]
    fn timestamps_print_as_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_764_042_000_000), "2025-11-25 03:40:00 UTC");
        // The largest timestamp a dump can hold prints without overflow.
        assert!(utc(u64::MAX).ends_with("UTC"));
    }

    #[test]
    fn the_rss_gap_is_explained_either_way() {
        assert!(heap_vs_rss(1024, 4096).starts_with("RSS exceeds the live heap by 3.0 KiB"));
        assert!(heap_vs_rss(4096, 1024).starts_with("the live heap exceeds RSS by 3.0 KiB"));
    }

    #[test]
    fn stacks_ending_in_the_same_line_share_one_row() {
        use alloc_track::dump::{Frame, Location, SiteRecord, StackRecord, Totals};
        let frame = |function: &str, line| Frame {
            function: function.into(),
            file: Some("/app/src/main.rs".into()),
            line: Some(line),
            column: None,
        };
        let location = |address, frames| Location { address, frames };
        let site = |stack, bytes| SiteRecord {
            stack,
            live_bytes: bytes,
            live_blocks: 1,
            total_bytes: bytes,
            total_blocks: 1,
            births: Vec::new(),
            temporary_blocks: 0,
            scopes: Vec::new(),
        };
        let dump = Dump {
            format: alloc_track::dump::FORMAT_NAME.into(),
            version: alloc_track::dump::FORMAT_VERSION,
            program: "app".into(),
            pid: 1,
            timestamp_ms: 0,
            mode: "full".into(),
            sample_mean_bytes: None,
            stack_walker: None,
            epoch: 0,
            totals: Totals {
                live_bytes: 700,
                live_blocks: 3,
                total_bytes: 700,
                total_blocks: 3,
                peak_bytes: 700,
            },
            os: Default::default(),
            allocator: None,
            tracker: Default::default(),
            // Two callers of `load` (stacks 0 and 1) and one of `other`.
            locations: vec![
                location(1, vec![frame("app::load", 10)]),
                location(2, vec![frame("app::a", 20)]),
                location(3, vec![frame("app::b", 30)]),
                location(4, vec![frame("app::other", 40)]),
            ],
            stacks: vec![
                StackRecord {
                    locations: vec![0, 1],
                    truncated: false,
                },
                StackRecord {
                    locations: vec![0, 2],
                    truncated: false,
                },
                StackRecord {
                    locations: vec![3],
                    truncated: false,
                },
            ],
            sites: vec![site(0, 300), site(1, 100), site(2, 300)],
            peak_sites: Vec::new(),
            scopes: Vec::new(),
        };
        let weights = weigh::weigh(&dump, Measure::Live, Path::new("d.json")).unwrap();
        let mut out = Vec::new();
        let naming = crate::rows::Naming::default();
        write_table(
            &mut out,
            &naming.for_dump(&dump),
            weights,
            Measure::Live,
            10,
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("top 2 of 2 sites"), "{text}");
        let rows: Vec<&str> = text.lines().skip(2).collect();
        assert!(
            rows[0].contains("400 B") && rows[0].contains("app::load (/app/src/main.rs:10)"),
            "{text}"
        );
        assert!(
            rows[1].contains("300 B") && rows[1].contains("app::other"),
            "{text}"
        );
    }
}
