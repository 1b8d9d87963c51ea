//! DHAT's JSON format (`dhatFileVersion` 2, as written by valgrind's DHAT
//! and by dhat-rs), which valgrind's `dh_view.html` and the Firefox
//! Profiler's DHAT importer open.
//!
//! The frame table starts with `[root]`; each frame is a string
//! `0xADDR: function (file:line:col)`, inlined frames sharing their
//! location's address. Every program point must have a distinct frame list,
//! so stacks that become equal once turned into strings are merged.
//!
//! DHAT's viewer shows block lifetimes, the figures at the global peak and
//! at the end, and rates over the run only for a profile that claims to
//! have recorded lifetimes (`bklt`). alloc-track records no lifetimes and no
//! run time, so the export claims none (`bklt: false`) and carries one
//! figure, the chosen measure, as DHAT's "total": the live bytes and blocks
//! by default, the bytes allocated since tracking began, or the bytes held
//! at the peak. `verb` and `mode` say which ("Live at {...}" in the viewer).
//!
//! A dump is one moment, not a run: DHAT's end time `te` is one dump
//! (`1_000_000` of `tu = "µdump"`, `Mtu = "dump"`), so that the viewer's
//! rates read as the figure per dump rather than as "∞/s".
//!
//! Temporary allocations (`sites[].temporary_blocks`) are not exported:
//! DHAT has no field for them, and the lifetimes `dh_view` would use to
//! call blocks short-lived are not recorded.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use alloc_track::dump::{Dump, Frame};
use serde::Serialize;

use crate::error::CliError;
use crate::stacks::OVERFLOW_LABEL;
use crate::weigh::{self, Measure};

/// The whole file. Field names are DHAT's.
#[derive(Serialize)]
#[allow(non_snake_case)] // DHAT's own field names
struct DhatFile<'a> {
    dhatFileVersion: u32,
    mode: String,
    verb: &'a str,
    bklt: bool,
    bkacc: bool,
    tu: &'a str,
    Mtu: &'a str,
    cmd: &'a str,
    pid: u32,
    te: u64,
    pps: Vec<ProgramPoint>,
    ftbl: Vec<String>,
}

/// One program point (one distinct stack): the measure's bytes and blocks
/// there. With `bklt` false DHAT reads no other figure.
#[derive(Clone, Debug, Default, Serialize)]
struct ProgramPoint {
    tb: u64,
    tbk: u64,
    /// Frame-table indices, leaf first.
    fs: Vec<usize>,
}

/// `te`: one dump, in millionths of a dump, so that DHAT's "per `Mtu`"
/// rates are the figure itself.
const ONE_DUMP: u64 = 1_000_000;

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

/// The dump as DHAT JSON bytes, each program point weighed by `measure`
/// (see the module docs). `path` names the dump in errors.
pub fn to_json(dump: &Dump, measure: Measure, path: &Path) -> Result<Vec<u8>, CliError> {
    let weights = weigh::weigh(dump, measure, path)?;
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

    let mut pps: Vec<ProgramPoint> = Vec::new();
    let mut by_frames: HashMap<Vec<usize>, usize> = HashMap::new();
    for weight in &weights {
        let Some(stack) = dump.stacks.get(weight.stack as usize) else {
            continue;
        };
        let mut fs: Vec<usize> = stack
            .locations
            .iter()
            .filter_map(|&l| location_frames.get(l as usize))
            .flatten()
            .copied()
            .collect();
        if fs.is_empty() {
            // The stack table's catch-all: named as every command names it.
            let text = format!("0x0: {OVERFLOW_LABEL}");
            fs.push(*ftbl_index.entry(text).or_insert_with_key(|text| {
                ftbl.push(text.clone());
                ftbl.len() - 1
            }));
        }
        let point = ProgramPoint {
            tb: weight.bytes,
            tbk: weight.blocks,
            fs: Vec::new(),
        };
        match by_frames.get(&fs) {
            Some(&i) => {
                if let Some(existing) = pps.get_mut(i) {
                    existing.tb = existing.tb.saturating_add(point.tb);
                    existing.tbk = existing.tbk.saturating_add(point.tbk);
                }
            }
            None => {
                by_frames.insert(fs.clone(), pps.len());
                pps.push(ProgramPoint { fs, ..point });
            }
        }
    }

    let (verb, what) = match measure {
        Measure::Live | Measure::Blocks | Measure::Type => {
            ("Live", "live bytes and blocks at the dump")
        }
        Measure::Temporary => (
            "Temporary",
            "blocks freed before their thread's next allocation",
        ),
        Measure::Allocated => (
            "Allocated",
            "bytes and blocks allocated since tracking began",
        ),
        Measure::Peak => (
            "Live at the peak",
            "bytes and blocks live at the heap's peak",
        ),
    };
    let file = DhatFile {
        dhatFileVersion: 2,
        mode: format!("alloc-track {}: {what}", dump.mode),
        verb,
        bklt: false,
        bkacc: false,
        tu: "µdump",
        Mtu: "dump",
        cmd: &dump.program,
        pid: dump.pid,
        te: ONE_DUMP,
        pps,
        ftbl,
    };
    // Serialising plain structs of strings and integers into memory cannot
    // fail; an empty document would be the only possible fallback.
    Ok(serde_json::to_vec(&file).unwrap_or_default())
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
