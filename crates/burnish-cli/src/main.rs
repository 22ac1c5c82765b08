//! The `burnish` command-line tool: score, generate, convert and inspect preference data, train.
//!
//! Each subcommand lives in its own module with a clap `Args` struct and a `run` function; this
//! file only parses the command line and reports errors as one line with a non-zero exit.

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
enum Command {}

fn main() {
    let cli = Cli::parse();
    let result: anyhow::Result<()> = match cli.command {};
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
