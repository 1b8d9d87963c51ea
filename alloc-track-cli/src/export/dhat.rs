//! DHAT's JSON format (`dhatFileVersion` 2, as written by valgrind's DHAT
//! and by dhat-rs), which valgrind's `dh_view.html` and the Firefox
//! Profiler's DHAT importer open.
//!
//! The frame table starts with `[root]`; each frame is a string
//! `0xADDR: function (file:line:col)`, inlined frames sharing their
//! location's address. Every program point must have a distinct frame list,
//! so stacks that become equal once turned into strings are merged.
//!
//! What alloc-track does not record is written as zero: block lifetimes
//! (`tl`) and times (`tg`, `te`: there is one moment, the dump). The
//! per-site maximum (`mb`) is the larger of the live and peak figures, a
//! lower bound of the true maximum. The figures at the global peak (`gb`)
//! are the tracker's peak breakdown, or zero when the dump has none.
//! Temporary allocations (`sites[].temporary_blocks`) are not exported:
//! DHAT has no field for them, and the lifetimes `dh_view` would use to
//! call blocks short-lived are not recorded.

use std::collections::HashMap;
use std::fmt::Write as _;

use alloc_track::dump::{Dump, Frame};
use serde::Serialize;

/// The whole file. Field names are DHAT's.
#[derive(Serialize)]
#[allow(non_snake_case)] // DHAT's own field names
struct DhatFile<'a> {
    dhatFileVersion: u32,
    mode: &'a str,
    verb: &'a str,
    bklt: bool,
    bkacc: bool,
    tu: &'a str,
    Mtu: &'a str,
    tuth: u64,
    cmd: &'a str,
    pid: u32,
    tg: u64,
    te: u64,
    pps: Vec<ProgramPoint>,
    ftbl: Vec<String>,
}

/// One program point (one distinct stack).
#[derive(Clone, Debug, Default, Serialize)]
struct ProgramPoint {
    /// Total bytes and blocks allocated here.
    tb: u64,
    tbk: u64,
    /// Total lifetime of those blocks: not recorded, so 0.
    tl: u64,
    /// The most bytes and blocks live here at once (a lower bound).
    mb: u64,
    mbk: u64,
    /// Bytes and blocks live here at the global peak.
    gb: u64,
    gbk: u64,
    /// Bytes and blocks live here at the end (the dump).
    eb: u64,
    ebk: u64,
    /// Frame-table indices, leaf first.
    fs: Vec<usize>,
}

impl ProgramPoint {
    fn merge(&mut self, other: &ProgramPoint) {
        self.tb = self.tb.saturating_add(other.tb);
        self.tbk = self.tbk.saturating_add(other.tbk);
        self.mb = self.mb.saturating_add(other.mb);
        self.mbk = self.mbk.saturating_add(other.mbk);
        self.gb = self.gb.saturating_add(other.gb);
        self.gbk = self.gbk.saturating_add(other.gbk);
        self.eb = self.eb.saturating_add(other.eb);
        self.ebk = self.ebk.saturating_add(other.ebk);
    }
}

/// DHAT's frame text: `0x1a2b: name (file:line:col)`, or `(in program)`
/// without a file, the way valgrind writes frames it cannot place.
fn frame_text(address: u64, frame: Option<&Frame>, program: &str) -> String {
    let mut text = format!("{address:#x}: ");
    match frame {
        None => {
            let _ = write!(text, "??? (in {program})");
        }
        Some(frame) => {
            text.push_str(&frame.function);
            match &frame.file {
                None => {
                    let _ = write!(text, " (in {program})");
                }
                Some(file) => {
                    let _ = write!(text, " ({file}");
                    if let Some(line) = frame.line {
                        let _ = write!(text, ":{line}");
                        if let Some(column) = frame.column {
                            let _ = write!(text, ":{column}");
                        }
                    }
                    text.push(')');
                }
            }
        }
    }
    text
}

/// The dump as DHAT JSON bytes.
pub fn to_json(dump: &Dump) -> Vec<u8> {
    // Frame-table indices of each location's frames, innermost first.
    let mut ftbl = vec!["[root]".to_string()];
    let mut ftbl_index: HashMap<String, usize> = HashMap::new();
    let location_frames: Vec<Vec<usize>> = dump
        .locations
        .iter()
        .map(|location| {
            let texts: Vec<String> = if location.frames.is_empty() {
                vec![frame_text(location.address, None, &dump.program)]
            } else {
                location
                    .frames
                    .iter()
                    .map(|f| frame_text(location.address, Some(f), &dump.program))
                    .collect()
            };
            texts
                .into_iter()
                .map(|text| {
                    *ftbl_index.entry(text).or_insert_with_key(|text| {
                        ftbl.push(text.clone());
                        ftbl.len() - 1
                    })
                })
                .collect()
        })
        .collect();

    // Peak figures by stack; sized by the stack table read from the file.
    let mut peak = vec![(0u64, 0u64); dump.stacks.len()];
    for p in &dump.peak_sites {
        if let Some(slot) = peak.get_mut(p.stack as usize) {
            slot.0 = slot.0.saturating_add(p.bytes);
            slot.1 = slot.1.saturating_add(p.blocks);
        }
    }

    let mut pps: Vec<ProgramPoint> = Vec::new();
    let mut by_frames: HashMap<Vec<usize>, usize> = HashMap::new();
    for site in &dump.sites {
        let Some(stack) = dump.stacks.get(site.stack as usize) else {
            continue;
        };
        let fs: Vec<usize> = stack
            .locations
            .iter()
            .filter_map(|&l| location_frames.get(l as usize))
            .flatten()
            .copied()
            .collect();
        let (gb, gbk) = peak.get(site.stack as usize).copied().unwrap_or_default();
        let point = ProgramPoint {
            tb: site.total_bytes,
            tbk: site.total_blocks,
            tl: 0,
            mb: site.live_bytes.max(gb),
            mbk: site.live_blocks.max(gbk),
            gb,
            gbk,
            eb: site.live_bytes,
            ebk: site.live_blocks,
            fs: Vec::new(),
        };
        match by_frames.get(&fs) {
            Some(&i) => {
                if let Some(existing) = pps.get_mut(i) {
                    existing.merge(&point);
                }
            }
            None => {
                by_frames.insert(fs.clone(), pps.len());
                pps.push(ProgramPoint { fs, ..point });
            }
        }
    }

    let file = DhatFile {
        dhatFileVersion: 2,
        mode: "rust-heap",
        verb: "Allocated",
        bklt: true,
        bkacc: false,
        tu: "µs",
        Mtu: "s",
        tuth: 10,
        cmd: &dump.program,
        pid: dump.pid,
        tg: 0,
        te: 0,
        pps,
        ftbl,
    };
    // Serialising plain structs of strings and integers into memory cannot
    // fail; an empty document would be the only possible fallback.
    serde_json::to_vec(&file).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_like_dhat_frames() {
        let frame = Frame {
            function: "app::f".into(),
            file: Some("src/a.rs".into()),
            line: Some(3),
            column: Some(9),
        };
        assert_eq!(
            frame_text(0x1f, Some(&frame), "app"),
            "0x1f: app::f (src/a.rs:3:9)"
        );
        assert_eq!(frame_text(0x1f, None, "app"), "0x1f: ??? (in app)");
    }
}
