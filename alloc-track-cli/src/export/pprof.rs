//! pprof's profile.proto, gzipped, laid out exactly as Go's heap profiles
//! are, so that `go tool pprof`, Grafana Pyroscope, Parca and Polar Signals
//! open it as a heap profile:
//!
//! - sample types in Go's order: `alloc_objects/count`, `alloc_space/bytes`,
//!   `inuse_objects/count`, `inuse_space/bytes` (tools default to the last,
//!   the live heap);
//! - period type `space/bytes`, period 1 (every allocation was recorded, so
//!   no tool must scale the values up);
//! - one sample per stack, locations leaf first;
//! - one location per code address, its lines innermost (inlined) first and
//!   the function that owns the code last, as profile.proto specifies;
//! - one mapping naming the program and spanning every address;
//! - a string table starting with "".
//!
//! The message structs are a few `prost` derives, so no `protoc` is needed,
//! and the same structs decode the output in tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use alloc_track::dump::Dump;
use flate2::write::GzEncoder;
use flate2::Compression;
use prost::Message;

use crate::error::CliError;
use crate::stacks::OVERFLOW_LABEL;

/// `perftools.profiles.Profile`.
#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    pub mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
}

/// `perftools.profiles.ValueType`: indices into the string table.
#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

/// `perftools.profiles.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

/// `perftools.profiles.Mapping`.
#[derive(Clone, PartialEq, Message)]
pub struct Mapping {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub memory_start: u64,
    #[prost(uint64, tag = "3")]
    pub memory_limit: u64,
    #[prost(uint64, tag = "4")]
    pub file_offset: u64,
    #[prost(int64, tag = "5")]
    pub filename: i64,
    #[prost(int64, tag = "6")]
    pub build_id: i64,
    #[prost(bool, tag = "7")]
    pub has_functions: bool,
    #[prost(bool, tag = "8")]
    pub has_filenames: bool,
    #[prost(bool, tag = "9")]
    pub has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    pub has_inline_frames: bool,
}

/// `perftools.profiles.Location`.
#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(uint64, tag = "2")]
    pub mapping_id: u64,
    #[prost(uint64, tag = "3")]
    pub address: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

/// `perftools.profiles.Line`.
#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
    #[prost(int64, tag = "2")]
    pub line: i64,
}

/// `perftools.profiles.Function`.
#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
    #[prost(int64, tag = "4")]
    pub filename: i64,
    #[prost(int64, tag = "5")]
    pub start_line: i64,
}

/// Interns strings into the profile's string table; index 0 is "".
#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Strings {
        let mut strings = Strings::default();
        strings.intern("");
        strings
    }

    fn intern(&mut self, text: &str) -> i64 {
        if let Some(&i) = self.index.get(text) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(text.to_string());
        self.index.insert(text.to_string(), i);
        i
    }
}

/// Builds the profile (not yet encoded). `path` names the dump in errors.
pub fn build(dump: &Dump, path: &Path) -> Result<Profile, CliError> {
    let mut strings = Strings::new();
    let value_type = |strings: &mut Strings, kind: &str, unit: &str| ValueType {
        r#type: strings.intern(kind),
        unit: strings.intern(unit),
    };
    let sample_type = vec![
        value_type(&mut strings, "alloc_objects", "count"),
        value_type(&mut strings, "alloc_space", "bytes"),
        value_type(&mut strings, "inuse_objects", "count"),
        value_type(&mut strings, "inuse_space", "bytes"),
    ];
    let period_type = Some(value_type(&mut strings, "space", "bytes"));

    let program = strings.intern(&dump.program);
    let (low, high) = dump
        .locations
        .iter()
        .fold((u64::MAX, 0u64), |(low, high), l| {
            (low.min(l.address), high.max(l.address))
        });
    let mapping = Mapping {
        id: 1,
        memory_start: if low <= high { low } else { 0 },
        memory_limit: high.saturating_add(1),
        filename: program,
        has_functions: true,
        has_filenames: true,
        has_line_numbers: true,
        has_inline_frames: true,
        ..Mapping::default()
    };

    // One function per distinct (name, file); pprof joins lines to them.
    let mut functions: Vec<Function> = Vec::new();
    let mut function_ids: HashMap<(i64, i64), u64> = HashMap::new();
    let mut location = Vec::with_capacity(dump.locations.len());
    for (index, loc) in dump.locations.iter().enumerate() {
        let mut lines = Vec::with_capacity(loc.frames.len());
        for frame in &loc.frames {
            let name = strings.intern(&frame.function);
            let file = frame.file.as_deref().map_or(0, |f| strings.intern(f));
            let next_id = functions.len() as u64 + 1;
            let id = *function_ids.entry((name, file)).or_insert(next_id);
            if id == next_id {
                functions.push(Function {
                    id,
                    name,
                    // No system (mangled) name: pprof would take a name equal
                    // to it for a demangled C++ one and strip every `<...>`,
                    // turning `<T as SpecFromElem>::from_elem` into
                    // `::from_elem`. It leaves a name alone that differs.
                    system_name: 0,
                    filename: file,
                    start_line: 0,
                });
            }
            lines.push(Line {
                function_id: id,
                line: frame.line.map_or(0, i64::from),
            });
        }
        location.push(Location {
            id: index as u64 + 1,
            mapping_id: 1,
            address: loc.address,
            line: lines,
        });
    }

    // The stack table's catch-all has no frames; pprof shows a sample
    // without locations as nothing, so it gets one named as every command
    // names it.
    let mut overflow_location = None;
    if dump.stacks.iter().any(|s| s.locations.is_empty()) {
        let name = strings.intern(OVERFLOW_LABEL);
        let id = functions.len() as u64 + 1;
        functions.push(Function {
            id,
            name,
            system_name: 0,
            filename: 0,
            start_line: 0,
        });
        let location_id = location.len() as u64 + 1;
        location.push(Location {
            id: location_id,
            mapping_id: 1,
            address: 0,
            line: vec![Line {
                function_id: id,
                line: 0,
            }],
        });
        overflow_location = Some(location_id);
    }

    let too_large = |what: &str, value: u64| CliError::TooLarge {
        path: path.to_path_buf(),
        what: format!("{what} {value} does not fit pprof's 64-bit signed values"),
    };
    let signed = |what: &str, value: u64| i64::try_from(value).map_err(|_| too_large(what, value));
    let mut sample = Vec::with_capacity(dump.sites.len());
    for site in &dump.sites {
        let Some(stack) = dump.stacks.get(site.stack as usize) else {
            continue; // validated dumps have none
        };
        let mut location_id: Vec<u64> = stack.locations.iter().map(|&l| u64::from(l) + 1).collect();
        if location_id.is_empty() {
            location_id.extend(overflow_location);
        }
        sample.push(Sample {
            location_id,
            value: vec![
                signed("allocated blocks", site.total_blocks)?,
                signed("allocated bytes", site.total_bytes)?,
                signed("live blocks", site.live_blocks)?,
                signed("live bytes", site.live_bytes)?,
            ],
        });
    }

    Ok(Profile {
        sample_type,
        sample,
        mapping: vec![mapping],
        location,
        function: functions,
        string_table: strings.table,
        time_nanos: i64::try_from(dump.timestamp_ms)
            .ok()
            .and_then(|ms| ms.checked_mul(1_000_000))
            .unwrap_or(0),
        period_type,
        period: 1,
    })
}

/// The gzipped profile, ready to write to a `.pb.gz` file.
pub fn encode(dump: &Dump, path: &Path) -> Result<Vec<u8>, CliError> {
    let profile = build(dump, path)?;
    let mut gzip = GzEncoder::new(Vec::new(), Compression::default());
    // Writing into memory cannot fail.
    let written = gzip
        .write_all(&profile.encode_to_vec())
        .and_then(|()| gzip.finish());
    written.map_err(|source| CliError::Output {
        path: path.to_path_buf(),
        source,
    })
}
