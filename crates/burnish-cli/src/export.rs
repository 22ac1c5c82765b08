//! `burnish export`: convert a model between a Hugging Face folder and a GGUF file, e.g. to hand
//! an aligned model to llama.cpp / Ollama, or to fine-tune one that came from there.

use std::path::PathBuf;

use burnish::backend::{DeviceKind, Job, dispatch};
use burnish::model::gguf::{GgufDtype, is_gguf, tokenizer_metadata_for};
use burnish::model::{CausalLm, ModelBackend, copy_tokenizer_files};

/// Arguments of `burnish export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The model: a Hugging Face folder or a GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write it: a path ending in `.gguf` writes a GGUF file, anything else a Hugging
    /// Face folder (config.json, model.safetensors, tokenizer files).
    #[arg(long)]
    pub out: PathBuf,
    /// Float type of a GGUF file's matrices: f16 or f32 (norms and biases are always f32).
    #[arg(long, default_value = "f16")]
    pub dtype: GgufDtype,
    /// cpu, wgpu or cuda (where the weights pass through; cpu is all conversion needs).
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
}

struct Export {
    args: ExportArgs,
}

impl Job for Export {
    type Output = ();

    fn run<B: ModelBackend>(self, device: B::Device) -> anyhow::Result<()> {
        export::<B>(self.args, &device)
    }
}

/// Runs `burnish export`.
pub fn run(args: ExportArgs) -> anyhow::Result<()> {
    let device = args.device;
    dispatch(device, Export { args })
}

fn export<B: ModelBackend>(args: ExportArgs, device: &B::Device) -> anyhow::Result<()> {
    let model = CausalLm::<B>::from_pretrained(&args.model, device)?;
    let to_gguf = args
        .out
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if to_gguf {
        if args.out.is_dir() {
            anyhow::bail!("{}: is a folder, not a file", args.out.display());
        }
        let meta = tokenizer_metadata_for(&args.model, model.config.vocab_size)?;
        model.save_gguf(&args.out, args.dtype, meta)?;
    } else {
        if is_gguf(&args.out) {
            anyhow::bail!(
                "{}: is a GGUF file; name a folder for a Hugging Face export",
                args.out.display()
            );
        }
        model.save_pretrained(&args.out)?;
        copy_tokenizer_files(&args.model, &args.out)?;
    }
    println!(
        "wrote {} ({} {}, {} layers)",
        args.out.display(),
        if to_gguf { "GGUF" } else { "Hugging Face" },
        model.config.family.model_type(),
        model.config.num_layers
    );
    Ok(())
}
