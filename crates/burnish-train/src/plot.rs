//! Self-contained SVG charts, written by hand: the training curves at the end of a run and the
//! quickstart's result summary.
//!
//! A plotting crate would pull in font rendering and image codecs for what is a few hundred
//! lines of text; SVG opens in any browser, diffs as text and scales without blur. A
//! [`LineChart`] draws named series of (x, y) points with axes, "nice" ticks (1, 2 or 5 times a
//! power of ten), a grid and a legend; a [`BarChart`] draws labelled values. Non-finite points
//! (a NaN loss) are skipped and break the line. [`plot_training_curves`] reads `metrics.jsonl`
//! and writes `loss.svg`, `margins.svg` and `accuracy.svg`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::metrics_log::{MetricsError, read_metrics, series};

/// Errors from writing charts.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The chart file could not be written.
    #[error("cannot write chart {path}: {source}")]
    Write {
        /// The SVG file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metrics log could not be read.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Line colours, in order of series (Tableau 10: distinguishable and colour-blind friendly).
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;

/// Space around the plot area, in pixels.
#[derive(Debug, Clone, Copy)]
struct Margins {
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

/// Line charts keep the right margin for the legend.
const LINE_MARGINS: Margins = Margins {
    left: 78.0,
    right: 190.0,
    top: 44.0,
    bottom: 56.0,
};
/// Bar charts label their bars directly and leave room for a subtitle.
const BAR_MARGINS: Margins = Margins {
    left: 78.0,
    right: 30.0,
    top: 66.0,
    bottom: 40.0,
};

/// One named line of a [`LineChart`].
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The name shown in the legend.
    pub name: String,
    /// The (x, y) points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Draw a dot at each point (for sparse series such as evaluations).
    pub markers: bool,
    /// Draw the line faint (for raw, noisy values under a smoothed line).
    pub faint: bool,
}

impl Series {
    /// A plain line.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            markers: false,
            faint: false,
        }
    }

    /// The same series with a dot at each point.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }

    /// The same series drawn faint.
    pub fn faint(mut self) -> Self {
        self.faint = true;
        self
    }
}

/// A line chart of named series.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    /// The title above the plot.
    pub title: String,
    /// The label of the x axis.
    pub x_label: String,
    /// The label of the y axis.
    pub y_label: String,
    /// The lines, drawn in order.
    pub series: Vec<Series>,
    /// A fixed y range (e.g. [0, 1] for accuracies); `None` fits the data.
    pub y_range: Option<(f64, f64)>,
}

impl LineChart {
    /// An empty chart with a title and axis labels.
    pub fn new(
        title: impl Into<String>,
        x_label: impl Into<String>,
        y_label: impl Into<String>,
    ) -> Self {
        LineChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            series: Vec::new(),
            y_range: None,
        }
    }

    /// Adds a series.
    pub fn with_series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Fixes the y range instead of fitting it to the data.
    pub fn with_y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let finite = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (x_lo, x_hi) = min_max(finite().map(|p| p.0)).unwrap_or((0.0, 1.0));
        let (y_lo, y_hi) = self
            .y_range
            .or_else(|| min_max(finite().map(|p| p.1)))
            .unwrap_or((0.0, 1.0));
        let x_axis = Axis::fit(x_lo, x_hi, false);
        let y_axis = Axis::fit(y_lo, y_hi, self.y_range.is_some());
        let frame = Frame {
            x: x_axis,
            y: y_axis,
            m: LINE_MARGINS,
        };

        let mut svg = String::new();
        open_svg(&mut svg, &self.title, &frame);
        frame.draw_axes(&mut svg, &self.x_label, &self.y_label);
        if finite().next().is_none() {
            let _ = writeln!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
                frame.m.left + frame.width() / 2.0,
                frame.m.top + frame.height() / 2.0
            );
        }
        let _ = writeln!(svg, r#"<g clip-path="url(#plot-area)">"#);
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let (opacity, width) = if s.faint { (0.35, 1.0) } else { (1.0, 1.8) };
            let _ = writeln!(svg, r#"<g class="series" data-name="{}">"#, escape(&s.name));
            for segment in finite_segments(&s.points) {
                let mut pts = String::new();
                for &(x, y) in segment {
                    let _ = write!(pts, "{:.2},{:.2} ", frame.px(x), frame.py(y));
                }
                let _ = writeln!(
                    svg,
                    r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="{width}" stroke-opacity="{opacity}" stroke-linejoin="round"/>"#,
                    pts.trim_end()
                );
            }
            if s.markers {
                for &(x, y) in s
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                {
                    let _ = writeln!(
                        svg,
                        r#"<circle cx="{:.2}" cy="{:.2}" r="3" fill="{color}"/>"#,
                        frame.px(x),
                        frame.py(y)
                    );
                }
            }
            let _ = writeln!(svg, "</g>");
        }
        let _ = writeln!(svg, "</g>");
        let legend: Vec<(&str, &str, bool)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), PALETTE[i % PALETTE.len()], s.faint))
            .collect();
        draw_legend(&mut svg, &legend, &frame);
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes the SVG to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        write_file(path.as_ref(), &self.to_svg())
    }
}

/// A bar chart of labelled values (negative values hang below the zero line).
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    /// The title above the plot.
    pub title: String,
    /// A second line under the title (e.g. "win rate 0.71, KL 4.2 nats").
    pub subtitle: Option<String>,
    /// The label of the y axis.
    pub y_label: String,
    /// The bars: label under the bar, value.
    pub bars: Vec<(String, f64)>,
}

impl BarChart {
    /// An empty bar chart.
    pub fn new(title: impl Into<String>, y_label: impl Into<String>) -> Self {
        BarChart {
            title: title.into(),
            subtitle: None,
            y_label: y_label.into(),
            bars: Vec::new(),
        }
    }

    /// Adds a bar.
    pub fn with_bar(mut self, label: impl Into<String>, value: f64) -> Self {
        self.bars.push((label.into(), value));
        self
    }

    /// Sets the line under the title.
    pub fn with_subtitle(mut self, subtitle: impl Into<String>) -> Self {
        self.subtitle = Some(subtitle.into());
        self
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> String {
        let values = self.bars.iter().map(|b| b.1).filter(|v| v.is_finite());
        let (lo, hi) = min_max(values.chain([0.0])).unwrap_or((0.0, 1.0));
        let y = Axis::fit(lo, hi, false);
        let n = self.bars.len().max(1) as f64;
        let frame = Frame {
            x: Axis {
                lo: 0.0,
                hi: n,
                ticks: Vec::new(),
            },
            y,
            m: BAR_MARGINS,
        };

        let mut svg = String::new();
        open_svg(&mut svg, &self.title, &frame);
        if let Some(sub) = &self.subtitle {
            let _ = writeln!(
                svg,
                r##"<text class="subtitle" x="{:.1}" y="{:.1}" text-anchor="middle" fill="#555">{}</text>"##,
                frame.m.left + frame.width() / 2.0,
                44.0,
                escape(sub)
            );
        }
        frame.draw_axes(&mut svg, "", &self.y_label);
        let zero = frame.py(0.0);
        let slot = frame.width() / n;
        for (i, (label, value)) in self.bars.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let cx = frame.m.left + slot * (i as f64 + 0.5);
            let w = slot * 0.6;
            let _ = writeln!(svg, r#"<g class="bar" data-name="{}">"#, escape(label));
            if value.is_finite() {
                let top = frame.py(*value);
                let (y0, h) = if top < zero {
                    (top, zero - top)
                } else {
                    (zero, top - zero)
                };
                let _ = writeln!(
                    svg,
                    r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="{:.2}" fill="{color}"/>"#,
                    cx - w / 2.0,
                    y0,
                    w,
                    h
                );
                let label_y = if *value >= 0.0 { top - 5.0 } else { top + 14.0 };
                let _ = writeln!(
                    svg,
                    r#"<text x="{cx:.2}" y="{label_y:.2}" text-anchor="middle">{}</text>"#,
                    escape(&format_value(*value))
                );
            }
            let _ = writeln!(
                svg,
                r#"<text x="{cx:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                frame.m.top + frame.height() + 18.0,
                escape(label)
            );
            let _ = writeln!(svg, "</g>");
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes the SVG to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        write_file(path.as_ref(), &self.to_svg())
    }
}

/// The quickstart's headline numbers: the gold reward (VADER compound) of the reference and of
/// the trained policy on held-out prompts, the policy's win rate against the reference, and
/// their KL divergence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuickstartSummary {
    /// Mean gold reward of the reference model's completions.
    pub reference_reward: f64,
    /// Mean gold reward of the policy's completions.
    pub policy_reward: f64,
    /// Fraction of prompts where the policy's completion scores higher than the reference's.
    pub win_rate: f64,
    /// Mean sequence-level KL(policy || reference) of the policy's completions, in nats.
    pub kl: f64,
}

/// Writes the quickstart summary as a bar chart of mean gold reward, reference vs policy, with
/// the win rate and KL under the title.
pub fn plot_quickstart_summary(
    summary: &QuickstartSummary,
    path: impl AsRef<Path>,
) -> Result<(), PlotError> {
    plot_comparison_summary(summary, "DPO", path)
}

/// [`plot_quickstart_summary`] for a policy trained by `method` (e.g. "PPO").
pub fn plot_comparison_summary(
    summary: &QuickstartSummary,
    method: &str,
    path: impl AsRef<Path>,
) -> Result<(), PlotError> {
    BarChart::new(
        "Gold reward (VADER compound) on held-out prompts",
        "mean gold reward",
    )
    .with_subtitle(format!(
        "policy wins {:.1}% of prompts, KL(policy || reference) = {:.2} nats",
        summary.win_rate * 100.0,
        summary.kl
    ))
    .with_bar("reference", summary.reference_reward)
    .with_bar(format!("policy ({method})"), summary.policy_reward)
    .write(path)
}

/// A trailing moving average over `window` points (the first points average what exists).
pub fn moving_average(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    let window = window.max(1);
    let mut out = Vec::with_capacity(points.len());
    let mut sum = 0.0;
    let mut count = 0usize;
    let mut queue = std::collections::VecDeque::with_capacity(window);
    for &(x, y) in points {
        if !y.is_finite() {
            continue;
        }
        queue.push_back(y);
        sum += y;
        count += 1;
        if queue.len() > window {
            sum -= queue.pop_front().unwrap_or(0.0);
            count -= 1;
        }
        out.push((x, sum / count as f64));
    }
    out
}

/// One chart drawn from `metrics.jsonl`: which key, its title and axis, and the file name.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CurveSpec {
    /// The metric's key in the records (e.g. `rewards/margins`).
    pub key: &'static str,
    /// The chart's title.
    pub title: &'static str,
    /// The y axis label.
    pub y_label: &'static str,
    /// A fixed y range, or `None` to fit the data.
    pub y_range: Option<(f64, f64)>,
    /// The SVG file name inside the output folder.
    pub file: &'static str,
}

/// The charts of a preference or reward run: loss, reward margin and accuracy.
pub const TRAINING_CURVES: [CurveSpec; 3] = [
    CurveSpec {
        key: "loss",
        title: "Loss",
        y_label: "loss",
        y_range: None,
        file: "loss.svg",
    },
    CurveSpec {
        key: "rewards/margins",
        title: "Reward margin (chosen - rejected)",
        y_label: "implicit reward margin",
        y_range: None,
        file: "margins.svg",
    },
    CurveSpec {
        key: "rewards/accuracies",
        title: "Reward accuracy",
        y_label: "fraction chosen > rejected",
        y_range: Some((0.0, 1.0)),
        file: "accuracy.svg",
    },
];

/// Reads `metrics.jsonl` and writes `loss.svg`, `margins.svg` (`rewards/margins`) and
/// `accuracy.svg` (`rewards/accuracies`) into `out_dir` (see [`plot_curves`]).
pub fn plot_training_curves(
    metrics_jsonl: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
) -> Result<Vec<PathBuf>, PlotError> {
    plot_curves(metrics_jsonl, out_dir, &TRAINING_CURVES)
}

/// Reads `metrics.jsonl` and writes one chart per spec into `out_dir`, each with the training
/// values (raw and, when there are many, a moving average) and the evaluations. A chart whose
/// metric never appears is not written. Returns the files written.
pub fn plot_curves(
    metrics_jsonl: impl AsRef<Path>,
    out_dir: impl AsRef<Path>,
    charts: &[CurveSpec],
) -> Result<Vec<PathBuf>, PlotError> {
    let records = read_metrics(metrics_jsonl)?;
    let out_dir = out_dir.as_ref();
    std::fs::create_dir_all(out_dir).map_err(|source| PlotError::Write {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let mut written = Vec::new();
    for spec in charts {
        let train = series(&records, "train", spec.key);
        let eval = series(&records, "eval", spec.key);
        if train.is_empty() && eval.is_empty() {
            continue;
        }
        let mut chart = LineChart::new(spec.title, "optimizer step", spec.y_label);
        if let Some((lo, hi)) = spec.y_range {
            chart = chart.with_y_range(lo, hi);
        }
        if train.len() >= 40 {
            let window = (train.len() / 20).max(5);
            let smooth = moving_average(&train, window);
            chart = chart
                .with_series(Series::new("train", train).faint())
                .with_series(Series::new(format!("train (mean of {window})"), smooth));
        } else if !train.is_empty() {
            chart = chart.with_series(Series::new("train", train));
        }
        if !eval.is_empty() {
            chart = chart.with_series(Series::new("eval", eval).with_markers());
        }
        let path = out_dir.join(spec.file);
        chart.write(&path)?;
        written.push(path);
    }
    Ok(written)
}

fn write_file(path: &Path, svg: &str) -> Result<(), PlotError> {
    crate::checkpoint::write_atomic(path, svg.as_bytes()).map_err(|source| PlotError::Write {
        path: path.to_path_buf(),
        source,
    })
}

fn min_max(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// Runs of consecutive finite points.
fn finite_segments(points: &[(f64, f64)]) -> impl Iterator<Item = &[(f64, f64)]> {
    points
        .split(|(x, y)| !(x.is_finite() && y.is_finite()))
        .filter(|s| !s.is_empty())
}

/// An axis range with its tick values.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// Extends `[lo, hi]` to tick multiples of a nice step, or keeps it exactly when `exact`.
    fn fit(lo: f64, hi: f64, exact: bool) -> Axis {
        let (mut lo, mut hi) = (lo, hi);
        if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            // A flat series: give it some room around its value.
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
            lo -= pad;
            hi += pad;
        }
        let step = nice_step((hi - lo) / 5.0);
        if !exact {
            lo = (lo / step).floor() * step;
            hi = (hi / step).ceil() * step;
        }
        // The tolerance keeps a tick on an end that rounding moved by an ulp.
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        let ticks = (first..=last)
            .map(|k| k as f64 * step)
            .map(|t| if t.abs() < step * 1e-9 { 0.0 } else { t })
            .collect();
        Axis { lo, hi, ticks }
    }

    fn step(&self) -> f64 {
        match self.ticks.as_slice() {
            [a, b, ..] => b - a,
            _ => (self.hi - self.lo).abs().max(f64::MIN_POSITIVE),
        }
    }
}

/// The smallest of 1, 2, 5 times a power of ten that is at least `raw`.
fn nice_step(raw: f64) -> f64 {
    let raw = if raw.is_finite() && raw > 0.0 {
        raw
    } else {
        1.0
    };
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// A tick label with as many decimals as the step needs.
fn format_tick(value: f64, step: f64) -> String {
    let magnitude = value.abs().max(step.abs());
    if magnitude != 0.0 && (magnitude >= 1e6 || step.abs() < 1e-4) {
        return format!("{value:.1e}");
    }
    let decimals = (-step.abs().log10().floor()).max(0.0) as usize;
    format!("{value:.decimals$}")
}

/// A value label on a bar.
fn format_value(value: f64) -> String {
    if value != 0.0 && (value.abs() >= 1e5 || value.abs() < 1e-3) {
        format!("{value:.2e}")
    } else {
        format!("{value:.3}")
    }
}

/// The plot rectangle mapped to data coordinates.
struct Frame {
    x: Axis,
    y: Axis,
    m: Margins,
}

impl Frame {
    fn width(&self) -> f64 {
        WIDTH - self.m.left - self.m.right
    }

    fn height(&self) -> f64 {
        HEIGHT - self.m.top - self.m.bottom
    }

    fn px(&self, x: f64) -> f64 {
        self.m.left + (x - self.x.lo) / (self.x.hi - self.x.lo) * self.width()
    }

    fn py(&self, y: f64) -> f64 {
        self.m.top + self.height() - (y - self.y.lo) / (self.y.hi - self.y.lo) * self.height()
    }

    /// Grid, axes, tick labels and axis labels.
    fn draw_axes(&self, svg: &mut String, x_label: &str, y_label: &str) {
        let (left, top) = (self.m.left, self.m.top);
        let (right, bottom) = (left + self.width(), top + self.height());
        let _ = writeln!(
            svg,
            r##"<g class="grid" stroke="#e5e5e5" stroke-width="1">"##
        );
        for &t in &self.y.ticks {
            let y = self.py(t);
            let _ = writeln!(
                svg,
                r#"<line x1="{left:.2}" y1="{y:.2}" x2="{right:.2}" y2="{y:.2}"/>"#
            );
        }
        for &t in &self.x.ticks {
            let x = self.px(t);
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.2}" y1="{top:.2}" x2="{x:.2}" y2="{bottom:.2}"/>"#
            );
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(svg, r##"<g class="axes" stroke="#333" stroke-width="1">"##);
        let _ = writeln!(
            svg,
            r#"<line x1="{left:.2}" y1="{bottom:.2}" x2="{right:.2}" y2="{bottom:.2}"/>"#
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{left:.2}" y1="{top:.2}" x2="{left:.2}" y2="{bottom:.2}"/>"#
        );
        for &t in &self.y.ticks {
            let y = self.py(t);
            let _ = writeln!(
                svg,
                r#"<line x1="{:.2}" y1="{y:.2}" x2="{left:.2}" y2="{y:.2}"/>"#,
                left - 5.0
            );
        }
        for &t in &self.x.ticks {
            let x = self.px(t);
            let _ = writeln!(
                svg,
                r#"<line x1="{x:.2}" y1="{bottom:.2}" x2="{x:.2}" y2="{:.2}"/>"#,
                bottom + 5.0
            );
        }
        let _ = writeln!(svg, "</g>");
        let _ = writeln!(svg, r##"<g class="tick-labels" fill="#333">"##);
        let y_step = self.y.step();
        for &t in &self.y.ticks {
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="end">{}</text>"#,
                left - 8.0,
                self.py(t) + 4.0,
                escape(&format_tick(t, y_step))
            );
        }
        let x_step = self.x.step();
        for &t in &self.x.ticks {
            let _ = writeln!(
                svg,
                r#"<text x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                self.px(t),
                bottom + 18.0,
                escape(&format_tick(t, x_step))
            );
        }
        let _ = writeln!(svg, "</g>");
        if !x_label.is_empty() {
            let _ = writeln!(
                svg,
                r#"<text class="x-label" x="{:.2}" y="{:.2}" text-anchor="middle">{}</text>"#,
                (left + right) / 2.0,
                HEIGHT - 12.0,
                escape(x_label)
            );
        }
        if !y_label.is_empty() {
            let (x, y) = (18.0, (top + bottom) / 2.0);
            let _ = writeln!(
                svg,
                r#"<text class="y-label" x="{x:.2}" y="{y:.2}" text-anchor="middle" transform="rotate(-90 {x:.2} {y:.2})">{}</text>"#,
                escape(y_label)
            );
        }
        let _ = writeln!(
            svg,
            r#"<clipPath id="plot-area"><rect x="{left:.2}" y="{top:.2}" width="{:.2}" height="{:.2}"/></clipPath>"#,
            self.width(),
            self.height()
        );
    }
}

/// The SVG header, white background and title.
fn open_svg(svg: &mut String, title: &str, frame: &Frame) {
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, "<title>{}</title>", escape(title));
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text class="title" x="{:.1}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        frame.m.left + frame.width() / 2.0,
        escape(title)
    );
}

/// The legend in the right margin: a line sample and the name of each series.
fn draw_legend(svg: &mut String, entries: &[(&str, &str, bool)], frame: &Frame) {
    let x = frame.m.left + frame.width() + 16.0;
    let _ = writeln!(svg, r#"<g class="legend">"#);
    for (i, (name, color, faint)) in entries.iter().enumerate() {
        let y = frame.m.top + 10.0 + 20.0 * i as f64;
        let opacity = if *faint { 0.35 } else { 1.0 };
        let _ = writeln!(
            svg,
            r#"<line x1="{x:.2}" y1="{y:.2}" x2="{:.2}" y2="{y:.2}" stroke="{color}" stroke-width="2.5" stroke-opacity="{opacity}"/>"#,
            x + 22.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.2}" y="{:.2}">{}</text>"#,
            x + 28.0,
            y + 4.0,
            escape(name)
        );
    }
    let _ = writeln!(svg, "</g>");
}

/// Escapes text for XML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newlines are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_log::{EvalRecord, Metrics, MetricsLog, StepRecord};

    /// A small XML well-formedness check: balanced tags, quoted attributes, valid entities, one root.
    fn assert_well_formed(xml: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = xml;
        let check_text = |text: &str| {
            let mut t = text;
            while let Some(i) = t.find('&') {
                let after = &t[i + 1..];
                let end = after
                    .find(';')
                    .unwrap_or_else(|| panic!("unterminated entity in {text:?}"));
                let name = &after[..end];
                assert!(
                    matches!(name, "amp" | "lt" | "gt" | "quot" | "apos") || name.starts_with('#'),
                    "bad entity &{name}; in {text:?}"
                );
                t = &after[end + 1..];
            }
        };
        while let Some(start) = rest.find('<') {
            let text = &rest[..start];
            check_text(text);
            assert!(
                !stack.is_empty() || text.trim().is_empty(),
                "text outside the root: {text:?}"
            );
            rest = &rest[start..];
            if rest.starts_with("<?") {
                let end = rest
                    .find("?>")
                    .expect("unterminated processing instruction");
                rest = &rest[end + 2..];
                continue;
            }
            if rest.starts_with("<!--") {
                let end = rest.find("-->").expect("unterminated comment");
                rest = &rest[end + 3..];
                continue;
            }
            let end = rest.find('>').expect("unterminated tag");
            let tag = &rest[1..end];
            rest = &rest[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack
                    .pop()
                    .unwrap_or_else(|| panic!("closing </{name}> without an open tag"));
                assert_eq!(open, name.trim(), "mismatched tags");
                continue;
            }
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "-_:".contains(c)),
                "bad name {name:?}"
            );
            // Attributes: name="value" pairs, values without '<', entities valid.
            let mut attrs = body[name.len()..].trim();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .unwrap_or_else(|| panic!("attribute without value in <{tag}>"));
                let quote = attrs[eq + 1..].chars().next().unwrap();
                assert!(
                    quote == '"' || quote == '\'',
                    "unquoted attribute in <{tag}>"
                );
                let value_end =
                    attrs[eq + 2..].find(quote).expect("unterminated attribute") + eq + 2;
                check_text(&attrs[eq + 2..value_end]);
                attrs = attrs[value_end + 1..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name);
            }
        }
        assert!(stack.is_empty(), "unclosed tags: {stack:?}");
        assert_eq!(roots, 1, "exactly one root element");
    }

    #[test]
    fn checker_rejects_broken_xml() {
        for bad in [
            "<svg><g></svg>",
            "<svg>a & b</svg>",
            "<svg x=1/>",
            "<svg/><svg/>",
        ] {
            assert!(
                std::panic::catch_unwind(|| assert_well_formed(bad)).is_err(),
                "{bad}"
            );
        }
        assert_well_formed(
            "<?xml version=\"1.0\"?>\n<svg a=\"1 &amp; 2\"><g/><t>x &lt; y</t></svg>\n",
        );
    }

    #[test]
    fn line_chart_is_well_formed_and_has_its_series() {
        let chart = LineChart::new("Loss <DPO> & friends", "step", "loss")
            .with_series(Series::new(
                "train",
                vec![
                    (1.0, 0.69),
                    (2.0, 0.6),
                    (3.0, f64::NAN),
                    (4.0, 0.4),
                    (5.0, 0.35),
                ],
            ))
            .with_series(
                Series::new("eval \"held-out\"", vec![(2.0, 0.65), (4.0, 0.5)]).with_markers(),
            );
        let svg = chart.to_svg();
        assert_well_formed(&svg);
        assert!(svg.contains("Loss &lt;DPO&gt; &amp; friends"));
        assert!(svg.contains(r#"data-name="train""#));
        assert!(svg.contains(r#"data-name="eval &quot;held-out&quot;""#));
        // The NaN splits the train line in two; the eval series has two markers.
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn points_map_inside_the_plot_area() {
        let svg = LineChart::new("t", "x", "y")
            .with_series(Series::new("s", vec![(0.0, -3.0), (10.0, 7.0)]))
            .to_svg();
        let line = svg.lines().find(|l| l.starts_with("<polyline")).unwrap();
        let pts: Vec<(f64, f64)> = line
            .split('"')
            .nth(1)
            .unwrap()
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        let m = LINE_MARGINS;
        for (x, y) in pts {
            assert!((m.left..=WIDTH - m.right).contains(&x), "{x}");
            assert!((m.top..=HEIGHT - m.bottom).contains(&y), "{y}");
        }
    }

    #[test]
    fn empty_and_flat_charts_still_render() {
        let svg = LineChart::new("nothing", "x", "y").to_svg();
        assert_well_formed(&svg);
        assert!(svg.contains("no data"));
        let svg = LineChart::new("flat", "x", "y")
            .with_series(Series::new("s", vec![(1.0, 2.0), (2.0, 2.0)]))
            .to_svg();
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn nice_ticks() {
        assert_eq!(nice_step(0.13), 0.2);
        assert_eq!(nice_step(3.0), 5.0);
        assert_eq!(nice_step(7.0), 10.0);
        assert_eq!(nice_step(100.0), 100.0);
        let a = Axis::fit(0.31, 0.69, false);
        assert!(
            (a.lo - 0.3).abs() < 1e-12 && (a.hi - 0.7).abs() < 1e-12,
            "{a:?}"
        );
        assert_eq!(a.ticks.len(), 5);
        let a = Axis::fit(0.0, 1.0, true);
        assert_eq!(a.ticks, vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(format_tick(0.6000000000000001, 0.2), "0.6");
        assert_eq!(format_tick(200.0, 50.0), "200");
        assert_eq!(format_tick(2e-6, 1e-6), "2.0e-6");
    }

    #[test]
    fn bar_chart_has_bars_labels_and_negative_values() {
        let path = tempfile::tempdir().unwrap();
        let file = path.path().join("summary.svg");
        let summary = QuickstartSummary {
            reference_reward: -0.12,
            policy_reward: 0.58,
            win_rate: 0.81,
            kl: 3.4,
        };
        plot_quickstart_summary(&summary, &file).unwrap();
        let svg = std::fs::read_to_string(&file).unwrap();
        assert_well_formed(&svg);
        assert!(
            svg.contains(r#"data-name="reference""#) && svg.contains(r#"data-name="policy (DPO)""#)
        );
        assert!(svg.contains("-0.120") && svg.contains("0.580"));
        assert!(svg.contains("81.0%") && svg.contains("3.40 nats"));
        assert_eq!(
            svg.matches("<rect").count(),
            1 + 1 + 2,
            "background, clip rectangle and two bars"
        );
    }

    #[test]
    fn moving_average_is_trailing() {
        let pts = vec![
            (1.0, 1.0),
            (2.0, 3.0),
            (3.0, f64::NAN),
            (4.0, 5.0),
            (5.0, 7.0),
        ];
        assert_eq!(
            moving_average(&pts, 2),
            vec![(1.0, 1.0), (2.0, 2.0), (4.0, 4.0), (5.0, 6.0)]
        );
    }

    #[test]
    fn training_curves_from_metrics_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::create(&metrics).unwrap();
        for step in 1..=60u64 {
            let s = step as f64;
            let m: Metrics = [
                ("rewards/margins", 0.02 * s),
                ("rewards/accuracies", (0.5 + s / 200.0).min(1.0)),
            ]
            .into_iter()
            .collect();
            log.write_step(StepRecord {
                step,
                epoch: s / 60.0,
                loss: 0.69 - 0.004 * s,
                lr: 1e-6,
                grad_norm: 1.0,
                tokens_per_sec: 100.0,
                metrics: m,
            })
            .unwrap();
            if step % 20 == 0 {
                let m: Metrics = [("rewards/margins", 0.015 * s)].into_iter().collect();
                log.write_eval(EvalRecord {
                    step,
                    epoch: s / 60.0,
                    loss: 0.7 - 0.003 * s,
                    examples: 50,
                    metrics: m,
                })
                .unwrap();
            }
        }
        drop(log);
        let out = dir.path().join("plots");
        let written = plot_training_curves(&metrics, &out).unwrap();
        let names: Vec<String> = written
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["loss.svg", "margins.svg", "accuracy.svg"]);
        for path in &written {
            let svg = std::fs::read_to_string(path).unwrap();
            assert_well_formed(&svg);
            assert!(svg.contains(r#"data-name="train""#), "{}", path.display());
        }
        let loss = std::fs::read_to_string(out.join("loss.svg")).unwrap();
        assert!(
            loss.contains(r#"data-name="train (mean of 5)""#)
                && loss.contains(r#"data-name="eval""#)
        );
        assert_eq!(loss.matches("<circle").count(), 3);
        let accuracy = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
        assert!(
            !accuracy.contains(r#"data-name="eval""#),
            "no eval accuracies were logged"
        );
        assert!(
            accuracy.contains(">1.0</text>") && accuracy.contains(">0.0</text>"),
            "fixed [0, 1] range"
        );
    }
}
