//! PPO, RLOO and GRPO on a learnable toy task with a tiny model: a rule reward that counts a
//! target token in the response. Checks the first step's ratio and KL, that each estimator
//! raises the reward with the KL bounded, exact resume, and the temperature-consistent
//! log-probs.

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burnish_data::{Collator, TokenizedPromptCompletion};
use burnish_model::{CausalLm, ModelConfig, SamplingConfig};
use burnish_ppo::rollout::{MiniBatch, score_tokens, to_rows};
use burnish_ppo::{
    AdvantageEstimator, ClosureReward, PpoConfig, PpoOutcome, PpoRun, RewardFunction,
    RewardModelScorer, ScoreInput, train_ppo,
};
use burnish_train::config::TrainingConfig;
use burnish_train::metrics_log::{read_metrics, series};
use burnish_train::objectives::SftObjective;
use burnish_train::trainer::RunOptions;

type B = Autodiff<Flex>;

const VOCAB: usize = 12;
const TARGET: u32 = 5;
const EOS: u32 = 1;

fn device() -> <Flex as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

/// The same tiny model every time: the backend's seed is global and tests run in parallel,
/// so seeding and initialising happen under one lock.
fn model() -> CausalLm<B> {
    model_with(false)
}

fn model_with(value_head: bool) -> CausalLm<B> {
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = INIT.lock().unwrap_or_else(|e| e.into_inner());
    <B as burn::tensor::backend::Backend>::seed(&device(), 3);
    let mut config = ModelConfig::gpt2(VOCAB, 32, 1, 2, 32);
    config.eos_token_id = Some(EOS);
    config.value_head = value_head;
    CausalLm::init(&config, &device())
}

fn prompts() -> Vec<Vec<u32>> {
    (0..32u32)
        .map(|i| vec![2 + i % 9, 2 + (i * 7) % 9, 3 + i % 5])
        .collect()
}

fn training(dir: &std::path::Path, updates: u64, lr: f64) -> TrainingConfig {
    let text = format!(
        "[optimizer]\nlr = {lr}\n[schedule]\nwarmup_steps = 0\ndecay = \"constant\"\n[train]\nmax_steps = {updates}\nbatch_size = 8\ncheckpoint_every = 1\nkeep_checkpoints = 2\nseed = 11\noutput_dir = {:?}\n",
        dir.display().to_string()
    );
    TrainingConfig::from_toml_str(&text, "test", &[] as &[&str]).unwrap()
}

fn ppo_config(advantage: AdvantageEstimator, kl_coef: f64) -> PpoConfig {
    PpoConfig {
        response_length: 6,
        temperature: 1.0,
        samples_per_prompt: if advantage == AdvantageEstimator::Gae {
            1
        } else {
            4
        },
        advantage,
        kl_coef,
        ppo_epochs: 2,
        num_mini_batches: 2,
        vf_coef: 0.5,
        ..PpoConfig::default()
    }
}

/// Counts the target token in each response.
fn counting() -> impl RewardFunction {
    ClosureReward::new(|batch: &ScoreInput<'_>| {
        batch
            .responses
            .iter()
            .map(|r| r.iter().filter(|&&t| t == TARGET).count() as f32)
            .collect()
    })
}

fn run(
    dir: &std::path::Path,
    advantage: AdvantageEstimator,
    updates: u64,
    lr: f64,
    kl_coef: f64,
    options: &RunOptions,
) -> PpoOutcome<B> {
    run_with(dir, advantage, updates, lr, kl_coef, options, None, 0.0)
}

#[allow(clippy::too_many_arguments)]
fn run_with(
    dir: &std::path::Path,
    advantage: AdvantageEstimator,
    updates: u64,
    lr: f64,
    kl_coef: f64,
    options: &RunOptions,
    ptx: Option<SftObjective<B>>,
    ptx_coef: f64,
) -> PpoOutcome<B> {
    let policy = model_with(advantage == AdvantageEstimator::Gae);
    let reference = policy.valid();
    let prompts = prompts();
    let mut reward = counting();
    let decode = |ids: &[u32]| format!("{ids:?}");
    let run = PpoRun {
        policy,
        reference,
        reward: &mut reward,
        decode: &decode,
        prompts: &prompts,
        eos: EOS,
        pad: 0,
        ptx,
    };
    let ppo = PpoConfig {
        ptx_coef,
        ptx_data: (ptx_coef > 0.0).then(|| "rows passed from code".into()),
        ..ppo_config(advantage, kl_coef)
    };
    train_ppo(run, &training(dir, updates, lr), &ppo, options, &device()).unwrap()
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..RunOptions::default()
    }
}

#[test]
fn first_step_has_ratio_one_and_zero_kl() {
    let dir = tempfile::tempdir().unwrap();
    for advantage in [AdvantageEstimator::Gae, AdvantageEstimator::Grpo] {
        let out = run(dir.path(), advantage, 1, 1e-3, 0.02, &quiet());
        let first = &out.summaries[0];
        assert_eq!(first.kl_mean, 0.0, "{advantage:?}");
        assert_eq!(
            first.minibatches[0].ratio_max_deviation, 0.0,
            "{advantage:?}"
        );
        assert_eq!(first.minibatches[0].ratio_mean, 1.0);
        assert_eq!(first.minibatches[0].clipfrac, 0.0);
        // Later steps of the same update see the moved policy.
        assert!(first.minibatches.len() == 4);
        std::fs::remove_dir_all(dir.path()).unwrap();
    }
}

#[test]
fn every_estimator_raises_the_reward_with_bounded_kl() {
    for advantage in [
        AdvantageEstimator::Gae,
        AdvantageEstimator::Rloo,
        AdvantageEstimator::Grpo,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), advantage, 12, 1e-2, 0.02, &quiet());
        let s = &out.summaries;
        let first = (s[0].score_mean + s[1].score_mean) / 2.0;
        let last = (s[10].score_mean + s[11].score_mean) / 2.0;
        let kl = s[11].kl_mean;
        println!("{advantage:?}: reward {first:.3} -> {last:.3}, KL {kl:.3}");
        assert!(last > first + 0.5, "{advantage:?}: {first} -> {last}");
        // The KL penalty bounds the drift: with beta = 1 the optimum tilts each token's odds by
        // at most e, so the KL stays small while the reward still rises.
        let held = run(dir.path(), advantage, 12, 1e-2, 1.0, &quiet());
        let h = &held.summaries;
        let (held_first, held_last) = (
            (h[0].score_mean + h[1].score_mean) / 2.0,
            (h[10].score_mean + h[11].score_mean) / 2.0,
        );
        let held_kl = (h[10].kl_mean + h[11].kl_mean) / 2.0;
        println!(
            "{advantage:?}, beta 1: reward {held_first:.3} -> {held_last:.3}, KL {held_kl:.3}"
        );
        assert!(
            held_last > held_first,
            "{advantage:?}: {held_first} -> {held_last}"
        );
        assert!(
            held_kl < 2.0 && held_kl < kl / 3.0,
            "{advantage:?}: KL {held_kl} with beta 1 vs {kl} with beta 0.02"
        );
        std::fs::remove_dir_all(dir.path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = run(dir.path(), advantage, 1, 1e-2, 0.02, &quiet());
        let metrics = std::fs::read_to_string(&out.metrics_path).unwrap();
        for key in [
            "objective/kl",
            "objective/entropy",
            "objective/non_score_reward",
            "objective/rlhf_reward",
            "objective/scores",
            "policy/approxkl_avg",
            "policy/clipfrac_avg",
            "loss/policy_avg",
            "policy/entropy_avg",
            "val/ratio",
            "val/ratio_var",
            "val/num_eos_tokens",
            "episode",
        ] {
            assert!(metrics.contains(key), "{key} missing");
        }
        assert_eq!(
            metrics.contains("loss/value_avg"),
            advantage == AdvantageEstimator::Gae
        );
    }
}

struct Collect(Vec<Vec<f32>>);

impl ModuleVisitor<B> for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.0
            .push(param.val().into_data().to_vec::<f32>().unwrap());
    }
}

fn weights(model: &CausalLm<B>) -> Vec<Vec<f32>> {
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    c.0
}

#[test]
fn resume_reaches_the_uninterrupted_weights() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let whole = run(a.path(), AdvantageEstimator::Gae, 4, 5e-3, 0.02, &quiet());
    let stopped = RunOptions {
        stop_after: Some(2),
        ..quiet()
    };
    run(b.path(), AdvantageEstimator::Gae, 4, 5e-3, 0.02, &stopped);
    let resumed = RunOptions {
        resume: true,
        ..quiet()
    };
    let rest = run(b.path(), AdvantageEstimator::Gae, 4, 5e-3, 0.02, &resumed);
    assert_eq!(rest.summaries[0].update, 3);
    assert!(weights(&whole.model) == weights(&rest.model));
}

/// The log-probs PPO's ratio uses (temperature-scaled logits, recomputed over query + response)
/// equal the sampler's own log-probs of the tokens it drew.
#[test]
fn temperature_scaled_logps_are_the_samplers() {
    let policy = model().valid();
    let queries = prompts()[..6].to_vec();
    for temperature in [0.7, 1.3] {
        let sampling = SamplingConfig {
            max_new_tokens: 5,
            temperature,
            seed: 4,
            stop_token: Some(EOS),
            ..SamplingConfig::default()
        };
        let generated = policy
            .generate_with_logps(&queries, &sampling, &device())
            .unwrap();
        let responses: Vec<Vec<u32>> = generated.iter().map(|g| g.tokens.clone()).collect();
        let rows: Vec<usize> = (0..queries.len()).collect();
        let batch = MiniBatch::new(&rows, &queries, &responses, 0);
        let scored = score_tokens(&policy, &batch, temperature, &device());
        let recomputed = to_rows(scored.logps, &batch.lengths);
        for (g, r) in generated.iter().zip(&recomputed) {
            assert_eq!(g.logps.len(), r.len());
            for (a, b) in g.logps.iter().zip(r) {
                assert!((a - b).abs() < 1e-4, "T={temperature}: {a} vs {b}");
            }
        }
    }
}

/// A reward model's score of a row does not depend on the other rows of its batch (padding).
#[test]
fn reward_model_reads_the_last_real_token() {
    let rm = {
        let mut config = model().config.clone();
        config.reward_head = true;
        CausalLm::<Flex>::init(&config, &device())
    };
    let scorer = RewardModelScorer::new(rm.clone(), 0, &device()).unwrap();
    let queries = vec![vec![3, 4], vec![5, 6, 7, 8, 9], vec![2]];
    let responses = vec![vec![6, 7, 1], vec![3], vec![4, 4, 4, 4, 4, 4]];
    let together = scorer.raw_scores(&queries, &responses);
    for i in 0..3 {
        let alone = scorer.raw_scores(&queries[i..=i], &responses[i..=i]);
        assert!((alone[0] - together[i]).abs() < 1e-5, "{i}");
    }
    let no_head = RewardModelScorer::new(model().valid(), 0, &device());
    assert!(
        no_head
            .err()
            .unwrap()
            .to_string()
            .contains("no reward head")
    );
}

/// PPO-ptx: the language-modelling loss on the mixed-in rows is logged and goes down, on top
/// of the PPO objective.
#[test]
fn ptx_loss_is_mixed_into_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<TokenizedPromptCompletion> = (0..16u32)
        .map(|i| TokenizedPromptCompletion {
            prompt_ids: vec![2 + i % 9],
            completion_ids: vec![7, 8, 9, 10, 7, 8],
        })
        .collect();
    let ptx = SftObjective::<B> {
        train: rows,
        eval: Vec::new(),
        collator: Collator::new(0),
        device: device(),
    };
    let out = run_with(
        dir.path(),
        AdvantageEstimator::Gae,
        6,
        1e-2,
        0.02,
        &quiet(),
        Some(ptx),
        1.0,
    );
    let records = read_metrics(&out.metrics_path).unwrap();
    let ptx = series(&records, "train", "loss/ptx_avg");
    assert_eq!(ptx.len(), 6);
    let (first, last) = (ptx[0].1, ptx[5].1);
    assert!(last < first * 0.7, "ptx NLL {first} -> {last}");
}
