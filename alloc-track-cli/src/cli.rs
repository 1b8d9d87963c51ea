//! The command line: clap definitions, and one small function per command
//! that maps flags to that command's options struct.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::diff::DiffOptions;
use crate::export::{ExportFormat, ExportOptions};
use crate::flamegraph::{FlamegraphOptions, GraphOptions};
use crate::output::{beside, Output};
use crate::report::ReportOptions;
use crate::trend::TrendOptions;
use crate::weigh::Measure;

/// Reports, flamegraphs, diffs and exports for alloc-track heap dumps.
#[derive(Debug, Parser)]
#[command(name = "alloc-track", version, about, max_term_width = 100)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Summary, top sites and a live-heap flamegraph of one dump.
    Report(ReportArgs),
    /// Write an interactive flamegraph SVG of one dump.
    Flamegraph(FlamegraphArgs),
    /// Compare two dumps: per-site changes and differential flamegraphs.
    Diff(DiffArgs),
    /// Convert a dump for other tools (folded stacks, pprof, DHAT).
    Export(ExportArgs),
    /// Live bytes per site across a series of dumps: the leaks first, and
    /// a line chart of the top sites over time.
    Trend(TrendArgs),
}

/// `alloc-track report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The dump (JSON) to report on.
    pub dump: PathBuf,
    /// What to rank sites by and what the flamegraph weighs.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// How many sites the table shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Where to write the flamegraph SVG [default: beside the dump, DUMP
    /// with .svg for live bytes, .<by>.svg otherwise].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// Do not write a flamegraph.
    #[arg(long, conflicts_with = "output")]
    pub no_flamegraph: bool,
    /// Report only the live blocks allocated inside this scope (a name
    /// given to alloc_track::scope; the report lists them).
    #[arg(long, value_name = "NAME")]
    pub scope: Option<String>,
    /// With --by type: list this many top sites under each type.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub type_sites: usize,
}

impl ReportArgs {
    /// Maps the flags to [`ReportOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> ReportOptions {
        let flamegraph = match (self.no_flamegraph, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(path),
            (false, None) => Some(default_svg(&self.dump, self.by, "")),
        };
        let mut options = ReportOptions::new(self.dump);
        options.measure = self.by;
        options.top = self.top;
        options.flamegraph = flamegraph;
        options.relative_to = cwd;
        options.scope = self.scope;
        options.type_sites = self.type_sites;
        options
    }
}

/// `alloc-track flamegraph`.
#[derive(Debug, Args)]
pub struct FlamegraphArgs {
    /// The dump (JSON) to draw.
    pub dump: PathBuf,
    /// The SVG file to write [default: beside the dump, DUMP with .svg,
    /// .by-site.svg with --site-at-root, and .<by> before .svg for
    /// measures other than live].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// What the width of a frame stands for.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// Icicle layout: the root at the top, stacks growing downwards.
    #[arg(long)]
    pub icicle: bool,
    /// Put the allocating function at the root with its callers above it
    /// (memray's "inverted" view), merging every allocation made by one
    /// function into one frame, whoever called it.
    #[arg(long)]
    pub site_at_root: bool,
}

impl FlamegraphArgs {
    /// Maps the flags to [`FlamegraphOptions`].
    pub fn into_options(self) -> FlamegraphOptions {
        let suffix = if self.site_at_root { ".by-site" } else { "" };
        let output = self
            .output
            .unwrap_or_else(|| default_svg(&self.dump, self.by, suffix));
        let mut options = FlamegraphOptions::new(self.dump, output);
        options.graph = GraphOptions {
            measure: self.by,
            icicle: self.icicle,
            site_at_root: self.site_at_root,
        };
        options
    }
}

/// `alloc-track diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier dump.
    pub before: PathBuf,
    /// The later dump.
    pub after: PathBuf,
    /// What to compare.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// How many changed sites the table shows.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// The differential flamegraph to write, sized by AFTER (red: grew,
    /// blue: shrank). A second graph sized by BEFORE, which shows what
    /// shrank or vanished, goes beside it with .shrank.svg [default:
    /// beside AFTER, AFTER with .diff.svg].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// Do not write flamegraphs.
    #[arg(long, conflicts_with = "output")]
    pub no_flamegraph: bool,
}

impl DiffArgs {
    /// Maps the flags to [`DiffOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> DiffOptions {
        let flamegraph = match (self.no_flamegraph, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(path),
            (false, None) => Some(default_svg(&self.after, self.by, ".diff")),
        };
        let mut options = DiffOptions::new(self.before, self.after);
        options.measure = self.by;
        options.top = self.top;
        options.flamegraph = flamegraph;
        options.relative_to = cwd;
        options
    }
}

/// `alloc-track export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The dump (JSON) to convert.
    pub dump: PathBuf,
    /// The output format: folded (collapsed stacks for any flamegraph
    /// tool), pprof (gzipped profile.proto for go tool pprof, Pyroscope,
    /// Parca), or dhat (JSON for DHAT's dh_view.html and the Firefox
    /// Profiler).
    #[arg(short, long, value_enum)]
    pub format: ExportFormat,
    /// The file to write, or - for standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// For folded: what the counts weigh (pprof and dhat always carry
    /// every figure).
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
}

impl ExportArgs {
    /// Maps the flags to [`ExportOptions`].
    pub fn into_options(self) -> ExportOptions {
        let mut options =
            ExportOptions::new(self.dump, self.format, Output::from_arg(&self.output));
        options.measure = self.by;
        options
    }
}

/// `alloc-track trend`.
#[derive(Debug, Args)]
pub struct TrendArgs {
    /// The dumps, at least two, e.g. the numbered periodic ones
    /// (heap.*.json). Any order: they are put in the order they were taken.
    #[arg(required = true, num_args = 2.., value_name = "DUMP")]
    pub dumps: Vec<PathBuf>,
    /// How many changing sites the table shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Where to write the SVG line chart [default: beside the first dump
    /// given, its name without the dump number and with .trend.svg:
    /// heap.1.json gives heap.trend.svg].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// How many sites the chart draws.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub chart_sites: usize,
    /// Do not write a chart.
    #[arg(long, conflicts_with = "output")]
    pub no_chart: bool,
}

impl TrendArgs {
    /// Maps the flags to [`TrendOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> TrendOptions {
        let chart = match (self.no_chart, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(path),
            (false, None) => self.dumps.first().map(|first| default_trend_svg(first)),
        };
        let mut options = TrendOptions::new(self.dumps);
        options.top = self.top;
        options.chart = chart;
        options.chart_sites = self.chart_sites;
        options.relative_to = cwd;
        options
    }
}

/// `heap.3.json` gives `heap.trend.svg`: the series' name without the
/// number the periodic dumps add.
fn default_trend_svg(first: &std::path::Path) -> PathBuf {
    let stem = first
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "alloc-track".to_string());
    let series = match stem.rsplit_once('.') {
        Some((name, number))
            if !name.is_empty()
                && !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit()) =>
        {
            name.to_string()
        }
        _ => stem,
    };
    first.with_file_name(format!("{series}.trend.svg"))
}

/// The default SVG beside a dump: `app.json` gives `app.svg` for live
/// bytes and `app.peak.svg` (etc.) for the other measures.
fn default_svg(dump: &std::path::Path, by: Measure, suffix: &str) -> PathBuf {
    let measure = match by {
        Measure::Live => String::new(),
        other => format!(".{}", other.name()),
    };
    beside(dump, &format!("{suffix}{measure}.svg"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["alloc-track"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("valid arguments").command
    }

    #[test]
    fn report_flags_map_to_options() {
        let Command::Report(args) = parse(&["report", "d/app.json", "--by", "peak", "--top", "3"])
        else {
            panic!("not report");
        };
        let options = args.into_options(None);
        assert_eq!(options.measure, Measure::Peak);
        assert_eq!(options.top, 3);
        assert_eq!(options.flamegraph, Some(PathBuf::from("d/app.peak.svg")));

        let Command::Report(args) = parse(&["report", "app.json", "--no-flamegraph"]) else {
            panic!("not report");
        };
        assert_eq!(args.into_options(None).flamegraph, None);
    }

    #[test]
    fn flamegraph_flags_map_to_options() {
        let Command::Flamegraph(args) = parse(&[
            "flamegraph",
            "app.json",
            "-o",
            "x.svg",
            "--icicle",
            "--site-at-root",
            "--by",
            "allocated",
        ]) else {
            panic!("not flamegraph");
        };
        let options = args.into_options();
        assert_eq!(options.output, PathBuf::from("x.svg"));
        assert!(options.graph.icicle && options.graph.site_at_root);
        assert_eq!(options.graph.measure, Measure::Allocated);
    }

    #[test]
    fn diff_and_export_flags_map_to_options() {
        let Command::Diff(args) = parse(&["diff", "a.json", "b.json"]) else {
            panic!("not diff");
        };
        let options = args.into_options(None);
        assert_eq!(options.flamegraph, Some(PathBuf::from("b.diff.svg")));

        let Command::Export(args) = parse(&["export", "a.json", "--format", "pprof", "-o", "-"])
        else {
            panic!("not export");
        };
        let options = args.into_options();
        assert_eq!(options.format, ExportFormat::Pprof);
        assert_eq!(options.output, Output::Stdout);
    }

    #[test]
    fn trend_flags_map_to_options() {
        let Command::Trend(args) =
            parse(&["trend", "d/heap.2.json", "d/heap.1.json", "--top", "3"])
        else {
            panic!("not trend");
        };
        let options = args.into_options(None);
        assert_eq!(options.top, 3);
        assert_eq!(options.dumps.len(), 2);
        assert_eq!(options.chart, Some(PathBuf::from("d/heap.trend.svg")));
        assert_eq!(
            default_trend_svg(std::path::Path::new("before.json")),
            PathBuf::from("before.trend.svg")
        );
        assert_eq!(
            default_trend_svg(std::path::Path::new("v1.2.x.json")),
            PathBuf::from("v1.2.x.trend.svg")
        );
        let Command::Trend(args) = parse(&["trend", "a.json", "b.json", "--no-chart"]) else {
            panic!("not trend");
        };
        assert_eq!(args.into_options(None).chart, None);
        // One dump is no trend.
        assert!(Cli::try_parse_from(["alloc-track", "trend", "a.json"]).is_err());
    }

    #[test]
    fn bad_usage_is_refused_by_clap() {
        let no_file = Cli::try_parse_from(["alloc-track", "report"]);
        assert!(no_file.is_err());
        let both =
            Cli::try_parse_from(["alloc-track", "report", "a", "-o", "x", "--no-flamegraph"]);
        assert!(both.is_err());
    }
}
