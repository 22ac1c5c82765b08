//! The on-policy loop. Each update: take a batch of prompts, sample responses (k per prompt for
//! RLOO and GRPO), score them (reward, policy, reference, values), turn scores and the per-token
//! KL penalty into advantages, then run `ppo_epochs` passes of clipped updates over mini-batches.
//!
//! Checkpoints, the metrics log, the progress bar, the schedule, clipping and the NaN guard are
//! burnish-train's; the KL controller and the sample count ride along in `ppo_state.json`.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::tensor::{ElementConversion, Tensor};
use burnish_model::{CausalLm, ModelAutodiffBackend};
use burnish_train::checkpoint::{
    CheckpointError, TrainingState, resume_latest, save_run_checkpoint,
};
use burnish_train::clip::clip_grad_norm;
use burnish_train::config::TrainingConfig;
use burnish_train::data_order::{DataCursor, DataPosition, derive_seed};
use burnish_train::metrics_log::{Metrics, MetricsLog, StepRecord};
use burnish_train::objectives::SftObjective;
use burnish_train::progress::Progress;
use burnish_train::schedule::LrSchedule;
use burnish_train::trainer::{Objective, RunOptions, TrainError};
use serde::{Deserialize, Serialize};

use crate::advantage::{gae, grpo, mean_var, rloo, whiten};
use crate::config::{AdvantageEstimator, PpoConfig};
use crate::error::PpoError;
use crate::kl::KlController;
use crate::loss::{policy_loss, value_loss};
use crate::reward::{RewardFunction, ScoreInput};
use crate::rollout::{MiniBatch, from_rows, sample_responses, score_tokens, to_rows};

/// The file in a checkpoint that holds the on-policy state besides weights and optimizer.
pub const PPO_STATE_FILE: &str = "ppo_state.json";

/// Stream of [`derive_seed`] for the sampler of each update.
const SAMPLING_STREAM: u64 = 0x5a4d_504c_0000_0000;
/// Stream of [`derive_seed`] for the mini-batch order of each update.
const SHUFFLE_STREAM: u64 = 0x5348_5546_0000_0000;

/// What a resumed run needs beyond the weights and the optimizer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct PpoState {
    kl: KlController,
    episode: u64,
    ptx: Option<DataPosition>,
}

/// Everything an on-policy run works with besides the configs.
pub struct PpoRun<'a, B: ModelAutodiffBackend> {
    /// The policy to train (with a value head for GAE).
    pub policy: CausalLm<B>,
    /// The frozen reference (usually the SFT model the policy starts from).
    pub reference: CausalLm<B::InnerBackend>,
    /// Scores responses.
    pub reward: &'a mut dyn RewardFunction,
    /// Turns response tokens into text for the reward (special tokens skipped).
    pub decode: &'a dyn Fn(&[u32]) -> String,
    /// The training prompts, tokenized.
    pub prompts: &'a [Vec<u32>],
    /// Ends a response.
    pub eos: u32,
    /// Fills the right of shorter rows when scoring.
    pub pad: u32,
    /// PPO-ptx: the language-modelling rows mixed into every step, if any.
    pub ptx: Option<SftObjective<B>>,
}

/// Statistics of one mini-batch step.
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBatchStats {
    /// PPO epoch (from 0).
    pub epoch: usize,
    /// Mean policy ratio.
    pub ratio_mean: f64,
    /// Largest `|ratio - 1|`.
    pub ratio_max_deviation: f64,
    /// `mean((new - old)^2) / 2`.
    pub approxkl: f64,
    /// Fraction of clipped tokens.
    pub clipfrac: f64,
}

/// What one update measured.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateSummary {
    /// The update (from 1).
    pub update: u64,
    /// Mean score of the responses.
    pub score_mean: f64,
    /// Mean KL(policy || reference) per response (the configured estimator, summed over tokens).
    pub kl_mean: f64,
    /// Each mini-batch step, in order.
    pub minibatches: Vec<MiniBatchStats>,
}

/// What a finished run leaves.
pub struct PpoOutcome<B: ModelAutodiffBackend> {
    /// The trained policy (with its value head).
    pub model: CausalLm<B>,
    /// Updates of the whole run.
    pub updates: u64,
    /// `metrics.jsonl`.
    pub metrics_path: PathBuf,
    /// The updates this process ran.
    pub summaries: Vec<UpdateSummary>,
    /// The KL coefficient at the end.
    pub kl_coef: f64,
}

fn other(message: impl Into<String>) -> PpoError {
    PpoError::Train(TrainError::Other(message.into()))
}

fn scalar<B: burn::tensor::backend::Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 { f64::NAN } else { sum / n as f64 }
}

/// The host-side rollout of one update: responses, their scores and per-token quantities.
struct Rollout {
    queries: Vec<Vec<u32>>,
    responses: Vec<Vec<u32>>,
    scores: Vec<f32>,
    old_logps: Vec<Vec<f32>>,
    old_values: Vec<Vec<f32>>,
    kl: Vec<Vec<f32>>,
    advantages: Vec<Vec<f32>>,
    returns: Vec<Vec<f32>>,
    eos_count: usize,
    batches: Vec<MiniBatch>,
    sample_seconds: f64,
}

/// Samples and scores one update's batch (no gradient).
fn collect<B: ModelAutodiffBackend>(
    run: &mut PpoRun<'_, B>,
    queries: Vec<Vec<u32>>,
    ppo: &PpoConfig,
    kl_coef: f64,
    seed: u64,
    device: &B::Device,
) -> Result<Rollout, PpoError> {
    let policy = run.policy.valid();
    let started = Instant::now();
    let generations = sample_responses(&policy, &queries, ppo, run.eos, seed, device)?;
    let sample_seconds = started.elapsed().as_secs_f64();
    let responses: Vec<Vec<u32>> = generations.into_iter().map(|g| g.tokens).collect();
    let stopped: Vec<bool> = responses
        .iter()
        .map(|r| r.last() == Some(&run.eos))
        .collect();
    let texts: Vec<String> = responses.iter().map(|r| (run.decode)(r)).collect();
    let mut scores = run.reward.score(&ScoreInput {
        queries: &queries,
        responses: &responses,
        response_texts: &texts,
    })?;
    if scores.len() != responses.len() || scores.iter().any(|s| !s.is_finite()) {
        return Err(PpoError::Reward(format!(
            "expected {} finite scores, got {:?}",
            responses.len(),
            scores.iter().take(8).collect::<Vec<_>>()
        )));
    }
    for (score, &stop) in scores.iter_mut().zip(&stopped) {
        if !stop && let Some(penalty) = ppo.missing_eos_penalty {
            *score -= penalty as f32;
        }
        if let Some(clip) = ppo.score_clip {
            *score = score.clamp(-clip as f32, clip as f32);
        }
    }

    // Fixed mini-batches (consecutive rows), scored here exactly as the first epoch will see
    // them, so that the first step's ratio is exactly 1.
    let n = responses.len();
    let per_batch = n.div_ceil(ppo.num_mini_batches).max(1);
    let batches: Vec<MiniBatch> = (0..n)
        .collect::<Vec<_>>()
        .chunks(per_batch)
        .map(|rows| MiniBatch::new(rows, &queries, &responses, run.pad))
        .collect();
    let empty = || vec![Vec::new(); n];
    let (mut old_logps, mut ref_logps, mut old_values) = (empty(), empty(), empty());
    for batch in &batches {
        let mine = score_tokens(&policy, batch, ppo.temperature, device);
        let reference = score_tokens(&run.reference, batch, ppo.temperature, device);
        let rows = batch.rows.iter().copied();
        for (i, lp) in rows.clone().zip(to_rows(mine.logps, &batch.lengths)) {
            old_logps[i] = lp;
        }
        for (i, lp) in rows.clone().zip(to_rows(reference.logps, &batch.lengths)) {
            ref_logps[i] = lp;
        }
        if let Some(values) = mine.values {
            for (i, v) in rows.zip(to_rows(values, &batch.lengths)) {
                old_values[i] = v;
            }
        }
    }
    let kl: Vec<Vec<f32>> = old_logps
        .iter()
        .zip(&ref_logps)
        .map(|(lp, rp)| {
            lp.iter()
                .zip(rp)
                .map(|(&a, &b)| ppo.kl_estimator.estimate(a, b))
                .collect()
        })
        .collect();
    let coef = kl_coef as f32;
    let (advantages, returns) = match ppo.advantage {
        AdvantageEstimator::Gae => {
            if policy.value_head.is_none() {
                return Err(other(
                    "advantage = \"gae\" needs a value head on the policy (see ppo.value_init)",
                ));
            }
            // The penalty at every token, the score added at the last real one.
            let mut rewards: Vec<Vec<f32>> = kl
                .iter()
                .zip(&scores)
                .map(|(k, &s)| {
                    let mut r: Vec<f32> = k.iter().map(|x| -coef * x).collect();
                    if let Some(last) = r.last_mut() {
                        *last += s;
                    }
                    r
                })
                .collect();
            if ppo.whiten_rewards {
                whiten(&mut rewards, false);
            }
            let (mut advantages, mut returns) = (Vec::with_capacity(n), Vec::with_capacity(n));
            for (r, v) in rewards.iter().zip(&old_values) {
                let (a, ret) = gae(r, v, ppo.gamma as f32, ppo.lam as f32);
                advantages.push(a);
                returns.push(ret);
            }
            if ppo.whiten_advantages {
                whiten(&mut advantages, true);
            }
            (advantages, returns)
        }
        AdvantageEstimator::Rloo | AdvantageEstimator::Grpo => {
            let sequence: Vec<f32> = scores
                .iter()
                .zip(&kl)
                .map(|(&s, k)| s - coef * k.iter().sum::<f32>())
                .collect();
            let k = ppo.samples_per_prompt;
            let per_sequence = if ppo.advantage == AdvantageEstimator::Rloo {
                rloo(&sequence, k)
            } else {
                grpo(&sequence, k)
            };
            let mut advantages: Vec<Vec<f32>> = per_sequence
                .iter()
                .zip(&responses)
                .map(|(&a, r)| vec![a; r.len()])
                .collect();
            if ppo.whiten_advantages {
                whiten(&mut advantages, true);
            }
            (advantages, empty())
        }
    };
    Ok(Rollout {
        queries,
        scores,
        old_logps,
        old_values,
        kl,
        advantages,
        returns,
        eos_count: stopped.iter().filter(|&&s| s).count(),
        responses,
        batches,
        sample_seconds,
    })
}

/// Trains `run.policy` on-policy as `config` (`[train]`, `[optimizer]`, `[schedule]`) and
/// `ppo` say; one "step" of the schedule, the metrics and the checkpoints is one update.
pub fn train_ppo<B: ModelAutodiffBackend>(
    mut run: PpoRun<'_, B>,
    config: &TrainingConfig,
    ppo: &PpoConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<PpoOutcome<B>, PpoError> {
    ppo.validate()?;
    if run.prompts.is_empty() {
        return Err(other("no training prompts"));
    }
    let settings = &config.train;
    let out_dir = settings.output_dir.clone();
    std::fs::create_dir_all(&out_dir).map_err(|e| other(format!("{}: {e}", out_dir.display())))?;
    let total = settings.total_steps(run.prompts.len(), 1);
    let schedule = LrSchedule::new(config.optimizer.lr, &config.schedule, total);
    let optimizer = config.optimizer.adamw().init::<B, CausalLm<B>>();
    let mut state = PpoState {
        kl: ppo.kl_controller(),
        episode: 0,
        ptx: run.ptx.as_ref().map(|_| DataPosition::default()),
    };
    let (policy, mut optimizer, resumed) = if options.resume {
        resume_latest(&out_dir, run.policy, optimizer, device)?
    } else {
        (run.policy, optimizer, None)
    };
    run.policy = policy;
    if let Some(checkpoint) = &resumed {
        let path = checkpoint.dir.join(PPO_STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(CheckpointError::io(&path))?;
        state =
            serde_json::from_str(&text).map_err(|e| other(format!("{}: {e}", path.display())))?;
    }
    let start = resumed.as_ref().map_or(0, |c| c.state.step);
    let position = resumed
        .as_ref()
        .map_or_else(DataPosition::default, |c| c.state.data);
    let mut last_checkpoint = resumed
        .as_ref()
        .map_or_else(|| "none".to_string(), |c| c.dir.display().to_string());
    let metrics_path = out_dir.join("metrics.jsonl");
    let mut log = MetricsLog::open_at(&metrics_path, start).map_err(TrainError::from)?;
    let mut cursor = DataCursor::new(run.prompts.len(), settings.seed, position);
    let mut ptx_cursor = run.ptx.as_ref().map(|p| {
        DataCursor::new(
            p.train.len(),
            derive_seed(settings.seed, 1),
            state.ptx.unwrap_or_default(),
        )
    });
    let mut progress = (!options.quiet).then(|| Progress::new(total, start));
    let mut summaries = Vec::new();

    for update in start + 1..=total {
        let started = Instant::now();
        let lr = schedule.lr(update - 1);
        let k = ppo.samples_per_prompt;
        let queries: Vec<Vec<u32>> = cursor
            .next_batch(settings.batch_size)
            .into_iter()
            .flat_map(|i| std::iter::repeat_n(run.prompts[i].clone(), k))
            .collect();
        let seed = derive_seed(settings.seed ^ SAMPLING_STREAM, update);
        let rollout = collect(&mut run, queries, ppo, state.kl.coef, seed, device)?;
        let n = rollout.responses.len();
        state.episode += n as u64;

        // PPO epochs: the first in rollout order (its first step sees ratio 1), later ones in a
        // seeded order of the same mini-batches.
        let mut stats = Vec::new();
        let (
            mut policy_losses,
            mut value_losses,
            mut value_clip,
            mut entropies,
            mut norms,
            mut ptx_losses,
        ) = (
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        );
        let mut total_losses = Vec::new();
        let mut order: Vec<usize> = (0..rollout.batches.len()).collect();
        for epoch in 0..ppo.ppo_epochs {
            if epoch > 0 {
                let shuffle =
                    derive_seed(settings.seed ^ SHUFFLE_STREAM, update * 1000 + epoch as u64);
                order = burnish_train::data_order::epoch_order(order.len(), shuffle, 0);
            }
            for &b in &order {
                let batch = &rollout.batches[b];
                let scored = score_tokens(&run.policy, batch, ppo.temperature, device);
                let old = from_rows::<B>(&batch.rows, &rollout.old_logps, device);
                let adv = from_rows::<B>(&batch.rows, &rollout.advantages, device);
                let pg = policy_loss(scored.logps, old, adv, ppo.cliprange);
                let mut loss = pg.loss.clone();
                if ppo.advantage == AdvantageEstimator::Gae
                    && let Some(values) = scored.values
                {
                    let old_values = from_rows::<B>(&batch.rows, &rollout.old_values, device);
                    let returns = from_rows::<B>(&batch.rows, &rollout.returns, device);
                    let (vf, frac) = value_loss(values, old_values, returns, ppo.cliprange_value);
                    value_losses.push(scalar(vf.clone()));
                    value_clip.push(frac);
                    loss = loss + vf * ppo.vf_coef;
                }
                if let (Some(ptx), Some(cursor)) = (run.ptx.as_ref(), ptx_cursor.as_mut()) {
                    let indices = cursor.next_batch(batch.rows.len());
                    let lm = ptx.train_loss(&run.policy, &indices)?;
                    ptx_losses.push(scalar(lm.loss.clone()));
                    loss = loss + lm.loss * ppo.ptx_coef;
                }
                let value = scalar(loss.clone());
                if !value.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: update,
                        value,
                        last_checkpoint,
                    }
                    .into());
                }
                total_losses.push(value);
                policy_losses.push(scalar(pg.loss));
                entropies.push(scalar(scored.entropy.mean()));
                let mut grads = GradientsParams::from_grads(loss.backward(), &run.policy);
                let norm =
                    clip_grad_norm::<B, _>(&run.policy, &mut grads, config.optimizer.clip_norm());
                if !norm.is_finite() {
                    return Err(TrainError::NonFinite {
                        step: update,
                        value: norm,
                        last_checkpoint,
                    }
                    .into());
                }
                norms.push(norm);
                run.policy = optimizer.step(lr, run.policy, grads);
                stats.push(MiniBatchStats {
                    epoch,
                    ratio_mean: pg.ratio_mean,
                    ratio_max_deviation: pg.ratio_max_deviation,
                    approxkl: pg.approxkl,
                    clipfrac: pg.clipfrac,
                });
            }
        }

        let coef = state.kl.coef;
        let kl_per_seq: Vec<f64> = rollout
            .kl
            .iter()
            .map(|k| k.iter().map(|&x| x as f64).sum())
            .collect();
        let kl_mean = mean(kl_per_seq.iter().copied());
        let score_mean = mean(rollout.scores.iter().map(|&s| s as f64));
        let non_score = -coef * kl_mean;
        let ratios: Vec<f64> = stats.iter().map(|s| s.ratio_mean).collect();
        let ratio_var = mean_var(&[ratios.iter().map(|&r| r as f32).collect()]).1;
        let response_tokens: usize = rollout.responses.iter().map(Vec::len).sum();
        let all_tokens: usize =
            response_tokens + rollout.queries.iter().map(Vec::len).sum::<usize>();
        let seconds = started.elapsed().as_secs_f64();
        let mut metrics = Metrics::new();
        metrics.insert("objective/kl", kl_mean);
        metrics.insert(
            "objective/entropy",
            mean(
                rollout
                    .old_logps
                    .iter()
                    .map(|lp| -lp.iter().map(|&x| x as f64).sum::<f64>()),
            ),
        );
        metrics.insert("objective/non_score_reward", non_score);
        metrics.insert("objective/rlhf_reward", score_mean + non_score);
        metrics.insert("objective/scores", score_mean);
        metrics.insert("objective/kl_coef", coef);
        metrics.insert(
            "policy/approxkl_avg",
            mean(stats.iter().map(|s| s.approxkl)),
        );
        metrics.insert(
            "policy/clipfrac_avg",
            mean(stats.iter().map(|s| s.clipfrac)),
        );
        metrics.insert("loss/policy_avg", mean(policy_losses));
        if !value_losses.is_empty() {
            metrics.insert("loss/value_avg", mean(value_losses));
            metrics.insert("val/clipfrac_avg", mean(value_clip));
        }
        if !ptx_losses.is_empty() {
            metrics.insert("loss/ptx_avg", mean(ptx_losses));
        }
        metrics.insert("policy/entropy_avg", mean(entropies));
        metrics.insert("val/ratio", mean(ratios.iter().copied()));
        metrics.insert("val/ratio_var", ratio_var);
        metrics.insert("val/num_eos_tokens", rollout.eos_count as f64);
        metrics.insert("episode", state.episode as f64);
        metrics.insert(
            "rollout/tokens_per_sec",
            response_tokens as f64 / rollout.sample_seconds.max(1e-9),
        );
        metrics.insert("rollout/response_length", response_tokens as f64 / n as f64);
        let record = StepRecord {
            step: update,
            epoch: cursor.epoch_progress(),
            loss: mean(total_losses),
            lr,
            grad_norm: mean(norms),
            tokens_per_sec: all_tokens as f64 * ppo.ppo_epochs as f64 / seconds.max(1e-9),
            metrics,
        };
        if let Some(progress) = progress.as_mut() {
            progress.update(
                update,
                record.loss,
                lr,
                &[("score", score_mean), ("kl", kl_mean)],
            );
        }
        log.write_step(record).map_err(TrainError::from)?;
        state.kl.update(kl_mean, n);
        state.ptx = ptx_cursor.as_ref().map(DataCursor::position);
        summaries.push(UpdateSummary {
            update,
            score_mean,
            kl_mean,
            minibatches: stats,
        });

        let is_last = update == total;
        // `0` means only at the end, as the config documents.
        let every = settings.checkpoint_every;
        if !options.no_checkpoints && (is_last || (every > 0 && update.is_multiple_of(every))) {
            let train_state =
                TrainingState::new(update, total, lr, cursor.position(), settings.seed);
            let json = serde_json::to_string_pretty(&state)
                .map_err(|e| other(format!("ppo state: {e}")))?;
            let dir = save_run_checkpoint(
                &out_dir,
                &train_state,
                &run.policy,
                &optimizer,
                settings.keep_checkpoints,
                |dir| {
                    let path = dir.join(PPO_STATE_FILE);
                    std::fs::write(&path, &json).map_err(CheckpointError::io(&path))
                },
            )?;
            last_checkpoint = dir.display().to_string();
        }
        if options.stop_after == Some(update) {
            break;
        }
    }
    if let Some(progress) = progress.as_mut() {
        progress.finish();
    }
    Ok(PpoOutcome {
        model: run.policy,
        updates: total,
        metrics_path,
        summaries,
        kl_coef: state.kl.coef,
    })
}
