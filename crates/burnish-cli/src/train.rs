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
    /// cpu, wgpu or cuda (default cpu, or the kind `--devices` names).
    #[arg(long)]
    pub device: Option<DeviceKind>,
    /// Data-parallel peers in this process: a count (`2`: GPUs 0 and 1, or two peers sharing
    /// the CPU) or a list (`cuda:0,cuda:1`). The global batch is train.batch_size ×
    /// train.grad_accumulation × peers. Sets `distributed.devices` (and `device_ids`).
    #[arg(long, value_name = "N|KIND:I,KIND:J")]
    pub devices: Option<Devices>,
    /// Machines taking part in a multi-node run (`distributed.nodes`); each runs the same
    /// command with its own `--node-rank`.
    #[arg(long)]
    pub nodes: Option<u32>,
    /// This machine's rank in `0..nodes` (`distributed.node_rank`); node 0 hosts the
    /// coordinator and writes the run.
    #[arg(long)]
    pub node_rank: Option<u32>,
    /// `host:port` of the coordinator, which node 0 starts (`distributed.coordinator`).
    #[arg(long, value_name = "HOST:PORT")]
    pub coordinator: Option<String>,
    /// Print no progress.
    #[arg(long)]
    pub quiet: bool,
}

/// `--devices`: how many peers, or which devices they run on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// `N`: peers on device indices `0..N` (or all on the CPU).
    Count(usize),
    /// `cuda:0,cuda:2`: one peer per listed device of one kind.
    List(DeviceKind, Vec<u16>),
}

impl std::str::FromStr for Devices {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(count) = s.trim().parse::<usize>() {
            if count == 0 {
                return Err("at least one device".into());
            }
            return Ok(Devices::Count(count));
        }
        let mut kind = None;
        let mut ids = Vec::new();
        for item in s.split(',').map(str::trim) {
            let (k, index) = item.split_once(':').ok_or_else(|| {
                format!("`{item}`: expected a count (2) or devices like cuda:0,cuda:1")
            })?;
            let k: DeviceKind = k.parse()?;
            if kind.is_some_and(|seen| seen != k) {
                return Err(format!(
                    "`{s}` mixes device kinds; peers run on one backend"
                ));
            }
            kind = Some(k);
            ids.push(
                index
                    .parse::<u16>()
                    .map_err(|_| format!("`{item}`: the device index must be a number"))?,
            );
        }
        let kind = kind.ok_or_else(|| "no device given".to_string())?;
        Ok(Devices::List(kind, ids))
    }
}

impl TrainArgs {
    /// The `--set` overrides the distributed flags stand for (applied after the user's own).
    fn distributed_overrides(&self) -> Vec<String> {
        let mut set = Vec::new();
        match &self.devices {
            Some(Devices::Count(n)) => {
                set.push(format!("distributed.devices={n}"));
                set.push("distributed.device_ids=[]".into());
            }
            Some(Devices::List(_, ids)) => {
                let list: Vec<String> = ids.iter().map(u16::to_string).collect();
                set.push(format!("distributed.devices={}", ids.len()));
                set.push(format!("distributed.device_ids=[{}]", list.join(",")));
            }
            None => {}
        }
        if let Some(n) = self.nodes {
            set.push(format!("distributed.nodes={n}"));
        }
        if let Some(r) = self.node_rank {
            set.push(format!("distributed.node_rank={r}"));
        }
        if let Some(c) = &self.coordinator {
            set.push(format!("distributed.coordinator={c:?}"));
        }
        set
    }

    /// The backend: `--device`, else the kind `--devices` names, else the CPU.
    fn device_kind(&self) -> anyhow::Result<DeviceKind> {
        let named = match &self.devices {
            Some(Devices::List(kind, _)) => Some(*kind),
            _ => None,
        };
        match (self.device, named) {
            (Some(a), Some(b)) if a != b => {
                anyhow::bail!("--device {a} but --devices names {b} devices")
            }
            (Some(a), _) | (None, Some(a)) => Ok(a),
            (None, None) => Ok(DeviceKind::Cpu),
        }
    }
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
    let mut overrides = args.set.clone();
    overrides.extend(args.distributed_overrides());
    let mut config = TrainingConfig::from_file(&args.config, &overrides)?;
    let device = args.device_kind()?;
    let chosen = config.train.precision.is_some();
    let precision = *config
        .train
        .precision
        .get_or_insert_with(|| device.default_precision());
    if !args.quiet {
        eprintln!("{}", device.describe_precision(precision, chosen));
    }
    start_coordinator(&config)?;
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
    dispatch_train(device, job)
}

/// Node 0 of a multi-node run starts the coordinator (burn's orchestrator) before training.
/// It takes over Ctrl-C, so its thread ending means the user asked the run to stop.
fn start_coordinator(config: &TrainingConfig) -> anyhow::Result<()> {
    if config.distributed.nodes < 2 {
        return Ok(());
    }
    // burn's WebSocket layer installs an INFO logger on stdout that prints every tensor
    // transfer; a subscriber that drops everything goes first (nothing else here uses tracing),
    // unless RUST_LOG asks for burn's logs.
    if std::env::var_os("RUST_LOG").is_none() {
        let _ =
            tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::default());
    }
    if let Some(handle) = burnish::train::distributed::spawn_coordinator(&config.distributed)? {
        std::thread::spawn(move || {
            let _ = handle.join();
            eprintln!("interrupted");
            std::process::exit(130);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_a_count_or_a_list_of_one_kind() {
        assert_eq!("2".parse(), Ok(Devices::Count(2)));
        assert_eq!(
            "cuda:0, cuda:2".parse(),
            Ok(Devices::List(DeviceKind::Cuda, vec![0, 2]))
        );
        for bad in ["0", "cuda:0,wgpu:1", "gpu:0", "cuda:x", "two"] {
            assert!(bad.parse::<Devices>().is_err(), "{bad}");
        }
    }
}
