//! Charts as SVG, drawn with plotters' SVG backend: the training curves at the end of a run,
//! the quickstart's result summary, and scatter plots such as a reward-KL frontier.
//!
//! SVG opens in any browser, diffs as text and scales without blur; plotters' SVG backend and
//! its built-in font metrics are pure Rust, with no system fonts or image codecs. A
//! [`LineChart`] draws named series of (x, y) points (lines, dots, or both) with axes, a grid
//! and a legend; a [`BarChart`] draws labelled values. Non-finite points (a NaN loss) are
//! skipped and break the line. [`plot_training_curves`] reads `metrics.jsonl` and writes
//! `loss.svg`, `margins.svg` and `accuracy.svg`.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::metrics_log::{MetricsError, read_metrics, series};

/// Errors from writing charts.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The chart file could not be written.
    #[error("cannot write chart {path}: {cause}")]
    Write {
        /// The SVG file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// The metrics log could not be read.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// plotters could not draw the chart.
    #[error("cannot draw chart {title:?}: {message}")]
    Draw {
        /// The chart's title.
        title: String,
        /// plotters' error.
        message: String,
    },
}

/// Series colours, in order (Tableau 10: distinguishable and colour-blind friendly).
const PALETTE: [(u8, u8, u8); 10] = [
    (0x4e, 0x79, 0xa7),
    (0xf2, 0x8e, 0x2b),
    (0xe1, 0x57, 0x59),
    (0x76, 0xb7, 0xb2),
    (0x59, 0xa1, 0x4f),
    (0xed, 0xc9, 0x48),
    (0xb0, 0x7a, 0xa1),
    (0xff, 0x9d, 0xa7),
    (0x9c, 0x75, 0x5f),
    (0xba, 0xb0, 0xac),
];

const WIDTH: u32 = 760;
const HEIGHT: u32 = 440;

fn colour(index: usize) -> RGBColor {
    let (r, g, b) = PALETTE[index % PALETTE.len()];
    RGBColor(r, g, b)
}

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
    /// Join the points with a line (false: dots only, a scatter).
    pub line: bool,
    /// The palette colour to use; `None` takes the series' position.
    pub colour: Option<usize>,
}

impl Series {
    /// A plain line.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
            markers: false,
            faint: false,
            line: true,
            colour: None,
        }
    }

    /// Dots without a line (a scatter).
    pub fn points(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            markers: true,
            line: false,
            ..Series::new(name, points)
        }
    }

    /// The same series in palette colour `index` (to pair a scatter with its frontier line).
    pub fn with_colour(mut self, index: usize) -> Self {
        self.colour = Some(index);
        self
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
    /// Put the legend in the lower right corner instead of the upper right.
    pub legend_lower_right: bool,
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
            legend_lower_right: false,
        }
    }

    /// Adds a series.
    pub fn with_series(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Moves the legend to the lower right corner (for curves that rise to the upper right).
    pub fn with_legend_lower_right(mut self) -> Self {
        self.legend_lower_right = true;
        self
    }

    /// Fixes the y range instead of fitting it to the data.
    pub fn with_y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// The chart as a standalone SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        render(&self.title, |svg| self.draw(svg).map_err(|e| e.to_string()))
    }

    fn draw(&self, svg: &mut String) -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let finite: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        if finite.is_empty() {
            root.titled(&self.title, ("sans-serif", 20))?
                .draw(&Text::new(
                    "no data",
                    (WIDTH as i32 / 2 - 30, HEIGHT as i32 / 2 - 30),
                    ("sans-serif", 16),
                ))?;
            root.present()?;
            return Ok(());
        }
        let x = padded(min_max(finite.iter().map(|p| p.0)), 0.0);
        let y = match self.y_range {
            Some(range) => range,
            None => padded(min_max(finite.iter().map(|p| p.1)), 0.05),
        };
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (index, series) in self.series.iter().enumerate() {
            let c = colour(series.colour.unwrap_or(index));
            let style = if series.faint {
                c.mix(0.3).stroke_width(1)
            } else {
                c.stroke_width(2)
            };
            let mut labelled = false;
            if series.line {
                for segment in finite_segments(&series.points) {
                    let drawn =
                        chart.draw_series(LineSeries::new(segment.iter().copied(), style))?;
                    if !labelled {
                        drawn.label(series.name.as_str()).legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], style)
                        });
                        labelled = true;
                    }
                }
            }
            if series.markers {
                let dots = series
                    .points
                    .iter()
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .map(|&p| Circle::new(p, 4, c.filled()));
                let drawn = chart.draw_series(dots)?;
                if !labelled {
                    drawn
                        .label(series.name.as_str())
                        .legend(move |(x, y)| Circle::new((x + 9, y), 4, c.filled()));
                }
            }
        }
        chart
            .configure_series_labels()
            .position(if self.legend_lower_right {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::UpperRight
            })
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .draw()?;
        root.present()?;
        Ok(())
    }

    /// Writes the SVG to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        write_file(path.as_ref(), &self.to_svg()?)
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
    pub fn to_svg(&self) -> Result<String, PlotError> {
        render(&self.title, |svg| self.draw(svg).map_err(|e| e.to_string()))
    }

    fn draw(&self, svg: &mut String) -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let titled = root.titled(&self.title, ("sans-serif", 20))?;
        let area = match &self.subtitle {
            Some(sub) => {
                titled.draw(&Text::new(sub.as_str(), (80, 0), ("sans-serif", 14)))?;
                titled.margin(24, 0, 0, 0)
            }
            None => titled,
        };
        let values = self.bars.iter().map(|b| b.1).filter(|v| v.is_finite());
        let y = padded(min_max(values.chain([0.0])), 0.15);
        let n = self.bars.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&area)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..n, y.0..y.1)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        let label: TextStyle = ("sans-serif", 14).into_font().into();
        for (i, (name, value)) in self.bars.iter().enumerate() {
            let centre = i as f64 + 0.5;
            // The bar's name under the axis, centred.
            let (w, _) = root.estimate_text_size(name, &label)?;
            chart.draw_series(std::iter::once(
                EmptyElement::at((centre, y.0))
                    + Text::new(name.clone(), (-(w as i32) / 2, 8), label.clone()),
            ))?;
            if !value.is_finite() {
                continue;
            }
            chart.draw_series(std::iter::once(Rectangle::new(
                [(i as f64 + 0.2, 0.0), (i as f64 + 0.8, *value)],
                colour(i).mix(0.85).filled(),
            )))?;
            let text = format!("{value:.3}");
            let (w, h) = root.estimate_text_size(&text, &label)?;
            let above = if *value >= 0.0 { -(h as i32) - 4 } else { 4 };
            chart.draw_series(std::iter::once(
                EmptyElement::at((centre, *value))
                    + Text::new(text, (-(w as i32) / 2, above), label.clone()),
            ))?;
        }
        root.present()?;
        Ok(())
    }

    /// Writes the SVG to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        write_file(path.as_ref(), &self.to_svg()?)
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

/// The upper-left frontier of (cost, value) points: sorted by cost, each point that beats the
/// value of every cheaper one (e.g. gold reward against KL; a point under the line is dominated).
pub fn pareto_frontier(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut sorted: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
    let mut frontier: Vec<(f64, f64)> = Vec::new();
    for p in sorted {
        if frontier.last().is_none_or(|last| p.1 > last.1) {
            frontier.push(p);
        }
    }
    frontier
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
        cause: source,
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
        cause: source,
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

/// Runs a chart's drawing into a new SVG string; plotters' errors name the chart.
fn render(
    title: &str,
    draw: impl FnOnce(&mut String) -> Result<(), String>,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    draw(&mut svg).map_err(|message| PlotError::Draw {
        title: title.to_string(),
        message,
    })?;
    Ok(svg)
}

/// `(lo, hi)` widened by `pad` of its span on each side; a single value gets a unit span.
fn padded(range: Option<(f64, f64)>, pad: f64) -> (f64, f64) {
    match range {
        None => (0.0, 1.0),
        Some((lo, hi)) if hi - lo <= f64::EPSILON * hi.abs().max(1.0) => (lo - 1.0, hi + 1.0),
        Some((lo, hi)) => {
            let d = (hi - lo) * pad;
            (lo - d, hi + d)
        }
    }
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

    /// A legend or label entry as plotters writes it.
    fn text(label: &str) -> String {
        format!(">\n{label}\n</text>")
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
        let svg = chart.to_svg().unwrap();
        assert_well_formed(&svg);
        assert!(svg.contains(&text("Loss &lt;DPO&gt; &amp; friends")));
        assert!(svg.contains(&text("train")));
        assert!(svg.contains(&text("eval &quot;held-out&quot;")));
        // The NaN splits the train line in two (plus its legend sample); the eval series has
        // a line and two markers.
        assert_eq!(
            svg.matches(r##"stroke="#4E79A7" stroke-width="2" points"##)
                .count(),
            3
        );
        assert_eq!(svg.matches(r##"<circle"##).count(), 2);
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn scatter_series_have_dots_and_no_line() {
        let svg = LineChart::new("frontier", "KL", "reward")
            .with_series(
                Series::points("DPO", vec![(1.0, 0.2), (3.0, 0.4), (2.0, 0.1)]).with_colour(2),
            )
            .with_series(Series::new("DPO frontier", vec![(1.0, 0.2), (3.0, 0.4)]).with_colour(2))
            .to_svg()
            .unwrap();
        assert_well_formed(&svg);
        assert_eq!(
            svg.matches(r##"<circle"##).count(),
            3 + 1,
            "three dots and a legend dot"
        );
        assert_eq!(
            svg.matches(r##"stroke="#E15759" stroke-width="2" points"##)
                .count(),
            2,
            "the frontier and its legend sample"
        );
    }

    #[test]
    fn empty_and_flat_charts_still_render() {
        let svg = LineChart::new("nothing", "x", "y").to_svg().unwrap();
        assert_well_formed(&svg);
        assert!(svg.contains("no data"));
        let svg = LineChart::new("flat", "x", "y")
            .with_series(Series::new("s", vec![(1.0, 2.0), (2.0, 2.0)]))
            .to_svg()
            .unwrap();
        assert_well_formed(&svg);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
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
        assert!(svg.contains(&text("reference")) && svg.contains(&text("policy (DPO)")));
        assert!(svg.contains(&text("-0.120")) && svg.contains(&text("0.580")));
        assert!(svg.contains("81.0%") && svg.contains("3.40 nats"));
        let bars = svg
            .lines()
            .filter(|l| l.starts_with("<rect") && (l.contains("#4E79A7") || l.contains("#F28E2B")))
            .count();
        assert_eq!(bars, 2);
    }

    #[test]
    fn frontier_keeps_the_undominated_points() {
        let pts = [
            (3.0, 0.5),
            (1.0, 0.2),
            (2.0, 0.1),
            (4.0, 0.4),
            (0.5, f64::NAN),
            (5.0, 0.9),
        ];
        assert_eq!(
            pareto_frontier(&pts),
            vec![(1.0, 0.2), (3.0, 0.5), (5.0, 0.9)]
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
            assert!(svg.contains(&text("train")), "{}", path.display());
        }
        let loss = std::fs::read_to_string(out.join("loss.svg")).unwrap();
        assert!(loss.contains(&text("train (mean of 5)")) && loss.contains(&text("eval")));
        assert_eq!(
            loss.matches("<circle").count(),
            3,
            "three evaluations (the legend shows the line)"
        );
        let accuracy = std::fs::read_to_string(out.join("accuracy.svg")).unwrap();
        assert!(
            !accuracy.contains(&text("eval")),
            "no eval accuracies were logged"
        );
        assert!(
            accuracy.contains(&text("1.0")) && accuracy.contains(&text("0.0")),
            "fixed [0, 1] range"
        );
    }
}
