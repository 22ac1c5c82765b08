//! Generation speed of [`CausalLm::generate`] with and without the KV cache.
//!
//! For each model (randomly initialised: speed does not depend on the weights' values) it
//! generates `new_tokens` tokens (default 128) greedily after a prompt of `prompt` tokens
//! (default 32), batch 1, once with `use_cache: true` (prefill once, then one token per step over
//! the cached keys and values) and once with `use_cache: false` (every step re-runs the whole
//! sequence). Each mode gets one untimed warm-up call first. The reported time is the wall-clock
//! time of the whole `generate` call, prefill included, so tokens/s = new tokens / seconds; the
//! speed-up is the uncached time over the cached time. It also checks that both modes emitted
//! the same tokens, and prints the process's peak resident memory (`VmHWM`) at the end.
//!
//! ```text
//! cargo bench -p burnish-model --bench generate                    # flex (CPU)
//! cargo bench -p burnish-model --bench generate --features wgpu    # wgpu
//! cargo bench -p burnish-model --bench generate -- gpt2-mini       # one model only
//! BURNISH_BENCH_MODELS=gpt2:256:2:4:1000 BURNISH_BENCH_NEW_TOKENS=16 \
//!     cargo bench -p burnish-model --bench generate                # a quick run
//! ```
//!
//! Models are chosen by the positional arguments, or else by `BURNISH_BENCH_MODELS` (comma
//! separated), or else the default `gpt2-small,gpt2-mini,llama-mini`. Each is a preset name or a
//! custom shape `FAMILY:HIDDEN:LAYERS:HEADS[:VOCAB]` (FAMILY `gpt2` or `llama`; vocab 50257 by
//! default). Presets:
//!
//! - `gpt2-small`: GPT-2 small's shape: vocab 50257, d 768, 12 layers, 12 heads, 1024 positions.
//! - `gpt2-mini`: vocab 50257, d 256, 4 layers, 4 heads.
//! - `llama-mini`: vocab 32000, d 256, 4 layers, 8 query / 2 key-value heads, MLP 688.
//!
//! Other knobs: `BURNISH_BENCH_NEW_TOKENS` (128), `BURNISH_BENCH_PROMPT` (32) and
//! `BURNISH_BENCH_REPEATS` (1; the fastest of the timed runs is reported).

use std::path::Path;
use std::time::{Duration, Instant};

use burn::module::Module;
use burnish_model::ModelBackend;
use burnish_model::{CausalLm, ModelConfig, SamplingConfig};

#[cfg(not(feature = "wgpu"))]
type Bench = burn::backend::Flex;
#[cfg(feature = "wgpu")]
type Bench = burn::backend::Wgpu;

#[cfg(not(feature = "wgpu"))]
const BACKEND: &str = "flex (CPU)";
#[cfg(feature = "wgpu")]
const BACKEND: &str = "wgpu";

const DEFAULT_MODELS: &str = "gpt2-small,gpt2-mini,llama-mini";

/// A named model shape.
struct Spec {
    name: String,
    config: ModelConfig,
}

fn llama(vocab: usize, hidden: usize, layers: usize, heads: usize, kv_heads: usize) -> ModelConfig {
    // SwiGLU width as Llama sizes it: 2/3 of 4d, rounded up to a multiple of 16.
    let intermediate = (8 * hidden / 3).div_ceil(16) * 16;
    ModelConfig::from_json(
        serde_json::json!({
            "model_type": "llama",
            "vocab_size": vocab,
            "hidden_size": hidden,
            "num_attention_heads": heads,
            "num_key_value_heads": kv_heads,
            "num_hidden_layers": layers,
            "intermediate_size": intermediate,
            "max_position_embeddings": 2048,
        }),
        Path::new("bench"),
    )
    .unwrap_or_else(|e| panic!("llama config d={hidden} heads={heads}: {e}"))
}

fn parse_spec(text: &str) -> Spec {
    let config = match text {
        "gpt2-small" => ModelConfig::gpt2(50257, 768, 12, 12, 1024),
        "gpt2-mini" => ModelConfig::gpt2(50257, 256, 4, 4, 1024),
        "llama-mini" => llama(32000, 256, 4, 8, 2),
        custom => {
            let parts: Vec<&str> = custom.split(':').collect();
            let number = |i: usize, default: Option<usize>| -> usize {
                match parts.get(i) {
                    Some(s) => s.parse().unwrap_or_else(|_| {
                        panic!("model {custom:?}: field {i} ({s:?}) is not a number")
                    }),
                    None => default.unwrap_or_else(|| {
                        panic!(
                            "unknown model {custom:?}: use gpt2-small, gpt2-mini, llama-mini or \
                             FAMILY:HIDDEN:LAYERS:HEADS[:VOCAB]"
                        )
                    }),
                }
            };
            let (hidden, layers, heads) = (number(1, None), number(2, None), number(3, None));
            let vocab = number(4, Some(50257));
            match parts[0] {
                "gpt2" => ModelConfig::gpt2(vocab, hidden, layers, heads, 1024),
                "llama" => llama(vocab, hidden, layers, heads, heads),
                other => panic!("model {custom:?}: family {other:?} is not gpt2 or llama"),
            }
        }
    };
    Spec {
        name: text.to_string(),
        config,
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    match std::env::var(key) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{key}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Peak resident set size as `/proc/self/status` reports it (Linux only).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.0} MiB", kib / 1024.0))
}

fn format_params(n: usize) -> String {
    if n >= 1_000_000 {
        format!("{:.1} M", n as f64 / 1e6)
    } else {
        format!("{:.1} k", n as f64 / 1e3)
    }
}

/// One timed mode of one model.
struct Row {
    model: String,
    params: usize,
    cached: bool,
    new_tokens: usize,
    time: Duration,
    speedup: Option<f64>,
}

/// The fastest of `repeats` calls, and the tokens the last one produced.
fn time_generate<B: ModelBackend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    config: &SamplingConfig,
    repeats: usize,
    device: &B::Device,
) -> (Duration, Vec<u32>) {
    let mut best = Duration::MAX;
    let mut tokens = Vec::new();
    for _ in 0..repeats.max(1) {
        let start = Instant::now();
        let out = model
            .generate(prompts, config, device)
            .expect("generation succeeds");
        best = best.min(start.elapsed());
        tokens = out.into_iter().next().unwrap_or_default();
    }
    (best, tokens)
}

fn main() {
    // `cargo bench` passes `--bench` to harness-less benches; everything else not starting with
    // `-` names a model.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let list = if args.is_empty() {
        std::env::var("BURNISH_BENCH_MODELS").unwrap_or_else(|_| DEFAULT_MODELS.to_string())
    } else {
        args.join(",")
    };
    let specs: Vec<Spec> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_spec)
        .collect();
    let new_tokens = env_usize("BURNISH_BENCH_NEW_TOKENS", 128);
    let prompt_len = env_usize("BURNISH_BENCH_PROMPT", 32).max(1);
    let repeats = env_usize("BURNISH_BENCH_REPEATS", 1).max(1);

    let device: <Bench as burn::tensor::backend::BackendTypes>::Device = Default::default();
    println!(
        "Backend {BACKEND}; batch 1, prompt {prompt_len} tokens, greedy, {new_tokens} new \
         tokens, {repeats} timed run(s) per mode after one warm-up.\n"
    );

    let mut rows = Vec::new();
    let mut mismatches = Vec::new();
    for spec in &specs {
        let model = CausalLm::<Bench>::init(&spec.config, &device);
        let params = model.num_params();
        let vocab = spec.config.vocab_size as u64;
        // A fixed, spread-out prompt; the weights are random so the content does not matter.
        let prompt: Vec<u32> = (0..prompt_len as u64)
            .map(|i| ((i * 7919 + 13) % vocab) as u32)
            .collect();
        let prompts = vec![prompt];
        let sampling = |use_cache| SamplingConfig {
            max_new_tokens: new_tokens,
            temperature: 0.0,
            use_cache,
            ..Default::default()
        };
        eprintln!("{}: {} parameters", spec.name, format_params(params));

        let mut results = Vec::new();
        for cached in [true, false] {
            let config = sampling(cached);
            // Warm-up: first-call allocations, kernel compilation on wgpu.
            model
                .generate(&prompts, &config, &device)
                .expect("warm-up generation succeeds");
            let (time, tokens) = time_generate(&model, &prompts, &config, repeats, &device);
            eprintln!(
                "  {}: {:.2} s",
                if cached { "cache" } else { "no cache" },
                time.as_secs_f64()
            );
            results.push((cached, time, tokens));
        }
        let cached_time = results[0].1;
        let uncached_time = results[1].1;
        if results[0].2 != results[1].2 {
            mismatches.push(spec.name.clone());
        }
        for (cached, time, tokens) in results {
            rows.push(Row {
                model: spec.name.clone(),
                params,
                cached,
                new_tokens: tokens.len(),
                time,
                speedup: cached.then(|| uncached_time.as_secs_f64() / cached_time.as_secs_f64()),
            });
        }
    }

    println!("| model | params | mode | new tokens | seconds | tokens/s | speed-up |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for row in &rows {
        let secs = row.time.as_secs_f64();
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.1} | {} |",
            row.model,
            format_params(row.params),
            if row.cached { "KV cache" } else { "no cache" },
            row.new_tokens,
            secs,
            row.new_tokens as f64 / secs,
            row.speedup
                .map_or_else(|| "1.0x".to_string(), |s| format!("{s:.1}x")),
        );
    }
    println!();
    if mismatches.is_empty() {
        println!("Cached and uncached generation emitted the same tokens for every model.");
    } else {
        println!(
            "Cached and uncached tokens differ for: {} (near-ties in the random model's logits \
             can flip greedy picks under different float summation order).",
            mismatches.join(", ")
        );
    }
    match peak_rss() {
        Some(rss) => println!("Peak RSS (VmHWM): {rss}"),
        None => println!("Peak RSS: unavailable (no /proc/self/status)"),
    }
}
