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

use std::path::{Path, PathBuf};
use std::time::Instant;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::burn::module::AutodiffModule;
use burnish::data::{Collator, ReaderBuilder, TokenizedPair, TokenizedPromptCompletion};
use burnish::losses::PreferenceLoss;
use burnish::model::{CausalLm, ModelConfig, SamplingConfig, TextTokenizer};
use burnish::model::{ModelAutodiffBackend, ModelBackend};
use burnish::train::batch::TokenTensors;
use burnish::train::config::TrainingConfig;
use burnish::train::objectives::{PreferenceObjective, SftObjective};
use burnish::train::plot::{QuickstartSummary, plot_quickstart_summary};
use burnish::train::sentiment::compound;
use burnish::train::trainer::{RunOptions, evaluate, plot_run, train};

/// Tokens of review given as the prompt.
const PREFIX_TOKENS: usize = 8;
/// Longest review excerpt the SFT model sees.
const SFT_TOKENS: usize = 64;
/// Tokens sampled after a prefix.
const SAMPLE_TOKENS: usize = 32;
/// Review prefixes turned into preference pairs.
const PAIR_PREFIXES: usize = 640;
/// Held-out prefixes for the final comparison.
const EVAL_PREFIXES: usize = 256;
const OUT: &str = "runs/quickstart";

fn section(title: &str) {
    println!("\n## {title}");
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn read_reviews(path: &str) -> anyhow::Result<Vec<String>> {
    ReaderBuilder::new()
        .path(path)
        .texts()?
        .map(|row| Ok(row?.text))
        .collect()
}

fn config(out: &Path, toml: &str) -> anyhow::Result<TrainingConfig> {
    let text = format!(
        "{toml}\n[train]\noutput_dir = {:?}\n",
        out.display().to_string()
    );
    Ok(TrainingConfig::from_toml_str(
        &text,
        "quickstart",
        &[] as &[&str],
    )?)
}

/// Samples one continuation per prefix from `model`, `batch` prefixes at a time.
fn sample<B: ModelBackend>(
    model: &CausalLm<B>,
    prefixes: &[Vec<u32>],
    eos: u32,
    seed: u64,
    device: &B::Device,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(prefixes.len());
    for (i, chunk) in prefixes.chunks(64).enumerate() {
        let sampling = SamplingConfig {
            max_new_tokens: SAMPLE_TOKENS,
            temperature: 1.0,
            seed: seed + i as u64,
            stop_token: Some(eos),
            ..Default::default()
        };
        out.extend(model.generate(chunk, &sampling, device)?);
    }
    Ok(out)
}

/// Summed log-probs of each completion after its prefix under `model`.
fn completion_logps<B: ModelBackend>(
    model: &CausalLm<B>,
    prefixes: &[Vec<u32>],
    completions: &[Vec<u32>],
    pad: u32,
    device: &B::Device,
) -> Vec<f64> {
    let rows: Vec<TokenizedPromptCompletion> = prefixes
        .iter()
        .zip(completions)
        .map(|(p, c)| TokenizedPromptCompletion {
            prompt_ids: p.clone(),
            completion_ids: c.clone(),
        })
        .collect();
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(64) {
        let batch = Collator::new(pad).collate_prompt_completions(chunk);
        let t = TokenTensors::<B>::from_sequences(&batch, device);
        let scored = model.completion_logps(t.input_ids, t.attention_mask, t.completion_mask);
        out.extend(
            scored
                .logps
                .into_data()
                .convert::<f64>()
                .into_vec::<f64>()
                .expect("f64"),
        );
    }
    out
}

struct Quickstart;

impl TrainJob for Quickstart {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let started = Instant::now();
        let out = PathBuf::from(OUT);
        std::fs::create_dir_all(&out)?;
        B::seed(&device, 2024);

        section("1. Data and tokenizer");
        let reviews = read_reviews("datasets/imdb/train.parquet")?;
        let held_out = read_reviews("datasets/imdb/test.parquet")?;
        println!(
            "{} training reviews, {} held-out reviews (datasets/imdb)",
            reviews.len(),
            held_out.len()
        );
        let tokenizer = TextTokenizer::train_byte_level_bpe(
            reviews.iter().map(String::as_str),
            2048,
            &["<|endoftext|>"],
        )?;
        let eos = tokenizer
            .token_id("<|endoftext|>")
            .expect("the special token was added");
        tokenizer.save(out.join("tokenizer.json"))?;
        println!(
            "trained a byte-level BPE of {} tokens in {:.1}s",
            tokenizer.vocab_size(),
            started.elapsed().as_secs_f64()
        );
        let encode = |texts: &[String]| -> anyhow::Result<Vec<Vec<u32>>> {
            texts.iter().map(|t| Ok(tokenizer.encode(t)?)).collect()
        };
        let train_ids = encode(&reviews)?;
        let eval_ids = encode(&held_out)?;

        section("2. SFT: the reference policy");
        let sft_rows = |ids: &[Vec<u32>]| -> Vec<TokenizedPromptCompletion> {
            ids.iter()
                .filter(|ids| ids.len() > PREFIX_TOKENS + 4)
                .map(|ids| {
                    let end = ids.len().min(SFT_TOKENS);
                    TokenizedPromptCompletion {
                        prompt_ids: ids[..PREFIX_TOKENS].to_vec(),
                        completion_ids: ids[PREFIX_TOKENS..end].to_vec(),
                    }
                })
                .collect()
        };
        let mut model_config = ModelConfig::gpt2(tokenizer.vocab_size(), 128, 3, 4, 128);
        model_config.eos_token_id = Some(eos);
        let sft = SftObjective::<B> {
            train: sft_rows(&train_ids),
            eval: sft_rows(&eval_ids[..100]),
            collator: Collator::new(eos),
            device: device.clone(),
        };
        let sft_config = config(
            &out.join("sft"),
            "[optimizer]\nlr = 3e-3\nweight_decay = 0.01\n[schedule]\nwarmup_steps = 30\ndecay = \"cosine\"\nmin_lr_ratio = 0.1\n",
        )?;
        let mut sft_config = sft_config;
        sft_config.train.max_steps = Some(500);
        sft_config.train.batch_size = 16;
        sft_config.train.eval_every = 250;
        sft_config.train.checkpoint_every = 0;
        let policy = CausalLm::<B>::init(&model_config, &device);
        let t = Instant::now();
        let sft_run = train(policy, &sft, &sft_config, &RunOptions::default(), &device)?;
        let sft_eval = sft_run.last_eval.as_ref().map_or(f64::NAN, |e| e.loss);
        println!(
            "SFT: {} steps in {:.0}s, held-out NLL {sft_eval:.3} nats/token (perplexity {:.1})",
            sft_run.steps,
            t.elapsed().as_secs_f64(),
            sft_eval.exp()
        );
        let reference = sft_run.model;
        reference.save_pretrained(out.join("sft-model"))?;
        tokenizer.save(out.join("sft-model/tokenizer.json"))?;

        section("3. Preference pairs labelled by the gold reward (VADER)");
        let prefixes: Vec<Vec<u32>> = train_ids
            .iter()
            .filter(|ids| ids.len() > PREFIX_TOKENS)
            .take(PAIR_PREFIXES)
            .map(|ids| ids[..PREFIX_TOKENS].to_vec())
            .collect();
        let inference = reference.valid();
        let t = Instant::now();
        let first = sample(&inference, &prefixes, eos, 1, &device)?;
        let second = sample(&inference, &prefixes, eos, 10_000, &device)?;
        let mut pairs = Vec::new();
        let mut ties = 0;
        for ((prefix, a), b) in prefixes.iter().zip(first).zip(second) {
            let (sa, sb) = (
                compound(&tokenizer.decode(&a)?),
                compound(&tokenizer.decode(&b)?),
            );
            if sa == sb {
                ties += 1;
                continue;
            }
            let (chosen_ids, rejected_ids) = if sa > sb { (a, b) } else { (b, a) };
            pairs.push(TokenizedPair {
                prompt_ids: prefix.clone(),
                chosen_ids,
                rejected_ids,
                margin: None,
                ref_chosen_logp: None,
                ref_rejected_logp: None,
            });
        }
        println!(
            "sampled 2 x {} continuations in {:.0}s: {} pairs, {ties} prefixes skipped because both samples scored the same (usually 0: no sentiment words)",
            prefixes.len(),
            t.elapsed().as_secs_f64(),
            pairs.len()
        );

        section("4. DPO from the SFT model");
        let eval_pairs = pairs.split_off(pairs.len() - pairs.len() / 10);
        let dpo = PreferenceObjective::<B> {
            train: pairs,
            eval: eval_pairs,
            collator: Collator::new(eos),
            loss: PreferenceLoss::default(),
            reference: Some(reference.valid()),
            device: device.clone(),
        };
        let mut dpo_config = config(
            &out.join("dpo"),
            "[optimizer]\nlr = 5e-4\n[schedule]\nwarmup_steps = 10\ndecay = \"linear\"\n[loss]\nloss_type = \"sigmoid\"\nbeta = 0.1\n",
        )?;
        dpo_config.train.epochs = 3;
        dpo_config.train.batch_size = 16;
        dpo_config.train.eval_every = 25;
        dpo_config.train.checkpoint_every = 0;
        let before = evaluate(&reference, &dpo, 32)?.expect("held-out pairs");
        let t = Instant::now();
        let dpo_run = train(
            reference.clone(),
            &dpo,
            &dpo_config,
            &RunOptions::default(),
            &device,
        )?;
        let after = dpo_run
            .last_eval
            .clone()
            .expect("evaluated at the last step");
        let records = burnish::train::metrics_log::read_metrics(&dpo_run.metrics_path)?;
        let speeds = burnish::train::metrics_log::series(&records, "train", "tokens_per_sec");
        let tokens_per_sec =
            speeds.iter().skip(1).map(|p| p.1).sum::<f64>() / (speeds.len().max(2) - 1) as f64;
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
        tokenizer.save(out.join("dpo-model/tokenizer.json"))?;

        section("5. Held-out comparison under the gold reward");
        let eval_prefixes: Vec<Vec<u32>> = eval_ids
            .iter()
            .filter(|ids| ids.len() > PREFIX_TOKENS)
            .take(EVAL_PREFIXES)
            .map(|ids| ids[..PREFIX_TOKENS].to_vec())
            .collect();
        let (policy, reference) = (policy.valid(), reference.valid());
        let policy_samples = sample(&policy, &eval_prefixes, eos, 77, &device)?;
        let reference_samples = sample(&reference, &eval_prefixes, eos, 77, &device)?;
        let score = |samples: &[Vec<u32>]| -> anyhow::Result<Vec<f64>> {
            samples
                .iter()
                .map(|s| Ok(compound(&tokenizer.decode(s)?)))
                .collect()
        };
        let (policy_scores, reference_scores) =
            (score(&policy_samples)?, score(&reference_samples)?);
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let wins: f64 = policy_scores
            .iter()
            .zip(&reference_scores)
            .map(|(p, r)| {
                if p > r {
                    1.0
                } else if p == r {
                    0.5
                } else {
                    0.0
                }
            })
            .sum();
        let win_rate = wins / policy_scores.len() as f64;
        // KL(policy || reference) per sequence, estimated on the policy's own samples.
        let lp_policy = completion_logps(&policy, &eval_prefixes, &policy_samples, eos, &device);
        let lp_reference =
            completion_logps(&reference, &eval_prefixes, &policy_samples, eos, &device);
        let kl = mean(
            &lp_policy
                .iter()
                .zip(&lp_reference)
                .map(|(p, r)| p - r)
                .collect::<Vec<_>>(),
        );
        let summary = QuickstartSummary {
            reference_reward: mean(&reference_scores),
            policy_reward: mean(&policy_scores),
            win_rate,
            kl,
        };
        println!("held-out prefixes:           {}", eval_prefixes.len());
        println!(
            "mean gold reward, reference: {:+.3}",
            summary.reference_reward
        );
        println!("mean gold reward, policy:    {:+.3}", summary.policy_reward);
        println!(
            "policy win rate vs reference: {:.1}% (ties count half)",
            100.0 * win_rate
        );
        println!("KL(policy || reference):     {kl:.2} nats per completion");
        for (prefix, (p, r)) in eval_prefixes
            .iter()
            .zip(policy_samples.iter().zip(&reference_samples))
            .take(3)
        {
            println!("\n  prefix:    {}", tokenizer.decode(prefix)?);
            println!("  reference: {}", tokenizer.decode(r)?);
            println!("  policy:    {}", tokenizer.decode(p)?);
        }
        plot_quickstart_summary(&summary, out.join("summary.svg"))?;
        std::fs::write(
            out.join("summary.json"),
            serde_json::json!({
                "held_out_prefixes": eval_prefixes.len(),
                "reference_reward": summary.reference_reward,
                "policy_reward": summary.policy_reward,
                "win_rate": win_rate,
                "kl": kl,
                "dpo_tokens_per_sec": tokens_per_sec,
            })
            .to_string(),
        )?;

        section("Done");
        println!(
            "plots: {}/summary.svg and {}",
            OUT,
            curves
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "wall time {:.0}s, peak RSS {:.0} MB",
            started.elapsed().as_secs_f64(),
            peak_rss_mb()
        );
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    dispatch_train(DeviceKind::from_features(), Quickstart)
}
