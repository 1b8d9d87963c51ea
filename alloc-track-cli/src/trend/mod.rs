//! `alloc-track trend`: live bytes per call site across a series of dumps
//! (the numbered periodic ones, say), each site's shape classified, the
//! likely leaks first, and a line chart of the top sites over time.
//!
//! Sites are matched across dumps by label, as `diff` does and as `report`
//! groups them (see [`crate::rows`]). Dumps are put in the order they were taken (their
//! timestamps), not the order given: a shell sorts `heap.10.json` before
//! `heap.2.json`.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::PathBuf;

use alloc_track::dump::Dump;
use alloc_track::human::{Bytes, Count, SignedBytes, SignedCount};

mod chart;

use crate::error::CliError;
use crate::focus::StackFilter;
use crate::input;
use crate::output::Output;
use crate::report::utc;
use crate::rows::{self, Naming};
use crate::weigh::{self, Measure};
use chart::chart;

/// The `trend` command's options.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct TrendOptions {
    /// The dumps, in any order; at least two. One may be `-`, standard
    /// input.
    pub dumps: Vec<PathBuf>,
    /// How many changing sites the table shows.
    pub top: usize,
    /// Where to write the SVG line chart; `None` writes none. With
    /// [`Output::Stdout`] the chart takes standard output and the table
    /// goes to the error stream.
    pub chart: Option<Output>,
    /// How many sites the chart draws.
    pub chart_sites: usize,
    /// How stacks are named (and so which stacks are one series).
    pub naming: Naming,
    /// Which stacks to follow (`--focus`, `--ignore`).
    pub filter: StackFilter,
}

impl TrendOptions {
    /// Defaults: 10 rows, no chart (the CLI's default is beside the first
    /// dump), 8 sites in a chart.
    pub fn new(dumps: Vec<PathBuf>) -> Self {
        TrendOptions {
            dumps,
            top: 10,
            chart: None,
            chart_sites: 8,
            naming: Naming::default(),
            filter: StackFilter::default(),
        }
    }
}

/// The shape of one site's live bytes across the series, in the order the
/// table ranks them: the likely leaks first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// Rose in at least two thirds of the intervals, ended higher, and gave
    /// back at most half of what it gained on the way: what a leak looks
    /// like.
    Growing,
    /// Rose in a few steps, never fell, ended higher: a table that doubles,
    /// a cache filling up. A slow leak can look like this too.
    Steps,
    /// Rose once, then stayed flat: start-up state, a lazily initialised
    /// cache that is now full.
    GrewOnce,
    /// Rose and fell without a direction: work in flight at the moment of
    /// each dump.
    Varies,
    /// Ended lower than it started, falling in most intervals (or never
    /// rising).
    Shrinking,
    /// The same in every dump.
    Flat,
}

impl Shape {
    /// The name shown in the table.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Growing => "growing",
            Shape::Steps => "steps",
            Shape::GrewOnce => "grew once",
            Shape::Varies => "varies",
            Shape::Shrinking => "shrinking",
            Shape::Flat => "flat",
        }
    }
}

/// Classifies a series of values, oldest first (see [`Shape`]). With only
/// two values every rise is [`Shape::Growing`]: one interval cannot tell a
/// steady rise from a step.
pub fn classify(values: &[u64]) -> Shape {
    let (Some(&first), Some(&last)) = (values.first(), values.last()) else {
        return Shape::Flat;
    };
    let intervals = values.len() - 1;
    let ups = values.windows(2).filter(|w| w[1] > w[0]).count();
    let downs = values.windows(2).filter(|w| w[1] < w[0]).count();
    // Everything the series gave back on the way: a leak may dip a little
    // (an eviction, a buffer freed just before a dump), work in flight
    // gives back about as much as it takes.
    let fallen: u128 = values
        .windows(2)
        .map(|w| u128::from(w[0].saturating_sub(w[1])))
        .sum();
    if ups == 0 && downs == 0 {
        Shape::Flat
    } else if last > first {
        let risen = u128::from(last - first);
        if (intervals < 2 || ups * 3 >= intervals * 2) && fallen * 2 <= risen {
            Shape::Growing
        } else if downs > 0 {
            Shape::Varies
        } else if ups == 1 {
            Shape::GrewOnce
        } else {
            Shape::Steps
        }
    } else if last < first && (ups == 0 || downs * 3 >= intervals * 2) {
        Shape::Shrinking
    } else {
        Shape::Varies
    }
}

/// One site across the series.
#[derive(Clone, Debug)]
struct Series {
    /// Live bytes in each dump, oldest first; 0 where the site is absent.
    bytes: Vec<u64>,
    /// Live blocks likewise.
    blocks: Vec<u64>,
    shape: Shape,
    /// Least-squares slope, bytes per unit of [`Clock`].
    slope: f64,
    label: String,
}

impl Series {
    fn first(&self) -> u64 {
        self.bytes.first().copied().unwrap_or(0)
    }
    fn last(&self) -> u64 {
        self.bytes.last().copied().unwrap_or(0)
    }
    fn change(&self) -> i128 {
        i128::from(self.last()) - i128::from(self.first())
    }
}

/// The x axis: seconds since the first dump, or the dump's position when
/// the timestamps do not increase (dumps built by hand, or a clock that
/// stepped back).
#[derive(Clone, Debug)]
struct Clock {
    x: Vec<f64>,
    seconds: bool,
}

impl Clock {
    fn new(dumps: &[(PathBuf, Dump)]) -> Clock {
        let stamps: Vec<u64> = dumps.iter().map(|(_, d)| d.timestamp_ms).collect();
        let increasing = stamps.windows(2).all(|w| w[1] > w[0]);
        let first = stamps.first().copied().unwrap_or(0);
        if increasing {
            Clock {
                x: stamps
                    .iter()
                    .map(|&t| (t - first) as f64 / 1000.0)
                    .collect(),
                seconds: true,
            }
        } else {
            Clock {
                x: (0..stamps.len()).map(|i| i as f64).collect(),
                seconds: false,
            }
        }
    }

    fn span(&self) -> f64 {
        self.x.last().copied().unwrap_or(0.0)
    }

    /// The unit rates are shown in, and its length in clock units.
    fn rate_unit(&self) -> (&'static str, f64) {
        match (self.seconds, self.span()) {
            (false, _) => ("dump", 1.0),
            (true, span) if span < 120.0 => ("s", 1.0),
            (true, span) if span < 2.0 * 3600.0 => ("min", 60.0),
            (true, _) => ("h", 3600.0),
        }
    }

    /// `x` as elapsed time for axis labels: `90 s`, `12 min`, `3.5 h`, or
    /// `#3` for a dump position.
    fn label(&self, x: f64) -> String {
        if !self.seconds {
            return format!("#{}", x.round() as u64 + 1);
        }
        let span = self.span();
        if span < 120.0 {
            format!("{} s", trim_float(x))
        } else if span < 2.0 * 3600.0 {
            format!("{} min", trim_float(x / 60.0))
        } else {
            format!("{} h", trim_float(x / 3600.0))
        }
    }
}

/// `1.5`, `2`, `0.25`: at most two decimals, no trailing zeros.
fn trim_float(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn slope(x: &[f64], y: &[u64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = x.iter().sum::<f64>() / n;
    let mean_y = y.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (&xi, &yi) in x.iter().zip(y) {
        num += (xi - mean_x) * (yi as f64 - mean_y);
        den += (xi - mean_x) * (xi - mean_x);
    }
    if den > 0.0 {
        num / den
    } else {
        0.0
    }
}

/// Loads the dumps and puts them in the order they were taken.
fn load(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Dump)>, CliError> {
    input::at_most_one_stdin(paths)?;
    let mut dumps = Vec::with_capacity(paths.len());
    for path in paths {
        dumps.push((path.clone(), input::load(path)?));
    }
    // Stable: dumps with equal timestamps keep the order given.
    dumps.sort_by_key(|(_, d)| (d.timestamp_ms, d.pid, d.epoch));
    Ok(dumps)
}

/// Matches the rows of every dump by label (see [`crate::rows`]) and
/// builds one series per row.
fn build_series(dumps: &[(PathBuf, Dump)], clock: &Clock, naming: &Naming) -> Vec<Series> {
    let n = dumps.len();
    let mut by_label: HashMap<String, usize> = HashMap::new();
    let mut all: Vec<Series> = Vec::new();
    for (i, (path, dump)) in dumps.iter().enumerate() {
        // Live bytes cannot fail to weigh (only `peak` can); an error here
        // would be a bug, and an empty list is the safe answer.
        let weights = weigh::weigh(dump, Measure::Live, path).unwrap_or_default();
        for row in rows::group(&weights, Measure::Live, &naming.for_dump(dump)) {
            let index = *by_label.entry(row.label.clone()).or_insert_with(|| {
                all.push(Series {
                    bytes: vec![0; n],
                    blocks: vec![0; n],
                    shape: Shape::Flat,
                    slope: 0.0,
                    label: row.label.clone(),
                });
                all.len() - 1
            });
            let series = &mut all[index];
            series.bytes[i] = series.bytes[i].saturating_add(row.bytes);
            series.blocks[i] = series.blocks[i].saturating_add(row.blocks);
        }
    }
    for series in &mut all {
        series.shape = classify(&series.bytes);
        series.slope = slope(&clock.x, &series.bytes);
    }
    // Likely leaks first; within a shape the biggest change first, then
    // the biggest site; the label last so that the order is stable.
    all.sort_by(|a, b| {
        a.shape
            .cmp(&b.shape)
            .then_with(|| b.change().abs().cmp(&a.change().abs()))
            .then_with(|| b.last().cmp(&a.last()))
            .then_with(|| a.label.cmp(&b.label))
    });
    all
}

/// The `trend` command: writes the chart (first, so that `trend | head`
/// still writes it), then the table to `out` (to `err` when the chart
/// takes standard output).
pub fn trend(
    options: &TrendOptions,
    out: &mut impl Write,
    err: &mut impl Write,
) -> Result<(), CliError> {
    let mut dumps = load(&options.dumps)?;
    for (_, dump) in &mut dumps {
        options.filter.apply(dump);
    }
    let clock = Clock::new(&dumps);
    let series = build_series(&dumps, &clock, &options.naming);
    let mut chart_note = None;
    if let Some(svg) = &options.chart {
        let drawn: Vec<&Series> = series
            .iter()
            .filter(|s| s.bytes.iter().any(|&b| b > 0))
            .take(options.chart_sites)
            .collect();
        if drawn.is_empty() {
            chart_note = Some("no chart: no site has live bytes in any dump".to_string());
        } else {
            let text = chart(&dumps, &clock, &drawn);
            svg.write_with(out, |w| w.write_all(text.as_bytes()))?;
            if let Output::File(path) = svg {
                chart_note = Some(format!(
                    "line chart of the top {}: {}",
                    crate::rows::count_of(drawn.len() as u64, "site", "sites"),
                    path.display()
                ));
            }
        }
    }
    let text_out: &mut dyn Write = match options.chart {
        Some(Output::Stdout) => err,
        _ => out,
    };
    write_text(options, &dumps, &clock, &series, text_out).map_err(CliError::Stdout)?;
    if let Some(note) = chart_note {
        writeln!(text_out, "\n{note}").map_err(CliError::Stdout)?;
    }
    Ok(())
}

fn signed_bytes(delta: i128) -> String {
    let clamped = i64::try_from(delta).unwrap_or(if delta < 0 { i64::MIN } else { i64::MAX });
    SignedBytes(clamped).to_string()
}

/// The fitted rate of change; `-` for shapes where a straight line means
/// nothing (one step, or ups and downs).
fn rate_text(series: &Series, clock: &Clock) -> String {
    if matches!(series.shape, Shape::GrewOnce | Shape::Varies | Shape::Flat) {
        return "-".to_string();
    }
    let slope = series.slope;
    let (unit, length) = clock.rate_unit();
    let per_unit = slope * length;
    if !per_unit.is_finite() || per_unit.abs() < 0.5 {
        return format!("0 B/{unit}");
    }
    let clamped = per_unit.clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    format!("{}/{unit}", SignedBytes(clamped))
}

/// Eight-level sparkline of `values` scaled from 0 to their maximum, at
/// most `width` characters (long series are sampled, the last point
/// always included).
fn sparkline(values: &[u64], width: usize) -> String {
    const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().max().unwrap_or(0);
    let n = values.len();
    let points: Vec<u64> = if n <= width || width < 2 {
        values.to_vec()
    } else {
        (0..width)
            .map(|i| values[i * (n - 1) / (width - 1)])
            .collect()
    };
    points
        .iter()
        .map(|&v| {
            if max == 0 {
                LEVELS[0]
            } else {
                let level = (v as u128 * 7 + max as u128 / 2) / max as u128;
                LEVELS[(level as usize).min(7)]
            }
        })
        .collect()
}

fn write_text(
    options: &TrendOptions,
    dumps: &[(PathBuf, Dump)],
    clock: &Clock,
    series: &[Series],
    out: &mut dyn Write,
) -> io::Result<()> {
    let (Some((first_path, first)), Some((last_path, last))) = (dumps.first(), dumps.last()) else {
        return Ok(());
    };
    writeln!(
        out,
        "alloc-track trend of live bytes over {} dumps",
        dumps.len()
    )?;
    writeln!(
        out,
        "first        {}: {} (pid {}), dumped {}",
        input::display_name(first_path),
        first.program,
        first.pid,
        utc(first.timestamp_ms)
    )?;
    let later = if clock.seconds {
        format!("{} later", clock.label(clock.span()))
    } else {
        "timestamps out of order: dumps shown in the order given".to_string()
    };
    writeln!(
        out,
        "last         {}: {} (pid {}), {later}",
        input::display_name(last_path),
        last.program,
        last.pid,
    )?;
    let processes = {
        let mut pids: Vec<u32> = dumps.iter().map(|(_, d)| d.pid).collect();
        pids.sort_unstable();
        pids.dedup();
        pids.len()
    };
    if processes > 1 {
        writeln!(
            out,
            "note         the dumps come from {processes} processes; a trend means most within one"
        )?;
    }
    let (a, b) = (&first.totals, &last.totals);
    let change = |x: u64, y: u64| i128::from(y) - i128::from(x);
    writeln!(
        out,
        "live heap    {} -> {} ({}), blocks {} -> {} ({})",
        Bytes(a.live_bytes),
        Bytes(b.live_bytes),
        signed_bytes(change(a.live_bytes, b.live_bytes)),
        Count(a.live_blocks),
        Count(b.live_blocks),
        SignedCount(i64::try_from(change(a.live_blocks, b.live_blocks)).unwrap_or(i64::MAX)),
    )?;
    if let (Some(x), Some(y)) = (first.os.rss_bytes, last.os.rss_bytes) {
        writeln!(
            out,
            "RSS          {} -> {} ({})",
            Bytes(x),
            Bytes(y),
            signed_bytes(change(x, y))
        )?;
    }
    let count = |shape: Shape| series.iter().filter(|s| s.shape == shape).count() as u64;
    writeln!(
        out,
        "sites        {} growing, {} in steps, {} grew once, {} varying, {} shrinking, {} flat",
        Count(count(Shape::Growing)),
        Count(count(Shape::Steps)),
        Count(count(Shape::GrewOnce)),
        Count(count(Shape::Varies)),
        Count(count(Shape::Shrinking)),
        Count(count(Shape::Flat)),
    )?;
    writeln!(out)?;

    let changing: Vec<&Series> = series.iter().filter(|s| s.shape != Shape::Flat).collect();
    if changing.is_empty() {
        writeln!(out, "No site changed across the dumps.")?;
        return Ok(());
    }
    let shown = options.top.min(changing.len());
    writeln!(
        out,
        "changing sites, likely leaks first: {shown} of {}",
        Count(changing.len() as u64)
    )?;
    let spark_width = dumps.len().min(24);
    writeln!(
        out,
        "{:<10} {:>10} {:>10} {:>11} {:>15}  {:<spark_width$}  site",
        "shape", "first", "last", "change", "rate", "trend"
    )?;
    for row in &changing[..shown] {
        writeln!(
            out,
            "{:<10} {:>10} {:>10} {:>11} {:>15}  {:<spark_width$}  {}",
            row.shape.name(),
            Bytes(row.first()).to_string(),
            Bytes(row.last()).to_string(),
            signed_bytes(row.change()),
            rate_text(row, clock),
            sparkline(&row.bytes, spark_width),
            row.label
        )?;
    }
    if changing.len() > shown {
        writeln!(
            out,
            "{} more changing (--top N shows more)",
            crate::rows::count_of((changing.len() - shown) as u64, "site", "sites")
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "growing: rose in most intervals, the likely leaks; steps: rose a few times, never fell \
         (a table or cache filling up; a slow leak looks alike); grew once: one rise, then flat \
         (start-up state); varies: rose and fell (work in flight)"
    )?;
    if dumps.len() == 2 {
        writeln!(
            out,
            "two dumps: every rise counts as growing; more dumps tell steady growth from a one-off step"
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::chart::{xml, y_ticks};
    use super::*;

    #[test]
    fn shapes_tell_leaks_from_steps_and_churn() {
        assert_eq!(classify(&[10, 20, 30, 40, 50]), Shape::Growing);
        // A leak with one dip is still a leak.
        assert_eq!(classify(&[10, 20, 15, 30, 40, 50, 60]), Shape::Growing);
        assert_eq!(classify(&[0, 100, 100, 100, 100]), Shape::GrewOnce);
        assert_eq!(classify(&[100, 100, 100, 100, 300]), Shape::GrewOnce);
        assert_eq!(classify(&[10, 20, 20, 20, 40, 40, 40]), Shape::Steps);
        assert_eq!(classify(&[10, 50, 10, 50, 10]), Shape::Varies);
        assert_eq!(classify(&[10, 50, 10, 50, 20]), Shape::Varies);
        // Rises in most intervals, but gives back more than it keeps.
        assert_eq!(classify(&[100, 700, 50, 300]), Shape::Varies);
        assert_eq!(classify(&[50, 40, 30]), Shape::Shrinking);
        assert_eq!(classify(&[50, 50, 40, 40, 30]), Shape::Shrinking);
        // Ends a little lower, but went up as often as down.
        assert_eq!(classify(&[50, 10, 10, 80, 30, 10, 10, 49]), Shape::Varies);
        assert_eq!(classify(&[7, 7, 7]), Shape::Flat);
        assert_eq!(classify(&[1, 2]), Shape::Growing);
        assert_eq!(classify(&[]), Shape::Flat);
        assert_eq!(classify(&[5]), Shape::Flat);
    }

    #[test]
    fn slope_is_bytes_per_unit_of_x() {
        let x = [0.0, 1.0, 2.0, 3.0];
        assert!((slope(&x, &[0, 100, 200, 300]) - 100.0).abs() < 1e-9);
        assert_eq!(slope(&[0.0, 0.0], &[1, 5]), 0.0);
        assert_eq!(slope(&[0.0], &[1]), 0.0);
    }

    #[test]
    fn sparklines_scale_from_zero_and_sample_long_series() {
        assert_eq!(sparkline(&[0, 1, 2, 3, 4, 5, 6, 7], 8), "▁▂▃▄▅▆▇█");
        assert_eq!(sparkline(&[0, 0], 8), "▁▁");
        let long: Vec<u64> = (0..100).collect();
        let line = sparkline(&long, 10);
        assert_eq!(line.chars().count(), 10);
        assert!(line.ends_with('█'));
    }

    #[test]
    fn axis_ticks_are_round_in_iec_units() {
        assert_eq!(
            y_ticks(9 << 20),
            ((10u64 << 20) as f64, (2u64 << 20) as f64)
        );
        assert_eq!(y_ticks(0), (1.0, 1.0));
        let (top, step) = y_ticks(u64::MAX);
        assert!(top.is_finite() && step > 0.0);
    }

    #[test]
    fn text_is_escaped_for_svg() {
        assert_eq!(
            xml("<Vec<u8> as Clone>::clone & \"x\""),
            "&lt;Vec&lt;u8&gt; as Clone&gt;::clone &amp; &quot;x&quot;"
        );
    }
}
