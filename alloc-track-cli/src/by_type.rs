//! `report --by type` and `diff --by type`: the live heap by the type of
//! object that holds it, read from each site's standard-library frames by
//! [`alloc_track::types::allocated_type`] (element types need the program
//! built with v0 symbol mangling; see that module).

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use alloc_track::dump::Dump;
use alloc_track::human::{percent, Bytes, Count, SignedBytes, SignedCount};
use alloc_track::types::allocated_type;

use crate::stacks::site_label;

/// One type's live figures in a dump.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TypeRow {
    /// The type as shown (`Box<app::Node>`, `[unknown Vec: allocated in
    /// app::load]`).
    pub name: String,
    /// Whether the element type is known.
    pub known: bool,
    /// Live bytes of the type.
    pub live_bytes: u64,
    /// Live blocks of the type.
    pub live_blocks: u64,
    /// The sites that allocated it: (stack index, live bytes, live blocks),
    /// the most live bytes first.
    pub sites: Vec<(u32, u64, u64)>,
}

/// The dump's live sites grouped by type, the most live bytes first (ties
/// by blocks, then name, so the order is the same on every run).
pub fn type_rows(dump: &Dump) -> Vec<TypeRow> {
    let mut rows: Vec<TypeRow> = Vec::new();
    let mut row_of: HashMap<String, usize> = HashMap::new();
    for site in dump.sites.iter().filter(|s| s.live_blocks > 0) {
        let Some(stack) = dump.stacks.get(site.stack as usize) else {
            continue; // validated dumps never get here
        };
        let frames = stack
            .locations
            .iter()
            .filter_map(|&l| dump.locations.get(l as usize))
            .flat_map(|location| location.frames.iter());
        let allocated = allocated_type(frames);
        let name = allocated.to_string();
        let index = *row_of.entry(name.clone()).or_insert_with(|| {
            rows.push(TypeRow {
                name,
                known: allocated.is_known(),
                ..TypeRow::default()
            });
            rows.len() - 1
        });
        let row = &mut rows[index];
        row.live_bytes = row.live_bytes.saturating_add(site.live_bytes);
        row.live_blocks = row.live_blocks.saturating_add(site.live_blocks);
        row.sites
            .push((site.stack, site.live_bytes, site.live_blocks));
    }
    for row in &mut rows {
        row.sites
            .sort_by(|a, b| (b.1, b.2, a.0).cmp(&(a.1, a.2, b.0)));
    }
    rows.sort_by(|a, b| {
        (b.live_bytes, b.live_blocks)
            .cmp(&(a.live_bytes, a.live_blocks))
            .then_with(|| a.name.cmp(&b.name))
    });
    rows
}

/// How to get element types, said once under a table that lacks some.
const HOW_TO_GET_TYPES: &str = "element types need the program built with \
     RUSTFLAGS=\"-C symbol-mangling-version=v0\" and debug info (debug = \"limited\" is enough)";

/// The `report --by type` table: the top `top` types, each followed by its
/// top `sites_per_type` sites.
pub fn write_table(
    out: &mut impl Write,
    dump: &Dump,
    top: usize,
    sites_per_type: usize,
    base: Option<&Path>,
) -> io::Result<()> {
    let rows = type_rows(dump);
    let total_bytes = rows
        .iter()
        .fold(0u64, |s, r| s.saturating_add(r.live_bytes));
    let total_blocks = rows
        .iter()
        .fold(0u64, |s, r| s.saturating_add(r.live_blocks));
    let shown = top.min(rows.len());
    writeln!(
        out,
        "top {shown} of {} types by live bytes",
        Count(rows.len() as u64)
    )?;
    if shown == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "{:>11} {:>6} {:>10} {:>6}  type",
        "blocks", "%", "bytes", "%"
    )?;
    for row in &rows[..shown] {
        writeln!(
            out,
            "{:>11} {:>5.1}% {:>10} {:>5.1}%  {}",
            Count(row.live_blocks),
            percent(row.live_blocks as f64, total_blocks as f64),
            Bytes(row.live_bytes),
            percent(row.live_bytes as f64, total_bytes as f64),
            row.name
        )?;
        for &(stack, bytes, blocks) in row.sites.iter().take(sites_per_type) {
            writeln!(
                out,
                "{:>11} {:>6} {:>10} {:>6}    {}",
                Count(blocks),
                "",
                Bytes(bytes),
                "",
                site_label(dump, stack, base)
            )?;
        }
    }
    let rest = &rows[shown..];
    if !rest.is_empty() {
        let bytes = rest
            .iter()
            .fold(0u64, |s, r| s.saturating_add(r.live_bytes));
        writeln!(
            out,
            "{:>11} more types hold {} ({:.1}%)",
            Count(rest.len() as u64),
            Bytes(bytes),
            percent(bytes as f64, total_bytes as f64)
        )?;
    }
    let unknown = rows
        .iter()
        .filter(|r| !r.known)
        .fold(0u64, |s, r| s.saturating_add(r.live_bytes));
    if unknown > 0 {
        writeln!(
            out,
            "{} ({:.1}%) of unknown type: {HOW_TO_GET_TYPES}",
            Bytes(unknown),
            percent(unknown as f64, total_bytes as f64)
        )?;
    }
    Ok(())
}

/// The `diff --by type` table: the types whose live bytes changed most
/// between `before` and `after`, growth first.
pub fn write_diff(out: &mut impl Write, before: &Dump, after: &Dump, top: usize) -> io::Result<()> {
    let mut change: HashMap<String, (i128, i128)> = HashMap::new();
    for row in type_rows(after) {
        let entry = change.entry(row.name).or_default();
        entry.0 += i128::from(row.live_bytes);
        entry.1 += i128::from(row.live_blocks);
    }
    for row in type_rows(before) {
        let entry = change.entry(row.name).or_default();
        entry.0 -= i128::from(row.live_bytes);
        entry.1 -= i128::from(row.live_blocks);
    }
    let mut rows: Vec<(String, i128, i128)> = change
        .into_iter()
        .filter(|(_, (bytes, blocks))| *bytes != 0 || *blocks != 0)
        .map(|(name, (bytes, blocks))| (name, bytes, blocks))
        .collect();
    rows.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(&b.0)));
    let clamp = |v: i128| i64::try_from(v).unwrap_or(if v < 0 { i64::MIN } else { i64::MAX });
    writeln!(
        out,
        "types whose live heap changed: {} (top {} shown, growth first)",
        Count(rows.len() as u64),
        top.min(rows.len())
    )?;
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out, "{:>12} {:>12}  type", "bytes", "blocks")?;
    for (name, bytes, blocks) in rows.iter().take(top) {
        writeln!(
            out,
            "{:>12} {:>12}  {name}",
            SignedBytes(clamp(*bytes)).to_string(),
            SignedCount(clamp(*blocks)).to_string()
        )?;
    }
    Ok(())
}
