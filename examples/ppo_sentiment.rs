//! # PPO on the controlled-sentiment task: the RLHF fallback, end to end, on a CPU
//!
//! The InstructGPT pipeline on the quickstart's task (continue an IMDb review prefix
//! positively; VADER sentiment is the gold reward, never shown to the policy):
//!
//! 1. SFT a small GPT-2-style model on the shipped reviews: the reference policy (the same
//!    steps as the quickstart, through `burnish::sentiment_task`);
//! 2. sample two continuations per prefix and label each pair with the gold reward;
//! 3. train a Bradley-Terry reward model on those pairs (the SFT model plus a reward head);
//! 4. PPO against the reward model, with a per-token KL penalty to the SFT policy; the value
//!    head starts from the reward model's head;
//! 5. on held-out prefixes, compare reference and PPO samples under the gold reward: mean
//!    reward, win rate, KL(policy || reference).
//!
//! Run it with `cargo run --release --example ppo_sentiment` (add `--features wgpu` or `cuda`
//! for a GPU). Everything it writes goes to `runs/ppo_sentiment/`.

use std::path::PathBuf;
use std::time::Instant;

mod common;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::burn::module::AutodiffModule;
use burnish::model::ModelAutodiffBackend;
use burnish::ppo::TextReward;
use burnish::ppo::pipeline::PPO_CURVES;
use burnish::sentiment_task::{SentimentTask, print_comparison, print_done};
use burnish::train::metrics_log::{read_metrics, series};
use burnish::train::plot::{plot_comparison_summary, plot_curves};
use common::section;

/// Review prefixes turned into preference pairs for the reward model.
const PAIR_PREFIXES: usize = 2000;
/// Held-out prefixes for the final comparison.
const EVAL_PREFIXES: usize = 256;
/// SFT steps of 16 reviews.
const SFT_STEPS: u64 = 500;
/// PPO updates of 32 prompts each.
const PPO_UPDATES: u64 = 60;
/// The KL penalty's coefficient.
const KL_COEF: f64 = 0.05;
const OUT: &str = "runs/ppo_sentiment";

/// Prints a PPO run's reward and KL from first to last update; returns its mean rollout speed.
fn report(name: &str, metrics: &std::path::Path, seconds: f64) -> anyhow::Result<f64> {
    let records = read_metrics(metrics)?;
    let speed = series(&records, "train", "rollout/tokens_per_sec");
    let tokens_per_sec = speed.iter().map(|p| p.1).sum::<f64>() / speed.len().max(1) as f64;
    let (scores, kls) = (
        series(&records, "train", "objective/scores"),
        series(&records, "train", "objective/kl"),
    );
    let ends = |s: &[(f64, f64)]| {
        (
            s.first().map_or(f64::NAN, |p| p.1),
            s.last().map_or(f64::NAN, |p| p.1),
        )
    };
    let ((s0, s1), (k0, k1)) = (ends(&scores), ends(&kls));
    println!(
        "{name}: {} updates in {seconds:.0}s; score {s0:+.3} -> {s1:+.3}, KL {k0:.2} -> {k1:.2} nats; rollouts at {tokens_per_sec:.0} tokens/s",
        scores.len()
    );
    Ok(tokens_per_sec)
}

struct PpoSentiment;

impl TrainJob for PpoSentiment {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let started = Instant::now();
        let out = PathBuf::from(OUT);
        std::fs::create_dir_all(&out)?;
        B::seed(&device, 2024);

        section("1. SFT: the reference policy");
        let task = SentimentTask::load(&out)?;
        let t = Instant::now();
        let sft = task.train_reference::<B>(&out.join("sft"), SFT_STEPS, &device)?;
        println!(
            "SFT: {} steps in {:.0}s, held-out NLL {:.3} nats/token",
            sft.steps,
            t.elapsed().as_secs_f64(),
            sft.last_eval.as_ref().map_or(f64::NAN, |e| e.loss)
        );
        let reference = sft.model;

        section("2. Preference pairs labelled by the gold reward (VADER)");
        let inference = reference.valid();
        let (mut pairs, ties) = task.preference_pairs(&inference, PAIR_PREFIXES, &device)?;
        println!("{} pairs ({ties} tied prefixes skipped)", pairs.len());

        section("3. A Bradley-Terry reward model on the pairs");
        let eval_pairs = pairs.split_off(pairs.len() - pairs.len() / 10);
        let t = Instant::now();
        let (rm_run, accuracy) =
            task.train_reward_model(&reference, pairs, eval_pairs, &out.join("reward"), &device)?;
        println!(
            "reward model: {} steps in {:.0}s, held-out accuracy {accuracy:.2} (how often it ranks the gold-better sample first)",
            rm_run.steps,
            t.elapsed().as_secs_f64()
        );
        let reward_model = rm_run.model.valid();

        section("4. PPO against the reward model, KL-penalised towards the SFT policy");
        // Scores rescaled to mean 0, std 1 on the SFT policy's own samples; the value head
        // starts from the reward model's head (InstructGPT), bias 0.
        let mut scorer = task.reward_scorer(reward_model, &inference, &device)?;
        let policy = scorer.init_value_head(reference.clone(), &device);
        let ppo = task.ppo_config(KL_COEF);
        let t = Instant::now();
        let outcome = task.train_ppo(
            policy,
            inference.clone(),
            &mut scorer,
            &ppo,
            PPO_UPDATES,
            42,
            &out.join("ppo"),
            &device,
        )?;
        let ppo_seconds = t.elapsed().as_secs_f64();
        let rollout_tokens_per_sec = report("PPO", &outcome.metrics_path, ppo_seconds)?;
        let curves = plot_curves(&outcome.metrics_path, out.join("ppo"), &PPO_CURVES)?;
        let policy = outcome.model.valid();
        policy.save_pretrained(out.join("ppo-model"))?;
        task.tokenizer.save(out.join("ppo-model/tokenizer.json"))?;

        section("5. Held-out comparison under the gold reward");
        let eval_prefixes = task.eval_prefixes(EVAL_PREFIXES);
        let comparison = task.compare(&policy, &inference, &eval_prefixes, 77, &device)?;
        print_comparison(&comparison);
        plot_comparison_summary(&comparison.summary(), "PPO", out.join("summary.svg"))?;

        section("6. For contrast: PPO given the gold reward itself (PPO-GT)");
        // The same run with VADER as the reward: how much of the gap is the reward model's.
        let t = Instant::now();
        let gt = task.train_ppo(
            reference.clone().with_value_head(&device),
            inference.clone(),
            &mut TextReward::vader(),
            &ppo,
            PPO_UPDATES,
            42,
            &out.join("ppo-gt"),
            &device,
        )?;
        report("PPO-GT", &gt.metrics_path, t.elapsed().as_secs_f64())?;
        plot_curves(&gt.metrics_path, out.join("ppo-gt"), &PPO_CURVES)?;
        let gt_comparison =
            task.compare(&gt.model.valid(), &inference, &eval_prefixes, 77, &device)?;
        println!(
            "PPO-GT on the held-out prefixes: gold reward {:+.3} (reference {:+.3}), win rate {:.1}%, KL {:.2} nats",
            gt_comparison.policy_reward,
            gt_comparison.reference_reward,
            100.0 * gt_comparison.win_rate,
            gt_comparison.kl
        );
        std::fs::write(
            out.join("summary.json"),
            serde_json::json!({
                "prefixes": comparison.prefixes,
                "reference_reward": comparison.reference_reward,
                "policy_reward": comparison.policy_reward,
                "win_rate": comparison.win_rate,
                "kl": comparison.kl,
                "kl_estimator": "k1 on policy samples, summed over tokens",
                "kl_coef": KL_COEF,
                "reward_model_accuracy": accuracy,
                "ppo_updates": outcome.updates,
                "ppo_seconds": ppo_seconds,
                "rollout_tokens_per_sec": rollout_tokens_per_sec,
                "ppo_gt": {
                    "policy_reward": gt_comparison.policy_reward,
                    "win_rate": gt_comparison.win_rate,
                    "kl": gt_comparison.kl,
                },
            })
            .to_string(),
        )?;

        section("Done");
        let mut plots = vec![out.join("summary.svg")];
        plots.extend(curves);
        print_done(&plots, started);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    dispatch_train(DeviceKind::from_features(), PpoSentiment)
}
