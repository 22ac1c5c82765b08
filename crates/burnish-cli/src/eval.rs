//! `burnish eval`: held-out loss and metrics of a model on a pairwise Parquet file, as JSON.
//!
//! A model with a reward head is scored as a reward model (Bradley-Terry loss, `accuracy`);
//! otherwise as a policy under a preference loss (DPO's sigmoid by default), against the file's
//! precomputed reference log-probs, a `--reference` model, or the model itself.
//!
//! Rows that do not tokenize are counted in the JSON (`data.rejected`) and written to a rejects
//! file in the current directory by default, never beside the data, whose folder may be
//! read-only or shared.

use std::path::PathBuf;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::data::convert::is_same_file;
use burnish::model::ModelAutodiffBackend;
use burnish::train::pipeline::{EvalLoss, PrecomputeOptions, evaluate_file, loss_from_table};

/// Arguments of `burnish eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// A Hugging Face model folder (a `burnish train` run's `final/`) or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Pairwise Parquet file (`prompt`, `chosen`, `rejected`).
    #[arg(long)]
    pub data: PathBuf,
    /// Where rows that do not tokenize go (JSON Lines, created only when a row is rejected);
    /// default DATA.eval-rejects.jsonl in the current directory (DATA: the data file's name
    /// without its extension). It may not be the data file.
    #[arg(long)]
    pub rejects: Option<PathBuf>,
    /// The loss: bradley_terry for a reward model, or a preference loss (sigmoid, ipo, ...);
    /// default: bradley_terry when the model has a reward head, else sigmoid.
    #[arg(long)]
    pub loss_type: Option<String>,
    /// The preference loss's beta (its default when not given).
    #[arg(long)]
    pub beta: Option<f64>,
    /// The reference model of a preference loss (default: the file's ref columns, else the model).
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Pairs per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Maximum prompt + completion tokens.
    #[arg(long, default_value_t = 512)]
    pub max_length: usize,
    /// Maximum prompt tokens.
    #[arg(long, default_value_t = 256)]
    pub max_prompt_length: usize,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// fp32 or bf16 matrix products (default: bf16 on a CPU with AMX or AVX512-BF16, else
    /// fp32).
    #[arg(long)]
    pub precision: Option<burnish::model::Precision>,
}

struct Evaluation {
    args: EvalArgs,
    loss: Option<EvalLoss>,
    rejects: PathBuf,
}

impl TrainJob for Evaluation {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let a = self.args;
        let options = PrecomputeOptions {
            tokenizer: None,
            max_prompt_length: a.max_prompt_length,
            max_length: a.max_length,
            batch_size: a.batch_size,
            progress: false,
            precision: a.precision.unwrap_or_else(|| a.device.default_precision()),
        };
        let result = evaluate_file::<B>(
            &a.model,
            a.reference.as_deref(),
            &a.data,
            &self.rejects,
            self.loss,
            &options,
            &device,
        )?;
        println!("{}", serde_json::to_string(&result)?);
        Ok(())
    }
}

/// The loss the flags name, `None` to let the model decide.
fn loss_of(args: &EvalArgs) -> anyhow::Result<Option<EvalLoss>> {
    let Some(name) = &args.loss_type else {
        anyhow::ensure!(args.beta.is_none(), "--beta needs --loss-type");
        return Ok(None);
    };
    let mut table = toml::Table::new();
    table.insert("loss_type".into(), toml::Value::String(name.clone()));
    if name == "bradley_terry" {
        anyhow::ensure!(
            args.beta.is_none(),
            "--beta does not apply to bradley_terry"
        );
        return Ok(Some(EvalLoss::Reward(loss_from_table(&table)?)));
    }
    if let Some(beta) = args.beta {
        table.insert("beta".into(), toml::Value::Float(beta));
    }
    Ok(Some(EvalLoss::Preference(loss_from_table(&table)?)))
}

/// `--rejects`, else DATA.eval-rejects.jsonl in the current directory.
fn rejects_of(args: &EvalArgs) -> anyhow::Result<PathBuf> {
    let rejects = match &args.rejects {
        Some(path) => path.clone(),
        None => {
            let stem = args
                .data
                .file_stem()
                .map_or_else(|| "eval".into(), |s| s.to_string_lossy().into_owned());
            PathBuf::from(format!("{stem}.eval-rejects.jsonl"))
        }
    };
    anyhow::ensure!(
        !is_same_file(&rejects, &args.data),
        "{}: the rejects file is also the data file: give --rejects another path",
        rejects.display()
    );
    Ok(rejects)
}

/// Runs `burnish eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let loss = loss_of(&args)?;
    let rejects = rejects_of(&args)?;
    let device = args.device;
    dispatch_train(
        device,
        Evaluation {
            args,
            loss,
            rejects,
        },
    )
}
