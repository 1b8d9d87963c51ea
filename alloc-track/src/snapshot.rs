//! [`Snapshot`]: what is alive on the heap at one moment, by call site.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::dump::{self, AllocatorStats, Birth, Dump, DumpError, OsMemory, Totals, TrackerHealth};
use crate::hot::view::config::Mode;
use crate::hot::view::counters::{COUNTERS, EPOCH, UNRECORDED};
use crate::hot::view::live as live_table;
use crate::hot::view::sampler;
use crate::hot::view::stacks::{self, SiteId};
use crate::hot::view::thread;
use crate::hot::view::thread::untracked;
use crate::human::{percent, Bytes, Count};
use crate::live_by_site::{self, by_row, LiveBySite, NO_ROW};
use crate::site::{self, Births, Site, Stack};
use crate::table::Table;
use crate::{os_memory, Diff};

/// How many rows `Display` shows; `{:#}` shows every site.
const DISPLAY_ROWS: usize = 20;

/// The live heap at one moment: totals, the operating system's view, and
/// every call site that ever allocated.
///
/// Taken with [`snapshot()`](fn@crate::snapshot). Every figure is exact while
/// no other thread allocates during the snapshot; with concurrent
/// allocations each block is counted once, as live or not, and the totals
/// always equal the sum of the sites.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub(crate) mode: Mode,
    pub(crate) scopes: Vec<ScopeStats>,
    pub(crate) epoch: u32,
    pub(crate) timestamp_ms: u64,
    pub(crate) totals: Totals,
    pub(crate) os: OsMemory,
    pub(crate) allocator: Option<AllocatorStats>,
    pub(crate) health: TrackerHealth,
    pub(crate) sites: Vec<Site>,
}

impl Snapshot {
    /// Takes a snapshot now. The cold path: it walks the whole live table.
    pub(crate) fn take() -> Snapshot {
        untracked(|| {
            // Blocks allocated from here on carry a later epoch than this
            // snapshot's, which is what `Diff` uses to tell them apart.
            let epoch = EPOCH.fetch_add(1, Ordering::SeqCst);
            let timestamp_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);

            let mode = crate::hot::view::config::settled_mode().unwrap_or(Mode::Full);
            // Built in under 200 bytes a site at its peak, the snapshot's
            // own rows included: a periodic dump of a large table must not
            // be an OOM risk (see `live_by_site`, `tests/dump_memory.rs`).
            let LiveBySite {
                tallies: live,
                other_births,
                scoped,
            } = live_by_site::sum(mode);
            // Rows straight from the stack table, in id order; the row of
            // each site id: the table's sites first, then those with live
            // blocks recorded a moment before their site's totals.
            let ids = stacks::ids_handed_out().max(live.len());
            let mut row_of: Vec<u32> = vec![NO_ROW; ids];
            let mut sites: Vec<Site> = Vec::with_capacity(stacks::ids_handed_out());
            stacks::for_each_site(|view| {
                if let Some(row) = row_of.get_mut(view.id as usize) {
                    *row = sites.len() as u32;
                }
                sites.push(Site {
                    id: view.id,
                    stack: Stack {
                        addresses: view.frames,
                        truncated: view.truncated,
                    },
                    live_bytes: 0,
                    live_blocks: 0,
                    total_bytes: view.total_bytes,
                    total_blocks: view.total_blocks,
                    peak_bytes: view.peak_bytes,
                    peak_blocks: view.peak_blocks,
                    temporary_blocks: view.temporary_blocks,
                    births: Births::default(),
                    scopes: Vec::new(),
                });
            });
            // Full mode counts each thread's newest block at its site only
            // once it leaves the thread's slot; until then it is live, and
            // allocated, in the slot alone.
            live_table::for_each_held(|_, block| {
                let row = row_of.get(block.site() as usize).copied();
                if let Some(site) = row.and_then(|row| sites.get_mut(row as usize)) {
                    site.total_bytes += block.size() as u64;
                    site.total_blocks += 1;
                }
            });
            for (id, tally) in live.iter().enumerate() {
                if tally.blocks == 0 {
                    continue;
                }
                if row_of[id] == NO_ROW {
                    row_of[id] = sites.len() as u32;
                    sites.push(Site {
                        id: id as SiteId,
                        stack: Stack {
                            addresses: stacks::frames(id as SiteId),
                            truncated: false,
                        },
                        live_bytes: 0,
                        live_blocks: 0,
                        total_bytes: 0,
                        total_blocks: 0,
                        peak_bytes: 0,
                        peak_blocks: 0,
                        temporary_blocks: 0,
                        births: Births::default(),
                        scopes: Vec::new(),
                    });
                }
                let site = &mut sites[row_of[id] as usize];
                site.live_bytes = tally.bytes;
                site.live_blocks = sampler::whole_blocks(tally.blocks);
                // Concurrent allocations may have reached the live table
                // before the site's totals: never report more live than
                // allocated.
                site.total_bytes = site.total_bytes.max(tally.bytes);
                site.total_blocks = site.total_blocks.max(site.live_blocks);
                if !tally.mixed {
                    site.births = Births::One(Birth {
                        epoch: tally.epoch,
                        bytes: tally.bytes,
                        blocks: site.live_blocks,
                    });
                }
            }
            // Sites whose blocks were born in several epochs (few): the
            // tally's epoch holds what the other epochs do not.
            let other_births = by_row(other_births, &row_of);
            for group in other_births.chunk_by(|a, b| a.0 == b.0) {
                let row = group[0].0 as usize;
                let Some(&first) = live.get(sites[row].id as usize) else {
                    continue;
                };
                sites[row].births = Births::mixed(first, group);
            }
            drop(other_births);
            drop(live);
            let scoped = by_row(scoped, &row_of);
            for group in scoped.chunk_by(|a, b| a.0 == b.0) {
                sites[group[0].0 as usize].scopes = group
                    .iter()
                    .map(|&(_, scope, bytes, blocks)| (scope, bytes, sampler::whole_blocks(blocks)))
                    .collect();
            }
            drop(scoped);
            drop(row_of);
            // In place: ids are unique, so the order is total and an
            // unstable sort gives the same result without a merge buffer
            // of half the sites.
            sites.sort_unstable_by(|a, b| {
                (b.live_bytes, b.total_bytes, a.id).cmp(&(a.live_bytes, a.total_bytes, b.id))
            });

            // Full mode: the totals are the sum of the sites, so the two
            // always agree. The partial modes record only some blocks: their
            // totals are the exact counters, their sites estimates (or none).
            let totals = match mode {
                Mode::Full => sites.iter().fold(Totals::default(), |mut t, s| {
                    t.live_bytes += s.live_bytes;
                    t.live_blocks += s.live_blocks;
                    t.total_bytes += s.total_bytes;
                    t.total_blocks += s.total_blocks;
                    t
                }),
                _ => COUNTERS.totals(),
            };
            // The breakdown's sum is a real moment's heap (give or take
            // allocations racing with its copy), so the peak is at least it.
            let breakdown: u64 = sites.iter().map(|s| s.peak_bytes).sum();
            let peak_bytes = COUNTERS.peak().max(totals.live_bytes).max(breakdown);
            let scopes = scope_stats(&sites);
            Snapshot {
                mode,
                scopes,
                epoch,
                timestamp_ms,
                totals: Totals {
                    peak_bytes,
                    ..totals
                },
                os: os_memory::read(),
                allocator: crate::allocator_stats::read(),
                health: TrackerHealth {
                    overflowed_allocations: stacks::overflowed(),
                    unrecorded_allocations: UNRECORDED.load(Ordering::Relaxed),
                    bookkeeping_bytes: crate::bookkeeping_bytes(),
                },
                sites,
            }
        })
    }

    /// The mode the tracker recorded in: in [`Mode::Full`] every figure is
    /// exact; in [`Mode::Sampled`] the totals and peak are exact and the
    /// per-site figures are estimates; in [`Mode::Count`] there are no
    /// sites.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Bytes in live blocks.
    pub fn live_bytes(&self) -> u64 {
        self.totals.live_bytes
    }
    /// Number of live blocks.
    pub fn live_blocks(&self) -> u64 {
        self.totals.live_blocks
    }
    /// Bytes allocated since tracking began (freed or not).
    pub fn total_bytes(&self) -> u64 {
        self.totals.total_bytes
    }
    /// Blocks allocated since tracking began (freed or not).
    pub fn total_blocks(&self) -> u64 {
        self.totals.total_blocks
    }
    /// The highest live bytes reached since tracking began.
    pub fn peak_bytes(&self) -> u64 {
        self.totals.peak_bytes
    }
    /// What the operating system reported at the same moment.
    pub fn os(&self) -> &OsMemory {
        &self.os
    }
    /// What the inner allocator said of its own memory at the same moment
    /// (glibc's malloc, or jemalloc with the `jemalloc` feature; `None` when
    /// not known): see [`AllocatorStats`].
    pub fn allocator(&self) -> Option<&AllocatorStats> {
        self.allocator.as_ref()
    }
    /// The RSS taken apart into live heap, allocator free memory and
    /// overhead, the tracker's tables, file-backed pages and a remainder;
    /// `None` when the OS gave no RSS. See [`MemoryBreakdown`](crate::MemoryBreakdown).
    pub fn memory_breakdown(&self) -> Option<crate::MemoryBreakdown> {
        crate::MemoryBreakdown::new(
            self.totals.live_bytes,
            &self.os,
            self.health.bookkeeping_bytes,
            self.allocator.as_ref(),
        )
    }
    /// Allocations the tracker could not attribute (see [`TrackerHealth`]).
    pub fn health(&self) -> &TrackerHealth {
        &self.health
    }
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub fn timestamp_ms(&self) -> u64 {
        self.timestamp_ms
    }
    /// Every call site that ever allocated, most live bytes first.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// Every [`scope`](fn@crate::scope) that allocated, with its live heap
    /// (by the same count as the sites) and what it allocated in all.
    pub fn scopes(&self) -> &[ScopeStats] {
        &self.scopes
    }

    /// This snapshot restricted to the live blocks allocated inside the
    /// scope `name`: each site keeps only those, and the totals become
    /// their sums. Allocation totals per site are not kept by scope, so in
    /// the result a site's `total_*` equal its `live_*`; the scope's own
    /// totals are in [`scopes`](Snapshot::scopes).
    pub fn in_scope(&self, name: &str) -> Snapshot {
        untracked(|| {
            // The snapshot's own scope list has the id behind the name.
            let wanted = self.scopes.iter().find(|s| s.name == name).map(|s| s.id);
            let mut filtered = self.clone();
            filtered.sites = self
                .sites
                .iter()
                .filter_map(|site| {
                    let (bytes, blocks) = site
                        .scopes
                        .iter()
                        .filter(|(scope, ..)| Some(*scope) == wanted)
                        .fold((0, 0), |(b, n), (_, bytes, blocks)| (b + bytes, n + blocks));
                    (blocks > 0).then(|| Site {
                        live_bytes: bytes,
                        live_blocks: blocks,
                        total_bytes: bytes,
                        total_blocks: blocks,
                        peak_bytes: 0,
                        peak_blocks: 0,
                        temporary_blocks: 0,
                        births: Births::default(),
                        scopes: vec![],
                        ..site.clone()
                    })
                })
                .collect();
            let (live_bytes, live_blocks) = filtered
                .sites
                .iter()
                .fold((0, 0), |(b, n), s| (b + s.live_bytes, n + s.live_blocks));
            filtered.totals = Totals {
                live_bytes,
                live_blocks,
                total_bytes: live_bytes,
                total_blocks: live_blocks,
                peak_bytes: live_bytes,
            };
            filtered.scopes.retain(|s| s.name == name);
            filtered
        })
    }

    /// What changed from `before` to this snapshot: see [`Diff`].
    pub fn diff(&self, before: &Snapshot) -> Diff {
        Diff::between(before, self)
    }

    /// Builds the dump of this snapshot: symbols resolved, stacks that
    /// resolve alike merged.
    pub fn to_dump(&self) -> Dump {
        untracked(|| crate::dump_build::build(self))
    }

    /// Saves the snapshot as a JSON dump (see [`crate::dump`](mod@crate::dump)) at `path`,
    /// atomically: a crash mid-write never leaves a partial file there.
    /// Symbolic links, paths that are not regular files and concurrent
    /// saves are treated as [`Dump::save`](crate::dump::Dump::save) says.
    ///
    /// The dump is written as it is built, site by site, so writing it
    /// takes little memory beyond the snapshot itself (see
    /// [`write_to`](Snapshot::write_to)).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DumpError> {
        untracked(|| {
            // Stacks resolved before the temporary file is created: it then
            // exists only while the dump is written.
            let prepared = crate::dump_build::prepare(self);
            Dump::save_with(path.as_ref(), |file| prepared.write_json(file))
        })
    }

    /// Writes the snapshot as a JSON dump (see [`crate::dump`](mod@crate::dump)) to `out`,
    /// the same bytes as [`to_dump`](Snapshot::to_dump) then
    /// [`Dump::write_to`] but streamed: besides the snapshot and the symbol
    /// cache (one entry per distinct code address), writing takes about 25
    /// bytes per site (21 measured at 600,000 sites) and one entry per
    /// distinct location, where a whole [`Dump`] takes hundreds. Buffered;
    /// flushed at the end.
    pub fn write_to(&self, mut out: impl Write) -> Result<(), DumpError> {
        untracked(|| crate::dump_build::prepare(self).write_json(&mut out))
    }
}

impl fmt::Display for Snapshot {
    /// A summary and the top sites by live bytes; `{:#}` lists them all.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = thread::untracked(|| render(self, f.alternate()));
        f.write_str(&text)
    }
}

fn render(snapshot: &Snapshot, all: bool) -> String {
    let t = &snapshot.totals;
    let mut out = format!(
        "Heap: {} live in {} blocks; peak {}; {} allocated in {} blocks since start\n",
        Bytes(t.live_bytes),
        Count(t.live_blocks),
        Bytes(t.peak_bytes),
        Bytes(t.total_bytes),
        Count(t.total_blocks),
    );
    if let Some(line) = os_line(&snapshot.os) {
        out.push_str(&line);
        out.push('\n');
    }
    let groups = site::group_by_label(snapshot.sites.iter().map(|s| s.stack));
    let mut rows: Vec<(u64, u64, String)> = groups
        .into_iter()
        .map(|(label, members)| {
            let (bytes, blocks) = members.iter().fold((0, 0), |(b, n), &i| {
                (
                    b + snapshot.sites[i].live_bytes,
                    n + snapshot.sites[i].live_blocks,
                )
            });
            (bytes, blocks, label)
        })
        .filter(|(bytes, blocks, _)| *bytes > 0 || *blocks > 0)
        .collect();
    rows.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
    let shown = if all {
        rows.len()
    } else {
        rows.len().min(DISPLAY_ROWS)
    };
    let mut table = Table::new(&["Index", "Count", "%", "Size", "%", "Cumul %", "Site"]);
    let mut cumulative = 0u64;
    for (index, (bytes, blocks, label)) in rows.iter().take(shown).enumerate() {
        cumulative += bytes;
        table.push(vec![
            index.to_string(),
            Count(*blocks).to_string(),
            format!("{:.1}", percent(*blocks as f64, t.live_blocks as f64)),
            Bytes(*bytes).to_string(),
            format!("{:.1}", percent(*bytes as f64, t.live_bytes as f64)),
            format!("{:.1}", percent(cumulative as f64, t.live_bytes as f64)),
            label.clone(),
        ]);
    }
    if !table.is_empty() {
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

/// "OS: RSS 40.0 MiB (anon 30.0 MiB, file 10.0 MiB), virtual 1.2 GiB, peak
/// RSS 45.0 MiB", or `None` if the OS said nothing.
pub(crate) fn os_line(os: &OsMemory) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(rss) = os.rss_bytes {
        let mut part = format!("RSS {}", Bytes(rss));
        if let (Some(anon), Some(file)) = (os.rss_anon_bytes, os.rss_file_bytes) {
            part.push_str(&format!(" (anon {}, file {})", Bytes(anon), Bytes(file)));
        }
        parts.push(part);
    }
    if let Some(virt) = os.virtual_bytes {
        parts.push(format!("virtual {}", Bytes(virt)));
    }
    if let Some(peak) = os.peak_rss_bytes {
        parts.push(format!("peak RSS {}", Bytes(peak)));
    }
    (!parts.is_empty()).then(|| format!("OS: {}", parts.join(", ")))
}

impl dump::Totals {
    /// Totals as a one-line summary, for logs.
    pub fn summary(&self) -> String {
        format!(
            "{} live in {} blocks (peak {}), {} allocated in {} blocks",
            Bytes(self.live_bytes),
            Count(self.live_blocks),
            Bytes(self.peak_bytes),
            Bytes(self.total_bytes),
            Count(self.total_blocks)
        )
    }
}

/// One [`scope`](fn@crate::scope)'s figures in a [`Snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeStats {
    pub(crate) id: u16,
    pub(crate) name: String,
    pub(crate) live_bytes: u64,
    pub(crate) live_blocks: u64,
    pub(crate) total_bytes: u64,
    pub(crate) total_blocks: u64,
}

impl ScopeStats {
    /// The scope's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Bytes allocated inside the scope and still live.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes
    }
    /// Blocks allocated inside the scope and still live.
    pub fn live_blocks(&self) -> u64 {
        self.live_blocks
    }
    /// Bytes allocated inside the scope since tracking began.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
    /// Blocks allocated inside the scope since tracking began.
    pub fn total_blocks(&self) -> u64 {
        self.total_blocks
    }
}

/// Per-scope figures: live from the sites' breakdowns, totals from the
/// scope counters; scopes that never allocated are left out.
fn scope_stats(sites: &[Site]) -> Vec<ScopeStats> {
    let mut live: HashMap<u16, (u64, u64)> = HashMap::new();
    for site in sites {
        for &(scope, bytes, blocks) in &site.scopes {
            let entry = live.entry(scope).or_default();
            entry.0 += bytes;
            entry.1 += blocks;
        }
    }
    let mut stats: Vec<ScopeStats> = (1..crate::hot::view::scopes::MAX_SCOPES as u16)
        .filter_map(|id| {
            let (total_bytes, total_blocks) = crate::hot::view::scopes::totals(id);
            let (live_bytes, live_blocks) = live.get(&id).copied().unwrap_or_default();
            (total_blocks > 0 || live_blocks > 0).then(|| ScopeStats {
                id,
                name: crate::scope::name(id),
                live_bytes,
                live_blocks,
                // A block counted live a moment before its scope's totals.
                total_bytes: total_bytes.max(live_bytes),
                total_blocks: total_blocks.max(live_blocks),
            })
        })
        .collect();
    stats.sort_by(|a, b| b.live_bytes.cmp(&a.live_bytes).then(a.name.cmp(&b.name)));
    stats
}
