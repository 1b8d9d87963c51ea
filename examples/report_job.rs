//! A nightly report job, written twice: once collecting every row of the
//! result set before writing any (the version that dies with an
//! out-of-memory error when the table grows), once streaming each row to
//! the output as it arrives. Both write the same report; their live heap
//! at the end is the same (nothing); only their peaks differ.
//!
//! The job runs both versions, resetting the peak in between, and saves a
//! dump after each. `report --by peak` shows what the heap held at each
//! peak, by site: the collected rows, or one row and a buffer.
//!
//! ```text
//! cargo run --release --example report_job
//! cargo run --release -p alloc-track-cli -- report report_job.collect.json --by peak
//! cargo run --release -p alloc-track-cli -- report report_job.stream.json --by peak
//! ```
//!
//! Pass a directory as the first argument to write the dumps there.

use std::alloc::System;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use alloc_track::human::Bytes;

#[global_allocator]
static GLOBAL: alloc_track::Tracker<System> = alloc_track::Tracker::new(System);

/// Rows in the result set.
const ROWS: u64 = 40_000;

/// One row of the result set, as a database driver hands it over.
struct Row {
    id: u64,
    customer: String,
    amounts: Vec<f64>,
}

/// The query: rows arrive one at a time, each freshly allocated.
fn query() -> impl Iterator<Item = Row> {
    (0..ROWS).map(fetch_row)
}

#[inline(never)]
fn fetch_row(id: u64) -> Row {
    Row {
        id,
        customer: format!("customer {id:08} of region {}", id % 17).repeat(3),
        amounts: (0..12).map(|m| (id * 31 + m) as f64 / 100.0).collect(),
    }
}

fn write_row(out: &mut impl Write, row: &Row) -> io::Result<()> {
    let total: f64 = row.amounts.iter().sum();
    writeln!(out, "{:>8} {:<80} {total:>12.2}", row.id, row.customer)
}

/// Collects the whole result set, then writes it: the peak holds every row.
#[inline(never)]
fn report_collected(out: &mut impl Write) -> io::Result<()> {
    let rows: Vec<Row> = query().collect();
    for row in &rows {
        write_row(out, row)?;
    }
    Ok(())
}

/// Writes each row as it arrives: the peak holds one row and the buffer.
#[inline(never)]
fn report_streamed(out: &mut impl Write) -> io::Result<()> {
    for row in query() {
        write_row(out, &row)?;
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_default();
    type Job = fn(&mut BufWriter<io::Sink>) -> io::Result<()>;
    let jobs: [(&str, Job); 2] = [("collect", report_collected), ("stream", report_streamed)];
    for (name, job) in jobs {
        // Each version's own peak, not the process's highest so far.
        alloc_track::reset_peak();
        let start = alloc_track::snapshot().live_bytes();
        let mut out = BufWriter::new(io::sink());
        job(&mut out)?;
        out.flush()?;
        drop(out);
        let path = out_dir.join(format!("report_job.{name}.json"));
        let after = alloc_track::snapshot();
        after.save(&path)?;
        println!(
            "{name:>7}: peak {} above a start of {}, {} live after; dump {}",
            Bytes(after.peak_bytes().saturating_sub(start)),
            Bytes(start),
            Bytes(after.live_bytes()),
            path.display()
        );
    }
    Ok(())
}
