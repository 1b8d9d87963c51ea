//! `alloc-track export`: a dump in formats other tools open.

pub mod dhat;
pub mod folded;
pub mod pprof;

use std::io::Write;
use std::path::PathBuf;

use crate::error::CliError;
use crate::focus::StackFilter;
use crate::input;
use crate::output::Output;
use crate::stacks::Order;
use crate::weigh::Measure;

/// The formats `export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Collapsed stacks (`main;f;g 123`) for any flamegraph tool.
    Folded,
    /// Gzipped profile.proto laid out like Go's heap profiles.
    Pprof,
    /// DHAT's JSON (`dhatFileVersion` 2).
    Dhat,
}

/// The `export` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExportOptions {
    /// The dump to convert; `-` is standard input.
    pub dump: PathBuf,
    /// The format to write.
    pub format: ExportFormat,
    /// Where to write it.
    pub output: Output,
    /// What the folded and DHAT figures weigh (pprof carries every figure).
    pub measure: Measure,
    /// Which stacks to export (`--focus`, `--ignore`).
    pub filter: StackFilter,
}

impl ExportOptions {
    /// Options exporting live bytes.
    pub fn new(dump: impl Into<PathBuf>, format: ExportFormat, output: Output) -> Self {
        ExportOptions {
            dump: dump.into(),
            format,
            output,
            measure: Measure::Live,
            filter: StackFilter::default(),
        }
    }
}

/// The `export` command. When the output is a file, one line on `out` says
/// where it went; with [`Output::Stdout`] (no `-o`, or `-o -`) the export
/// itself goes to `out`.
pub fn export(options: &ExportOptions, out: &mut impl Write) -> Result<(), CliError> {
    let mut dump = input::load(&options.dump)?;
    options.filter.apply(&mut dump);
    let bytes = match options.format {
        ExportFormat::Folded => {
            folded::folded_lines(&dump, &options.dump, options.measure, Order::RootFirst)?
                .into_bytes()
        }
        ExportFormat::Pprof => pprof::encode(&dump, &options.dump)?,
        ExportFormat::Dhat => dhat::to_json(&dump, options.measure, &options.dump)?,
    };
    options.output.write_with(out, |w| w.write_all(&bytes))?;
    if let Output::File(path) = &options.output {
        let what = match options.format {
            ExportFormat::Folded => "folded stacks",
            ExportFormat::Pprof => "pprof profile",
            ExportFormat::Dhat => "DHAT profile",
        };
        writeln!(out, "{what}: {}", path.display()).map_err(CliError::Stdout)?;
    }
    Ok(())
}
