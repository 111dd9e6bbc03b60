//! Pictures of a `kvstore bench` run: the data behind them, the SVG charts and the
//! HTML page `bench --report DIR` and `kvstore report` write.
//!
//! The charts are drawn with plotters' SVG backend, which writes text as SVG
//! `<text>` elements: no font is loaded, so nothing depends on the fonts (or the
//! font libraries) of the machine that draws or the one that displays them.
//!
//! # Files
//! `DIR/index.html` is one self-contained page (charts inlined, no scripts, nothing
//! fetched); `DIR/report.json` is the data it was drawn from ([`RunData`]), which
//! `kvstore report` reads back to draw it again, e.g. with fault windows;
//! `DIR/latency.svg` and `DIR/per-second.svg` are the two charts on their own.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

/// The version of [`RunData`]'s JSON layout.
pub const FORMAT: u32 = 1;

/// One second of a run, on the history's clock (second `t` covers
/// `[t, t + span_s)` seconds after the bench's sessions started).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Second {
    /// Start of the second.
    pub t: u64,
    /// How much of the second the run covered: 1, except for a last partial one.
    pub span_s: f64,
    /// Operations answered in this second (a value, not found or a CAS mismatch).
    pub ops: u64,
    /// Operations refused in this second.
    pub errors: u64,
    /// Operations given up on (no answer by the client deadline) in this second.
    pub timeouts: u64,
    /// Median latency of the answered operations, µs (`None` without any).
    pub p50_us: Option<u64>,
    /// 99th percentile latency of the answered operations, µs.
    pub p99_us: Option<u64>,
    /// Slowest answered operation, µs.
    pub max_us: Option<u64>,
}

impl Second {
    /// Answered operations per second.
    pub fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.span_s.max(1e-3)
    }
}

/// One point of the latency-by-percentile curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentile {
    /// The percentile, e.g. `99.9`.
    pub percentile: f64,
    /// The latency at it, µs.
    pub latency_us: u64,
}

/// A span of the run to shade in the per-second chart (a fault, say).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shade {
    /// Its name, printed on the chart.
    pub name: String,
    /// Start, seconds on the history's clock.
    pub start_s: f64,
    /// End, seconds on the history's clock. Invariant: `start_s <= end_s`.
    pub end_s: f64,
}

/// Everything a report is drawn from (`report.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunData {
    /// [`FORMAT`].
    pub format: u32,
    /// The page's title.
    pub title: String,
    /// The bench's result line, shown as a table.
    pub summary: serde_json::Value,
    /// The warm-up ends here (seconds on the history's clock).
    pub warmup_s: f64,
    /// The run (and the last per-second bucket) ends here.
    pub end_s: f64,
    /// Per-second buckets from 0, every second present (idle ones with zeros).
    pub seconds: Vec<Second>,
    /// Latency by percentile over the measured window, by increasing percentile.
    pub percentiles: Vec<Percentile>,
    /// The slowest answered operation of the measured window, µs.
    pub max_us: u64,
    /// Spans to shade (faults), possibly none.
    #[serde(default)]
    pub shades: Vec<Shade>,
}

/// How one operation ended, for [`PerSecond::record`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Answered after this many µs.
    Answered(u64),
    /// Refused.
    Error,
    /// No answer by the deadline.
    Timeout,
}

/// Collects per-second buckets while a run goes on. Only the current second holds
/// a histogram; a finished second keeps its percentiles, so memory does not grow
/// with the length of the run beyond one small record per second.
pub struct PerSecond {
    current: u64,
    hist: Histogram<u64>,
    counts: (u64, u64, u64),
    done: Vec<Second>,
}

impl PerSecond {
    /// An empty collector; the first second is second 0.
    pub fn new() -> Result<PerSecond, String> {
        Ok(PerSecond {
            current: 0,
            hist: latency_histogram()?,
            counts: (0, 0, 0),
            done: Vec::new(),
        })
    }

    /// Counts an operation that ended `at` after the start of the run. Times are
    /// expected in order; one that comes late counts in the current second.
    pub fn record(&mut self, at: Duration, outcome: Outcome) {
        self.advance_to(at.as_secs());
        match outcome {
            Outcome::Answered(us) => {
                self.counts.0 += 1;
                let _ = self.hist.record(us.max(1));
            }
            Outcome::Error => self.counts.1 += 1,
            Outcome::Timeout => self.counts.2 += 1,
        }
    }

    fn advance_to(&mut self, second: u64) {
        while self.current < second {
            self.close(1.0);
            self.current += 1;
        }
    }

    fn close(&mut self, span_s: f64) {
        let h = &self.hist;
        let q = |q: f64| (!h.is_empty()).then(|| h.value_at_quantile(q));
        self.done.push(Second {
            t: self.current,
            span_s,
            ops: self.counts.0,
            errors: self.counts.1,
            timeouts: self.counts.2,
            p50_us: q(0.5),
            p99_us: q(0.99),
            max_us: (!h.is_empty()).then(|| h.max()),
        });
        self.hist.reset();
        self.counts = (0, 0, 0);
    }

    /// The buckets of a run that ended `end` after its start: every second up to
    /// the one holding `end`, the last one covering only part of its second.
    pub fn finish(mut self, end: Duration) -> Vec<Second> {
        let end_s = end.as_secs_f64();
        self.advance_to(end.as_secs());
        let span = (end_s - self.current as f64).clamp(0.0, 1.0);
        if span > 0.0 || self.counts != (0, 0, 0) {
            self.close(span.max(1e-3));
        }
        self.done
    }
}

/// The latency histogram the bench and [`PerSecond`] use: 1 µs to 60 s, three
/// significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>, String> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())
}

/// Points per decade of `1/(1-p)` on the percentile curve.
const CURVE_POINTS_PER_DECADE: u32 = 20;
/// The curve goes at most this many nines deep (99.9999%).
const CURVE_DECADES: u32 = 6;

/// The latency-by-percentile curve of `hist`: points evenly spaced on a log scale
/// of `1/(1-p)`, from 0% to as many nines as the number of samples supports (a percentile finer than one sample is just the maximum).
pub fn percentile_curve(hist: &Histogram<u64>) -> Vec<Percentile> {
    if hist.is_empty() {
        return Vec::new();
    }
    let deepest = (hist.len() as f64)
        .log10()
        .min(f64::from(CURVE_DECADES))
        .max(0.0);
    let mut xs: Vec<f64> = (0..=CURVE_DECADES * CURVE_POINTS_PER_DECADE)
        .map(|i| f64::from(i) / f64::from(CURVE_POINTS_PER_DECADE))
        .take_while(|&x| x <= deepest + 1e-9)
        .collect();
    // The median falls between grid points; it is quoted, so it gets its own.
    xs.push(percentile_x(50.0));
    xs.sort_by(f64::total_cmp);
    let mut out = Vec::new();
    for x in xs {
        let q = 1.0 - 10f64.powf(-x);
        out.push(Percentile {
            // Rounded, so that report.json stays readable.
            percentile: (q * 100.0 * 1e6).round() / 1e6,
            latency_us: hist.value_at_quantile(q),
        });
    }
    out
}

/// Escapes `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Draws onto a fresh SVG of `size` pixels and returns its text.
pub(crate) fn draw_svg(
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, plotters::coord::Shift>) -> Result<(), String>,
) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    Ok(svg)
}

/// A drawing error as text.
pub(crate) fn err(e: impl std::fmt::Display) -> String {
    format!("drawing a chart: {e}")
}

/// `x` on the curve's axis (`log10(1/(1-p))`) as a percentile label: 0 → `0%`,
/// 1 → `90%`, 3 → `99.9%`.
fn percentile_label(x: f64) -> String {
    let p = 100.0 - 100.0 * 10f64.powf(-x);
    let decimals = (x.ceil() as i64 - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

/// A latency tick in ms, with as many decimals as an axis up to `top` ms needs.
fn ms_label(ms: f64, top: f64) -> String {
    match top {
        t if t >= 20.0 => format!("{ms:.0}"),
        t if t >= 2.0 => format!("{ms:.1}"),
        _ => format!("{ms:.2}"),
    }
}

/// Where percentile `p` (e.g. 99.9) sits on the curve's axis.
fn percentile_x(p: f64) -> f64 {
    (1.0 / (1.0 - (p / 100.0).min(1.0 - 1e-12))).log10()
}

/// The curve's x axis: `log10(1/(1-p))` from 0 to `decades`, with ticks at 0%,
/// 50% and each further nine (plotters' own ticks would fall between them).
struct PercentileAxis {
    decades: f64,
    keys: Vec<f64>,
}

impl Ranged for PercentileAxis {
    type FormatOption = plotters::coord::ranged1d::DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let f = value / self.decades;
        limit.0 + (f * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: plotters::coord::ranged1d::KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.keys.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.decades
    }
}

const SERIES_BLUE: RGBColor = RGBColor(31, 119, 180);
const SERIES_ORANGE: RGBColor = RGBColor(230, 120, 20);
const SERIES_RED: RGBColor = RGBColor(200, 30, 30);
const SERIES_PURPLE: RGBColor = RGBColor(120, 60, 160);

/// Latency by percentile (an HDR-histogram-style curve): the percentile on a
/// logarithmic `1/(1-p)` axis, so that 90%, 99%, 99.9% … are evenly spaced, and
/// the latency in milliseconds.
pub fn latency_svg(data: &RunData) -> Result<String, String> {
    draw_svg((900, 420), |root| {
        let points: Vec<(f64, f64)> = data
            .percentiles
            .iter()
            .map(|p| (percentile_x(p.percentile), p.latency_us as f64 / 1000.0))
            .collect();
        let decades = points
            .iter()
            .map(|p| p.0)
            .fold(1.0f64, f64::max)
            .ceil()
            .max(1.0);
        let top = points.iter().map(|p| p.1).fold(0.0f64, f64::max).max(0.001) * 1.15;
        let mut keys = vec![0.0, percentile_x(50.0)];
        keys.extend((1..=decades as u32).map(f64::from));
        let mut chart = ChartBuilder::on(root)
            .caption("Latency by percentile", ("sans-serif", 22))
            .margin(14)
            .margin_right(36)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(PercentileAxis { decades, keys }, 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("percentile (log scale of 1/(1-p))")
            .y_desc("latency (ms)")
            .x_label_formatter(&|x| percentile_label(*x))
            .y_label_formatter(&|y| ms_label(*y, top))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(points.clone(), SERIES_BLUE.stroke_width(2)))
            .map_err(err)?;
        // The percentiles people quote, marked and labelled on the curve.
        for q in [50.0, 99.0, 99.9, 99.99] {
            let x = percentile_x(q);
            let Some(p) = data
                .percentiles
                .iter()
                .find(|p| (percentile_x(p.percentile) - x).abs() < 1e-3)
            else {
                continue;
            };
            let y = p.latency_us as f64 / 1000.0;
            chart
                .draw_series(std::iter::once(Circle::new(
                    (x, y),
                    4,
                    SERIES_BLUE.filled(),
                )))
                .map_err(err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("p{q} {y:.2} ms"),
                    (x, y),
                    ("sans-serif", 13).into_font().color(&BLACK),
                )))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Colours of shaded spans, in turn.
const SHADES: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(44, 160, 44),
    RGBColor(140, 86, 75),
];

/// Throughput and p99 latency per second (top), errors and timeouts per second
/// (bottom), with the warm-up and every [`Shade`] shaded in both.
pub fn per_second_svg(data: &RunData) -> Result<String, String> {
    draw_svg((900, 560), |root| {
        let (upper, lower) = root.split_vertically(390);
        let end = data
            .end_s
            .max(data.seconds.len() as f64)
            .max(data.shades.iter().map(|s| s.end_s).fold(0.0, f64::max))
            .max(1.0);
        let max_ops = data
            .seconds
            .iter()
            .filter(|s| drawn(s))
            .map(Second::ops_per_s)
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.3;
        let max_p99 = data
            .seconds
            .iter()
            .filter_map(|s| s.p99_us)
            .max()
            .unwrap_or(1000) as f64
            / 1000.0
            * 1.3;
        let mut top = ChartBuilder::on(&upper)
            .caption("Throughput and p99 latency per second", ("sans-serif", 22))
            .margin(14)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .right_y_label_area_size(64)
            .build_cartesian_2d(0.0..end, 0.0..max_ops)
            .map_err(err)?
            .set_secondary_coord(0.0..end, 0.0..max_p99);
        top.configure_mesh()
            .y_desc("answered operations per second")
            .x_desc("seconds since the bench's sessions started")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        top.configure_secondary_axes()
            .y_desc("p99 latency (ms)")
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(err)?;
        shade(&mut top, data, max_ops, true)?;
        top.draw_series(LineSeries::new(
            data.seconds
                .iter()
                .filter(|s| drawn(s))
                .map(|s| (s.t as f64 + s.span_s / 2.0, s.ops_per_s())),
            SERIES_BLUE.stroke_width(2),
        ))
        .map_err(err)?
        .label("throughput (ops/s, left)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SERIES_BLUE));
        // p99 is undefined in a second without answers: the line breaks there.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for s in data.seconds.iter().filter(|s| drawn(s)) {
            match s.p99_us {
                Some(us) => {
                    if let Some(run) = runs.last_mut() {
                        run.push((s.t as f64 + s.span_s / 2.0, us as f64 / 1000.0));
                    }
                }
                None => runs.push(Vec::new()),
            }
        }
        let mut labelled = false;
        for run in runs.into_iter().filter(|r| !r.is_empty()) {
            let single = run.len() == 1;
            let series = top
                .draw_secondary_series(LineSeries::new(run.clone(), SERIES_ORANGE.stroke_width(2)))
                .map_err(err)?;
            if !labelled {
                series
                    .label("p99 latency (ms, right)")
                    .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], SERIES_ORANGE));
                labelled = true;
            }
            if single {
                top.draw_secondary_series(
                    run.into_iter()
                        .map(|p| Circle::new(p, 3, SERIES_ORANGE.filled())),
                )
                .map_err(err)?;
            }
        }
        top.configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;

        let max_bad = data
            .seconds
            .iter()
            .map(|s| s.errors.max(s.timeouts))
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.3;
        let mut bottom = ChartBuilder::on(&lower)
            .margin(14)
            .margin_top(4)
            // No right axis here: the margin keeps the x axis aligned with the top's.
            .margin_right(14 + 64)
            .x_label_area_size(30)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..end, 0.0..max_bad)
            .map_err(err)?;
        bottom
            .configure_mesh()
            .y_desc("per second")
            .x_label_formatter(&|x| format!("{x:.0}"))
            // Counts are whole numbers: no label between them.
            .y_label_formatter(&|y| {
                if (y - y.round()).abs() < 1e-9 {
                    format!("{y:.0}")
                } else {
                    String::new()
                }
            })
            .y_labels(5)
            .draw()
            .map_err(err)?;
        shade(&mut bottom, data, max_bad, false)?;
        bottom
            .draw_series(data.seconds.iter().filter(|s| s.errors > 0).map(|s| {
                let t = s.t as f64;
                Rectangle::new(
                    [(t + 0.1, 0.0), (t + 0.5, s.errors as f64)],
                    SERIES_PURPLE.filled(),
                )
            }))
            .map_err(err)?
            .label("errors (refused)")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], SERIES_PURPLE.filled()));
        bottom
            .draw_series(data.seconds.iter().filter(|s| s.timeouts > 0).map(|s| {
                let t = s.t as f64;
                Rectangle::new(
                    [(t + 0.5, 0.0), (t + 0.9, s.timeouts as f64)],
                    SERIES_RED.filled(),
                )
            }))
            .map_err(err)?
            .label("timeouts")
            .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], SERIES_RED.filled()));
        // A marker under every second that had errors or timeouts, so that one
        // among thousands of answers still shows.
        bottom
            .draw_series(
                data.seconds
                    .iter()
                    .filter(|s| s.errors + s.timeouts > 0)
                    .map(|s| {
                        TriangleMarker::new(
                            (s.t as f64 + 0.5, max_bad * 0.92),
                            5,
                            SERIES_RED.filled(),
                        )
                    }),
            )
            .map_err(err)?;
        bottom
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        Ok(())
    })
}

/// Whether a bucket is drawn: a last fragment shorter than half a second is in the
/// data but would make a meaningless rate.
fn drawn(s: &Second) -> bool {
    s.span_s >= 0.5
}

type Chart<'a, 'b, X, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, Y>>;

/// Shades the warm-up and every span of `data` over the full height `top`,
/// naming them when `named`.
fn shade<X, Y>(
    chart: &mut Chart<'_, '_, X, Y>,
    data: &RunData,
    top: f64,
    named: bool,
) -> Result<(), String>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    if data.warmup_s > 0.0 {
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(0.0, 0.0), (data.warmup_s, top)],
                BLACK.mix(0.08).filled(),
            )))
            .map_err(err)?;
        if named {
            chart
                .draw_series(std::iter::once(Text::new(
                    "warm-up".to_string(),
                    (0.1, top * 0.97),
                    ("sans-serif", 12).into_font().color(&BLACK.mix(0.6)),
                )))
                .map_err(err)?;
        }
    }
    for (i, s) in data.shades.iter().enumerate() {
        let c = SHADES[i % SHADES.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(s.start_s, 0.0), (s.end_s, top)],
                c.mix(0.18).filled(),
            )))
            .map_err(err)?;
        if named {
            // Names alternate between two heights, so neighbouring windows'
            // names do not overprint each other.
            let y = if i % 2 == 0 { 0.97 } else { 0.91 };
            chart
                .draw_series(std::iter::once(Text::new(
                    s.name.clone(),
                    (s.start_s, top * y),
                    ("sans-serif", 13).into_font().color(&c),
                )))
                .map_err(err)?;
        }
    }
    Ok(())
}

const PAGE_STYLE: &str = "body{font-family:sans-serif;max-width:960px;margin:1.5em auto;\
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0}\
td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}\
td.n{text-align:right;font-variant-numeric:tabular-nums}svg{max-width:100%;height:auto}\
.note{color:#555;font-size:90%}";

/// The start of a page: doctype, title and the inline style.
pub(crate) fn page_head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{t}</title>\n<style>{PAGE_STYLE}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
        t = escape(title)
    )
}

/// The HTML page of a run: its summary, both charts inlined, and the shaded spans.
pub fn page(data: &RunData, latency: &str, per_second: &str) -> String {
    let mut html = page_head(&data.title);
    html.push_str("<table>\n");
    if let Some(obj) = data.summary.as_object() {
        for (k, v) in obj {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            html.push_str(&format!(
                "<tr><th>{}</th><td class=\"n\">{}</td></tr>\n",
                escape(k),
                escape(&v)
            ));
        }
    }
    html.push_str("</table>\n<h2>Latency by percentile</h2>\n");
    html.push_str(latency);
    html.push_str(
        "\n<p class=\"note\">Operations answered in the measured window (after the \
         warm-up). The x axis is 1/(1-p) on a log scale, so each step to the right is one \
         more nine; the curve stops where the samples run out.</p>\n\
         <h2>Per second</h2>\n",
    );
    html.push_str(per_second);
    html.push_str(
        "\n<p class=\"note\">Each second counts the operations that ended in it, warm-up \
         included (shaded grey): answered ones (throughput, and their p99 latency), \
         refused ones (errors) and those given up on at the client deadline (timeouts, \
         marked by a red triangle). Times are seconds on the history's clock, as in \
         <code>--history</code> and <code>kvstore history-gaps</code>.</p>\n",
    );
    if !data.shades.is_empty() {
        html.push_str("<h2>Shaded windows</h2>\n<table>\n<tr><th>name</th><th>from (s)</th><th>to (s)</th></tr>\n");
        for s in &data.shades {
            html.push_str(&format!(
                "<tr><td>{}</td><td class=\"n\">{:.3}</td><td class=\"n\">{:.3}</td></tr>\n",
                escape(&s.name),
                s.start_s,
                s.end_s
            ));
        }
        html.push_str("</table>\n");
    }
    html.push_str(
        "<p class=\"note\">The data: <a href=\"report.json\">report.json</a>.</p>\n</body>\n</html>\n",
    );
    html
}

/// Makes `dir` (and its parents) and checks that a file can be written there, so a
/// run can refuse a bad `--report DIR` before it starts instead of after.
pub fn prepare_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let probe = dir.join(".kvstore-report-probe");
    std::fs::write(&probe, b"")
        .map_err(|e| format!("{}: cannot write there: {e}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Writes `index.html`, `report.json`, `latency.svg` and `per-second.svg` into
/// `dir` (made if missing); returns the page's path.
pub fn write_report(dir: &Path, data: &RunData) -> Result<PathBuf, String> {
    prepare_dir(dir)?;
    let latency = latency_svg(data)?;
    let per_second = per_second_svg(data)?;
    let json = serde_json::to_string_pretty(data).map_err(|e| e.to_string())?;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))
    };
    write("report.json", &json)?;
    write("latency.svg", &latency)?;
    write("per-second.svg", &per_second)?;
    write("index.html", &page(data, &latency, &per_second))?;
    Ok(dir.join("index.html"))
}

/// Reads a `report.json` written by `bench --report`.
pub fn load(path: &Path) -> Result<RunData, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let data: RunData = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a bench report: {e}", path.display()))?;
    if data.format != FORMAT {
        return Err(format!(
            "{}: report format {} (this kvstore reads format {FORMAT})",
            path.display(),
            data.format
        ));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synthetic() -> RunData {
        let mut hist = latency_histogram().unwrap();
        for i in 1..=10_000u64 {
            hist.record(200 + i % 700 + if i % 1000 == 0 { 20_000 } else { 0 })
                .unwrap();
        }
        let seconds = (0..12u64)
            .map(|t| Second {
                t,
                span_s: if t == 11 { 0.5 } else { 1.0 },
                ops: if (5..7).contains(&t) { 0 } else { 900 + t },
                errors: u64::from(t == 3),
                timeouts: if t == 5 { 32 } else { 0 },
                p50_us: (!(5..7).contains(&t)).then_some(400),
                p99_us: (!(5..7).contains(&t)).then_some(900 + 10 * t),
                max_us: (!(5..7).contains(&t)).then_some(5000),
            })
            .collect();
        RunData {
            format: FORMAT,
            title: "bench <&> test".into(),
            summary: serde_json::json!({"ops": 10_000, "p99_us": 900}),
            warmup_s: 1.0,
            end_s: 11.5,
            seconds,
            percentiles: percentile_curve(&hist),
            max_us: hist.max(),
            shades: vec![Shade {
                name: "kill".into(),
                start_s: 4.5,
                end_s: 7.0,
            }],
        }
    }

    #[test]
    fn per_second_buckets_cover_every_second_of_the_run() {
        let mut p = PerSecond::new().unwrap();
        let ms = Duration::from_millis;
        p.record(ms(100), Outcome::Answered(500));
        p.record(ms(900), Outcome::Answered(1500));
        p.record(ms(1200), Outcome::Error);
        // Nothing during seconds 2 and 3 (an outage): they are there, with zeros.
        p.record(ms(4100), Outcome::Timeout);
        p.record(ms(4200), Outcome::Answered(700));
        let s = p.finish(ms(4600));
        assert_eq!(
            s.iter().map(|s| s.t).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4]
        );
        assert_eq!(s[0].ops, 2);
        assert_eq!(s[0].p99_us.map(|v| v / 10), Some(150));
        assert_eq!((s[1].ops, s[1].errors, s[1].p99_us), (0, 1, None));
        assert_eq!((s[2].ops, s[3].ops), (0, 0));
        assert_eq!((s[4].ops, s[4].timeouts), (1, 1));
        assert!((s[4].span_s - 0.6).abs() < 1e-9, "{:?}", s[4]);
        assert!((s[4].ops_per_s() - 1.0 / 0.6).abs() < 1e-9);
    }

    #[test]
    fn the_percentile_curve_goes_as_deep_as_the_samples() {
        let d = synthetic();
        let first = d.percentiles.first().unwrap();
        let last = d.percentiles.last().unwrap();
        assert_eq!(first.percentile, 0.0);
        // 10,000 samples: four nines.
        assert!((last.percentile - 99.99).abs() < 1e-6, "{last:?}");
        assert!(last.latency_us >= 20_000, "{last:?}");
        assert!(
            d.percentiles
                .windows(2)
                .all(|w| w[0].latency_us <= w[1].latency_us)
        );
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(percentile_x(50.0)), "50%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert!(percentile_curve(&latency_histogram().unwrap()).is_empty());
    }

    #[test]
    fn the_charts_are_svg_with_their_series_and_shades() {
        let d = synthetic();
        let lat = latency_svg(&d).unwrap();
        assert!(lat.starts_with("<svg"), "{}", &lat[..80]);
        assert!(lat.contains("Latency by percentile"));
        assert!(lat.contains("99.9%"));
        for q in ["p50 ", "p99 ", "p99.9 ", "p99.99 "] {
            assert!(lat.contains(q), "the {q} point is labelled");
        }
        let ps = per_second_svg(&d).unwrap();
        for s in [
            "throughput (ops/s, left)",
            "p99 latency (ms, right)",
            "errors (refused)",
            "timeouts",
            "warm-up",
            "kill",
        ] {
            assert!(ps.contains(s), "{s:?} missing from the per-second chart");
        }
        assert!(ps.contains("<polygon") || ps.contains("<path"), "markers");
    }

    #[test]
    fn a_report_round_trips_and_the_page_is_self_contained() {
        let dir = std::env::temp_dir().join(format!("kvstore-report-test-{}", std::process::id()));
        let d = synthetic();
        let page = write_report(&dir, &d).unwrap();
        let html = std::fs::read_to_string(&page).unwrap();
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(html.contains("bench &lt;&amp;&gt; test"));
        assert!(!html.contains("<script"));
        // Nothing to fetch: the only address is the SVG namespace.
        let rest = html.replace("http://www.w3.org/2000/svg", "");
        assert!(!rest.contains("http:") && !rest.contains("https:"));
        let back = load(&dir.join("report.json")).unwrap();
        assert_eq!(
            (&back.seconds, &back.shades, &back.summary),
            (&d.seconds, &d.shades, &d.summary)
        );
        let lat = |r: &RunData| {
            r.percentiles
                .iter()
                .map(|p| p.latency_us)
                .collect::<Vec<_>>()
        };
        assert_eq!(lat(&back), lat(&d));
        for f in ["latency.svg", "per-second.svg"] {
            assert!(
                std::fs::read_to_string(dir.join(f))
                    .unwrap()
                    .starts_with("<svg")
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_report_files_are_refused_with_a_reason() {
        let dir = std::env::temp_dir().join(format!("kvstore-report-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.json");
        std::fs::write(&p, "{\"format\":1}").unwrap();
        let e = load(&p).unwrap_err();
        assert!(
            e.contains("not a bench report") && e.contains("missing field"),
            "{e}"
        );
        let mut d = synthetic();
        d.format = 99;
        std::fs::write(&p, serde_json::to_string(&d).unwrap()).unwrap();
        assert!(load(&p).unwrap_err().contains("format 99"));
        assert!(load(&dir.join("none.json")).is_err());
        // A file where the directory should be.
        let e = prepare_dir(&p.join("sub")).unwrap_err();
        assert!(e.contains("r.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
