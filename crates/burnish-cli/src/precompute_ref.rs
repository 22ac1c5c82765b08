//! `burnish precompute-ref`: cache a reference model's log-probs in a pairwise or listwise
//! Parquet file.
//!
//! Writes a copy of the input with `ref_chosen_logp` / `ref_rejected_logp` added (listwise files:
//! `ref_logps`, one per response; the other columns kept), so a DPO or Plackett-Luce run on it
//! holds one model instead of two. Use the training run's
//! `--max-length` / `--max-prompt-length`: the cached values are for the truncated sequences.

use std::path::PathBuf;

use burnish::backend::{DeviceKind, Job, dispatch};
use burnish::model::ModelBackend;
use burnish::train::pipeline::{PrecomputeOptions, precompute_reference_file};

/// Arguments of `burnish precompute-ref`.
#[derive(clap::Args, Debug)]
pub struct PrecomputeRefArgs {
    /// The reference model: a Hugging Face folder (config.json, model.safetensors, tokenizer.json)
    /// or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Pairwise (`prompt`, `chosen`, `rejected`) or listwise (`prompt`, `responses`, `ranks` or
    /// `scores`) Parquet file.
    #[arg(long)]
    pub input: PathBuf,
    /// The Parquet file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Pairs (or rankings) per forward pass.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Maximum prompt + completion tokens (as in training).
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Maximum prompt tokens (as in training).
    #[arg(long, default_value_t = 256)]
    pub max_prompt_length: usize,
    /// A tokenizer.json other than the model folder's.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// fp32 or bf16 matrix products (default: bf16 on a CPU with AMX or AVX512-BF16, else
    /// fp32).
    #[arg(long)]
    pub precision: Option<burnish::model::Precision>,
}

struct Precompute {
    args: PrecomputeRefArgs,
}

impl Job for Precompute {
    type Output = ();

    fn run<B: ModelBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let a = self.args;
        let options = PrecomputeOptions {
            tokenizer: a.tokenizer,
            max_prompt_length: a.max_prompt_length,
            max_length: a.max_length,
            batch_size: a.batch_size,
            progress: true,
            precision: a.precision.unwrap_or_else(|| a.device.default_precision()),
        };
        let report =
            precompute_reference_file::<B>(&a.model, &a.input, &a.output, &options, &device)?;
        println!(
            "{}: {} rows read, {} written, {} scored, {} could not be tokenized, {} unreadable{}",
            a.output.display(),
            report.read,
            report.written,
            report.scored,
            report.rejected,
            report.unreadable,
            report
                .rejects_path
                .as_ref()
                .map_or(String::new(), |p| format!(
                    " (reasons in {}; rows that could not be tokenized are written with null ref columns, unreadable rows are not written)",
                    p.display()
                ))
        );
        Ok(())
    }
}

/// Runs `burnish precompute-ref`.
pub fn run(args: PrecomputeRefArgs) -> anyhow::Result<()> {
    let device = args.device;
    dispatch(device, Precompute { args })
}
