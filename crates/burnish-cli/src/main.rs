//! The `burnish` command-line tool: score, generate, convert and inspect preference data, train.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function; this
//! file only parses the command line and reports errors as one line with a non-zero exit.

mod convert;
mod eval;
mod export;
mod generate;
mod inspect;
mod logprobs;
mod precompute_ref;
mod train;

use clap::{Parser, Subcommand};

/// Align causal language models with human preferences (DPO first), on burn.
#[derive(Parser)]
#[command(name = "burnish", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Subcommand)]
enum Command {
    /// Score completions: summed log-probs of the completion tokens given the prompt.
    Logprobs(logprobs::LogprobsArgs),
    /// Sample a continuation of a prompt (KV cache; greedy, temperature, top-k, top-p).
    Generate(generate::GenerateArgs),
    /// Convert preference data (TRL, HH-RLHF, LLaMA-Factory, OpenAI, UltraFeedback, rankings,
    /// scores, KTO) from JSON, Parquet, Arrow, CSV or `datasets` folders into Parquet; rejected
    /// records go to a rejects file.
    Convert(convert::ConvertArgs),
    /// Print a data set's schema, row count, length percentiles and sample rows.
    Inspect(inspect::InspectArgs),
    /// Train: `train sft|dpo|kto|reward|ppo --config FILE [--set key=value]... [--resume]`.
    Train(train::TrainArgs),
    /// Cache a reference model's log-probs in a pairwise Parquet file (ref_chosen_logp /
    /// ref_rejected_logp), so DPO training holds one model.
    PrecomputeRef(precompute_ref::PrecomputeRefArgs),
    /// Held-out loss and metrics of a model on a pairwise Parquet file, as JSON.
    Eval(eval::EvalArgs),
    /// Convert a model between a Hugging Face folder and a GGUF file (llama.cpp / Ollama).
    Export(export::ExportArgs),
}

/// The last line of defence: a panic is a bug, reported in one line with its backtrace in a
/// file; a closed stdout (`burnish inspect FILE | head -1`) is not an error at all.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        if message.contains("Broken pipe") {
            // The reader went away; what it did not read is nobody's loss.
            std::process::exit(0);
        }
        let location = info
            .location()
            .map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        let trace = std::backtrace::Backtrace::force_capture();
        let path = std::env::temp_dir().join(format!("burnish-panic-{}.txt", std::process::id()));
        let saved = std::fs::write(&path, format!("{message}{location}\n\n{trace}\n")).is_ok();
        // burn's collective panics on a lost connection (a node died) rather than returning an
        // error; the run then stops with its own message, and this line only says where.
        let what = if ["burn-collective", "burn-communication"]
            .iter()
            .any(|c| location.contains(c))
        {
            "burn's collective failed (a node died or the network failed?)"
        } else {
            "internal error (a bug, please report it)"
        };
        eprintln!(
            "burnish: {what}: {message}{location}{}",
            if saved {
                format!("; backtrace in {}", path.display())
            } else {
                String::new()
            }
        );
    }));
}

fn main() {
    install_panic_hook();
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {
        Command::Logprobs(args) => logprobs::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Convert(args) => convert::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Train(args) => train::run(args),
        Command::PrecomputeRef(args) => precompute_ref::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Export(args) => export::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
