//! The trainer end to end on a tiny model: resuming after a stop reaches the same weights as an
//! uninterrupted run, precomputed reference log-probs give the same run as a reference model
//! alongside, a non-finite loss stops with the step named and the last checkpoint kept, and
//! DPO actually improves the held-out preference objective.

use burn::module::AutodiffModule;
use burnish_data::Collator;
use burnish_losses::PreferenceLoss;
use burnish_model::{CausalLm, ModelConfig, Precision};
use burnish_train::objectives::precompute_reference;
use burnish_train::trainer::{BatchLoss, RunOptions, TrainError, train};

mod common;
use common::*;

#[test]
fn resume_reaches_the_same_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let reference = start.valid();
    let objective = objective(pairs(24, 0), Some(reference));

    let full = train(
        start.clone(),
        &objective,
        &config(&tmp.path().join("full"), 7),
        &quiet(),
        &device(),
    )
    .unwrap();

    // Stop after step 5: the last checkpoint is step 4, so step 5 is lost and redone.
    let dir = tmp.path().join("killed");
    let stopped = RunOptions {
        stop_after: Some(5),
        ..quiet()
    };
    train(
        start.clone(),
        &objective,
        &config(&dir, 7),
        &stopped,
        &device(),
    )
    .unwrap();
    let resumed_options = RunOptions {
        resume: true,
        ..quiet()
    };
    // A fresh policy of another init proves the weights come from the checkpoint.
    let other = CausalLm::init(&ModelConfig::gpt2(64, 16, 1, 2, 32), &device());
    let resumed = train(
        other,
        &objective,
        &config(&dir, 7),
        &resumed_options,
        &device(),
    )
    .unwrap();

    let diff = max_diff(&weights(&full.model), &weights(&resumed.model));
    assert!(
        diff <= 1e-6,
        "resumed run differs from the uninterrupted one by {diff}"
    );
    assert!(
        max_diff(&weights(&full.model), &weights(&start)) > 1e-3,
        "training changed nothing"
    );
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        lines.lines().filter(|l| l.contains("\"train\"")).count(),
        7,
        "{lines}"
    );
}

#[test]
fn precomputed_reference_matches_reference_alongside() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let reference = start.valid();
    let mut cached = pairs(24, 0);
    precompute_reference(
        &reference,
        &mut cached,
        &Collator::new(0),
        5,
        &device(),
        None,
    );
    assert!(cached.iter().all(|p| p.ref_chosen_logp.is_some()));
    // The held-out pairs are evaluated at the end, so they need their reference too.
    let mut precomputed_objective = objective(cached, None);
    precompute_reference(
        &reference,
        &mut precomputed_objective.eval,
        &Collator::new(0),
        5,
        &device(),
        None,
    );

    let alongside = train(
        start.clone(),
        &objective(pairs(24, 0), Some(reference)),
        &config(&tmp.path().join("a"), 6),
        &quiet(),
        &device(),
    )
    .unwrap();
    let precomputed = train(
        start,
        &precomputed_objective,
        &config(&tmp.path().join("b"), 6),
        &quiet(),
        &device(),
    )
    .unwrap();
    let diff = max_diff(&weights(&alongside.model), &weights(&precomputed.model));
    assert!(diff <= 1e-5, "precomputed vs alongside differ by {diff}");
}

#[test]
fn non_finite_loss_stops_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    // Two micro-batches per step: call 5 is the first micro-batch of step 3.
    let calls = std::sync::atomic::AtomicUsize::new(0);
    let poisoned = Hooked {
        inner: objective(pairs(24, 0), Some(start.valid())),
        hook: |_: &[usize], mut batch: BatchLoss<B>| {
            if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 5 {
                batch.loss = batch.loss * f32::NAN;
            }
            Ok(batch)
        },
    };
    let err = train(
        start,
        &poisoned,
        &config(tmp.path(), 7),
        &quiet(),
        &device(),
    )
    .err()
    .unwrap();
    match &err {
        TrainError::NonFinite {
            step,
            last_checkpoint,
            ..
        } => {
            assert_eq!(*step, 3);
            assert!(
                last_checkpoint.ends_with("checkpoint-2"),
                "{last_checkpoint}"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    assert!(err.to_string().contains("step 3"));
    assert!(tmp.path().join("checkpoint-2/state.json").exists());
}

#[test]
fn dpo_improves_the_held_out_preference() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let objective = objective(pairs(64, 0), Some(start.valid()));
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    let mut cfg = config(tmp.path(), 40);
    cfg.train.checkpoint_every = 0;
    let after = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&after.model, &objective, 8)
        .unwrap()
        .unwrap();
    let accuracy = after.2.get("rewards/accuracies").unwrap();
    println!(
        "held-out DPO loss {:.4} -> {:.4}, accuracy {accuracy:.3}",
        before.0, after.0
    );
    assert!(
        after.0 < before.0 - 0.1,
        "held-out loss {} -> {}",
        before.0,
        after.0
    );
    assert!(accuracy > 0.8, "held-out accuracy {accuracy}");
}

/// Lists of three responses ranked by how often they repeat the prompt's last token.
fn lists(n: usize, seed: u32) -> Vec<burnish_data::TokenizedList> {
    (0..n as u32)
        .map(|i| {
            let a = 3 + (i * 7 + seed) % 50;
            let b = 3 + (i * 11 + seed + 5) % 50;
            burnish_data::TokenizedList {
                prompt_ids: vec![1, a, b, a],
                // Best first in the ranks; shuffled order in the list.
                response_ids: vec![vec![b, 61, 2], vec![a, a, 2], vec![a, 60 - (i % 5), 2]],
                ranking: burnish_data::Ranking::Ranks(vec![2, 0, 1]),
                ref_logps: None,
            }
        })
        .collect()
}

#[test]
fn plackett_luce_dpo_improves_held_out_ranking() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let objective = burnish_train::objectives::ListwiseObjective::<B> {
        train: lists(48, 0),
        eval: lists(12, 1000),
        collator: Collator::new(0),
        loss: PreferenceLoss::PlackettLuce { beta: 0.1 },
        reference: Some(start.valid()),
        device: device(),
    };
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    let mut cfg = config(tmp.path(), 60);
    cfg.train.checkpoint_every = 0;
    let trained = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&trained.model, &objective, 8)
        .unwrap()
        .unwrap();
    let accuracy = after.2.get("rewards/accuracies").unwrap();
    println!(
        "held-out Plackett-Luce loss {:.4} -> {:.4}, ranking accuracy {accuracy:.3}",
        before.0, after.0
    );
    assert!(
        after.0 < before.0 - 0.1,
        "held-out loss {} -> {}",
        before.0,
        after.0
    );
    assert!(
        accuracy > 0.65,
        "held-out ranking accuracy {accuracy} (chance is 0.5)"
    );
}

/// The pairs above as unpaired rows: each pair gives a desirable row (the chosen completion) and
/// an undesirable one (the rejected completion), with mismatched completions assigned.
fn unpaired(n: usize, seed: u32) -> Vec<burnish_train::unpaired::TokenizedUnpaired> {
    use burnish_train::unpaired::{TokenizedUnpaired, pair_mismatched, unpair};
    let mut rows: Vec<TokenizedUnpaired> = pairs(n, seed).iter().flat_map(unpair).collect();
    pair_mismatched(&mut rows, 64);
    rows
}

#[test]
fn mismatched_completions_come_from_the_next_row_and_fit() {
    use burnish_train::unpaired::{TokenizedUnpaired, pair_mismatched};
    let mut rows = vec![
        TokenizedUnpaired::new(vec![1, 2, 3], vec![10, 11], true),
        TokenizedUnpaired::new(vec![4], vec![20, 21, 22, 23], false),
        TokenizedUnpaired::new(vec![5, 6], vec![30], true),
    ];
    pair_mismatched(&mut rows, 5);
    // Row 0 gets row 1's completion cut to 5 - 3 tokens; the last row wraps to the first.
    assert_eq!(rows[0].kl_completion_ids, vec![20, 21]);
    assert_eq!(rows[1].kl_completion_ids, vec![30]);
    assert_eq!(rows[2].kl_completion_ids, vec![10, 11]);
    let mut lone = vec![TokenizedUnpaired::new(vec![1], vec![7, 8], true)];
    pair_mismatched(&mut lone, 8);
    assert_eq!(lone[0].kl_completion_ids, vec![7, 8]);
    // Rows unpaired from pairs: the partner is the next row with another prompt, not the
    // same prompt's other completion.
    let mut unpaired = vec![
        TokenizedUnpaired::new(vec![1], vec![10], true),
        TokenizedUnpaired::new(vec![1], vec![11], false),
        TokenizedUnpaired::new(vec![2], vec![20], true),
        TokenizedUnpaired::new(vec![2], vec![21], false),
    ];
    pair_mismatched(&mut unpaired, 8);
    let partners: Vec<u32> = unpaired.iter().map(|r| r.kl_completion_ids[0]).collect();
    assert_eq!(partners, vec![20, 20, 10, 10]);
}

#[test]
fn kto_improves_the_held_out_objective() {
    use burnish_losses::UnpairedLoss;
    use burnish_train::unpaired::{KtoObjective, precompute_unpaired_reference};
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let collator = Collator::new(0);
    let (mut train_rows, mut eval_rows) = (unpaired(32, 0), unpaired(8, 1000));
    for rows in [&mut train_rows, &mut eval_rows] {
        precompute_unpaired_reference(&start.valid(), rows, &collator, 16, true, &device(), None)
            .unwrap();
    }
    let objective = KtoObjective::<B> {
        train: train_rows,
        eval: eval_rows,
        collator,
        loss: UnpairedLoss::default(),
        device: device(),
    };
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    // At the start the policy is the reference: every implicit reward and the KL are 0.
    assert!(before.2.get("rewards/chosen").unwrap().abs() < 1e-5);
    assert!(before.2.get("kl").unwrap().abs() < 1e-5);
    assert!(
        (before.0 - 0.5).abs() < 1e-5,
        "1 - sigma(0) = 0.5, got {}",
        before.0
    );
    let mut cfg = config(tmp.path(), 40);
    cfg.train.checkpoint_every = 0;
    let trained = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&trained.model, &objective, 8)
        .unwrap()
        .unwrap();
    let (chosen, rejected) = (
        after.2.get("rewards/chosen").unwrap(),
        after.2.get("rewards/rejected").unwrap(),
    );
    println!(
        "held-out KTO loss {:.4} -> {:.4}, rewards chosen {chosen:.3} rejected {rejected:.3}, kl {:.3}",
        before.0,
        after.0,
        after.2.get("kl").unwrap()
    );
    assert!(
        after.0 < before.0 - 0.05,
        "held-out loss {} -> {}",
        before.0,
        after.0
    );
    assert!(
        chosen > rejected + 0.1,
        "chosen {chosen} vs rejected {rejected}"
    );
}

#[test]
fn orpo_trains_without_a_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let mut objective = objective(pairs(64, 0), None);
    objective.loss = PreferenceLoss::Orpo { beta: 0.5 };
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    let mut cfg = config(tmp.path(), 40);
    cfg.train.checkpoint_every = 0;
    let trained = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&trained.model, &objective, 8)
        .unwrap()
        .unwrap();
    let (nll_before, nll_after) = (
        before.2.get("nll_loss").unwrap(),
        after.2.get("nll_loss").unwrap(),
    );
    let (odds_before, odds_after) = (
        before.2.get("log_odds_chosen").unwrap(),
        after.2.get("log_odds_chosen").unwrap(),
    );
    println!(
        "held-out ORPO loss {:.4} -> {:.4}, nll {nll_before:.3} -> {nll_after:.3}, log odds {odds_before:.3} -> {odds_after:.3}",
        before.0, after.0
    );
    assert!(after.0 < before.0 - 0.1);
    assert!(nll_after < nll_before, "the SFT term falls");
    assert!(
        odds_after > odds_before + 0.5,
        "the chosen completion's odds rise"
    );
}

#[test]
fn kwise_reward_model_learns_held_out_rankings() {
    use burnish_losses::RewardLoss;
    use burnish_train::objectives::RewardListObjective;
    let tmp = tempfile::tempdir().unwrap();
    let start = policy().with_reward_head(&device());
    let objective = RewardListObjective::<B> {
        train: lists(48, 0),
        eval: lists(12, 1000),
        collator: Collator::new(0),
        loss: RewardLoss::default(),
        device: device(),
    };
    let mut cfg = config(tmp.path(), 60);
    cfg.train.checkpoint_every = 0;
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    let trained = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&trained.model, &objective, 8)
        .unwrap()
        .unwrap();
    let accuracy = after.2.get("accuracy").unwrap();
    println!(
        "held-out K-wise loss {:.4} -> {:.4}, pair accuracy {accuracy:.3}",
        before.0, after.0
    );
    assert!(
        after.0 < before.0 - 0.1,
        "held-out loss {} -> {}",
        before.0,
        after.0
    );
    assert!(
        accuracy > 0.8,
        "held-out pair accuracy {accuracy} (chance 0.5)"
    );
}

/// `eval_every = 0` and `checkpoint_every = 0` mean "only at the end" (the config's doc): the
/// last step is evaluated and checkpointed, so a resume of the finished run trains nothing more.
#[test]
fn zero_intervals_mean_only_at_the_end() {
    let tmp = tempfile::tempdir().unwrap();
    let start = policy();
    let objective = objective(pairs(24, 0), Some(start.valid()));
    let mut cfg = config(tmp.path(), 3);
    cfg.train.eval_every = 0;
    cfg.train.checkpoint_every = 0;
    let done = train(start, &objective, &cfg, &quiet(), &device()).unwrap();
    assert_eq!(done.last_eval.as_ref().map(|e| e.step), Some(3));
    assert!(tmp.path().join("checkpoint-3/state.json").exists());
    assert!(!tmp.path().join("checkpoint-2").exists());
    let resumed = RunOptions {
        resume: true,
        ..quiet()
    };
    let again = train(policy(), &objective, &cfg, &resumed, &device()).unwrap();
    assert_eq!(weights(&again.model), weights(&done.model));
}

fn lora_policy() -> CausalLm<B> {
    let lora = burnish_model::LoraConfig {
        r: 4,
        alpha: 16.0,
        target_modules: burnish_model::TargetModules::One("all-linear".into()),
        ..Default::default()
    };
    // Wider than `policy()`: adapters of rank 4 on a 16-wide model have too little to move.
    <B as burn::tensor::backend::Backend>::seed(&device(), 11);
    CausalLm::init(&ModelConfig::gpt2(64, 32, 2, 4, 32), &device())
        .with_lora(&lora, &device())
        .unwrap()
}

fn embedding(model: &CausalLm<B>) -> Vec<f32> {
    model
        .embed
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn lora_dpo_improves_the_held_out_preference_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let start = lora_policy();
    let (trainable, total) = start.parameter_counts();
    assert!(trainable < total / 2, "{trainable} of {total} trainable");
    let objective = objective(pairs(64, 0), Some(start.valid()));
    let before = burnish_train::trainer::evaluate(&start, &objective, 8)
        .unwrap()
        .unwrap();
    let mut cfg = config(&tmp.path().join("full"), 80);
    cfg.optimizer.lr = 1e-2;
    let full = train(start.clone(), &objective, &cfg, &quiet(), &device()).unwrap();
    let after = burnish_train::trainer::evaluate(&full.model, &objective, 8)
        .unwrap()
        .unwrap();
    println!("LoRA held-out DPO loss {:.4} -> {:.4}", before.0, after.0);
    // Adapters on a random base learn more slowly than full fine-tuning: 0.693 -> 0.61 here.
    assert!(
        after.0 < before.0 - 0.05,
        "held-out loss {} -> {}",
        before.0,
        after.0
    );
    assert_eq!(
        embedding(&full.model),
        embedding(&start),
        "the base stays frozen"
    );

    // Stopped at step 5 and resumed into freshly initialised adapters: the same weights.
    let dir = tmp.path().join("killed");
    let mut cfg = config(&dir, 80);
    cfg.optimizer.lr = 1e-2;
    let stopped = RunOptions {
        stop_after: Some(5),
        ..quiet()
    };
    train(start, &objective, &cfg, &stopped, &device()).unwrap();
    let resumed = train(
        lora_policy(),
        &objective,
        &cfg,
        &RunOptions {
            resume: true,
            ..quiet()
        },
        &device(),
    )
    .unwrap();
    let diff = max_diff(&weights(&full.model), &weights(&resumed.model));
    assert!(diff <= 1e-6, "resumed LoRA run differs by {diff}");
}

#[test]
fn gguf_export_of_a_reward_model_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config(tmp.path(), 1);
    cfg.train.export_gguf = Some("f16".into());
    let reward_model = policy().with_reward_head(&device());
    let err = burnish_train::pipeline::check_gguf_export(&reward_model, &cfg)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("reward model cannot be written as GGUF"),
        "{err}"
    );
    cfg.train.export_gguf = None;
    assert!(burnish_train::pipeline::check_gguf_export(&reward_model, &cfg).is_ok());
}

/// The training losses of a run's `metrics.jsonl`, step by step.
fn train_losses(dir: &std::path::Path) -> Vec<f64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"split\":\"train\""))
        .map(|l| {
            let rest = &l[l.find("\"loss\":").expect("a loss") + 7..];
            rest[..rest.find([',', '}']).unwrap()].parse().unwrap()
        })
        .collect()
}

/// bf16 mixed precision follows the fp32 run: every step's loss within 0.01 of fp32's over 7
/// steps (bf16 keeps 8 bits of mantissa in the products' inputs; the tiny model's losses move by
/// about 0.1 over the run), the weights differ (bf16 really ran), and a bf16 run stopped and
/// resumed reaches the uninterrupted bf16 run's weights exactly.
#[test]
fn bf16_training_follows_fp32_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // One reference for every run: the fixed start, in the run's precision.
    let objectives = [Precision::Fp32, Precision::Bf16]
        .map(|p| objective(pairs(24, 0), Some(policy().with_precision(p).valid())));
    let run = |precision: Precision, name: &str, options: &RunOptions, start: CausalLm<B>| {
        let start = start.with_precision(precision);
        let objective = &objectives[(precision == Precision::Bf16) as usize];
        let dir = tmp.path().join(name);
        let outcome = train(start, objective, &config(&dir, 7), options, &device()).unwrap();
        (outcome.model, dir)
    };
    let (fp32, fp32_dir) = run(Precision::Fp32, "fp32", &quiet(), policy());
    let (bf16, bf16_dir) = run(Precision::Bf16, "bf16", &quiet(), policy());
    let (want, got) = (train_losses(&fp32_dir), train_losses(&bf16_dir));
    assert_eq!(want.len(), 7);
    for (step, (w, g)) in want.iter().zip(&got).enumerate() {
        assert!(
            (w - g).abs() < 0.01,
            "step {}: fp32 loss {w}, bf16 {g}",
            step + 1
        );
    }
    assert!(
        (want[0] - want[6]).abs() > 0.02,
        "the run must move the loss for the comparison to mean something: {want:?}"
    );
    let apart = max_diff(&weights(&fp32), &weights(&bf16));
    assert!(
        apart > 0.0,
        "bf16 and fp32 gave identical weights: bf16 did not run"
    );

    let stopped = RunOptions {
        stop_after: Some(5),
        ..quiet()
    };
    run(Precision::Bf16, "killed", &stopped, policy());
    let resumed = RunOptions {
        resume: true,
        ..quiet()
    };
    let other = CausalLm::init(&ModelConfig::gpt2(64, 16, 1, 2, 32), &device());
    let (resumed, _) = run(Precision::Bf16, "killed", &resumed, other);
    let diff = max_diff(&weights(&bf16), &weights(&resumed));
    assert!(diff <= 1e-6, "resumed bf16 run differs by {diff}");
}
