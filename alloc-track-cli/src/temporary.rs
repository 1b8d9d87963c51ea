//! `report --by temporary`: the sites whose blocks are freed before their
//! thread allocates again (heaptrack's "temporary" allocations), with the
//! share of each site's allocations that were.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;

use alloc_track::dump::Dump;
use alloc_track::human::{percent, Count};

use crate::stacks::site_label;

/// The table: one row per place in the source, the most temporary
/// allocations first.
pub fn write_table(
    out: &mut impl Write,
    dump: &Dump,
    top: usize,
    base: Option<&Path>,
) -> io::Result<()> {
    // (label, temporary blocks, all blocks allocated there)
    let mut rows: Vec<(String, u64, u64)> = Vec::new();
    let mut row_of: HashMap<String, usize> = HashMap::new();
    for site in &dump.sites {
        let label = site_label(dump, site.stack, base);
        let index = *row_of.entry(label.clone()).or_insert_with(|| {
            rows.push((label, 0, 0));
            rows.len() - 1
        });
        rows[index].1 = rows[index].1.saturating_add(site.temporary_blocks);
        rows[index].2 = rows[index].2.saturating_add(site.total_blocks);
    }
    rows.retain(|row| row.1 > 0);
    rows.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then_with(|| a.0.cmp(&b.0)));
    let total = rows.iter().fold(0u64, |s, r| s.saturating_add(r.1));
    let all: u64 = dump.totals.total_blocks;
    let shown = top.min(rows.len());
    writeln!(
        out,
        "top {shown} of {} sites by temporary allocations (freed before their thread's next \
         allocation): {} of {} allocations ({:.1}%)",
        Count(rows.len() as u64),
        Count(total),
        Count(all),
        percent(total as f64, all as f64)
    )?;
    match dump.mode.as_str() {
        "sampled" => writeln!(out, "estimated from the samples (sampled mode)")?,
        "count" => writeln!(out, "count mode records no sites: nothing to show")?,
        _ => {}
    }
    if shown == 0 {
        return Ok(());
    }
    writeln!(
        out,
        "{:>11} {:>6} {:>11} {:>6}  site",
        "temporary", "%", "allocated", "temp%"
    )?;
    for (label, temporary, allocated) in &rows[..shown] {
        writeln!(
            out,
            "{:>11} {:>5.1}% {:>11} {:>5.1}%  {label}",
            Count(*temporary),
            percent(*temporary as f64, total as f64),
            Count(*allocated),
            percent(*temporary as f64, *allocated as f64),
        )?;
    }
    Ok(())
}
