//! Writing a dump piece by piece: the header, then each location, stack,
//! site, peak site and scope as it comes, so that a dump of any size is
//! written with memory for one entry at a time instead of a whole [`Dump`]
//! value (about 3.5 KB a site) or a whole JSON string.
//!
//! The bytes are exactly those `serde_json::to_writer(&dump)` gives for the
//! same [`Dump`]: the same field order, the same fields left out when empty.
//! The unit tests below hold the two to that.

use std::io::{self, Write};

use serde::Serialize;

use super::{Dump, Frame, PeakSite, Scope, SiteRecord};

/// A location as written: the same JSON as [`super::Location`], borrowing
/// its frames from the symbol cache instead of copying them.
#[derive(Serialize)]
struct LocationRef<'a> {
    address: u64,
    frames: &'a [Frame],
}

/// A stack as written: the same JSON as [`super::StackRecord`].
#[derive(Serialize)]
struct StackRef<'a> {
    locations: &'a [u32],
    #[serde(skip_serializing_if = "is_false")]
    truncated: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The arrays of a dump, in the order [`Dump`] declares them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Section {
    Header,
    Locations,
    Stacks,
    Sites,
    PeakSites,
    Scopes,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Header => "",
            Section::Locations => "locations",
            Section::Stacks => "stacks",
            Section::Sites => "sites",
            Section::PeakSites => "peak_sites",
            Section::Scopes => "scopes",
        }
    }

    /// Arrays written even when empty; the others are left out then, as
    /// `skip_serializing_if = "Vec::is_empty"` does.
    fn always_written(self) -> bool {
        matches!(self, Section::Locations | Section::Stacks | Section::Sites)
    }

    fn next(self) -> Section {
        match self {
            Section::Header => Section::Locations,
            Section::Locations => Section::Stacks,
            Section::Stacks => Section::Sites,
            Section::Sites => Section::PeakSites,
            Section::PeakSites | Section::Scopes => Section::Scopes,
        }
    }
}

/// Writes one dump as JSON, entry by entry. Entries must come section by
/// section in the order of [`Dump`]'s fields: locations, stacks, sites,
/// peak sites, scopes; then [`finish`](DumpWriter::finish).
pub(crate) struct DumpWriter<W: Write> {
    out: W,
    section: Section,
    /// Whether the current array has an entry yet (the next one needs a
    /// comma before it).
    has_entry: bool,
}

impl<W: Write> DumpWriter<W> {
    /// Writes the header: every field of `header` before `locations`. Its
    /// tables are ignored (they come entry by entry).
    pub(crate) fn begin(mut out: W, header: &Dump) -> io::Result<Self> {
        out.write_all(b"{")?;
        let mut first = true;
        let mut field = |out: &mut W, name: &str, value: &dyn erased::Value| -> io::Result<()> {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            write!(out, "\"{name}\":")?;
            value.write_json(out)
        };
        field(&mut out, "format", &header.format)?;
        field(&mut out, "version", &header.version)?;
        field(&mut out, "program", &header.program)?;
        field(&mut out, "pid", &header.pid)?;
        field(&mut out, "timestamp_ms", &header.timestamp_ms)?;
        field(&mut out, "mode", &header.mode)?;
        if let Some(mean) = &header.sample_mean_bytes {
            field(&mut out, "sample_mean_bytes", mean)?;
        }
        if let Some(walker) = &header.stack_walker {
            field(&mut out, "stack_walker", walker)?;
        }
        field(&mut out, "epoch", &header.epoch)?;
        field(&mut out, "totals", &header.totals)?;
        field(&mut out, "os", &header.os)?;
        if let Some(allocator) = &header.allocator {
            field(&mut out, "allocator", allocator)?;
        }
        field(&mut out, "tracker", &header.tracker)?;
        Ok(DumpWriter {
            out,
            section: Section::Header,
            has_entry: false,
        })
    }

    /// Moves on to `target`, closing the current array and writing the
    /// always-present arrays in between, empty.
    fn enter(&mut self, target: Section) -> io::Result<()> {
        while self.section < target {
            let opened =
                self.section == Section::Header || self.section.always_written() || self.has_entry;
            if self.section != Section::Header && opened {
                self.out.write_all(b"]")?;
            }
            self.section = self.section.next();
            self.has_entry = false;
            if self.section == target || self.section.always_written() {
                write!(self.out, ",\"{}\":[", self.section.name())?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, section: Section, value: &impl Serialize) -> io::Result<()> {
        self.enter(section)?;
        if self.has_entry {
            self.out.write_all(b",")?;
        }
        self.has_entry = true;
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)
    }

    pub(crate) fn location(&mut self, address: u64, frames: &[Frame]) -> io::Result<()> {
        self.entry(Section::Locations, &LocationRef { address, frames })
    }

    pub(crate) fn stack(&mut self, locations: &[u32], truncated: bool) -> io::Result<()> {
        self.entry(
            Section::Stacks,
            &StackRef {
                locations,
                truncated,
            },
        )
    }

    pub(crate) fn site(&mut self, site: &SiteRecord) -> io::Result<()> {
        self.entry(Section::Sites, site)
    }

    pub(crate) fn peak_site(&mut self, peak: &PeakSite) -> io::Result<()> {
        self.entry(Section::PeakSites, peak)
    }

    pub(crate) fn scope(&mut self, scope: &Scope) -> io::Result<()> {
        self.entry(Section::Scopes, scope)
    }

    /// Closes the document and flushes; returns the writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        // Make sure the always-present arrays exist, then close the last
        // one that was opened.
        self.enter(Section::Sites)?;
        if self.section.always_written() || self.has_entry {
            self.out.write_all(b"]")?;
        }
        self.out.write_all(b"}")?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// One header value, written with serde whatever its type.
mod erased {
    use std::io::{self, Write};

    pub(super) trait Value {
        fn write_json(&self, out: &mut dyn Write) -> io::Result<()>;
    }

    impl<T: serde::Serialize> Value for T {
        fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
            serde_json::to_writer(out, self).map_err(io::Error::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Location, StackRecord};
    use super::*;

    fn streamed(dump: &Dump) -> Vec<u8> {
        let mut writer = DumpWriter::begin(Vec::new(), dump).unwrap();
        for location in &dump.locations {
            writer.location(location.address, &location.frames).unwrap();
        }
        for stack in &dump.stacks {
            writer.stack(&stack.locations, stack.truncated).unwrap();
        }
        for site in &dump.sites {
            writer.site(site).unwrap();
        }
        for peak in &dump.peak_sites {
            writer.peak_site(peak).unwrap();
        }
        for scope in &dump.scopes {
            writer.scope(scope).unwrap();
        }
        writer.finish().unwrap()
    }

    fn header() -> Dump {
        Dump {
            format: super::super::FORMAT_NAME.to_string(),
            version: super::super::FORMAT_VERSION,
            program: "demo \"quoted\"".to_string(),
            pid: 7,
            timestamp_ms: 1,
            mode: "sampled".to_string(),
            sample_mean_bytes: Some(4096),
            stack_walker: Some("cfi".to_string()),
            epoch: 2,
            totals: Default::default(),
            os: Default::default(),
            allocator: Some(super::super::AllocatorStats::Glibc(
                super::super::GlibcStats {
                    free_bytes: 5,
                    arenas: Some(2),
                    ..Default::default()
                },
            )),
            tracker: Default::default(),
            locations: vec![],
            stacks: vec![],
            sites: vec![],
            peak_sites: vec![],
            scopes: vec![],
        }
    }

    #[test]
    fn an_empty_dump_streams_as_serde_writes_it() {
        let mut dump = header();
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        dump.sample_mean_bytes = None;
        dump.stack_walker = None;
        dump.allocator = Some(super::super::AllocatorStats::Jemalloc(
            super::super::JemallocStats {
                resident_bytes: 9,
                ..Default::default()
            },
        ));
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        dump.allocator = None;
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
    }

    #[test]
    fn every_section_streams_as_serde_writes_it() {
        let mut dump = header();
        dump.locations = vec![
            Location {
                address: 0x10,
                frames: vec![Frame {
                    function: "a::b".into(),
                    file: Some("src/a.rs".into()),
                    line: Some(3),
                    column: None,
                }],
            },
            Location {
                address: 0x20,
                frames: vec![],
            },
        ];
        dump.stacks = vec![
            StackRecord {
                locations: vec![0, 1],
                truncated: true,
            },
            StackRecord {
                locations: vec![1],
                truncated: false,
            },
        ];
        dump.sites = vec![SiteRecord::default(), SiteRecord::default()];
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        // Each optional array alone, and both.
        dump.scopes = vec![Scope::default()];
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        dump.peak_sites = vec![PeakSite::default(); 2];
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        dump.scopes.clear();
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
        // Sites with no locations before them.
        dump.locations.clear();
        dump.stacks.clear();
        assert_eq!(streamed(&dump), serde_json::to_vec(&dump).unwrap());
    }
}
