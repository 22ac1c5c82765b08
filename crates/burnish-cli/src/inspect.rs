//! `burnish inspect`: what a preference data set holds.
//!
//! Prints the schema, the row count, length percentiles (p50/p90/p99/max) of the prompt and
//! completions, in tokens with `--tokenizer` and in characters without, sample rows, and the
//! number of bad rows (unreadable, invalid, or not tokenizable: every one counted) with the
//! first one's file, row and reason.

use std::path::PathBuf;

use burnish::data::inspect::inspect;
use burnish::data::{Encoder, EncoderConfig};

/// Arguments of `burnish inspect`.
#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Parquet, Arrow IPC or CSV files, or folders (also `datasets` folders: their `train`
    /// split), read as one data set.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// A tokenizer.json (tokenizer_config.json beside it gives the chat template): lengths in tokens.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Number of sample rows printed.
    #[arg(long, default_value_t = 3)]
    pub samples: usize,
}

/// Runs `burnish inspect`.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let encoder = match &args.tokenizer {
        Some(t) => Some(Encoder::from_files(t, EncoderConfig::default())?),
        None => None,
    };
    let report = inspect(&args.files, encoder.as_ref(), args.samples)?;
    print!("{report}");
    Ok(())
}
