//! `alloc-track report`: what is holding the memory, where it was
//! allocated, and what the peak consisted of, in one screen.

use std::io::Write;
use std::path::PathBuf;

use alloc_track::dump::Dump;

mod json;
mod text;

pub use json::{REPORT_JSON_FORMAT, REPORT_JSON_VERSION};
pub use text::{truncated_sites, utc, Truncated};

use crate::error::CliError;
use crate::flamegraph::{render_svg, GraphOptions};
use crate::focus::StackFilter;
use crate::input;
use crate::output::{write_file, Output};
use crate::rows::Naming;
use crate::scopes;
use crate::weigh::{self, Measure};

/// The `report` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportOptions {
    /// The dump to report on; `-` is standard input.
    pub dump: PathBuf,
    /// What the table ranks by and the flamegraph weighs.
    pub measure: Measure,
    /// How many sites the table shows.
    pub top: usize,
    /// Where to write the flamegraph SVG; `None` writes none.
    pub flamegraph: Option<Output>,
    /// How stacks are named (and so which stacks share a row).
    pub naming: Naming,
    /// Report only the live blocks allocated inside this scope.
    pub scope: Option<String>,
    /// With [`Measure::Type`], how many sites to list under each type.
    pub type_sites: usize,
    /// Which stacks to look at (`--focus`, `--ignore`).
    pub filter: StackFilter,
    /// Print the report as JSON (see `docs/json-output.md`) instead of
    /// text.
    pub json: bool,
}

impl ReportOptions {
    /// Defaults: live bytes, top 10, no flamegraph, full file paths.
    pub fn new(dump: impl Into<PathBuf>) -> Self {
        ReportOptions {
            dump: dump.into(),
            measure: Measure::Live,
            top: 10,
            flamegraph: None,
            naming: Naming::default(),
            scope: None,
            type_sites: 0,
            filter: StackFilter::default(),
            json: false,
        }
    }
}

/// What became of the flamegraph a report was asked to draw.
enum Drawn {
    /// Written to this file.
    File(PathBuf),
    /// To go to standard output after the text (`-o -`).
    Stdout(Vec<u8>),
    /// The measure is zero everywhere: nothing to draw.
    Nothing,
    /// Could not be written; the report is still printed.
    Failed(CliError),
}

/// The `report` command: loads the dump, prints the report to `out` and
/// says where the flamegraph went.
///
/// The text comes first and always: a flamegraph that cannot be written
/// (a dump in a read-only directory, `report <(cat dump.json)`) costs one
/// warning line on `err`, not the report. The SVG is written before the
/// text is printed, so that `report | head` still writes it; with `-o -`
/// the SVG takes standard output and the text goes to `err`.
pub fn report(
    options: &ReportOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    if options.json && options.flamegraph == Some(Output::Stdout) {
        return Err(CliError::Usage(
            "--json and -o - both want standard output; give the SVG a file name".into(),
        ));
    }
    let mut dump = input::load(&options.dump)?;
    if let Some(name) = &options.scope {
        dump = scopes::restrict(dump, name, &options.dump)?;
    }
    options.filter.apply(&mut dump);
    // Fails early on `--by peak` without a peak breakdown.
    weigh::weigh(&dump, options.measure, &options.dump)?;
    let drawn = options.flamegraph.as_ref().map(|output| {
        let graph = GraphOptions {
            measure: options.measure,
            ..GraphOptions::default()
        };
        match render_svg(&dump, &options.dump, &graph) {
            // An empty heap is worth a report, not an error.
            Err(CliError::NothingToDraw { .. }) => Drawn::Nothing,
            Err(error) => Drawn::Failed(error),
            Ok(svg) => match output {
                Output::Stdout => Drawn::Stdout(svg),
                Output::File(path) => match write_file(path, |w| w.write_all(&svg)) {
                    Ok(()) => Drawn::File(path.clone()),
                    Err(error) => Drawn::Failed(error),
                },
            },
        }
    });
    if let Some(Drawn::Stdout(svg)) = &drawn {
        write_report(&dump, options, err)?;
        return out.write_all(svg).map_err(CliError::Stdout);
    }
    write_report(&dump, options, out)?;
    let measure = options.measure.describe();
    match drawn {
        // Standard output holds one JSON document and nothing else.
        Some(Drawn::File(_) | Drawn::Nothing) if options.json => Ok(()),
        Some(Drawn::File(svg)) => writeln!(
            out,
            "\nflamegraph of {measure}: {} (open it in a browser; click a frame to zoom, \
             Ctrl-F to search)",
            svg.display()
        )
        .map_err(CliError::Stdout),
        Some(Drawn::Nothing) => {
            writeln!(out, "\nno flamegraph: the dump has no {measure}").map_err(CliError::Stdout)
        }
        Some(Drawn::Failed(error)) => {
            // Flush the report first so the warning follows it on a
            // terminal that shows both streams.
            out.flush().map_err(CliError::Stdout)?;
            let _ = writeln!(err, "alloc-track: warning: no flamegraph written: {error}");
            Ok(())
        }
        Some(Drawn::Stdout(_)) | None => Ok(()),
    }
}

/// Writes the summary and the tables (everything but the flamegraph line).
pub fn write_report(
    dump: &Dump,
    options: &ReportOptions,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let weights = weigh::weigh(dump, options.measure, &options.dump)?;
    let peak = match options.measure {
        Measure::Peak => None,
        _ => weigh::weigh(dump, Measure::Peak, &options.dump).ok(),
    };
    if options.json {
        return json::write_json(dump, options, weights, peak, out).map_err(CliError::Stdout);
    }
    text::write_text(dump, options, weights, peak, out).map_err(CliError::Stdout)
}
