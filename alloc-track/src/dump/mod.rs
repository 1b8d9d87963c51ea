//! The dump format: one JSON document per snapshot, defined once here and
//! used both by [`Snapshot::save`](crate::Snapshot::save) to write it and by
//! the `alloc-track` CLI to read it.
//!
//! The schema is documented field by field in `docs/dump-format.md` beside
//! this crate's `Cargo.toml`. Every change that an older reader could
//! misread bumps [`FORMAT_VERSION`]; readers refuse versions newer than the
//! one they were built with instead of guessing.
//!
//! Reading is defensive: [`Dump::from_reader`] and [`Dump::load`] parse and
//! then [`validate`](Dump::validate) the document, so every index is in
//! range and every total adds up before any consumer touches it. A dump that
//! fails gets a [`DumpError`] that says what is wrong and where, never a
//! panic.

mod allocator;
mod atomic_file;
mod error;
mod frame;
mod read;
pub(crate) mod stream;

use serde::{Deserialize, Serialize};

pub use allocator::{AllocatorStats, GlibcStats, JemallocStats};
pub use error::DumpError;
pub use frame::{OVERFLOW_LABEL, RUNTIME_LABEL};

/// The value of the `format` field, which tells a dump from any other JSON.
pub const FORMAT_NAME: &str = "alloc-track-dump";

/// The schema version this crate writes and the newest it can read.
pub const FORMAT_VERSION: u32 = 1;

/// A whole dump: what was alive on the heap at one moment, by call site.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dump {
    /// Always [`FORMAT_NAME`].
    pub format: String,
    /// The schema version, at most [`FORMAT_VERSION`] for this reader.
    pub version: u32,
    /// The program's name (file name of the executable).
    pub program: String,
    /// The process id of the program when the dump was written.
    pub pid: u32,
    /// When the snapshot was taken, in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// How the tracker recorded allocations: `"full"`, every allocation
    /// with its stack, so every figure is exact; `"sampled"`, exact totals
    /// and peak with per-site figures estimated from samples (see
    /// `sample_mean_bytes`); `"count"`, exact totals and no sites.
    pub mode: String,
    /// In `"sampled"` mode, the mean number of bytes between samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_mean_bytes: Option<u64>,
    /// How stacks were captured: `"frame-pointers"` (the fast walk),
    /// `"cfi"` (the cached DWARF CFI unwinder, the fast walker without frame
    /// pointers) or `"unwinder"` (the platform unwinder, far slower per
    /// allocation).
    /// Absent when no stack was captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_walker: Option<String>,
    /// The snapshot's epoch: allocations born after this snapshot carry a
    /// larger epoch in later dumps of the same process.
    pub epoch: u32,
    /// Heap totals, exact in full mode.
    pub totals: Totals,
    /// What the operating system reported for the process at the same
    /// moment. Each figure is absent where the OS does not tell it.
    #[serde(default)]
    pub os: OsMemory,
    /// What the inner allocator said of its own memory at the same moment
    /// (glibc's malloc, or jemalloc with the `jemalloc` feature); absent
    /// when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocator: Option<AllocatorStats>,
    /// The tracker's own health: anything it could not attribute.
    #[serde(default)]
    pub tracker: TrackerHealth,
    /// Code locations (return addresses) with their resolved frames.
    pub locations: Vec<Location>,
    /// Unique call stacks, each a list of indices into `locations`,
    /// leaf (the allocating function) first.
    pub stacks: Vec<StackRecord>,
    /// Per-call-site figures; `stack` indexes into `stacks`.
    pub sites: Vec<SiteRecord>,
    /// What the live heap consisted of at its peak, by call site, when the
    /// tracker kept that breakdown; empty otherwise. Sums to at most
    /// `totals.peak_bytes` (the breakdown is refreshed in steps, so it may
    /// describe a moment slightly below the exact peak).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peak_sites: Vec<PeakSite>,
    /// The scopes (`alloc_track::scope`) that allocated, with their figures;
    /// sites break their live figures down by index into this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<Scope>,
}

/// A named scope's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    /// The name given to `alloc_track::scope`.
    pub name: String,
    /// Bytes allocated inside the scope and still live.
    pub live_bytes: u64,
    /// Blocks allocated inside the scope and still live.
    pub live_blocks: u64,
    /// Bytes allocated inside the scope since tracking began.
    pub total_bytes: u64,
    /// Blocks allocated inside the scope since tracking began.
    pub total_blocks: u64,
}

/// The part of a site's live figures allocated inside one scope.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteScope {
    /// Index into [`Dump::scopes`].
    pub scope: u32,
    /// Live bytes of this site allocated in the scope.
    pub bytes: u64,
    /// Live blocks of this site allocated in the scope.
    pub blocks: u64,
}

/// Heap totals at the moment of the dump.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Bytes in blocks allocated and not yet freed.
    pub live_bytes: u64,
    /// Number of blocks allocated and not yet freed.
    pub live_blocks: u64,
    /// Bytes allocated since tracking began, freed or not.
    pub total_bytes: u64,
    /// Blocks allocated since tracking began, freed or not.
    pub total_blocks: u64,
    /// The highest `live_bytes` ever reached.
    pub peak_bytes: u64,
}

/// The operating system's view of the process's memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsMemory {
    /// Resident set size: memory the process has in RAM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// The anonymous part of the RSS (heap, stacks, anonymous mappings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_anon_bytes: Option<u64>,
    /// The file-backed part of the RSS (code, mapped files).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_file_bytes: Option<u64>,
    /// The shared-memory part of the RSS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rss_shmem_bytes: Option<u64>,
    /// Virtual memory size: everything mapped, resident or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_bytes: Option<u64>,
    /// The highest RSS the process has had.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_bytes: Option<u64>,
    /// The number of threads in the process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<u64>,
}

/// What the tracker could not attribute to a call site of its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerHealth {
    /// Allocations recorded against the catch-all "other" site because the
    /// stack table was full.
    #[serde(default)]
    pub overflowed_allocations: u64,
    /// Allocations the tracker could not record at all because its own
    /// bookkeeping memory ran out; they are in no figure of the dump.
    #[serde(default)]
    pub unrecorded_allocations: u64,
    /// Bytes the tracker's own tables (live table, stack table) had mapped
    /// at the moment of the dump: at most that much of the process's RSS
    /// is theirs and in no heap figure, which a report can take out of the
    /// heap-versus-RSS gap.
    #[serde(default)]
    pub bookkeeping_bytes: u64,
}

/// One code address and the source frames it stands for. One address can
/// stand for several frames when functions were inlined into each other:
/// `frames` lists them innermost first, the function that really owns the
/// machine code last.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The return address as captured (not adjusted).
    pub address: u64,
    /// Resolved frames, innermost (inlined) first. Empty when the address
    /// could not be resolved at all.
    #[serde(default)]
    pub frames: Vec<Frame>,
}

/// A resolved source frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Frame {
    /// The demangled function name, without the hash suffix.
    pub function: String,
    /// The source file, when debug info names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The line in `file`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The column in `line`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

/// A call stack: indices into [`Dump::locations`], leaf first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackRecord {
    /// Location indices, the allocating function first, `main` last.
    pub locations: Vec<u32>,
    /// True when the stack was deeper than the capture limit and its
    /// outermost frames are missing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
}

/// Figures for one call site (one unique stack).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRecord {
    /// Index into [`Dump::stacks`].
    pub stack: u32,
    /// Bytes allocated here and still live.
    pub live_bytes: u64,
    /// Blocks allocated here and still live.
    pub live_blocks: u64,
    /// Bytes allocated here since tracking began.
    pub total_bytes: u64,
    /// Blocks allocated here since tracking began.
    pub total_blocks: u64,
    /// The live blocks grouped by the epoch they were born in, oldest
    /// first, so that two dumps of one process can tell what was allocated
    /// between them and is still alive. Sums to `live_bytes`/`live_blocks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub births: Vec<Birth>,
    /// The live figures allocated inside scopes, by scope; at most the
    /// site's live figures (blocks outside any scope are not listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<SiteScope>,
    /// Blocks allocated here and freed before their thread's next
    /// allocation ("temporary" allocations), since tracking began: exact
    /// in `"full"` mode, estimated from the samples in `"sampled"` mode, 0
    /// in `"count"` mode. At most `total_blocks`. Absent when 0 (and in
    /// dumps written before it existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub temporary_blocks: u64,
}

/// One site's share of the live heap at the peak.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeakSite {
    /// Index into [`Dump::stacks`].
    pub stack: u32,
    /// Bytes this site held live at the peak.
    pub bytes: u64,
    /// Blocks this site held live at the peak.
    pub blocks: u64,
}

/// Live blocks of one site born in one epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birth {
    /// The epoch: the number of snapshots taken before these blocks were
    /// allocated.
    pub epoch: u32,
    /// Their bytes.
    pub bytes: u64,
    /// Their number.
    pub blocks: u64,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[cfg(test)]
mod tests;
