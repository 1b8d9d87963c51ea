//! `diff --json`: the comparison as one JSON document for scripts and CI.
//! The shape is documented in `docs/json-output.md` beside this crate's
//! `Cargo.toml`; a change that could break a reader bumps
//! [`DIFF_JSON_VERSION`].

use std::io::{self, Write};
use std::path::Path;

use alloc_track::dump::{Dump, Totals};
use serde::Serialize;

use super::{retained_since, Changes, DiffOptions, Row};
use crate::input;
use crate::rows::DumpNames;

/// The `format` field of `diff --json`.
pub const DIFF_JSON_FORMAT: &str = "alloc-track-diff";

/// The version of the `diff --json` shape.
pub const DIFF_JSON_VERSION: u32 = 1;

#[derive(Serialize)]
struct DiffJson<'a> {
    format: &'static str,
    version: u32,
    measure: &'static str,
    before: Side<'a>,
    after: Side<'a>,
    retained: Option<Retained>,
    sites: Counts,
    grew: Vec<Change>,
    shrank: Vec<Change>,
}

#[derive(Serialize)]
struct Side<'a> {
    dump: String,
    program: &'a str,
    pid: u32,
    timestamp_ms: u64,
    epoch: u32,
    totals: &'a Totals,
    rss_bytes: Option<u64>,
}

impl<'a> Side<'a> {
    fn new(path: &Path, dump: &'a Dump) -> Self {
        Side {
            dump: input::display_name(path),
            program: &dump.program,
            pid: dump.pid,
            timestamp_ms: dump.timestamp_ms,
            epoch: dump.epoch,
            totals: &dump.totals,
            rss_bytes: dump.os.rss_bytes,
        }
    }
}

#[derive(Serialize)]
struct Retained {
    bytes: u64,
    blocks: u64,
}

#[derive(Serialize)]
struct Counts {
    new: usize,
    gone: usize,
    changed: usize,
    unchanged: usize,
    grew: usize,
    shrank: usize,
}

#[derive(Serialize)]
struct Change {
    label: String,
    /// The first frame in the program's crate on the row's heaviest stack.
    your_code: Option<String>,
    status: &'static str,
    before: u64,
    after: u64,
    change: i128,
    before_blocks: u64,
    after_blocks: u64,
}

fn top_changes(rows: &[Row], top: usize, names: [&DumpNames<'_>; 2]) -> Vec<Change> {
    rows.iter()
        .take(top)
        .map(|row| Change {
            label: row.label.clone(),
            your_code: {
                let (in_after, stack) = row.heaviest;
                names[usize::from(in_after)].your_code(stack)
            },
            status: match (row.before, row.after) {
                (0, _) => "new",
                (_, 0) => "gone",
                _ => "changed",
            },
            before: row.before,
            after: row.after,
            change: row.delta(),
            before_blocks: row.before_blocks,
            after_blocks: row.after_blocks,
        })
        .collect()
}

/// Writes the comparison as one JSON document and a newline.
pub(super) fn write_json(
    options: &DiffOptions,
    before: &Dump,
    after: &Dump,
    changes: Changes,
    out: &mut dyn Write,
) -> io::Result<()> {
    let (before_names, after_names) = (
        options.naming.for_dump(before),
        options.naming.for_dump(after),
    );
    let names = [&before_names, &after_names];
    let document = DiffJson {
        format: DIFF_JSON_FORMAT,
        version: DIFF_JSON_VERSION,
        measure: options.measure.name(),
        before: Side::new(&options.before, before),
        after: Side::new(&options.after, after),
        retained: retained_since(before, after).map(|(bytes, blocks)| Retained { bytes, blocks }),
        sites: Counts {
            new: changes.new,
            gone: changes.gone,
            changed: changes.changed,
            unchanged: changes.unchanged,
            grew: changes.grew.len(),
            shrank: changes.shrank.len(),
        },
        grew: top_changes(&changes.grew, options.top, names),
        shrank: top_changes(&changes.shrank, options.top, names),
    };
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}
