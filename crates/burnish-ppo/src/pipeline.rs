//! `burnish train ppo`: one on-policy run described by a training config with a `[ppo]`
//! section. Prompts come from `data.train` (a `prompt` column; held-out prompts from
//! `data.eval` or `data.eval_fraction` score the policy against the reference at the end), the
//! policy and the reference from `model.path` / `model.reference`, the reward from
//! `ppo.reward`.
//!
//! The value head sits on the policy's trunk (as TRL's value-head models did); it starts from
//! the reward model's head when the widths match (`value_init = "reward"`, InstructGPT's choice
//! for its separate value model), else fresh and seeded.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use burnish_model::{CausalLm, ModelAutodiffBackend, ModelBackend};
use burnish_train::config::TrainingConfig;
use burnish_train::objectives::SftObjective;
use burnish_train::pipeline::{
    DataInput, DataReport, PipelineError, attach_lora, check_gguf_export, collator_for,
    export_final, load_prompt_completions, load_prompts, model_dir, prepare_output, run_encoder,
};
use burnish_train::plot::{CurveSpec, plot_curves};
use burnish_train::trainer::RunOptions;
use serde::{Deserialize, Serialize};

use crate::config::{AdvantageEstimator, PpoConfig, RewardSource, ValueInit};
use crate::error::PpoError;
use crate::reward::{RewardFunction, RewardModelScorer, ScoreInput, TextReward};
use crate::rollout::sample_responses;
use crate::trainer::{PpoOutcome, PpoRun, train_ppo};

/// The charts of an on-policy run.
pub const PPO_CURVES: [CurveSpec; 4] = [
    CurveSpec {
        key: "objective/scores",
        title: "Reward (score of the sampled responses)",
        y_label: "mean score",
        y_range: None,
        file: "reward.svg",
    },
    CurveSpec {
        key: "objective/kl",
        title: "KL(policy || reference) per response",
        y_label: "nats",
        y_range: None,
        file: "kl.svg",
    },
    CurveSpec {
        key: "objective/rlhf_reward",
        title: "RLHF reward (score - KL penalty)",
        y_label: "mean reward",
        y_range: None,
        file: "rlhf_reward.svg",
    },
    CurveSpec {
        key: "loss",
        title: "Loss (policy + value + ptx)",
        y_label: "loss",
        y_range: None,
        file: "loss.svg",
    },
];

/// Gain and bias of the reward model's scores, fixed at the start of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Normalization {
    gain: f32,
    bias: f32,
}

/// Held-out prompts scored at the end: the reward of policy and reference samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOutReward {
    /// Prompts scored.
    pub prompts: usize,
    /// Mean score of the reference's samples.
    pub reference: f64,
    /// Mean score of the trained policy's samples.
    pub policy: f64,
}

/// What `run_ppo` leaves.
pub struct PpoSummary<B: ModelAutodiffBackend> {
    /// The trainer's outcome.
    pub outcome: PpoOutcome<B>,
    /// Where the prompt rows went.
    pub data: DataReport,
    /// The exported Hugging Face folder (`output_dir/final`), when the run finished.
    pub final_dir: Option<PathBuf>,
    /// Reference vs policy reward on held-out prompts, when there were any.
    pub held_out: Option<HeldOutReward>,
    /// The SVG plots.
    pub plots: Vec<PathBuf>,
}

/// Held-out prompts scored per run, at most.
const HELD_OUT_PROMPTS: usize = 256;
/// Policy samples the reward model is normalised on.
const NORMALIZATION_SAMPLES: usize = 64;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PpoError + '_ {
    move |e| PpoError::Reward(format!("{}: {e}", path.display()))
}

/// Mean reward of one sample per prompt from `model`.
#[allow(clippy::too_many_arguments)]
fn mean_reward<B: ModelBackend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    reward: &mut dyn RewardFunction,
    decode: &dyn Fn(&[u32]) -> String,
    ppo: &PpoConfig,
    eos: u32,
    seed: u64,
    device: &B::Device,
) -> Result<f64, PpoError> {
    let responses: Vec<Vec<u32>> = sample_responses(model, prompts, ppo, eos, seed, device)?
        .into_iter()
        .map(|g| g.tokens)
        .collect();
    let texts: Vec<String> = responses.iter().map(|r| decode(r)).collect();
    let scores = reward.score(&ScoreInput {
        queries: prompts,
        responses: &responses,
        response_texts: &texts,
    })?;
    Ok(scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len().max(1) as f64)
}

/// Runs `burnish train ppo` as `config` says.
pub fn run_ppo<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<PpoSummary<B>, PpoError> {
    if config.distributed.is_parallel() {
        return Err(PpoError::Pipeline(
            burnish_train::pipeline::PipelineError::Invalid(
                "[distributed]: `train ppo` runs on one device for now (sft, dpo, kto and reward are data-parallel); remove --devices / --nodes".into(),
            ),
        ));
    }
    let ppo = PpoConfig::from_table(&config.ppo)?;
    let model_path = model_dir(config)?;
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = run_dir.path.clone();
    let (prompts, held_out, data) = load_prompts(
        &DataInput::of(config)?,
        &encoder,
        &out.join("rejects.jsonl"),
    )?;
    let eos = encoder.eos_token_id().ok_or_else(|| {
        PipelineError::Invalid(format!(
            "{}: the tokenizer names no EOS token, and a response must be able to end",
            model_path.display()
        ))
    })?;
    let pad = encoder.pad_token_id().unwrap_or(eos);
    let tokenizer = encoder.tokenizer().clone();
    let decode = move |ids: &[u32]| tokenizer.decode(ids, true).unwrap_or_default();

    // Seeded so that a resumed run builds the same fresh heads before loading the checkpoint.
    B::seed(device, config.train.seed);
    let precision = config.train.precision();
    let mut policy = CausalLm::<B>::from_pretrained(&model_path, device)?.with_precision(precision);
    let with_lora = config.lora.is_some() || config.model.adapter.is_some();
    let reference = match &config.model.reference {
        Some(path) => CausalLm::<B::InnerBackend>::from_pretrained(path, device)?,
        // With adapters the reference is the base with them off: the policy before they are
        // attached, sharing its weights, so one model is in memory (as TRL does with PEFT).
        None if with_lora => policy.valid(),
        None => CausalLm::<B::InnerBackend>::from_pretrained(&model_path, device)?,
    }
    .with_precision(precision);
    let mut reward: Box<dyn RewardFunction> = match ppo.reward {
        RewardSource::Vader => Box::new(TextReward::vader()),
        RewardSource::Model => {
            let path = ppo.reward_model.as_ref().ok_or_else(|| PpoError::Config {
                key: "reward_model".into(),
                message: "is required when reward = \"model\": a reward model folder (`burnish train reward`), or set reward = \"vader\"".into(),
            })?;
            let model = CausalLm::<B::InnerBackend>::from_pretrained(path, device)?
                .with_precision(precision);
            let mut scorer = RewardModelScorer::new(model, pad, device).map_err(|e| match e {
                PpoError::Reward(m) => PpoError::Reward(format!("{}: {m}", path.display())),
                e => e,
            })?;
            if ppo.advantage == AdvantageEstimator::Gae && ppo.value_init == ValueInit::Reward {
                policy = scorer.init_value_head(policy, device);
            }
            if ppo.normalize_reward {
                let file = out.join("reward_normalization.json");
                let norm = if options.resume && file.exists() {
                    let text = std::fs::read_to_string(&file).map_err(io(&file))?;
                    serde_json::from_str(&text)
                        .map_err(|e| PpoError::Reward(format!("{}: {e}", file.display())))?
                } else {
                    let sample = &prompts[..prompts.len().min(NORMALIZATION_SAMPLES)];
                    let responses: Vec<Vec<u32>> = sample_responses(
                        &policy.valid(),
                        sample,
                        &ppo,
                        eos,
                        config.train.seed,
                        device,
                    )?
                    .into_iter()
                    .map(|g| g.tokens)
                    .collect();
                    scorer.normalize_on(sample, &responses);
                    let norm = Normalization {
                        gain: scorer.gain,
                        bias: scorer.bias,
                    };
                    let json = serde_json::to_string(&norm)
                        .map_err(|e| PpoError::Reward(format!("{}: {e}", file.display())))?;
                    std::fs::write(&file, json).map_err(io(&file))?;
                    norm
                };
                scorer.gain = norm.gain;
                scorer.bias = norm.bias;
            }
            Box::new(scorer)
        }
    };
    if ppo.advantage == AdvantageEstimator::Gae && policy.value_head.is_none() {
        policy = policy.with_value_head(device);
    }
    check_gguf_export(&policy, config)?;
    let policy = attach_lora(policy, config, options, device)?;
    let ptx = if ppo.ptx_coef > 0.0 {
        let path = ppo.ptx_data.as_ref().ok_or_else(|| PpoError::Config {
            key: "ptx_data".into(),
            message: "is required when ptx_coef > 0".into(),
        })?;
        let (rows, _, _) = load_prompt_completions(
            &DataInput::all_train(path),
            &encoder,
            &out.join("ptx_rejects.jsonl"),
        )?;
        Some(SftObjective::<B> {
            train: rows,
            eval: Vec::new(),
            collator: collator_for(&encoder),
            device: device.clone(),
        })
    } else {
        None
    };

    let run = PpoRun {
        policy,
        reference: reference.clone(),
        reward: reward.as_mut(),
        decode: &decode,
        prompts: &prompts,
        eos,
        pad,
        ptx,
    };
    let outcome = train_ppo(run, config, &ppo, options, device)?;
    let finished = options.stop_after.is_none_or(|s| s >= outcome.updates);
    let final_dir = if finished {
        Some(export_final(&outcome.model.valid(), config, &out)?)
    } else {
        None
    };
    let held_out = if finished && !held_out.is_empty() {
        let prompts = &held_out[..held_out.len().min(HELD_OUT_PROMPTS)];
        let seed = config.train.seed ^ 0x4556_414c;
        let policy = outcome.model.valid();
        let reward = reward.as_mut();
        let mut score = |model: &CausalLm<B::InnerBackend>| {
            mean_reward(model, prompts, reward, &decode, &ppo, eos, seed, device)
        };
        Some(HeldOutReward {
            prompts: prompts.len(),
            reference: score(&reference)?,
            policy: score(&policy)?,
        })
    } else {
        None
    };
    let plots = plot_curves(&outcome.metrics_path, &out, &PPO_CURVES)
        .map_err(|e| PpoError::Reward(format!("plots: {e}")))?;
    Ok(PpoSummary {
        outcome,
        data,
        final_dir,
        held_out,
        plots,
    })
}
