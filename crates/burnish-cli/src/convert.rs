//! `burnish convert`: public preference formats into burnish's Parquet layout.
//!
//! The conversion itself lives in `burnish_data::convert`; this file maps flags to options and
//! prints the counts. Every input record is written or rejected; the counts printed add up, and
//! any reject makes the command fail unless `--allow-rejects` is given.

use std::path::PathBuf;

use anyhow::bail;
use burnish::data::convert::{ConvertOptions, Pairing, convert, default_rejects_path};
use burnish::data::formats::InputFormat;
use burnish::data::{Encoder, EncoderConfig};

/// Arguments of `burnish convert`.
#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input format: trl, hh-rlhf, sharegpt (LLaMA-Factory), openai, ultrafeedback, ranking, scores.
    #[arg(long = "from", value_parser = parse_format)]
    pub from: InputFormat,
    /// JSON or JSON Lines files (optionally .gz), read in order as one data set.
    #[arg(long, num_args = 1.., required = true)]
    pub input: Vec<PathBuf>,
    /// The Parquet file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Where rejected records go (JSON Lines); default OUT.rejects.jsonl beside the output.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// Succeed even when records were rejected.
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

fn parse_format(s: &str) -> Result<InputFormat, String> {
    s.parse()
}

/// Runs `burnish convert`.
pub fn run(args: ConvertArgs) -> anyhow::Result<()> {
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
    };
    let report = convert(&args.input, &args.output, &options)?;
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
        if !args.allow_rejects {
            bail!(
                "{} of {} records rejected (reasons in {}); pass --allow-rejects to accept this",
                report.rejected,
                report.read,
                path.display()
            );
        }
    }
    Ok(())
}
