//! `report --json`: the report as one JSON document for scripts and CI.
//! The shape is documented in `docs/json-output.md` beside this crate's
//! `Cargo.toml`; a change that could break a reader bumps
//! [`REPORT_JSON_VERSION`].

use std::io::{self, Write};

use alloc_track::dump::{Dump, OsMemory, Totals};
use serde::Serialize;

use super::text::ranked;
use super::{truncated_sites, ReportOptions, Truncated};
use crate::input;
use crate::rows::{DumpNames, GroupBy, Row};
use crate::weigh::{Measure, Weight};

/// The `format` field of `report --json`.
pub const REPORT_JSON_FORMAT: &str = "alloc-track-report";

/// The version of the `report --json` shape.
pub const REPORT_JSON_VERSION: u32 = 1;

#[derive(Serialize)]
struct ReportJson<'a> {
    format: &'static str,
    version: u32,
    dump: String,
    program: &'a str,
    pid: u32,
    timestamp_ms: u64,
    mode: &'a str,
    epoch: u32,
    measure: &'static str,
    totals: &'a Totals,
    os: &'a OsMemory,
    scope: Option<&'a str>,
    filter: Option<String>,
    group_by: &'static str,
    your_crate: Option<String>,
    truncated: TruncatedJson,
    sites: Table,
    peak: Option<Table>,
}

#[derive(Serialize)]
struct TruncatedJson {
    sites: u64,
    live_bytes: u64,
    live_blocks: u64,
}

impl From<Truncated> for TruncatedJson {
    fn from(t: Truncated) -> Self {
        TruncatedJson {
            sites: t.sites,
            live_bytes: t.live_bytes,
            live_blocks: t.live_blocks,
        }
    }
}

/// A ranked table: the top rows and what the rest hold.
#[derive(Serialize)]
struct Table {
    measure: &'static str,
    total_rows: usize,
    rows: Vec<RowJson>,
    rest: Rest,
}

#[derive(Serialize)]
struct RowJson {
    label: String,
    bytes: u64,
    blocks: u64,
    /// The first frame in the program's crate, when the stack (the row's
    /// heaviest) reaches it.
    your_code: Option<String>,
}

#[derive(Serialize)]
struct Rest {
    rows: usize,
    bytes: u64,
    blocks: u64,
}

fn table(names: &DumpNames<'_>, top: usize, weights: &[Weight], measure: Measure) -> Table {
    let rows = ranked(weights, measure, names);
    let shown = top.min(rows.len());
    let (top, rest) = rows.split_at(shown);
    let sum = |rows: &[Row]| {
        rows.iter().fold((0u64, 0u64), |(bytes, blocks), r| {
            (
                bytes.saturating_add(r.bytes),
                blocks.saturating_add(r.blocks),
            )
        })
    };
    let (rest_bytes, rest_blocks) = sum(rest);
    Table {
        measure: measure.name(),
        total_rows: rows.len(),
        rows: top
            .iter()
            .map(|row| RowJson {
                label: row.label.clone(),
                bytes: row.bytes,
                blocks: row.blocks,
                your_code: names.your_code(row.heaviest),
            })
            .collect(),
        rest: Rest {
            rows: rest.len(),
            bytes: rest_bytes,
            blocks: rest_blocks,
        },
    }
}

/// Writes the report as one JSON document and a newline.
pub(super) fn write_json(
    dump: &Dump,
    options: &ReportOptions,
    weights: Vec<Weight>,
    peak: Option<Vec<Weight>>,
    out: &mut impl Write,
) -> io::Result<()> {
    let names = options.naming.for_dump(dump);
    let document = ReportJson {
        format: REPORT_JSON_FORMAT,
        version: REPORT_JSON_VERSION,
        dump: input::display_name(&options.dump),
        program: &dump.program,
        pid: dump.pid,
        timestamp_ms: dump.timestamp_ms,
        mode: &dump.mode,
        epoch: dump.epoch,
        measure: options.measure.name(),
        totals: &dump.totals,
        os: &dump.os,
        scope: options.scope.as_deref(),
        filter: options.filter.describe(),
        group_by: match options.naming.group_by {
            GroupBy::Site => "site",
            GroupBy::YourCode => "your-code",
        },
        your_crate: names.program_crate().map(|(name, _)| name.clone()),
        truncated: truncated_sites(dump).into(),
        sites: table(&names, options.top, &weights, options.measure),
        peak: peak.map(|peak| table(&names, options.top, &peak, Measure::Peak)),
    };
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}
