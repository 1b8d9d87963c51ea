//! Reading, validating and writing dumps.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::{atomic_file, Dump, DumpError, FORMAT_NAME, FORMAT_VERSION};

/// Just enough of a dump to decide whether it is one, and of which version,
/// before committing to the full schema: a newer dump may have fields this
/// reader would reject, and its version is the better error.
#[derive(serde::Deserialize)]
struct Header {
    format: Option<serde_json::Value>,
    version: Option<serde_json::Value>,
}

impl Header {
    /// The better error for a document that failed to parse as a dump.
    fn explain(&self) -> Option<DumpError> {
        if self.format.as_ref().and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Some(DumpError::NotADump { path: None });
        }
        let found = self.version.as_ref()?.as_u64()?;
        (found > u64::from(FORMAT_VERSION)).then(|| DumpError::UnsupportedVersion {
            path: None,
            found: u32::try_from(found).unwrap_or(u32::MAX),
            supported: FORMAT_VERSION,
        })
    }
}

impl Dump {
    /// Parses and validates a dump from JSON text.
    pub fn from_slice(bytes: &[u8]) -> Result<Dump, DumpError> {
        match serde_json::from_slice::<Dump>(bytes) {
            Ok(dump) => {
                dump.validate()?;
                Ok(dump)
            }
            // Only a failed parse pays for a second look: a document that is
            // not a dump at all, or a newer version whose fields this reader
            // does not know, deserves that answer rather than the first
            // field serde tripped over.
            Err(error) => Err(match serde_json::from_slice::<Header>(bytes) {
                Ok(header) => header.explain().unwrap_or_else(|| error.into()),
                Err(_) => error.into(),
            }),
        }
    }

    /// Reads, parses and validates a dump from any reader.
    pub fn from_reader(mut reader: impl Read) -> Result<Dump, DumpError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|source| DumpError::Io { path: None, source })?;
        Dump::from_slice(&bytes)
    }

    /// Reads, parses and validates the dump in the file at `path`; every
    /// error names the file.
    pub fn load(path: impl AsRef<Path>) -> Result<Dump, DumpError> {
        let path = path.as_ref();
        let io_error = |source| DumpError::Io {
            path: Some(path.to_path_buf()),
            source,
        };
        let metadata = fs::metadata(path).map_err(io_error)?;
        if metadata.is_dir() {
            return Err(io_error(io::Error::new(
                io::ErrorKind::InvalidInput,
                "is a directory, not a dump file",
            )));
        }
        let file = File::open(path).map_err(io_error)?;
        Dump::from_reader(BufReader::new(file)).map_err(|e| e.with_path(path))
    }

    /// Writes the dump as JSON.
    pub fn write_to(&self, writer: impl Write) -> Result<(), DumpError> {
        let mut writer = BufWriter::new(writer);
        serde_json::to_writer(&mut writer, self)?;
        writer
            .flush()
            .map_err(|source| DumpError::Io { path: None, source })
    }

    /// Writes the dump to `path` atomically: into a temporary file of its
    /// own beside the destination, `fsync`ed, then renamed over it, so that
    /// a reader or a crash never sees a half-written dump under the real
    /// name, and saves from several threads or processes to one path at
    /// once each leave a complete dump (the last rename wins).
    ///
    /// - A symbolic link is followed: the dump replaces the file it names
    ///   and the link stays a link.
    /// - A path that exists and is not a regular file (a directory, named
    ///   pipe, socket or device) is refused with
    ///   [`DumpError::NotARegularFile`]; nothing is written, it is left as
    ///   it was.
    /// - A directory that does not exist or cannot be written to gives a
    ///   [`DumpError::Io`] naming `path` and that directory.
    /// - Temporary files of earlier saves to the same path whose process
    ///   no longer exists (killed mid-dump) are removed; those of live
    ///   processes are left alone.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DumpError> {
        Dump::save_with(path.as_ref(), |out| self.write_to(out))
    }

    /// Writes the file at `path` as [`Dump::save`] does, its contents
    /// written by `write_contents`.
    pub(crate) fn save_with(
        path: &Path,
        write_contents: impl FnOnce(&mut dyn Write) -> Result<(), DumpError>,
    ) -> Result<(), DumpError> {
        atomic_file::write_atomically(path, write_contents)
    }

    /// Checks that the dump agrees with itself: every index in range, every
    /// site's live figures within its totals, and the totals equal to the
    /// sum of the sites. [`Dump::from_slice`] calls it; call it yourself on
    /// a dump built by hand.
    pub fn validate(&self) -> Result<(), DumpError> {
        if self.format != FORMAT_NAME {
            return Err(DumpError::NotADump { path: None });
        }
        if self.version == 0 || self.version > FORMAT_VERSION {
            return Err(DumpError::UnsupportedVersion {
                path: None,
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let location_count = self.locations.len();
        for (index, stack) in self.stacks.iter().enumerate() {
            if let Some(bad) = stack
                .locations
                .iter()
                .find(|&&l| l as usize >= location_count)
            {
                return Err(DumpError::invalid(format!(
                    "stacks[{index}] refers to location {bad}, but there are only \
                     {location_count} locations"
                )));
            }
        }
        let mut sum = SiteSum::default();
        for (index, site) in self.sites.iter().enumerate() {
            if site.stack as usize >= self.stacks.len() {
                return Err(DumpError::invalid(format!(
                    "sites[{index}] refers to stack {}, but there are only {} stacks",
                    site.stack,
                    self.stacks.len()
                )));
            }
            if site.live_bytes > site.total_bytes
                || site.live_blocks > site.total_blocks
                || site.temporary_blocks > site.total_blocks
            {
                return Err(DumpError::invalid(format!(
                    "sites[{index}] has more live ({} bytes, {} blocks) than ever allocated \
                     ({} bytes, {} blocks)",
                    site.live_bytes, site.live_blocks, site.total_bytes, site.total_blocks
                )));
            }
            let births = site
                .births
                .iter()
                .try_fold((0u64, 0u64), |(bytes, blocks), b| {
                    Some((bytes.checked_add(b.bytes)?, blocks.checked_add(b.blocks)?))
                });
            if !site.births.is_empty() && births != Some((site.live_bytes, site.live_blocks)) {
                return Err(DumpError::invalid(format!(
                    "sites[{index}].births do not add up to its live bytes and blocks"
                )));
            }
            let mut scoped = (0u64, 0u64);
            for part in &site.scopes {
                if part.scope as usize >= self.scopes.len() {
                    return Err(DumpError::invalid(format!(
                        "sites[{index}] refers to scope {}, but there are only {} scopes",
                        part.scope,
                        self.scopes.len()
                    )));
                }
                scoped = (
                    scoped.0.saturating_add(part.bytes),
                    scoped.1.saturating_add(part.blocks),
                );
            }
            if scoped.0 > site.live_bytes || scoped.1 > site.live_blocks {
                return Err(DumpError::invalid(format!(
                    "sites[{index}].scopes add up to more than the site's live figures"
                )));
            }
            sum.add(site)
                .ok_or_else(|| DumpError::invalid("the sites' figures overflow 64 bits"))?;
        }
        let totals = &self.totals;
        // Only full mode records every block; the partial modes' sites are
        // estimates (sampled) or absent (count), so they need not add up.
        let expected = [
            ("live_bytes", totals.live_bytes, sum.live_bytes),
            ("live_blocks", totals.live_blocks, sum.live_blocks),
            ("total_bytes", totals.total_bytes, sum.total_bytes),
            ("total_blocks", totals.total_blocks, sum.total_blocks),
        ];
        for (name, total, summed) in expected {
            if self.mode == "full" && total != summed {
                return Err(DumpError::invalid(format!(
                    "totals.{name} is {total} but the sites add up to {summed}"
                )));
            }
        }
        let mut peak_sum = 0u64;
        for (index, peak) in self.peak_sites.iter().enumerate() {
            if peak.stack as usize >= self.stacks.len() {
                return Err(DumpError::invalid(format!(
                    "peak_sites[{index}] refers to stack {}, but there are only {} stacks",
                    peak.stack,
                    self.stacks.len()
                )));
            }
            peak_sum = peak_sum
                .checked_add(peak.bytes)
                .ok_or_else(|| DumpError::invalid("the peak sites' bytes overflow 64 bits"))?;
        }
        if peak_sum > totals.peak_bytes {
            return Err(DumpError::invalid(format!(
                "peak_sites add up to {peak_sum} bytes, above totals.peak_bytes ({})",
                totals.peak_bytes
            )));
        }
        if totals.peak_bytes < totals.live_bytes {
            return Err(DumpError::invalid(format!(
                "totals.peak_bytes ({}) is below totals.live_bytes ({})",
                totals.peak_bytes, totals.live_bytes
            )));
        }
        Ok(())
    }
}

#[derive(Default)]
struct SiteSum {
    live_bytes: u64,
    live_blocks: u64,
    total_bytes: u64,
    total_blocks: u64,
}

impl SiteSum {
    fn add(&mut self, site: &super::SiteRecord) -> Option<()> {
        self.live_bytes = self.live_bytes.checked_add(site.live_bytes)?;
        self.live_blocks = self.live_blocks.checked_add(site.live_blocks)?;
        self.total_bytes = self.total_bytes.checked_add(site.total_bytes)?;
        self.total_blocks = self.total_blocks.checked_add(site.total_blocks)?;
        Some(())
    }
}
