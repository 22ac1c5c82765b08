//! `burnish generate`: sample a continuation of a prompt with the KV cache.

use std::path::PathBuf;
use std::time::Instant;

use burnish::backend::{DeviceKind, Job, dispatch};
use burnish::model::ModelBackend;
use burnish::model::{CausalLm, SamplingConfig, TextTokenizer};

/// Arguments of `burnish generate`.
#[derive(clap::Args, Debug)]
pub struct GenerateArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to continue.
    #[arg(long)]
    pub prompt: String,
    /// How many tokens to generate at most (stops early at the model's EOS).
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Sample only among the k most likely tokens.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens whose probabilities add up to p.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Re-run the whole sequence at each step instead of using the KV cache (for comparison).
    #[arg(long)]
    pub no_cache: bool,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// fp32 (default: exact) or bf16 matrix products (bf16 inputs, f32 accumulation, as a
    /// bf16 training run computes).
    #[arg(long, default_value = "fp32")]
    pub precision: burnish::model::Precision,
}

struct Generation {
    args: GenerateArgs,
}

impl Job for Generation {
    type Output = ();

    fn run<B: ModelBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let args = self.args;
        let model =
            CausalLm::<B>::from_pretrained(&args.model, &device)?.with_precision(args.precision);
        let tokenizer = TextTokenizer::from_model_dir(&args.model)?;
        tokenizer.check_fits(&model.config)?;
        let prompt = tokenizer.encode(&args.prompt)?;
        let config = SamplingConfig {
            max_new_tokens: args.max_new_tokens,
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            stop_token: model.config.eos_token_id,
            use_cache: !args.no_cache,
        };
        let start = Instant::now();
        let new = model.generate(&[prompt], &config, &device)?.remove(0);
        let seconds = start.elapsed().as_secs_f64();
        println!("{}{}", args.prompt, tokenizer.decode(&new)?);
        eprintln!(
            "{} new tokens in {seconds:.2}s ({:.1} tokens/s, {})",
            new.len(),
            new.len() as f64 / seconds,
            if config.use_cache {
                "KV cache"
            } else {
                "no cache"
            }
        );
        Ok(())
    }
}

/// Runs `burnish generate`.
pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let device = args.device;
    dispatch(device, Generation { args })
}
