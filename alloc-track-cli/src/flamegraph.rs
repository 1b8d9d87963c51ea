//! Interactive flamegraph SVGs of a dump, drawn by inferno.

use std::io::Write;
use std::path::{Path, PathBuf};

use alloc_track::dump::Dump;
use inferno::flamegraph::color::{BasicPalette, Palette};
use inferno::flamegraph::{self, Direction};

use crate::error::CliError;
use crate::export::folded::folded_lines;
use crate::focus::StackFilter;
use crate::input;
use crate::output::Output;
use crate::stacks::Order;
use crate::weigh::Measure;

/// How to draw a flamegraph. Defaults: live bytes, callers at the root
/// (`main` at the bottom), growing upwards, a title naming the measure and
/// the program, inferno's minimum frame width.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct GraphOptions {
    /// What the width of each frame stands for.
    pub measure: Measure,
    /// Grow downwards from the top (an icicle graph) instead of upwards.
    pub icicle: bool,
    /// Put the allocating function at the root and its callers above it
    /// (memray's "inverted" view; inferno's reverse stack order), so that
    /// all allocations from one place merge into one wide frame.
    pub site_at_root: bool,
    /// The title instead of "Live bytes of PROGRAM".
    pub title: Option<String>,
    /// Frames narrower than this percentage of the whole are left out
    /// (inferno's `--minwidth`; its default is 0.01).
    pub min_width: Option<f64>,
}

/// The `flamegraph` command's options.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FlamegraphOptions {
    /// The dump to draw; `-` is standard input.
    pub dump: PathBuf,
    /// Where the SVG goes.
    pub output: Output,
    /// How to draw it.
    pub graph: GraphOptions,
    /// Which stacks to draw (`--focus`, `--ignore`).
    pub filter: StackFilter,
}

impl FlamegraphOptions {
    /// Options drawing `dump` into `output` with default graph options.
    pub fn new(dump: impl Into<PathBuf>, output: Output) -> Self {
        FlamegraphOptions {
            dump: dump.into(),
            output,
            graph: GraphOptions::default(),
            filter: StackFilter::default(),
        }
    }
}

/// Inferno's options for an alloc-track flamegraph: the memory palette,
/// colours fixed by function name (so two graphs of one program agree),
/// and the measure's unit in tooltips.
pub(crate) fn inferno_options(
    title: String,
    unit: &str,
    icicle: bool,
) -> flamegraph::Options<'static> {
    let mut options = flamegraph::Options::default();
    options.title = title;
    options.count_name = unit.to_string();
    options.colors = Palette::Basic(BasicPalette::Mem);
    options.hash = true;
    options.deterministic = true;
    if icicle {
        options.direction = Direction::Inverted;
    }
    options
}

/// Draws `dump` as an SVG. `path` names the dump in the subtitle and in
/// errors.
///
/// The SVG is rendered in memory: it is small (inferno drops frames
/// narrower than 0.1%), and weighing first means a dump with nothing to
/// draw leaves no empty file behind.
pub fn render_svg(dump: &Dump, path: &Path, graph: &GraphOptions) -> Result<Vec<u8>, CliError> {
    let order = if graph.site_at_root {
        Order::LeafFirst
    } else {
        Order::RootFirst
    };
    let lines = folded_lines(dump, path, graph.measure, order)?;
    let nothing = || CliError::NothingToDraw {
        path: path.to_path_buf(),
        measure: graph.measure.describe(),
    };
    if lines.is_empty() {
        return Err(nothing());
    }
    let title = graph.title.clone().unwrap_or_else(|| {
        let mut title = format!(
            "{} of {}",
            capitalised(graph.measure.describe()),
            dump.program
        );
        if graph.site_at_root {
            title.push_str(", allocation sites at the root");
        }
        title
    });
    let mut options = inferno_options(title, graph.measure.unit(), graph.icicle);
    // `folded_lines` sorts the lines as inferno would.
    options.no_sort = true;
    if let Some(percent) = graph.min_width {
        options.min_width = percent;
    }
    options.subtitle = Some(input::display_name(path));
    let mut svg = Vec::new();
    // Writing into memory fails only when inferno finds no counts.
    flamegraph::from_lines(&mut options, lines.lines(), &mut svg).map_err(|_| nothing())?;
    Ok(svg)
}

/// The `flamegraph` command: writes the SVG and says where on `out`, or
/// writes the SVG itself to `out` for `-o -`.
pub fn flamegraph(options: &FlamegraphOptions, out: &mut impl Write) -> Result<(), CliError> {
    let mut dump = input::load(&options.dump)?;
    options.filter.apply(&mut dump);
    let bytes = render_svg(&dump, &options.dump, &options.graph)?;
    options.output.write_with(out, |w| w.write_all(&bytes))?;
    match &options.output {
        Output::Stdout => Ok(()),
        Output::File(path) => writeln!(
            out,
            "flamegraph of {}: {}",
            options.graph.measure.describe(),
            path.display()
        )
        .map_err(CliError::Stdout),
    }
}

pub(crate) fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
