//! # Quickstart: the DPO paper's controlled-sentiment experiment, small, on a CPU
//!
//! Rafailov et al. (2023) show DPO on a task with a known "gold" reward: continue an IMDb
//! review prefix *positively*. We run the same pipeline end to end in a few minutes:
//!
//! 1. train a byte-level BPE tokenizer on the shipped IMDb reviews;
//! 2. SFT a small GPT-2-style model on them: it becomes the reference policy;
//! 3. sample two continuations per review prefix and label the pair with VADER sentiment
//!    (the gold reward; it is never trained on, only used to say which sample is better);
//! 4. run DPO from the SFT model on those pairs;
//! 5. on held-out prefixes, compare reference and policy samples under the gold reward:
//!    mean reward, the policy's win rate, and KL(policy || reference).
//!
//! Run it with `cargo run --release --example quickstart` (add `--features wgpu` or `cuda` for a
//! GPU). Everything it writes goes to `runs/quickstart/`.

use std::path::PathBuf;
use std::time::Instant;

mod common;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::burn::module::AutodiffModule;
use burnish::data::Collator;
use burnish::losses::PreferenceLoss;
use burnish::model::ModelAutodiffBackend;
use burnish::sentiment_task::{SentimentTask, print_comparison, print_done};
use burnish::train::objectives::PreferenceObjective;
use burnish::train::plot::plot_quickstart_summary;
use burnish::train::trainer::{evaluate, plot_run};
use common::{mean_tokens_per_sec, section};

/// Review prefixes turned into preference pairs.
const PAIR_PREFIXES: usize = 640;
/// Held-out prefixes for the final comparison.
const EVAL_PREFIXES: usize = 256;
/// SFT steps of 16 reviews.
const SFT_STEPS: u64 = 500;
const OUT: &str = "runs/quickstart";

struct Quickstart;

impl TrainJob for Quickstart {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let started = Instant::now();
        let out = PathBuf::from(OUT);
        std::fs::create_dir_all(&out)?;
        B::seed(&device, 2024);

        section("1. Data and tokenizer");
        let task = SentimentTask::load(&out)?;
        println!(
            "{} training reviews, {} held-out reviews (datasets/imdb); a byte-level BPE of {} tokens trained in {:.1}s",
            task.train_ids.len(),
            task.eval_ids.len(),
            task.tokenizer.vocab_size(),
            started.elapsed().as_secs_f64()
        );
        let eos = task.eos;

        section("2. SFT: the reference policy");
        let t = Instant::now();
        let sft_run = task.train_reference::<B>(&out.join("sft"), SFT_STEPS, &device)?;
        let sft_eval = sft_run.last_eval.as_ref().map_or(f64::NAN, |e| e.loss);
        println!(
            "SFT: {} steps in {:.0}s, held-out NLL {sft_eval:.3} nats/token (perplexity {:.1})",
            sft_run.steps,
            t.elapsed().as_secs_f64(),
            sft_eval.exp()
        );
        let reference = sft_run.model;
        reference.save_pretrained(out.join("sft-model"))?;
        task.tokenizer.save(out.join("sft-model/tokenizer.json"))?;

        section("3. Preference pairs labelled by the gold reward (VADER)");
        let t = Instant::now();
        let (mut pairs, ties) =
            task.preference_pairs(&reference.valid(), PAIR_PREFIXES, &device)?;
        println!(
            "sampled 2 x {PAIR_PREFIXES} continuations in {:.0}s: {} pairs, {ties} prefixes skipped because both samples scored the same (usually 0: no sentiment words)",
            t.elapsed().as_secs_f64(),
            pairs.len()
        );

        section("4. DPO from the SFT model");
        let eval_pairs = pairs.split_off(pairs.len() - pairs.len() / 10);
        let dpo = PreferenceObjective::<B> {
            train: Vec::new(),
            eval: eval_pairs.clone(),
            collator: Collator::new(eos),
            loss: PreferenceLoss::default(),
            reference: Some(reference.valid()),
            device: device.clone(),
        };
        let before = evaluate(&reference, &dpo, 32)?.expect("held-out pairs");
        let t = Instant::now();
        let dpo_run = task.train_preference(
            &reference,
            pairs,
            eval_pairs,
            PreferenceLoss::default(),
            3,
            42,
            &out.join("dpo"),
            &device,
        )?;
        let after = dpo_run
            .last_eval
            .clone()
            .expect("evaluated at the last step");
        let tokens_per_sec = mean_tokens_per_sec(&dpo_run.metrics_path)?;
        println!(
            "DPO: {} steps in {:.0}s ({tokens_per_sec:.0} tokens/s); held-out DPO loss {:.3} -> {:.3}, reward accuracy {:.2} -> {:.2}",
            dpo_run.steps,
            t.elapsed().as_secs_f64(),
            before.0,
            after.loss,
            before.2.get("rewards/accuracies").unwrap_or(f64::NAN),
            after.metrics.get("rewards/accuracies").unwrap_or(f64::NAN),
        );
        let curves = plot_run(&dpo_run.metrics_path, &out.join("dpo"))?;
        let policy = dpo_run.model;
        policy.save_pretrained(out.join("dpo-model"))?;
        task.tokenizer.save(out.join("dpo-model/tokenizer.json"))?;

        section("5. Held-out comparison under the gold reward");
        let eval_prefixes = task.eval_prefixes(EVAL_PREFIXES);
        let comparison = task.compare(
            &policy.valid(),
            &reference.valid(),
            &eval_prefixes,
            77,
            &device,
        )?;
        print_comparison(&comparison);
        plot_quickstart_summary(&comparison.summary(), out.join("summary.svg"))?;
        std::fs::write(
            out.join("summary.json"),
            serde_json::json!({
                "held_out_prefixes": comparison.prefixes,
                "reference_reward": comparison.reference_reward,
                "policy_reward": comparison.policy_reward,
                "win_rate": comparison.win_rate,
                "kl": comparison.kl,
                "dpo_tokens_per_sec": tokens_per_sec,
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
    dispatch_train(DeviceKind::from_features(), Quickstart)
}
