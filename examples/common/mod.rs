//! Shared by the examples: a section heading, and (for `dpo_from_parquet` and `reward_model`)
//! the shipped LLaMA-Factory sample turned into a plain-text pairwise Parquet file for the tiny
//! checkpoint, which has no chat template.

use std::path::{Path, PathBuf};

use burnish::data::convert::{ConvertOptions, convert};
use burnish::data::formats::InputFormat;
use burnish::data::{Content, PairSchema, PairWriter, PreferencePair, ReaderBuilder};

/// The real 300-pair LLaMA-Factory sample shipped with the data crate's tests.
pub const SAMPLE: &str = "crates/burnish-data/tests/fixtures/llamafactory_dpo_en_demo.json";

/// Mean training tokens/s of a run's `metrics.jsonl`, the first step left out when there are
/// more (it pays for warm-up: allocations, the first kernels).
#[allow(dead_code)] // not every example trains through the pipeline
pub fn mean_tokens_per_sec(metrics: &Path) -> anyhow::Result<f64> {
    let records = burnish::train::metrics_log::read_metrics(metrics)?;
    let speeds = burnish::train::metrics_log::series(&records, "train", "tokens_per_sec");
    let skip = usize::from(speeds.len() > 1);
    let kept = &speeds[skip..];
    Ok(kept.iter().map(|p| p.1).sum::<f64>() / kept.len().max(1) as f64)
}

/// Run options of an example: it re-runs into its own folder, so the folder may hold a run.
#[allow(dead_code)] // not every example trains through the pipeline
pub fn rerun_options() -> burnish::train::trainer::RunOptions {
    burnish::train::trainer::RunOptions {
        overwrite: true,
        ..Default::default()
    }
}

/// Prints a notebook-style section heading.
pub fn section(title: &str) {
    println!("\n## {title}");
}

/// A conversation as plain text: `role: content` lines, ending with the assistant's turn.
fn flatten_prompt(c: &Content) -> String {
    format!("{}\nassistant:", c.to_display_text())
}

/// A completion (one assistant message, or text) as the text after `assistant:`.
fn flatten_completion(c: &Content) -> String {
    match c {
        Content::Text(t) => format!(" {t}"),
        Content::Messages(m) => {
            let text: Vec<&str> = m.iter().map(|m| m.content.as_str()).collect();
            format!(" {}", text.join("\n"))
        }
    }
}

/// Converts the LLaMA-Factory sample as it is (conversations kept as messages) to
/// `out/llamafactory.parquet`.
pub fn convert_sample(out: &Path) -> anyhow::Result<PathBuf> {
    let raw = out.join("llamafactory.parquet");
    let report = convert(
        &[PathBuf::from(SAMPLE)],
        &raw,
        &ConvertOptions::new(InputFormat::ShareGpt, &raw),
    )?;
    println!(
        "converted {SAMPLE}: {} records read, {} pairs written, {} rejected",
        report.read, report.written, report.rejected
    );
    Ok(raw)
}

/// Converts the LLaMA-Factory sample to `out/pairs.parquet` (plain-text prompt/chosen/rejected).
#[allow(dead_code)] // the sentiment examples make their own pairs
pub fn make_pairs(out: &Path) -> anyhow::Result<PathBuf> {
    let raw = convert_sample(out)?;
    // The tiny checkpoint has no chat template, so the conversations become plain text.
    let pairs: Vec<PreferencePair> = ReaderBuilder::new()
        .path(&raw)
        .pairs()?
        .collect::<Result<_, _>>()?;
    let path = out.join("pairs.parquet");
    let mut writer: Option<PairWriter> = None;
    for (i, p) in pairs.into_iter().enumerate() {
        let mut flat = PreferencePair::new(
            flatten_prompt(&p.prompt),
            flatten_completion(&p.chosen),
            flatten_completion(&p.rejected),
        );
        flat.id = Some(p.id.unwrap_or_else(|| format!("llamafactory-{i}")));
        let w = match writer.as_mut() {
            Some(w) => w,
            None => writer.insert(PairWriter::create(&path, PairSchema::of(&flat))?),
        };
        w.write(flat)?;
    }
    let rows = writer.map(|w| w.finish()).transpose()?.unwrap_or(0);
    println!(
        "flattened to plain text: {rows} pairs in {}",
        path.display()
    );
    Ok(path)
}
