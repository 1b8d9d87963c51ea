//! The command line: clap definitions, and one small function per command
//! that maps flags to that command's options struct.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use regex::Regex;

use crate::diff::DiffOptions;
use crate::export::{ExportFormat, ExportOptions};
use crate::flamegraph::{FlamegraphOptions, GraphOptions};
use crate::focus::StackFilter;
use crate::input::is_stdin;
use crate::output::{beside, Output};
use crate::report::ReportOptions;
use crate::rows::{GroupBy, Naming};
use crate::run::RunOptions;
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
    /// Run a program with a heap dump at its exit, and print the report.
    ///
    /// The program must have alloc_track::Tracker as its #[global_allocator].
    /// For `cargo run/test/bench` the build gets frame pointers and debug
    /// info, in target/alloc-track. The program's exit code is passed on.
    Run(RunArgs),
    /// Print a shell completion script.
    ///
    /// For example `alloc-track completions bash >
    /// /etc/bash_completion.d/alloc-track`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff).
    ///
    /// For example `alloc-track man | man -l -`.
    Man,
}

/// `--focus` and `--ignore`, shared by every command that reads stacks.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Look only at stacks with a frame (function name or source file)
    /// matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub focus: Option<Regex>,
    /// Leave out stacks with a frame (function name or source file)
    /// matching this regular expression.
    #[arg(long, value_name = "REGEX")]
    pub ignore: Option<Regex>,
}

impl FilterArgs {
    fn into_filter(self) -> StackFilter {
        StackFilter::new(self.focus, self.ignore)
    }
}

/// How rows are named and grouped, shared by report, diff and trend.
#[derive(Debug, Args)]
pub struct NamingArgs {
    /// What a row stands for: the allocating site (the first frame outside
    /// the standard library), or the first frame in your own crate that
    /// led to it, whatever library code allocated.
    #[arg(long, value_enum, default_value_t = GroupBy::Site)]
    pub group_by: GroupBy,
    /// Your program's crate, for "your code" [default: from the dump: the
    /// program's name, or the crate of its main function].
    #[arg(long = "crate", value_name = "NAME")]
    pub crate_name: Option<String>,
    /// Show function names with their generic arguments and compiler paths
    /// with their commit hash (shortened to <…> and /rustc/…/ by default).
    #[arg(long)]
    pub full_names: bool,
}

impl NamingArgs {
    fn into_naming(self, cwd: Option<PathBuf>) -> Naming {
        Naming {
            relative_to: cwd,
            group_by: self.group_by,
            crate_name: self.crate_name,
            full_names: self.full_names,
        }
    }
}

/// `alloc-track run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Where the program writes its dump ({pid} becomes each process's id)
    /// [default: a temporary file, removed after the report].
    #[arg(long, value_name = "DUMP")]
    pub out: Option<PathBuf>,
    /// What to rank sites by.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// How many sites the table shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// How rows are named.
    #[command(flatten)]
    pub naming: NamingArgs,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// The program and its arguments, after --.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<OsString>,
}

impl RunArgs {
    /// Maps the flags to [`RunOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> RunOptions {
        let mut options = RunOptions::new(self.command);
        options.out = self.out;
        options.measure = self.by;
        options.top = self.top;
        options.naming = self.naming.into_naming(cwd);
        options.filter = self.filter.into_filter();
        options
    }
}

/// `alloc-track report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The dump (JSON) to report on; - reads standard input.
    pub dump: PathBuf,
    /// What to rank sites by and what the flamegraph weighs.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// How many sites the table shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Where to write the flamegraph SVG; - writes it to standard output
    /// and the report to standard error [default: beside the dump, DUMP
    /// with .svg for live bytes, .BY.svg otherwise; none for a dump read
    /// from standard input]. A graph that cannot be written is a warning:
    /// the report is printed anyway.
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
    /// Print the report as one JSON document (a stable shape with a
    /// version field: see docs/json-output.md). No flamegraph is written
    /// unless -o FILE asks for one.
    #[arg(long)]
    pub json: bool,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How rows are named.
    #[command(flatten)]
    pub naming: NamingArgs,
}

impl ReportArgs {
    /// Maps the flags to [`ReportOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> ReportOptions {
        let flamegraph = match (self.no_flamegraph, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(Output::from_arg(&path)),
            (false, None) if is_stdin(&self.dump) || self.json => None,
            (false, None) => Some(Output::File(default_svg(&self.dump, self.by, ""))),
        };
        let mut options = ReportOptions::new(self.dump);
        options.measure = self.by;
        options.top = self.top;
        options.flamegraph = flamegraph;
        options.naming = self.naming.into_naming(cwd);
        options.scope = self.scope;
        options.type_sites = self.type_sites;
        options.filter = self.filter.into_filter();
        options.json = self.json;
        options
    }
}

/// `alloc-track flamegraph`.
#[derive(Debug, Args)]
pub struct FlamegraphArgs {
    /// The dump (JSON) to draw; - reads standard input.
    pub dump: PathBuf,
    /// The SVG file to write, - for standard output [default: beside the
    /// dump, DUMP with .svg, .by-site.svg with --site-at-root, and .BY
    /// before .svg for measures other than live; standard output for a
    /// dump read from standard input].
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
    /// The graph's title [default: "Live bytes of PROGRAM", after the
    /// measure].
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Leave out frames narrower than this percentage of the whole graph
    /// (0 keeps every frame) [default: 0.01].
    #[arg(long, value_name = "PERCENT", value_parser = parse_percent)]
    pub min_width: Option<f64>,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// A percentage from 0 to 100 for `--min-width`.
fn parse_percent(text: &str) -> Result<f64, String> {
    match text.trim_end_matches('%').parse::<f64>() {
        Ok(value) if (0.0..=100.0).contains(&value) => Ok(value),
        _ => Err(format!("{text:?} is not a percentage from 0 to 100")),
    }
}

impl FlamegraphArgs {
    /// Maps the flags to [`FlamegraphOptions`].
    pub fn into_options(self) -> FlamegraphOptions {
        let suffix = if self.site_at_root { ".by-site" } else { "" };
        let output = match self.output {
            Some(path) => Output::from_arg(&path),
            None if is_stdin(&self.dump) => Output::Stdout,
            None => Output::File(default_svg(&self.dump, self.by, suffix)),
        };
        let mut options = FlamegraphOptions::new(self.dump, output);
        options.graph = GraphOptions {
            measure: self.by,
            icicle: self.icicle,
            site_at_root: self.site_at_root,
            title: self.title,
            min_width: self.min_width,
        };
        options.filter = self.filter.into_filter();
        options
    }
}

/// `alloc-track diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The earlier dump; - reads standard input.
    pub before: PathBuf,
    /// The later dump; - reads standard input.
    pub after: PathBuf,
    /// What to compare.
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// How many changed sites the table shows.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
    /// The differential flamegraph to write, sized by AFTER (red: grew,
    /// blue: shrank). A second graph sized by BEFORE, which shows what
    /// shrank or vanished, goes beside it with .shrank.svg. - writes the
    /// first graph to standard output and the tables to standard error
    /// [default: beside AFTER, AFTER with .diff.svg; none when AFTER is
    /// read from standard input].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// Do not write flamegraphs.
    #[arg(long, conflicts_with = "output")]
    pub no_flamegraph: bool,
    /// Print the comparison as one JSON document (a stable shape with a
    /// version field: see docs/json-output.md). No flamegraph is written
    /// unless -o FILE asks for one.
    #[arg(long)]
    pub json: bool,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How rows are named.
    #[command(flatten)]
    pub naming: NamingArgs,
}

impl DiffArgs {
    /// Maps the flags to [`DiffOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> DiffOptions {
        let flamegraph = match (self.no_flamegraph, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(Output::from_arg(&path)),
            (false, None) if is_stdin(&self.after) || self.json => None,
            (false, None) => Some(Output::File(default_svg(&self.after, self.by, ".diff"))),
        };
        let mut options = DiffOptions::new(self.before, self.after);
        options.json = self.json;
        options.measure = self.by;
        options.top = self.top;
        options.flamegraph = flamegraph;
        options.naming = self.naming.into_naming(cwd);
        options.filter = self.filter.into_filter();
        options
    }
}

/// `alloc-track export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The dump (JSON) to convert; - reads standard input.
    pub dump: PathBuf,
    /// The output format: folded (collapsed stacks for any flamegraph
    /// tool), pprof (gzipped profile.proto for go tool pprof, Pyroscope,
    /// Parca), or dhat (JSON for DHAT's dh_view.html and the Firefox
    /// Profiler).
    #[arg(short, long, value_enum)]
    pub format: ExportFormat,
    /// The file to write, or - for standard output [default: standard
    /// output].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// For folded and dhat: what the figures weigh (pprof always carries
    /// every figure).
    #[arg(long, value_enum, default_value_t = Measure::Live)]
    pub by: Measure,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
}

impl ExportArgs {
    /// Maps the flags to [`ExportOptions`].
    pub fn into_options(self) -> ExportOptions {
        let output = self
            .output
            .as_deref()
            .map_or(Output::Stdout, Output::from_arg);
        let mut options = ExportOptions::new(self.dump, self.format, output);
        options.measure = self.by;
        options.filter = self.filter.into_filter();
        options
    }
}

/// `alloc-track trend`.
#[derive(Debug, Args)]
pub struct TrendArgs {
    /// The dumps, at least two, e.g. the numbered periodic ones
    /// (heap.*.json). Any order: they are put in the order they were taken.
    /// One of them may be -, standard input.
    #[arg(required = true, num_args = 2.., value_name = "DUMP")]
    pub dumps: Vec<PathBuf>,
    /// How many changing sites the table shows.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub top: usize,
    /// Where to write the SVG line chart; - writes it to standard output
    /// and the table to standard error [default: beside the first dump
    /// file given, its name without the dump number and with .trend.svg:
    /// heap.1.json gives heap.trend.svg].
    #[arg(short = 'o', long = "output", value_name = "SVG")]
    pub output: Option<PathBuf>,
    /// How many sites the chart draws.
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub chart_sites: usize,
    /// Do not write a chart.
    #[arg(long, conflicts_with = "output")]
    pub no_chart: bool,
    /// Which stacks to look at.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// How rows are named.
    #[command(flatten)]
    pub naming: NamingArgs,
}

impl TrendArgs {
    /// Maps the flags to [`TrendOptions`]; `cwd` shortens file names.
    pub fn into_options(self, cwd: Option<PathBuf>) -> TrendOptions {
        let chart = match (self.no_chart, self.output) {
            (true, _) => None,
            (false, Some(path)) => Some(Output::from_arg(&path)),
            (false, None) => self
                .dumps
                .iter()
                .find(|dump| !is_stdin(dump))
                .map(|first| Output::File(default_trend_svg(first))),
        };
        let mut options = TrendOptions::new(self.dumps);
        options.top = self.top;
        options.chart = chart;
        options.chart_sites = self.chart_sites;
        options.naming = self.naming.into_naming(cwd);
        options.filter = self.filter.into_filter();
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
        assert_eq!(
            options.flamegraph,
            Some(Output::File(PathBuf::from("d/app.peak.svg")))
        );

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
        assert_eq!(options.output, Output::File(PathBuf::from("x.svg")));
        assert!(options.graph.icicle && options.graph.site_at_root);
        assert_eq!(options.graph.measure, Measure::Allocated);
    }

    #[test]
    fn diff_and_export_flags_map_to_options() {
        let Command::Diff(args) = parse(&["diff", "a.json", "b.json"]) else {
            panic!("not diff");
        };
        let options = args.into_options(None);
        assert_eq!(
            options.flamegraph,
            Some(Output::File(PathBuf::from("b.diff.svg")))
        );

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
        assert_eq!(
            options.chart,
            Some(Output::File(PathBuf::from("d/heap.trend.svg")))
        );
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
