//! W1: the DPO training step of `burnish train dpo` on GPT-2 small (or a SmolLM2-135M-shaped
//! Llama), randomly initialised, on the LLaMA-Factory English pairs — the workload of
//! `shared/bench/README.md`, built from the copies of the pairs and the GPT-2 tokenizer that the
//! data crate's tests ship.
//!
//! It first times the reference pass (`precompute_reference` on the non-autodiff backend, as
//! `burnish train dpo` runs it before step 1), then trains with the one training loop
//! (`burnish_train::trainer::train`) for `--steps` optimizer steps of 4 pairs, and prints one
//! JSON line: tokens/s (real tokens, the prompt counted once for chosen and once for rejected,
//! median over the steps after the first), seconds per step, peak RSS and CPU use.
//!
//! ```sh
//! cargo bench --bench w1_dpo                          # GPT-2 small, 8 steps
//! cargo bench --bench w1_dpo -- --model smollm2       # Llama shape of SmolLM2-135M
//! cargo bench --bench w1_dpo -- --quick               # a tiny model, 3 steps: a smoke run
//! cargo bench --bench w1_dpo -- --peers 2             # 2 data-parallel peers x 2 pairs
//! ```
//! With `--peers N` the same 4 pairs per step are split over N data-parallel peers sharing the
//! CPU (burn's collective); the line then also gives rank 0's median seconds per step inside
//! the collectives (`all_reduce_seconds`) and the bytes of gradient each peer sends.
//! `scripts/w1_vs_trl.sh` runs this and TRL's reference script side by side.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::backend::{Autodiff, Flex};
use burn::module::{AutodiffModule, Module};
use burnish::data::{Collator, TokenizedPair, load_tokenizer};
use burnish::model::{CausalLm, ModelConfig, Precision};
use burnish::train::config::TrainingConfig;
use burnish::train::objectives::{PreferenceObjective, precompute_reference, reference_batch_size};
use burnish::train::trainer::{RunOptions, train};
use serde_json::{Value, json};

type B = Autodiff<Flex>;

/// W1's truncation: the prompt keeps its last 128 tokens, each completion its first 127 + EOS.
const MAX_PROMPT: usize = 128;
const MAX_COMPLETION: usize = 127;
const GPT2_EOS: u32 = 50256;
const PAIRS_PER_STEP: usize = 4;

struct Args {
    model: String,
    steps: usize,
    quick: bool,
    peers: usize,
    precision: Precision,
}

fn parse_args() -> Args {
    let mut args = Args {
        model: "gpt2".into(),
        steps: 8,
        quick: false,
        peers: 1,
        precision: Precision::Fp32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--model" => args.model = it.next().expect("--model NAME"),
            "--steps" => args.steps = it.next().and_then(|s| s.parse().ok()).expect("--steps N"),
            "--quick" => args.quick = true,
            "--precision" => {
                args.precision = match it.next().as_deref() {
                    Some("bf16") => Precision::Bf16,
                    Some("fp32") => Precision::Fp32,
                    _ => panic!("--precision fp32|bf16"),
                }
            }
            "--peers" => {
                args.peers = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .filter(|p| PAIRS_PER_STEP.is_multiple_of(*p))
                    .expect("--peers N, a divisor of 4")
            }
            // cargo bench passes --bench; anything else is a mistake worth saying.
            "--bench" => {}
            other => panic!(
                "unknown argument {other} (expected --model gpt2|smollm2, --steps N, --quick, --peers N)"
            ),
        }
    }
    if args.quick {
        args.steps = args.steps.min(3);
    }
    args
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/burnish-data/tests/fixtures")
        .join(name)
}

/// The model under test: GPT-2 small, SmolLM2-135M's Llama shape, or a tiny GPT-2 for `--quick`.
fn model_config(name: &str, quick: bool) -> ModelConfig {
    if quick {
        return ModelConfig::gpt2(50257, 64, 2, 4, 512);
    }
    match name {
        "gpt2" => ModelConfig::gpt2(50257, 768, 12, 12, 1024),
        "smollm2" => ModelConfig::from_json(
            json!({
                "model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                "num_key_value_heads": 3, "max_position_embeddings": 2048, "rms_norm_eps": 1e-5,
                "rope_theta": 100000.0, "tie_word_embeddings": true, "hidden_act": "silu"
            }),
            Path::new("(SmolLM2-135M shape)"),
        )
        .expect("valid llama config"),
        other => panic!("unknown model {other} (expected gpt2 or smollm2)"),
    }
}

/// The LLaMA-Factory pairs as W1 renders them: "User: ...\n" / "Assistant: ...\n" turns then
/// "Assistant:", completions " " + answer, ids folded into the model's vocabulary.
fn w1_pairs(vocab: usize) -> Vec<TokenizedPair> {
    let tokenizer = load_tokenizer(fixture("gpt2_tokenizer.json.gz")).expect("tokenizer");
    let raw = std::fs::read_to_string(fixture("llamafactory_dpo_en_demo.json")).expect("pairs");
    let rows: Vec<Value> = serde_json::from_str(&raw).expect("json");
    let encode = |text: &str| -> Vec<u32> {
        let ids = tokenizer
            .encode(text, false)
            .expect("encode")
            .get_ids()
            .to_vec();
        ids.into_iter().map(|id| id % vocab as u32).collect()
    };
    rows.iter()
        .map(|row| {
            let mut prompt = String::new();
            for turn in row["conversations"].as_array().expect("conversations") {
                let who = if turn["from"] == "human" {
                    "User: "
                } else {
                    "Assistant: "
                };
                prompt.push_str(who);
                prompt.push_str(turn["value"].as_str().unwrap_or_default());
                prompt.push('\n');
            }
            prompt.push_str("Assistant:");
            let mut prompt_ids = encode(&prompt);
            let cut = prompt_ids.len().saturating_sub(MAX_PROMPT);
            prompt_ids.drain(..cut);
            let completion = |key: &str| {
                let mut ids = encode(&format!(
                    " {}",
                    row[key]["value"].as_str().unwrap_or_default()
                ));
                ids.truncate(MAX_COMPLETION);
                ids.push(GPT2_EOS % vocab as u32);
                ids
            };
            TokenizedPair {
                prompt_ids,
                chosen_ids: completion("chosen"),
                rejected_ids: completion("rejected"),
                margin: None,
                ref_chosen_logp: None,
                ref_rejected_logp: None,
            }
        })
        .collect()
}

/// Real tokens of a pair as TRL counts them: the prompt once for chosen, once for rejected.
fn pair_tokens(p: &TokenizedPair) -> usize {
    2 * p.prompt_ids.len() + p.chosen_ids.len() + p.rejected_ids.len()
}

/// (user + system CPU seconds of this process, peak RSS in MB).
fn cpu_and_peak_rss() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let hwm_kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, hwm_kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args = parse_args();
    let device = Default::default();
    let config = model_config(&args.model, args.quick);
    let all = w1_pairs(config.vocab_size);
    let n = args.steps * PAIRS_PER_STEP;
    let mut pairs: Vec<TokenizedPair> = all.iter().cycle().take(n).cloned().collect();
    let collator = Collator::new(GPT2_EOS % config.vocab_size as u32);

    let policy = CausalLm::<B>::init(&config, &device).with_precision(args.precision);
    let parameters = policy.num_params();
    let reference: CausalLm<Flex> = policy.valid();

    // The reference pass, as `burnish train dpo` runs it before the first step.
    let (cpu0, _) = cpu_and_peak_rss();
    let started = Instant::now();
    let batch = reference_batch_size(PAIRS_PER_STEP);
    precompute_reference(&reference, &mut pairs, &collator, batch, &device, None);
    let ref_seconds = started.elapsed().as_secs_f64();
    let (cpu1, _) = cpu_and_peak_rss();
    drop(reference);
    let total_tokens: usize = pairs.iter().map(pair_tokens).sum();

    let out = tempfile::tempdir().expect("temp dir");
    let mut run = TrainingConfig::default();
    run.train.max_steps = Some(args.steps as u64);
    run.train.batch_size = PAIRS_PER_STEP / args.peers;
    run.distributed.devices = args.peers;
    run.train.eval_every = 0;
    run.train.checkpoint_every = 0;
    run.train.output_dir = out.path().to_path_buf();
    // W1 steps through the pairs in order, as TRL's precompute mode does.
    let objective = PreferenceObjective::<B> {
        train: pairs,
        eval: Vec::new(),
        collator,
        loss: Default::default(),
        reference: None,
        device,
    };
    let options = RunOptions {
        quiet: true,
        no_checkpoints: true,
        ..RunOptions::default()
    };
    let started = Instant::now();
    train(policy, &objective, &run, &options, &device).expect("training");
    let train_seconds = started.elapsed().as_secs_f64();
    let (cpu2, peak_rss_mb) = cpu_and_peak_rss();

    let log = std::fs::read_to_string(out.path().join("metrics.jsonl")).expect("metrics");
    let steps: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("tokens_per_sec").is_some())
        .collect();
    let tps: Vec<f64> = steps
        .iter()
        .skip(1)
        .filter_map(|v| v["tokens_per_sec"].as_f64())
        .collect();
    let tokens_per_step = total_tokens as f64 / args.steps as f64;
    let all_reduce: Vec<f64> = steps
        .iter()
        .skip(1)
        .filter_map(|v| v["dp/all_reduce_seconds"].as_f64())
        .collect();
    println!(
        "{}",
        json!({
            "impl": "burnish",
            "workload": "W1",
            "model": if args.quick { "quick" } else { args.model.as_str() },
            "backend": "flex",
            "precision": args.precision.name(),
            "threads": rayon::current_num_threads(),
            "steps": steps.len(),
            "tokens_per_step": tokens_per_step,
            "tokens_per_s": median(tps.clone()),
            "step_s_median": tokens_per_step / median(tps),
            "train_wall_s": train_seconds,
            "train_cpu_util": (cpu2 - cpu1) / train_seconds,
            "ref_pass_tokens_per_s": total_tokens as f64 / ref_seconds,
            "ref_pass_s": ref_seconds,
            "ref_pass_cpu_util": (cpu1 - cpu0) / ref_seconds,
            "peak_rss_mb": peak_rss_mb,
            "peers": args.peers,
            "all_reduce_s_median": median(all_reduce),
            "gradient_mb_per_peer": parameters as f64 * 4.0 / 1e6,
        })
    );
}
