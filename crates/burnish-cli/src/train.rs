//! `burnish train sft|dpo|kto|reward|ppo`: one training run described by a TOML config.
//!
//! The run itself is `burnish::train::pipeline` (the same entry points the examples call); this
//! file reads the config with its `--set` overrides, picks the backend and prints a summary:
//! where the rows went, the last held-out evaluation, and the files written.

use std::path::PathBuf;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::model::ModelAutodiffBackend;
use burnish::ppo::pipeline::{PpoSummary, run_ppo};
use burnish::train::config::TrainingConfig;
use burnish::train::pipeline::{DataReport, RunSummary, run_dpo, run_kto, run_reward, run_sft};
use burnish::train::trainer::RunOptions;

/// What to train.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Supervised fine-tuning on `prompt` / `completion` rows.
    Sft,
    /// DPO or any pairwise preference loss (`[loss] loss_type`, ORPO included) on `prompt` /
    /// `chosen` / `rejected`; a listwise loss (`pro`, `plackett_luce`) on `responses` + `ranks`
    /// or `scores`.
    Dpo,
    /// KTO (or `apo_zero_unpaired`) on unpaired feedback: `prompt` / `completion` / `label`.
    Kto,
    /// A Bradley-Terry reward model on pairs, K-wise on rankings.
    Reward,
    /// On-policy training (PPO, RLOO or GRPO, `[ppo] advantage`) on `prompt` rows against a
    /// reward model or VADER, with a KL penalty to the reference.
    Ppo,
}

/// Arguments of `burnish train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// sft, dpo, kto, reward or ppo.
    #[arg(value_enum)]
    pub kind: Kind,
    /// The run's TOML config ([model], [data], [optimizer], [schedule], [train], [loss], [ppo]).
    #[arg(long)]
    pub config: PathBuf,
    /// Override a config key, e.g. `--set optimizer.lr=1e-5` (repeatable; later wins).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Continue from the latest checkpoint in `train.output_dir` (refused if the config or the
    /// data changed in a way that breaks exactness; see docs/reliability.md).
    #[arg(long, conflicts_with = "overwrite")]
    pub resume: bool,
    /// Start afresh even though `train.output_dir` holds a run, deleting that run's files.
    #[arg(long)]
    pub overwrite: bool,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// Print no progress.
    #[arg(long)]
    pub quiet: bool,
}

struct Training {
    kind: Kind,
    config: TrainingConfig,
    options: RunOptions,
}

impl TrainJob for Training {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let (config, options) = (&self.config, &self.options);
        let summary: RunSummary<B> = match self.kind {
            Kind::Sft => run_sft(config, options, &device)?,
            Kind::Dpo => run_dpo(config, options, &device)?,
            Kind::Kto => run_kto(config, options, &device)?,
            Kind::Reward => run_reward(config, options, &device)?,
            Kind::Ppo => {
                print_ppo_summary(&run_ppo::<B>(config, options, &device)?);
                return Ok(());
            }
        };
        print_summary(&summary);
        Ok(())
    }
}

fn print_data(d: &DataReport) {
    println!(
        "data: {} rows read, {} used ({} train, {} held out), {} rejected{}",
        d.read,
        d.used,
        d.train,
        d.eval,
        d.rejected,
        d.rejects_path
            .as_ref()
            .map_or(String::new(), |p| format!(" (see {})", p.display()))
    );
}

fn print_ppo_summary<B: ModelAutodiffBackend>(summary: &PpoSummary<B>) {
    print_data(&summary.data);
    if let Some(last) = summary.outcome.summaries.last() {
        println!(
            "update {}: score {:.4}, KL {:.4} nats per response, KL coefficient {:.4}",
            last.update, last.score_mean, last.kl_mean, summary.outcome.kl_coef
        );
    }
    if let Some(h) = &summary.held_out {
        println!(
            "held-out prompts ({}): mean score {:.4} for the reference's samples, {:.4} for the policy's",
            h.prompts, h.reference, h.policy
        );
    }
    println!("metrics: {}", summary.outcome.metrics_path.display());
    if let Some(dir) = &summary.final_dir {
        println!("model: {}", dir.display());
    }
    for plot in &summary.plots {
        println!("plot: {}", plot.display());
    }
}

fn print_summary<B: ModelAutodiffBackend>(summary: &RunSummary<B>) {
    print_data(&summary.data);
    let show = |what: &str, e: &burnish::train::metrics_log::EvalRecord| {
        let metrics: Vec<String> = e
            .metrics
            .iter()
            .map(|(n, v)| format!("{n} {v:.4}"))
            .collect();
        println!(
            "{what}: loss {:.4} on {} held-out examples; {}",
            e.loss,
            e.examples,
            metrics.join(", ")
        );
    };
    if let Some(e) = &summary.initial_eval {
        show("before training", e);
    }
    if let Some(e) = &summary.outcome.last_eval {
        show(&format!("after step {}", e.step), e);
    }
    println!("metrics: {}", summary.outcome.metrics_path.display());
    if let Some(dir) = &summary.final_dir {
        println!("model: {}", dir.display());
    }
    for plot in &summary.plots {
        println!("plot: {}", plot.display());
    }
    if let Some(err) = &summary.plot_error {
        eprintln!("warning: no plots: {err}");
    }
}

/// Runs `burnish train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let config = TrainingConfig::from_file(&args.config, &args.set)?;
    let job = Training {
        kind: args.kind,
        config,
        options: RunOptions {
            resume: args.resume,
            overwrite: args.overwrite,
            quiet: args.quiet,
            ..RunOptions::default()
        },
    };
    dispatch_train(args.device, job)
}
