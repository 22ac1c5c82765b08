//! # A Bradley-Terry reward model from preference pairs
//!
//! The first stage of RLHF, through burnish's Rust API (the function `burnish train reward`
//! calls):
//!
//! 1. make a pairwise Parquet file: LLaMA-Factory's 300-pair English DPO sample, converted with
//!    `burnish::data::convert` and flattened to plain text;
//! 2. put a fresh scalar head on a causal LM checkpoint and train it with the Bradley-Terry loss
//!    `-log sigmoid(r(chosen) - r(rejected))`, holding out 20% of the pairs by a stable hash;
//! 3. report held-out accuracy (how often the chosen response gets the larger reward) before
//!    and after training, and how far it is from chance;
//! 4. export the reward model as a Hugging Face folder (with `score.weight`), load it back and
//!    score every pair of the file with `evaluate_file` (what `burnish eval` prints).
//!
//! The checkpoint is the test suite's tiny random GPT-2 (2 layers, 32 wide, 64 positions), so the
//! example runs in seconds on a CPU and what it can learn is limited: read the numbers with that
//! in mind. Run it with `cargo run --release --example reward_model` (`--features wgpu` or
//! `cuda` for a GPU). Everything it writes goes to `runs/examples/reward_model/`.

mod common;

use std::path::PathBuf;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::losses::RewardLoss;
use burnish::model::ModelAutodiffBackend;
use burnish::train::config::TrainingConfig;
use burnish::train::metrics_log::EvalRecord;
use burnish::train::pipeline::{EvalLoss, PrecomputeOptions, evaluate_file, run_reward};
use common::{make_pairs, rerun_options, section};

const MODEL: &str = "crates/burnish-model/tests/fixtures/hf/gpt2";
const OUT: &str = "runs/examples/reward_model";
/// The checkpoint has 64 positions: prompt + response must fit.
const MAX_LENGTH: usize = 64;
const MAX_PROMPT_LENGTH: usize = 32;

fn accuracy(e: &EvalRecord) -> f64 {
    e.metrics.get("accuracy").unwrap_or(f64::NAN)
}

fn show_eval(when: &str, e: &EvalRecord) {
    println!(
        "{when:>16}: loss {:.4}, accuracy {:.3}, mean margin r(chosen) - r(rejected) {:+.3} ({} held-out pairs)",
        e.loss,
        accuracy(e),
        e.metrics.get("margin").unwrap_or(f64::NAN),
        e.examples
    );
}

struct Example;

impl TrainJob for Example {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let out = PathBuf::from(OUT);
        if out.exists() {
            std::fs::remove_dir_all(&out)?;
        }
        std::fs::create_dir_all(&out)?;

        section("1. A pairwise Parquet file");
        let pairs = make_pairs(&out)?;

        section("2. Train a reward head with the Bradley-Terry loss");
        let config = TrainingConfig::from_toml_str(
            &format!(
                r#"
                [model]
                path = {MODEL:?}
                [data]
                train = {:?}
                eval_fraction = 0.2
                max_length = {MAX_LENGTH}
                max_prompt_length = {MAX_PROMPT_LENGTH}
                [optimizer]
                lr = 1e-3
                weight_decay = 0.01
                [schedule]
                warmup_steps = 5
                decay = "cosine"
                [train]
                epochs = 4
                batch_size = 8
                eval_every = 30
                checkpoint_every = 0
                seed = 1
                output_dir = {:?}
                [loss]
                loss_type = "bradley_terry"
                "#,
                pairs.display().to_string(),
                out.join("run").display().to_string()
            ),
            "reward_model",
            &[] as &[&str],
        )?;
        println!(
            "a fresh scalar head on {MODEL}, all weights trained: lr 1e-3 (cosine), 4 epochs of batches of 8"
        );
        let started = std::time::Instant::now();
        let summary = run_reward::<B>(&config, &rerun_options(), &device)?;
        let d = &summary.data;
        println!(
            "data: {} read = {} used ({} train + {} held out) + {} rejected",
            d.read, d.used, d.train, d.eval, d.rejected
        );
        println!(
            "{} steps in {:.1}s",
            summary.outcome.steps,
            started.elapsed().as_secs_f64()
        );

        section("3. Held-out accuracy before and after");
        if let (Some(b), Some(a)) = (&summary.initial_eval, &summary.outcome.last_eval) {
            show_eval("before training", b);
            show_eval("after training", a);
            let n = a.examples as f64;
            let se = (0.25 / n).sqrt();
            let z = (accuracy(a) - 0.5) / se;
            println!(
                "reading: chance is 0.5 and one binomial standard error on {n} pairs is {se:.3}; the \
                 trained model is {z:+.1} standard errors from chance{}.",
                if z.abs() < 2.0 {
                    ", i.e. no reliable preference signal was learned by this tiny random model"
                } else {
                    ", a weak signal at best from a tiny random model"
                }
            );
            if a.loss > b.loss {
                println!(
                    "the held-out loss rose ({:.4} -> {:.4}) while the training loss fell: the model \
                     overfits its {} training pairs (more data or fewer epochs would be the fix).",
                    b.loss, a.loss, d.train
                );
            }
        }
        if let Some(last) = std::fs::read_to_string(&summary.outcome.metrics_path)?
            .lines()
            .rfind(|l| l.contains("\"train\""))
        {
            let v: serde_json::Value = serde_json::from_str(last)?;
            println!(
                "last training batch: loss {:.4}, accuracy {:.3} (the fit to the training pairs)",
                v["loss"].as_f64().unwrap_or(f64::NAN),
                v["accuracy"].as_f64().unwrap_or(f64::NAN)
            );
        }

        section("4. Export, reload, score the whole file");
        let final_dir = summary.final_dir.expect("the run finished");
        println!("reward model written to {}", final_dir.display());
        let options = PrecomputeOptions {
            tokenizer: None,
            max_prompt_length: MAX_PROMPT_LENGTH,
            max_length: MAX_LENGTH,
            batch_size: 16,
            progress: false,
            ..PrecomputeOptions::default()
        };
        let all = evaluate_file::<B>(
            &final_dir,
            None,
            &pairs,
            &burnish::data::convert::default_rejects_path(&pairs),
            Some(EvalLoss::Reward(RewardLoss::default())),
            &options,
            &device,
        )?;
        println!(
            "all {} pairs (train and held out together): loss {:.4}, accuracy {:.3}",
            all.examples,
            all.loss,
            all.metrics.get("accuracy").copied().unwrap_or(f64::NAN)
        );
        for plot in &summary.plots {
            println!("plot: {}", plot.display());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let kind = DeviceKind::from_features();
    println!("# A Bradley-Terry reward model (backend: {kind})");
    dispatch_train(kind, Example)
}
