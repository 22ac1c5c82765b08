//! # DPO from a Hugging Face checkpoint and a pairwise Parquet file
//!
//! The everyday DPO workflow, through burnish's Rust API (the same functions `burnish train dpo`
//! and `burnish precompute-ref` call):
//!
//! 1. make a pairwise Parquet file: here, LLaMA-Factory's 300-pair English DPO sample converted
//!    with `burnish::data::convert` and flattened to plain text;
//! 2. cache the reference model's log-probs in the file (`ref_chosen_logp` / `ref_rejected_logp`),
//!    so training holds one model, not two;
//! 3. train DPO from the checkpoint, holding out 10% of the pairs by a stable hash;
//! 4. export the policy as a Hugging Face folder, load it back and score a held-out pair.
//!
//! The checkpoint is the test suite's tiny random GPT-2 (2 layers, 32 wide, 64 positions) so the
//! example runs in seconds on a CPU; point `MODEL` at a real folder for a real run. Run it with
//! `cargo run --release --example dpo_from_parquet` (`--features wgpu` or `cuda` for a GPU).
//! Everything it writes goes to `runs/examples/dpo_from_parquet/`.

mod common;

use std::path::{Path, PathBuf};

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::burn::tensor::{Int, Tensor, TensorData};
use burnish::data::ReaderBuilder;
use burnish::model::ModelAutodiffBackend;
use burnish::model::{CausalLm, TextTokenizer};
use burnish::train::config::TrainingConfig;
use burnish::train::metrics_log::EvalRecord;
use burnish::train::pipeline::{PrecomputeOptions, precompute_reference_file, run_dpo};
use common::{make_pairs, mean_tokens_per_sec, rerun_options, section};

const MODEL: &str = "crates/burnish-model/tests/fixtures/hf/gpt2";
const OUT: &str = "runs/examples/dpo_from_parquet";
/// The checkpoint has 64 positions: prompt + completion must fit.
const MAX_LENGTH: usize = 64;
const MAX_PROMPT_LENGTH: usize = 32;

fn show_eval(when: &str, e: &EvalRecord) {
    let m = |k: &str| e.metrics.get(k).unwrap_or(f64::NAN);
    println!(
        "{when:>16}: DPO loss {:.4}, reward accuracy {:.3}, reward margin {:+.4} ({} held-out pairs)",
        e.loss,
        m("rewards/accuracies"),
        m("rewards/margins"),
        e.examples
    );
}

/// Summed log-prob of `completion` after `prompt` under `model`.
fn score<B: burnish::model::ModelBackend>(
    model: &CausalLm<B>,
    tokenizer: &TextTokenizer,
    prompt: &str,
    completion: &str,
    device: &B::Device,
) -> anyhow::Result<f64> {
    // Keep the end of the prompt and the start of the completion, as training did.
    let row = tokenizer.prompt_completion(prompt, completion)?;
    let keep_from = row.prompt_len.saturating_sub(MAX_PROMPT_LENGTH);
    let ids: Vec<i64> = row.ids[keep_from..]
        .iter()
        .take(MAX_LENGTH)
        .map(|&i| i as i64)
        .collect();
    let prompt_len = row.prompt_len - keep_from;
    let n = ids.len();
    let completion: Vec<i64> = (0..n).map(|i| i64::from(i >= prompt_len)).collect();
    let t = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, [1, n]), device);
    let scored = model.completion_logps(t(ids), t(vec![1; n]), t(completion));
    let logps = scored.logps.into_data().convert::<f64>();
    Ok(logps.to_vec::<f64>().expect("f64 data")[0])
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

        section("2. Cache the reference log-probs in the file");
        let with_ref = out.join("pairs_ref.parquet");
        let options = PrecomputeOptions {
            tokenizer: None,
            max_prompt_length: MAX_PROMPT_LENGTH,
            max_length: MAX_LENGTH,
            batch_size: 16,
            progress: true,
            ..PrecomputeOptions::default()
        };
        let started = std::time::Instant::now();
        let report = precompute_reference_file::<B::InnerBackend>(
            Path::new(MODEL),
            &pairs,
            &with_ref,
            &options,
            &device,
        )?;
        println!(
            "{} pairs scored by the reference ({MODEL}) in {:.1}s, {} could not be tokenized",
            report.scored,
            started.elapsed().as_secs_f64(),
            report.rejected
        );
        let first = ReaderBuilder::new()
            .path(&with_ref)
            .pairs()?
            .next()
            .transpose()?
            .expect("a row");
        println!(
            "first pair: ref_chosen_logp {:.2}, ref_rejected_logp {:.2} (summed over the kept tokens)",
            first.ref_chosen_logp.unwrap_or(f32::NAN),
            first.ref_rejected_logp.unwrap_or(f32::NAN)
        );

        section("3. Train DPO");
        let config = TrainingConfig::from_toml_str(
            &format!(
                r#"
                [model]
                path = {MODEL:?}
                [data]
                train = {:?}
                eval_fraction = 0.1
                max_length = {MAX_LENGTH}
                max_prompt_length = {MAX_PROMPT_LENGTH}
                [optimizer]
                lr = 5e-4
                [schedule]
                warmup_steps = 5
                decay = "cosine"
                [train]
                epochs = 3
                batch_size = 8
                eval_every = 25
                checkpoint_every = 0
                seed = 1
                output_dir = {:?}
                [loss]
                loss_type = "sigmoid"
                beta = 0.1
                "#,
                with_ref.display().to_string(),
                out.join("run").display().to_string()
            ),
            "dpo_from_parquet",
            &[] as &[&str],
        )?;
        println!(
            "sigmoid DPO, beta 0.1, lr 5e-4 (cosine), 3 epochs of batches of 8; every pair carries \
             its reference log-probs, so no reference model is loaded"
        );
        let started = std::time::Instant::now();
        let summary = run_dpo::<B>(&config, &rerun_options(), &device)?;
        let seconds = started.elapsed().as_secs_f64();
        let d = &summary.data;
        println!(
            "data: {} read = {} used ({} train + {} held out) + {} rejected",
            d.read, d.used, d.train, d.eval, d.rejected
        );
        let tokens_per_sec = mean_tokens_per_sec(&summary.outcome.metrics_path)?;
        println!(
            "{} steps in {seconds:.1}s, {:.0} tokens/s on average",
            summary.outcome.steps, tokens_per_sec
        );

        section("4. What changed on the held-out pairs");
        let before = summary.initial_eval.as_ref();
        let after = summary.outcome.last_eval.as_ref();
        if let (Some(b), Some(a)) = (before, after) {
            show_eval("before training", b);
            show_eval("after training", a);
            let n = a.examples as f64;
            let se = (0.25 / n).sqrt();
            let z = (a.metrics.get("rewards/accuracies").unwrap_or(0.0) - 0.5) / se;
            println!(
                "reading: before the first step the policy is the reference, every implicit reward is \
                 0 and the loss is ln 2 = 0.693; the 'before' accuracy only counts float-noise ties, \
                 so compare the 'after' accuracy with chance (0.5): on {n} held-out pairs one \
                 standard error is {se:.3} and the trained policy is {z:+.1} of them away{}. The \
                 checkpoint is random and {} training pairs are few: what it picks up is most likely surface \
                 features of the truncated responses (their first tokens), not quality.",
                if z.abs() < 2.0 {
                    ", i.e. within noise"
                } else {
                    ""
                },
                d.train,
            );
        }

        section("5. Export and reload");
        let final_dir = summary.final_dir.expect("the run finished");
        println!(
            "policy written to {} (config.json, model.safetensors, tokenizer.json)",
            final_dir.display()
        );
        let policy = CausalLm::<B::InnerBackend>::from_pretrained(&final_dir, &device)?;
        let start = CausalLm::<B::InnerBackend>::from_pretrained(MODEL, &device)?;
        let tokenizer = TextTokenizer::from_model_dir(&final_dir)?;
        let p = first;
        let (prompt, chosen, rejected) = (
            p.prompt.to_display_text(),
            p.chosen.to_display_text(),
            p.rejected.to_display_text(),
        );
        for (name, model) in [("start", &start), ("policy", &policy)] {
            let c = score(model, &tokenizer, &prompt, &chosen, &device)?;
            let r = score(model, &tokenizer, &prompt, &rejected, &device)?;
            println!(
                "{name:>7}: log p(chosen) {c:8.2}, log p(rejected) {r:8.2}, chosen - rejected {:+.2}",
                c - r
            );
        }
        for plot in &summary.plots {
            println!("plot: {}", plot.display());
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let kind = DeviceKind::from_features();
    println!("# DPO from a checkpoint and a Parquet file (backend: {kind})");
    dispatch_train(kind, Example)
}
