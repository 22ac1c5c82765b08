//! `burnish convert`: public preference formats into burnish's Parquet layout.
//!
//! The conversion itself lives in `burnish_data::convert`; this file maps flags to options and
//! prints the counts. Every input record is written or rejected; the counts printed add up, and
//! any reject makes the command fail unless `--allow-rejects` is given: the rejects file is
//! written and the output is not (a failed command leaves no output behind). Inputs are files of
//! any kind the data crate reads and Hugging Face `datasets` folders; `--column TRL=FILE` reads a
//! file column under a TRL name, so no input has to be rewritten first.

use std::path::PathBuf;

use anyhow::bail;
use burnish::data::convert::{ConvertOptions, Pairing, convert, default_rejects_path};
use burnish::data::formats::InputFormat;
use burnish::data::{DataError, Encoder, EncoderConfig};

/// Arguments of `burnish convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input format: trl, hh-rlhf, sharegpt (LLaMA-Factory), openai, ultrafeedback, ranking,
    /// scores, kto (unpaired: TRL prompt/completion/label or LLaMA-Factory messages + label).
    #[arg(long = "from", value_parser = parse_format)]
    pub from: InputFormat,
    /// Files and folders, read in order as one data set: JSON or JSON Lines (optionally .gz),
    /// Parquet, Arrow IPC (.arrow, file or stream format), CSV with a header row (cells holding
    /// JSON lists or objects are parsed as JSON), and Hugging Face `datasets` folders
    /// (save_to_disk, DatasetDict, or Hub-style data/<split>-00000-of-0000N.<ext> shards).
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// Read a file column under a TRL name: `--column prompt=question` reads the input's
    /// `question` as `prompt`. Repeatable.
    #[arg(long = "column", value_name = "TRL=FILE", value_parser = parse_column)]
    pub columns: Vec<(String, String)>,
    /// The split to read from folders that hold several (default: train).
    #[arg(long)]
    pub split: Option<String>,
    /// What to write: pairs (default), or unpaired (KTO) rows, a desirable row from each
    /// chosen and an undesirable one from each rejected. `--from kto` always writes unpaired.
    #[arg(long = "to", value_enum)]
    pub to: Option<OutputKind>,
    /// The Parquet file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Where rejected records go (JSON Lines); default OUT.rejects.jsonl beside the output. It
    /// may be neither the output nor an input.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Write the output and succeed even when records were rejected (without it, any reject
    /// fails the command and the output is not written).
    #[arg(long)]
    pub allow_rejects: bool,
    /// For listwise formats: all-pairs, best-vs-random or listwise (default: best-vs-random for
    /// ultrafeedback, all-pairs otherwise).
    #[arg(long)]
    pub pairing: Option<Pairing>,
    /// Seed of best-vs-random pairing.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A tokenizer.json (tokenizer_config.json beside it gives the chat template): every output
    /// row is also rendered and tokenized, and rows that fail are rejected.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// With --tokenizer: maximum prompt tokens.
    #[arg(long, requires = "tokenizer")]
    pub max_prompt_length: Option<usize>,
    /// With --tokenizer: maximum prompt + completion tokens; a row with nothing left of a
    /// completion is rejected.
    #[arg(long, requires = "tokenizer")]
    pub max_length: Option<usize>,
}

/// The kinds of output rows `--to` picks.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Pairwise rows (listwise rows with `--pairing listwise`).
    Pairs,
    /// Unpaired rows with a boolean `label` (KTO).
    Unpaired,
}

fn parse_format(s: &str) -> Result<InputFormat, String> {
    s.parse()
}

/// `TRL=FILE` -> (TRL name, file column).
fn parse_column(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((trl, file)) if !trl.trim().is_empty() && !file.trim().is_empty() => {
            Ok((trl.trim().to_owned(), file.trim().to_owned()))
        }
        _ => Err(format!(
            "`{s}` is not TRL=FILE (e.g. prompt=question: the file's `question` read as `prompt`)"
        )),
    }
}

/// Runs `burnish convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
    if args.from == InputFormat::Kto && args.to == Some(OutputKind::Pairs) {
        bail!("--from kto gives unpaired rows only; --to pairs cannot be written from it");
    }
    for (i, (trl, _)) in args.columns.iter().enumerate() {
        if args.columns[..i].iter().any(|(t, _)| t == trl) {
            bail!("--column maps `{trl}` twice");
        }
    }
    let encoder = match &args.tokenizer {
        Some(t) => Some(Encoder::from_files(
            t,
            EncoderConfig {
                max_prompt_length: args.max_prompt_length,
                max_length: args.max_length,
                ..EncoderConfig::default()
            },
        )?),
        None => None,
    };
    let options = ConvertOptions {
        format: args.from,
        pairing: args.pairing,
        seed: args.seed,
        rejects: args
            .rejects
            .clone()
            .unwrap_or_else(|| default_rejects_path(&args.output)),
        encoder: encoder.as_ref(),
        unpaired: args.to == Some(OutputKind::Unpaired),
        columns: args.columns.clone(),
        split: args.split.clone(),
        allow_rejects: args.allow_rejects,
    };
    let report = match convert(&args.input, &args.output, &options) {
        Ok(report) => report,
        Err(e @ DataError::Rejected { read, rejected, .. }) => {
            println!(
                "read {read}, valid {}, rejected {rejected}; nothing written",
                read - rejected
            );
            bail!("{e}; pass --allow-rejects to write the valid records");
        }
        Err(e) => return Err(e.into()),
    };
    println!(
        "read {}, written {} ({} rows in {}), rejected {}",
        report.read,
        report.written,
        report.output_rows,
        args.output.display(),
        report.rejected
    );
    if let Some(path) = &report.rejects_path {
        println!("rejects: {}", path.display());
    }
    Ok(())
}
