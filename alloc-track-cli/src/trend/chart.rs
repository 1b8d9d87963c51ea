//! The trend command's SVG line chart of the top sites over time,
//! written by hand: plain SVG text needs no drawing library.

use std::fmt::Write as _;
use std::path::PathBuf;

use alloc_track::dump::Dump;
use alloc_track::human::{Bytes, Count};

use super::{Clock, Series};

/// Colours for the chart's lines, distinguishable from each other.
const PALETTE: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Escapes text for SVG content and attribute values.
pub(super) fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A round axis maximum and step for values up to `max` bytes: steps of
/// 1, 2 or 5 times a power of ten of the largest IEC unit below `max`, so
/// that tick labels read `2 MiB`, `4 MiB`, ...
pub(super) fn y_ticks(max: u64) -> (f64, f64) {
    let max = max.max(1) as f64;
    let unit = [1u64 << 40, 1 << 30, 1 << 20, 1 << 10, 1]
        .into_iter()
        .map(|u| u as f64)
        .find(|&u| max >= u)
        .unwrap_or(1.0);
    let scaled = max / unit;
    let rough = scaled / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|&s| s >= rough)
        .unwrap_or(10.0 * power);
    let step = (step * unit).max(1.0);
    let top = (max / step).ceil() * step;
    (top, step)
}

/// The SVG line chart, written by hand: a plot of each drawn site's live
/// bytes over time, points with tooltips, and a legend below.
pub(super) fn chart(dumps: &[(PathBuf, Dump)], clock: &Clock, drawn: &[&Series]) -> String {
    const WIDTH: f64 = 960.0;
    const LEFT: f64 = 90.0;
    const RIGHT: f64 = 30.0;
    const TOP: f64 = 60.0;
    const PLOT_HEIGHT: f64 = 300.0;
    const LEGEND_ROW: f64 = 20.0;
    let bottom = TOP + PLOT_HEIGHT;
    let height = bottom + 60.0 + LEGEND_ROW * drawn.len() as f64 + 10.0;
    let plot_width = WIDTH - LEFT - RIGHT;
    let max = drawn
        .iter()
        .flat_map(|s| s.bytes.iter().copied())
        .max()
        .unwrap_or(0);
    let (y_top, y_step) = y_ticks(max);
    let span = clock.span();
    let px = |x: f64| {
        if span > 0.0 {
            LEFT + x / span * plot_width
        } else {
            LEFT + plot_width / 2.0
        }
    };
    let py = |bytes: u64| bottom - bytes as f64 / y_top * PLOT_HEIGHT;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Verdana, sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>"#
    );
    let first = dumps.first().map(|(p, _)| crate::input::display_name(p));
    let last = dumps.last().map(|(p, _)| crate::input::display_name(p));
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="24" font-size="17" text-anchor="middle">Live bytes per site over {} dumps</text>
    <text x="{}" y="44" fill="#555" text-anchor="middle">{} to {}</text>"##,
        WIDTH / 2.0,
        dumps.len(),
        WIDTH / 2.0,
        xml(first.as_deref().unwrap_or("")),
        xml(last.as_deref().unwrap_or("")),
    );
    // Horizontal grid lines with byte labels.
    let mut tick = 0.0;
    while tick <= y_top + y_step / 2.0 {
        let y = bottom - tick / y_top * PLOT_HEIGHT;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#333">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 8.0,
            y + 4.0,
            Bytes(tick as u64)
        );
        tick += y_step;
    }
    // Vertical ticks: every dump when there are few, else six of them.
    let n = clock.x.len();
    let ticks: Vec<usize> = if n <= 12 {
        (0..n).collect()
    } else {
        (0..6).map(|i| i * (n - 1) / 5).collect()
    };
    for i in ticks {
        let x = px(clock.x[i]);
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
            bottom + 18.0,
            xml(&clock.label(clock.x[i]))
        );
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="#333"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{bottom}" stroke="#333"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#333">{}</text>"##,
        WIDTH - RIGHT,
        LEFT + plot_width / 2.0,
        bottom + 38.0,
        if clock.seconds {
            "time since the first dump"
        } else {
            "dump"
        }
    );
    for (i, series) in drawn.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let points: Vec<String> = clock
            .x
            .iter()
            .zip(&series.bytes)
            .map(|(&x, &b)| format!("{:.1},{:.1}", px(x), py(b)))
            .collect();
        let label = xml(&series.label);
        let _ = writeln!(
            svg,
            r#"<g><title>{label} ({})</title><polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            series.shape.name(),
            points.join(" ")
        );
        for ((&x, &b), blocks) in clock.x.iter().zip(&series.bytes).zip(&series.blocks) {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: {} in {} blocks</title></circle>"#,
                px(x),
                py(b),
                xml(&clock.label(x)),
                Bytes(b),
                Count(*blocks)
            );
        }
        let _ = writeln!(svg, "</g>");
        let y = bottom + 60.0 + LEGEND_ROW * i as f64;
        let shown: String = series.label.chars().take(110).collect();
        let _ = writeln!(
            svg,
            r#"<rect x="{LEFT}" y="{:.1}" width="14" height="4" fill="{colour}"/><text x="{:.1}" y="{y:.1}">{} · {} · {} → {}</text>"#,
            y - 6.0,
            LEFT + 22.0,
            series.shape.name(),
            xml(&shown),
            Bytes(series.first()),
            Bytes(series.last())
        );
    }
    svg.push_str("</svg>\n");
    svg
}
