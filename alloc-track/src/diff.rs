//! [`Diff`]: what changed between two moments, by call site.

use std::collections::HashMap;
use std::fmt;

use crate::hot::view::stacks::SiteId;
use crate::hot::view::thread::untracked;
use crate::human::{percent, Bytes, Count, SignedBytes, SignedCount};
use crate::measure::Approximation;
use crate::site::{self, Stack};
use crate::table::Table;
use crate::Snapshot;

/// How many rows `Display` shows; `{:#}` shows every changed site.
const DISPLAY_ROWS: usize = 20;

/// The change between two moments, in total and per call site.
///
/// Two views of the change, because each hides what the other shows:
///
/// - the **net** change of the live heap ([`live_bytes`](Diff::live_bytes),
///   [`live_blocks`](Diff::live_blocks)): 100 blocks allocated and 100
///   freed is zero;
/// - the **retained** set ([`retained_bytes`](Diff::retained_bytes),
///   [`retained_blocks`](Diff::retained_blocks)): blocks allocated after
///   the first moment and still alive at the second, as heapy's `after -
///   before` shows them. A cache that replaces old entries with new ones has
///   a net change of zero and a retained set the size of the cache.
///
/// Plus what was allocated in between at all ([`total_bytes`](Diff::total_bytes),
/// [`total_blocks`](Diff::total_blocks)), freed or not: the figure to bound
/// in a test of how often a code path allocates.
///
/// From [`Snapshot::diff`] (the whole process) or [`measure`](fn@crate::measure)
/// (one thread, one closure).
#[derive(Clone, Debug)]
pub struct Diff {
    pub(crate) sites: Vec<SiteDiff>,
    pub(crate) peak_bytes: Option<u64>,
    pub(crate) complete: bool,
    /// Set by [`measure`](fn@crate::measure) when some figures are not exact.
    pub(crate) approximation: Option<Approximation>,
}

/// The change at one call site.
#[derive(Clone, Debug, Default)]
pub struct SiteDiff {
    pub(crate) id: SiteId,
    pub(crate) stack: Option<Stack>,
    pub(crate) live_bytes: i64,
    pub(crate) live_blocks: i64,
    pub(crate) total_bytes: u64,
    pub(crate) total_blocks: u64,
    pub(crate) retained_bytes: u64,
    pub(crate) retained_blocks: u64,
}

impl SiteDiff {
    /// Net change of live bytes at this site.
    pub fn live_bytes(&self) -> i64 {
        self.live_bytes
    }
    /// Net change of live blocks at this site.
    pub fn live_blocks(&self) -> i64 {
        self.live_blocks
    }
    /// Bytes allocated here in between.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    /// Blocks allocated here in between.
    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }
    /// Bytes allocated here in between and still live at the end.
    pub fn retained_bytes(&self) -> u64 {
        self.retained_bytes
    }
    /// Blocks allocated here in between and still live at the end.
    pub fn retained_blocks(&self) -> u64 {
        self.retained_blocks
    }
    /// The call stack of this site.
    pub fn stack(&self) -> Stack {
        self.stack.unwrap_or(Stack {
            addresses: &[],
            truncated: false,
        })
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Diff {
    pub(crate) fn between(before: &Snapshot, after: &Snapshot) -> Diff {
        untracked(|| {
            let mut by_id: HashMap<SiteId, SiteDiff> = HashMap::new();
            for site in &before.sites {
                let entry = by_id.entry(site.id).or_default();
                entry.id = site.id;
                entry.stack = Some(site.stack);
                entry.live_bytes -= to_i64(site.live_bytes);
                entry.live_blocks -= to_i64(site.live_blocks);
                // Totals only grow; subtracting first and adding `after`'s
                // below leaves what was allocated in between.
                entry.total_bytes = entry.total_bytes.wrapping_sub(site.total_bytes);
                entry.total_blocks = entry.total_blocks.wrapping_sub(site.total_blocks);
            }
            for site in &after.sites {
                let entry = by_id.entry(site.id).or_default();
                entry.id = site.id;
                entry.stack = Some(site.stack);
                entry.live_bytes += to_i64(site.live_bytes);
                entry.live_blocks += to_i64(site.live_blocks);
                entry.total_bytes = entry.total_bytes.wrapping_add(site.total_bytes);
                entry.total_blocks = entry.total_blocks.wrapping_add(site.total_blocks);
                let (bytes, blocks) = site.born_after(before.epoch);
                entry.retained_bytes = bytes;
                entry.retained_blocks = blocks;
            }
            // Snapshots passed in the wrong order would leave "negative"
            // totals: clamp them to 0 rather than wrap.
            for entry in by_id.values_mut() {
                if entry.total_bytes > u64::MAX / 2 {
                    entry.total_bytes = 0;
                }
                if entry.total_blocks > u64::MAX / 2 {
                    entry.total_blocks = 0;
                }
            }
            Diff::from_sites(by_id.into_values().collect(), None, true)
        })
    }

    pub(crate) fn from_sites(
        mut sites: Vec<SiteDiff>,
        peak_bytes: Option<u64>,
        complete: bool,
    ) -> Diff {
        sites.retain(|s| {
            s.live_bytes != 0 || s.live_blocks != 0 || s.total_blocks != 0 || s.retained_blocks != 0
        });
        sites.sort_by(|a, b| {
            (
                b.live_bytes.unsigned_abs(),
                b.retained_bytes,
                b.total_bytes,
                a.id,
            )
                .cmp(&(
                    a.live_bytes.unsigned_abs(),
                    a.retained_bytes,
                    a.total_bytes,
                    b.id,
                ))
        });
        Diff {
            sites,
            peak_bytes,
            complete,
            approximation: None,
        }
    }

    fn sum<T: std::iter::Sum<T>>(&self, field: impl Fn(&SiteDiff) -> T) -> T {
        self.sites.iter().map(field).sum()
    }

    /// Net change of live bytes (may be negative).
    pub fn live_bytes(&self) -> i64 {
        self.sum(|s| s.live_bytes)
    }
    /// Net change of live blocks (may be negative).
    pub fn live_blocks(&self) -> i64 {
        self.sum(|s| s.live_blocks)
    }
    /// Bytes allocated in between, freed or not.
    pub fn total_bytes(&self) -> u64 {
        self.sum(|s| s.total_bytes)
    }
    /// Blocks allocated in between, freed or not: the number of
    /// allocations (a `realloc` counts as one).
    pub fn total_blocks(&self) -> u64 {
        self.sum(|s| s.total_blocks)
    }
    /// Bytes allocated in between and still live at the end.
    pub fn retained_bytes(&self) -> u64 {
        self.sum(|s| s.retained_bytes)
    }
    /// Blocks allocated in between and still live at the end.
    pub fn retained_blocks(&self) -> u64 {
        self.sum(|s| s.retained_blocks)
    }
    /// For a [`measure`](fn@crate::measure) diff: the most bytes the closure's
    /// thread held at once above what it held when the closure started
    /// (its own peak, exact). `None` for a diff of two snapshots.
    pub fn peak_bytes(&self) -> Option<u64> {
        self.peak_bytes
    }
    /// False if the tracker ran out of memory for its own books during a
    /// [`measure`](fn@crate::measure), so the figures may be low. Always true
    /// in practice; reported rather than hidden.
    pub fn is_complete(&self) -> bool {
        self.complete
    }
    /// `None` when every figure is exact (always, below 1,024 threads
    /// measuring at once); otherwise which figures are approximate and why.
    pub fn approximation(&self) -> Option<Approximation> {
        self.approximation
    }
    /// The sites that changed, biggest change first (by net bytes, then
    /// retained bytes, then allocated bytes).
    pub fn sites(&self) -> &[SiteDiff] {
        &self.sites
    }
}

impl fmt::Display for Diff {
    /// A summary line and the sites that changed, biggest first, as heapy
    /// prints a partition: count, %, size, %, cumulative %, then what was
    /// retained and allocated, then the site. `{:#}` lists every site.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = untracked(|| render(self, f.alternate()));
        f.write_str(&text)
    }
}

struct Row {
    live_bytes: i64,
    live_blocks: i64,
    retained_bytes: u64,
    total_bytes: u64,
    total_blocks: u64,
    label: String,
}

fn render(diff: &Diff, all: bool) -> String {
    let mut out = format!(
        "Heap change: {} in {} blocks net; {} in {} blocks retained (allocated since and still live); \
         {} allocated in {} blocks\n",
        SignedBytes(diff.live_bytes()),
        SignedCount(diff.live_blocks()),
        Bytes(diff.retained_bytes()),
        Count(diff.retained_blocks()),
        Bytes(diff.total_bytes()),
        Count(diff.total_blocks()),
    );
    if let Some(peak) = diff.peak_bytes {
        out.push_str(&format!("Peak above the start: {}\n", Bytes(peak)));
    }
    if !diff.complete {
        out.push_str(
            "Incomplete: the tracker ran out of memory for its books; figures may be low\n",
        );
    }
    if let Some(approximation) = diff.approximation {
        out.push_str(&format!("Approximate: {approximation}\n"));
    }
    let groups = site::group_by_label(diff.sites.iter().map(|s| s.stack()));
    let mut rows: Vec<Row> = groups
        .into_iter()
        .map(|(label, members)| {
            let mut row = Row {
                live_bytes: 0,
                live_blocks: 0,
                retained_bytes: 0,
                total_bytes: 0,
                total_blocks: 0,
                label,
            };
            for i in members {
                let s = &diff.sites[i];
                row.live_bytes += s.live_bytes;
                row.live_blocks += s.live_blocks;
                row.retained_bytes += s.retained_bytes;
                row.total_bytes += s.total_bytes;
                row.total_blocks += s.total_blocks;
            }
            row
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.live_bytes.unsigned_abs(), b.retained_bytes, b.total_bytes)
            .cmp(&(a.live_bytes.unsigned_abs(), a.retained_bytes, a.total_bytes))
            .then_with(|| a.label.cmp(&b.label))
    });
    let all_blocks: u64 = rows.iter().map(|r| r.live_blocks.unsigned_abs()).sum();
    let all_bytes: u64 = rows.iter().map(|r| r.live_bytes.unsigned_abs()).sum();
    let shown = if all {
        rows.len()
    } else {
        rows.len().min(DISPLAY_ROWS)
    };
    let mut table = Table::new(&[
        "Index",
        "Count",
        "%",
        "Size",
        "%",
        "Cumul %",
        "Retained",
        "Allocs",
        "Allocated",
        "Site",
    ]);
    let mut cumulative = 0u64;
    for (index, row) in rows.iter().take(shown).enumerate() {
        cumulative += row.live_bytes.unsigned_abs();
        table.push(vec![
            index.to_string(),
            SignedCount(row.live_blocks).to_string(),
            format!(
                "{:.1}",
                percent(row.live_blocks.unsigned_abs() as f64, all_blocks as f64)
            ),
            SignedBytes(row.live_bytes).to_string(),
            format!(
                "{:.1}",
                percent(row.live_bytes.unsigned_abs() as f64, all_bytes as f64)
            ),
            format!("{:.1}", percent(cumulative as f64, all_bytes as f64)),
            Bytes(row.retained_bytes).to_string(),
            Count(row.total_blocks).to_string(),
            Bytes(row.total_bytes).to_string(),
            row.label.clone(),
        ]);
    }
    if table.is_empty() {
        out.push_str("No site changed.\n");
    } else {
        out.push_str(&table.to_string());
    }
    if rows.len() > shown {
        out.push_str(&format!(
            "<{} more sites: use {{:#}} to list all>\n",
            rows.len() - shown
        ));
    }
    out
}
