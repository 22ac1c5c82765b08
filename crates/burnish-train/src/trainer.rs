//! The training loop shared by every objective (SFT, DPO family, reward model).
//!
//! It reads like the algorithm: take a batch, compute the loss, backpropagate, clip by the
//! global norm, step AdamW at the scheduled learning rate, log, evaluate, checkpoint. What the
//! loss *is* comes from an [`Objective`]; everything else (schedule, accumulation, resume, NaN
//! guard, metrics, progress, plots) lives here once.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use burnish_model::CausalLm;

use crate::checkpoint::{
    CheckpointError, TrainingState, checkpoint_name, resume_latest, save_run_checkpoint,
};
use crate::clip::clip_grad_norm;
use crate::config::TrainingConfig;
use crate::data_order::{DataCursor, DataPosition};
use crate::metrics_log::{EvalRecord, Metrics, MetricsError, MetricsLog, StepRecord};
use crate::progress::Progress;
use crate::schedule::LrSchedule;

/// What one micro-batch contributes: the differentiable loss and its metrics.
pub struct BatchLoss<B: AutodiffBackend> {
    /// Scalar loss `[1]`, attached to the graph.
    pub loss: Tensor<B, 1>,
    /// Named metrics (TRL's names), already on the host.
    pub metrics: Vec<(String, f64)>,
    /// Real tokens processed (prompt + completion of every sequence).
    pub tokens: usize,
}

/// A training objective: a data set of examples and the loss of a batch of them.
pub trait Objective<B: AutodiffBackend> {
    /// Training examples.
    fn train_len(&self) -> usize;
    /// Held-out examples (0 disables evaluation).
    fn eval_len(&self) -> usize;
    /// Loss of the training examples at `indices`.
    fn train_loss(
        &self,
        model: &CausalLm<B>,
        indices: &[usize],
    ) -> Result<BatchLoss<B>, TrainError>;
    /// Loss of the held-out examples at `indices` (no gradient is taken).
    fn eval_loss(&self, model: &CausalLm<B>, indices: &[usize])
    -> Result<BatchLoss<B>, TrainError>;
}

/// Why a run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The loss became NaN or infinite; the last good checkpoint (if any) is kept.
    #[error(
        "the loss is {value} at step {step}; stopping (last good checkpoint: {last_checkpoint})"
    )]
    NonFinite {
        /// The optimizer step (1-based) whose loss was not finite.
        step: u64,
        /// The value seen.
        value: f64,
        /// The checkpoint to resume from, or "none".
        last_checkpoint: String,
    },
    /// A checkpoint could not be written or read.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The metrics log could not be written.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The loss rejected its inputs or parameters.
    #[error(transparent)]
    Loss(#[from] burnish_losses::LossError),
    /// The model failed (e.g. saving the export).
    #[error(transparent)]
    Model(#[from] burnish_model::ModelError),
    /// A data-parallel peer stopped because another peer failed, or the collective timed out.
    #[error("{0}")]
    PeerStopped(String),
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

/// What a finished run leaves: the trained model and where its files are.
pub struct TrainOutcome<B: AutodiffBackend> {
    /// The trained policy (or reward model).
    pub model: CausalLm<B>,
    /// Optimizer steps taken in total (including those before a resume).
    pub steps: u64,
    /// `metrics.jsonl`.
    pub metrics_path: PathBuf,
    /// The last evaluation, if any ran.
    pub last_eval: Option<EvalRecord>,
}

/// Options of one run beyond the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the latest checkpoint in the output directory.
    pub resume: bool,
    /// Start afresh in an output folder that holds a run, deleting that run's files.
    pub overwrite: bool,
    /// Stop (as if killed) after this many optimizer steps, keeping checkpoints: for tests.
    pub stop_after: Option<u64>,
    /// Print nothing (no progress bar or lines).
    pub quiet: bool,
    /// Write no checkpoint at all, not even the last: for benchmarks, whose runs are never
    /// resumed and whose memory figure must not include a checkpoint write.
    pub no_checkpoints: bool,
}

/// Weighted sums of named metrics over micro-batches. Each metric is averaged over the batches
/// that report it: a KTO batch with no undesirable row has no `rewards/rejected`, and must not
/// pull that metric's mean towards 0.
#[derive(Default, Clone)]
pub(crate) struct MetricSums(pub(crate) Vec<(String, f64, f64)>);

impl MetricSums {
    fn add(&mut self, metrics: &[(String, f64)], weight: f64) {
        // A per-kind metric (`rewards/chosen`, `logps/rejected`) of a batch that reports its
        // row count (`count/chosen`, KTO) is weighted by that count, so the logged value is the
        // mean over the rows of that kind, as TRL's sums and counts give.
        let count = |kind: &str| {
            metrics
                .iter()
                .find(|(n, _)| *n == format!("count/{kind}"))
                .map(|(_, c)| *c)
        };
        for (name, value) in metrics {
            let kind = name.rsplit('/').next().unwrap_or_default();
            let weight = match (name.starts_with("count/"), count(kind)) {
                (false, Some(rows)) => weight * rows,
                _ => weight,
            };
            match self.0.iter_mut().find(|(n, _, _)| n == name) {
                Some((_, sum, weights)) => {
                    *sum += value * weight;
                    *weights += weight;
                }
                None => self.0.push((name.clone(), value * weight, weight)),
            }
        }
    }

    fn mean(&self) -> Metrics {
        let mut metrics = Metrics::new();
        for (name, sum, weights) in &self.0 {
            metrics.insert(name.clone(), sum / weights);
        }
        metrics
    }
}

fn scalar<B: AutodiffBackend>(t: &Tensor<B, 1>) -> f64 {
    t.clone().into_scalar().elem::<f64>()
}

/// Mean loss and metrics of `model` over the objective's held-out examples.
pub fn evaluate<B: AutodiffBackend, O: Objective<B>>(
    model: &CausalLm<B>,
    objective: &O,
    batch_size: usize,
) -> Result<Option<(f64, u64, Metrics)>, TrainError> {
    let n = objective.eval_len();
    if n == 0 {
        return Ok(None);
    }
    // burn's autodiff frees a graph only when `backward` runs, so the graphs of forward-only
    // passes (and the activations they hold) would pile up batch after batch. A model whose
    // parameters need no gradient records none.
    let model = &model.clone().no_grad();
    let (mut loss_sum, mut sums) = (0.0, MetricSums::default());
    for start in (0..n).step_by(batch_size.max(1)) {
        let indices: Vec<usize> = (start..(start + batch_size).min(n)).collect();
        let weight = indices.len() as f64;
        let batch = objective.eval_loss(model, &indices)?;
        loss_sum += scalar(&batch.loss) * weight;
        sums.add(&batch.metrics, weight);
    }
    Ok(Some((loss_sum / n as f64, n as u64, sums.mean())))
}

/// Trains `model` on `objective` as `config` says; returns the trained model.
///
/// With more than one peer in `[distributed]` the run is data-parallel on burn's collective
/// ([`crate::distributed`]); the result equals a one-peer run with the same global batch up to
/// float rounding.
pub fn train<B: AutodiffBackend, O: Objective<B> + Sync>(
    model: CausalLm<B>,
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<TrainOutcome<B>, TrainError> {
    if config.distributed.is_parallel() {
        #[cfg(feature = "collective")]
        return crate::distributed::train_parallel(model, objective, config, options, device);
        #[cfg(not(feature = "collective"))]
        return Err(TrainError::Other(
            "[distributed] asks for more than one peer, but this build of burnish has no `collective` feature".into(),
        ));
    }
    let (model, optimizer, start) = start_run(model, objective, config, options, device)?;
    run_peer(model, optimizer, objective, config, options, start, None)
}

/// Where a run starts: fresh, or from its latest checkpoint.
#[derive(Debug, Clone)]
pub(crate) struct Start {
    pub(crate) step: u64,
    pub(crate) total_steps: u64,
    pub(crate) position: DataPosition,
    pub(crate) last_checkpoint: String,
}

/// The optimizer every run steps: AdamW over the whole model.
pub(crate) type RunOptimizer<B> =
    burn::optim::adaptor::OptimizerAdaptor<burn::optim::AdamW, CausalLm<B>, B>;

/// Creates the output folder and the optimizer, and loads the latest checkpoint on resume.
pub(crate) fn start_run<B: AutodiffBackend, O: Objective<B>>(
    model: CausalLm<B>,
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<(CausalLm<B>, RunOptimizer<B>, Start), TrainError> {
    let out_dir = &config.train.output_dir;
    std::fs::create_dir_all(out_dir)
        .map_err(|e| TrainError::Other(format!("{}: {e}", out_dir.display())))?;
    let optimizer = config.optimizer.adamw().init::<B, CausalLm<B>>();
    let (model, optimizer, resumed) = if options.resume {
        resume_latest(out_dir, model, optimizer, device)?
    } else {
        (model, optimizer, None)
    };
    let start = Start {
        step: resumed.as_ref().map_or(0, |c| c.state.step),
        total_steps: config
            .train
            .total_steps(objective.train_len(), config.distributed.world_size()),
        position: resumed
            .as_ref()
            .map_or_else(DataPosition::default, |c| c.state.data),
        last_checkpoint: resumed
            .as_ref()
            .map_or_else(|| "none".to_string(), |c| c.dir.display().to_string()),
    };
    Ok((model, optimizer, start))
}

/// Why a data-parallel peer's micro-batches of one step could not give a gradient.
pub(crate) enum PeerFailure {
    /// The loss was NaN or infinite.
    NonFinite(f64),
    /// The objective failed.
    Error(TrainError),
}

/// What a step's micro-batches gave: summed over every peer when the run is data-parallel.
pub(crate) struct StepSums {
    pub(crate) loss: f64,
    pub(crate) tokens: usize,
    pub(crate) metrics: MetricSums,
}

/// The training loop of one peer (the only one when `link` is `None`): steps from `start` to
/// the end of the run. Only rank 0 logs, evaluates, checkpoints and shows progress.
pub(crate) fn run_peer<B: AutodiffBackend, O: Objective<B>>(
    mut model: CausalLm<B>,
    mut optimizer: RunOptimizer<B>,
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
    start: Start,
    link: Option<&dyn GradientExchange<B>>,
) -> Result<TrainOutcome<B>, TrainError> {
    let run = &config.train;
    let out_dir = run.output_dir.clone();
    let (rank, world) = link.map_or((0, 1), |l| (l.rank(), l.world()));
    let main = rank == 0;
    let total_steps = start.total_steps;
    let schedule = LrSchedule::new(config.optimizer.lr, &config.schedule, total_steps);
    let start_step = start.step;
    let mut last_checkpoint = start.last_checkpoint;
    let metrics_path = out_dir.join("metrics.jsonl");
    let mut log = if main {
        Some(MetricsLog::open_at(&metrics_path, start_step)?)
    } else {
        None
    };
    let mut cursor = DataCursor::new(objective.train_len(), run.seed, start.position);
    let mut progress = (main && !options.quiet).then(|| Progress::new(total_steps, start_step));
    let mut last_eval = None;
    let accumulation = run.grad_accumulation.max(1);

    for step in start_step + 1..=total_steps {
        let started = Instant::now();
        let lr = schedule.lr(step - 1);
        let mut accumulator = GradientsAccumulator::<CausalLm<B>>::new();
        let (mut loss_sum, mut sums, mut tokens) = (0.0, MetricSums::default(), 0usize);
        // Every peer draws the whole global step and keeps its own whole micro-batches, so the
        // peers' shards are disjoint, cover the data, and sum to what one peer accumulating
        // `world` times as many micro-batches would see.
        let micro_batches: Vec<Vec<usize>> = (0..accumulation * world)
            .map(|_| cursor.next_batch(run.batch_size))
            .collect();
        let step_examples: usize = micro_batches.iter().map(Vec::len).sum();
        let mine = &micro_batches[rank * accumulation..(rank + 1) * accumulation];
        let mut failure = None;
        for indices in mine.iter().filter(|b| !b.is_empty()) {
            let batch = match objective.train_loss(&model, indices) {
                Ok(batch) => batch,
                Err(e) if link.is_some() => {
                    failure = Some(PeerFailure::Error(e));
                    break;
                }
                Err(e) => return Err(e),
            };
            // Each micro-batch is weighted by its share of the step's examples, so a short last
            // batch of an epoch counts as much per example as a full one.
            let weight = indices.len() as f64 / step_examples as f64;
            let value = scalar(&batch.loss);
            if !value.is_finite() {
                failure = Some(PeerFailure::NonFinite(value));
                break;
            }
            loss_sum += value * weight;
            sums.add(&batch.metrics, weight);
            tokens += batch.tokens;
            let grads = (batch.loss * weight).backward();
            accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model));
        }
        let mut grads = accumulator.grads();
        let local = StepSums {
            loss: loss_sum,
            tokens,
            metrics: sums,
        };
        let non_finite = |value| TrainError::NonFinite {
            step,
            value,
            last_checkpoint: last_checkpoint.clone(),
        };
        let mut collective_seconds = None;
        let step_sums = match (link, failure) {
            (None, Some(PeerFailure::NonFinite(value))) => return Err(non_finite(value)),
            (None, Some(PeerFailure::Error(e))) => return Err(e),
            (None, None) => local,
            (Some(link), failure) => {
                let entered = Instant::now();
                let sums = link.exchange(step, &model, &grads, local, failure, &non_finite)?;
                grads = link.reduce_gradients(&model, grads)?;
                collective_seconds = Some(entered.elapsed().as_secs_f64());
                sums
            }
        };
        let grad_norm = clip_grad_norm::<B, _>(&model, &mut grads, config.optimizer.clip_norm());
        if !grad_norm.is_finite() {
            return Err(non_finite(grad_norm));
        }
        model = optimizer.step(lr, model, grads);
        let seconds = started.elapsed().as_secs_f64();
        let is_last = step == total_steps;
        // `0` means only at the end, as the config documents.
        let every = |n: u64| is_last || (n > 0 && step.is_multiple_of(n));
        let checkpoint_now = !options.no_checkpoints && every(run.checkpoint_every);
        // Rank 0 logs and evaluates; the other peers go straight on to the next step.
        if let Some(log) = log.as_mut() {
            let mut record = StepRecord {
                step,
                epoch: cursor.epoch_progress(),
                loss: step_sums.loss,
                lr,
                grad_norm,
                tokens_per_sec: step_sums.tokens as f64 / seconds.max(1e-9),
                metrics: step_sums.metrics.mean(),
            };
            if let Some(seconds) = collective_seconds {
                // Rank 0's time in the step's collectives, waiting for slower peers included.
                record.metrics.insert("dp/all_reduce_seconds", seconds);
            }
            if let Some(progress) = progress.as_mut() {
                let margin = record.metrics.get("rewards/margins");
                let extra: Vec<(&str, f64)> = margin.map(|m| ("margin", m)).into_iter().collect();
                progress.update(step, record.loss, lr, &extra);
            }
            log.write_step(record)?;

            if every(run.eval_every)
                && let Some((loss, n, metrics)) = evaluate(&model, objective, run.batch_size)?
            {
                if let Some(progress) = progress.as_mut() {
                    let acc = metrics
                        .get("rewards/accuracies")
                        .or(metrics.get("accuracy"));
                    let acc = acc.map_or(String::new(), |a| format!(", accuracy {a:.3}"));
                    progress.println(&format!(
                        "eval at step {step}: loss {loss:.4}{acc} on {n} held-out examples"
                    ));
                }
                let record = EvalRecord {
                    step,
                    epoch: cursor.epoch_progress(),
                    loss,
                    examples: n,
                    metrics,
                };
                log.write_eval(record.clone())?;
                last_eval = Some(record);
            }
        }
        if checkpoint_now {
            // Rank 0 writes it; the others only need its name for a NaN message.
            let dir = if main {
                let mut state =
                    TrainingState::new(step, total_steps, lr, cursor.position(), run.seed);
                state.last_eval_loss = last_eval.as_ref().map(|e| e.loss);
                save_run_checkpoint(
                    &out_dir,
                    &state,
                    &model,
                    &optimizer,
                    run.keep_checkpoints,
                    |_| Ok(()),
                )?
            } else {
                out_dir.join(checkpoint_name(step))
            };
            last_checkpoint = dir.display().to_string();
        }
        if options.stop_after == Some(step) {
            break;
        }
    }
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
    Ok(TrainOutcome {
        steps: total_steps,
        model,
        metrics_path,
        last_eval,
    })
}

/// How a data-parallel peer shares a step with the others (see [`crate::distributed`]).
pub(crate) trait GradientExchange<B: AutodiffBackend> {
    /// This peer's global rank.
    fn rank(&self) -> usize;
    /// Peers in the run.
    fn world(&self) -> usize;
    /// Sums the step's loss, tokens and metrics over the peers, and notes which parameters have
    /// a gradient on any peer; stops every peer together, with the same error, when any peer's
    /// loss was not finite or its objective failed.
    fn exchange(
        &self,
        step: u64,
        model: &CausalLm<B>,
        grads: &GradientsParams,
        local: StepSums,
        failure: Option<PeerFailure>,
        non_finite: &dyn Fn(f64) -> TrainError,
    ) -> Result<StepSums, TrainError>;
    /// Sums the gradients over the peers.
    fn reduce_gradients(
        &self,
        model: &CausalLm<B>,
        grads: GradientsParams,
    ) -> Result<GradientsParams, TrainError>;
}

/// Draws loss, reward margin and accuracy curves from a run's `metrics.jsonl` into `out_dir`.
pub fn plot_run(metrics_path: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    crate::plot::plot_training_curves(metrics_path, out_dir)
        .map_err(|e| TrainError::Other(e.to_string()))
}
