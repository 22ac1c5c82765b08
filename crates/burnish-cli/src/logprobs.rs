//! `burnish logprobs`: score completions under a model, from the command line or a file.
//!
//! Prints `{"logp": .., "tokens": .., "mean_logp": ..}` per completion: the sum of the
//! completion tokens' log-probs given the prompt, their count, and the mean. The prompt and the
//! prompt + completion are tokenized separately and the tokens after the prompt's are scored;
//! a BPE merge across the boundary is an error for that row (see `burnish_model::tokenizer`).

use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use burnish::backend::{DeviceKind, Job, dispatch};
use burnish::burn::tensor::{Tensor, TensorData};
use burnish::model::ModelBackend;
use burnish::model::{CausalLm, PromptCompletion, TextTokenizer};
use serde_json::json;

/// Arguments of `burnish logprobs`.
#[derive(clap::Args, Debug)]
pub struct LogprobsArgs {
    /// Hugging Face model folder (config.json, model.safetensors, tokenizer.json) or GGUF file.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA folder (adapter_config.json, adapter_model.safetensors) to score with on top
    /// of --model.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The prompt (with --completion).
    #[arg(long, requires = "completion", conflicts_with = "input")]
    pub prompt: Option<String>,
    /// The completion to score after the prompt.
    #[arg(long, requires = "prompt")]
    pub completion: Option<String>,
    /// A JSONL or Parquet file with `prompt` and `completion` columns; one JSON line per row.
    #[arg(long, required_unless_present = "prompt")]
    pub input: Option<PathBuf>,
    /// Rows scored per forward pass.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// cpu, wgpu or cuda.
    #[arg(long, default_value = "cpu")]
    pub device: DeviceKind,
    /// fp32 (default: exact) or bf16 matrix products (bf16 inputs, f32 accumulation, as a
    /// bf16 training run computes).
    #[arg(long, default_value = "fp32")]
    pub precision: burnish::model::Precision,
}

struct Scoring {
    args: LogprobsArgs,
}

/// The JSON object printed for one scored completion.
fn score_json(logp: f64, tokens: usize) -> serde_json::Value {
    json!({"logp": logp, "tokens": tokens, "mean_logp": logp / tokens as f64})
}

/// Scores a batch of tokenized rows in one right-padded forward pass.
fn score_batch<B: ModelBackend>(
    model: &CausalLm<B>,
    rows: &[PromptCompletion],
    device: &B::Device,
) -> Vec<(f64, usize)> {
    let width = rows.iter().map(|r| r.ids.len()).max().unwrap_or(0);
    let (mut ids, mut mask, mut completion) = (Vec::new(), Vec::new(), Vec::new());
    for row in rows {
        for i in 0..width {
            let real = i < row.ids.len();
            ids.push(if real { row.ids[i] as i64 } else { 0 });
            mask.push(i64::from(real));
            completion.push(i64::from(real && i >= row.prompt_len));
        }
    }
    let shape = [rows.len(), width];
    let t = |v: Vec<i64>| {
        Tensor::<B, 2, burnish::burn::tensor::Int>::from_data(TensorData::new(v, shape), device)
    };
    let scored = model.completion_logps(t(ids), t(mask), t(completion));
    let logps = scored
        .logps
        .into_data()
        .convert::<f64>()
        .into_vec::<f64>()
        .expect("f64");
    logps
        .into_iter()
        .zip(rows)
        .map(|(logp, row)| (logp, row.ids.len() - row.prompt_len))
        .collect()
}

impl Job for Scoring {
    type Output = ();

    fn run<B: ModelBackend>(self, device: B::Device) -> anyhow::Result<()> {
        let args = self.args;
        let mut model =
            CausalLm::<B>::from_pretrained(&args.model, &device)?.with_precision(args.precision);
        if let Some(adapter) = &args.adapter {
            model = model.load_peft_adapter(adapter, &device)?.0;
        }
        let tokenizer = TextTokenizer::from_model_dir(&args.model)?;
        tokenizer.check_fits(&model.config)?;
        // A row the model cannot take (longer than its positions) is an error for that row,
        // as `generate` refuses such a prompt; training truncates instead.
        let fits = |row: PromptCompletion| -> anyhow::Result<PromptCompletion> {
            model.check_length(row.ids.len())?;
            Ok(row)
        };
        if let (Some(prompt), Some(completion)) = (&args.prompt, &args.completion) {
            let row = fits(tokenizer.prompt_completion(prompt, completion)?)?;
            let (logp, tokens) = score_batch(&model, &[row], &device)[0];
            println!("{}", score_json(logp, tokens));
            return Ok(());
        }
        let Some(input) = args.input else {
            bail!("give --prompt and --completion, or --input FILE");
        };
        let rows = read_rows(&input)?;
        let mut out = BufWriter::new(std::io::stdout().lock());
        let mut failed = 0usize;
        let mut pending: Vec<(usize, PromptCompletion)> = Vec::new();
        let total = rows.len();
        if total == 0 {
            bail!("{}: no rows to score", input.display());
        }
        let flush = |pending: &mut Vec<(usize, PromptCompletion)>,
                     out: &mut BufWriter<_>|
         -> anyhow::Result<()> {
            // Nothing is pending after a full batch or a bad row: an empty forward pass has no
            // shape to run.
            if pending.is_empty() {
                return Ok(());
            }
            let batch: Vec<PromptCompletion> = pending.iter().map(|(_, r)| r.clone()).collect();
            for ((row, _), (logp, tokens)) in
                pending.iter().zip(score_batch(&model, &batch, &device))
            {
                let mut line = score_json(logp, tokens);
                line["row"] = json!(row);
                writeln!(out, "{line}")?;
            }
            pending.clear();
            Ok(())
        };
        for (index, row) in rows.into_iter().enumerate() {
            match row.and_then(|(p, c)| fits(tokenizer.prompt_completion(&p, &c)?)) {
                Ok(tokens) => pending.push((index, tokens)),
                Err(err) => {
                    failed += 1;
                    flush(&mut pending, &mut out)?;
                    writeln!(
                        out,
                        "{}",
                        json!({"row": index, "error": format!("{err:#}")})
                    )?;
                }
            }
            if pending.len() >= args.batch_size.max(1) {
                flush(&mut pending, &mut out)?;
            }
        }
        flush(&mut pending, &mut out)?;
        out.flush()?;
        if failed > 0 {
            bail!(
                "{}: {failed} of {total} rows could not be scored (their lines hold the reason)",
                input.display()
            );
        }
        Ok(())
    }
}

/// Reads `prompt`/`completion` pairs from JSONL or Parquet; a bad row is an `Err` in its place.
fn read_rows(path: &PathBuf) -> anyhow::Result<Vec<anyhow::Result<(String, String)>>> {
    let is_parquet = path.extension().is_some_and(|e| e == "parquet");
    if is_parquet {
        return read_parquet_rows(path);
    }
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut rows = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        rows.push(parse_row(&line).with_context(|| format!("{}: line {}", path.display(), n + 1)));
    }
    Ok(rows)
}

fn parse_row(line: &str) -> anyhow::Result<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(line)?;
    let field = |key: &str| -> anyhow::Result<String> {
        value
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .with_context(|| format!("missing string field `{key}`"))
    };
    Ok((field("prompt")?, field("completion")?))
}

/// Reads `prompt` / `completion` rows of a Parquet file; a conversational row (message lists) is
/// an error in its place, since scoring takes the text as it is.
fn read_parquet_rows(path: &PathBuf) -> anyhow::Result<Vec<anyhow::Result<(String, String)>>> {
    use burnish::data::{Content, ReaderBuilder};
    let reader = ReaderBuilder::new()
        .path(path)
        .prompt_completions()
        .with_context(|| format!("{}", path.display()))?;
    let mut rows = Vec::new();
    for (n, row) in reader.enumerate() {
        let row = row.with_context(|| format!("{}: row {n}", path.display()))?;
        rows.push(match (row.prompt, row.completion) {
            (Content::Text(p), Content::Text(c)) => Ok((p, c)),
            _ => Err(anyhow::anyhow!(
                "{}: row {n} is conversational (message lists); logprobs scores plain text, \
                 render it with the chat template first",
                path.display()
            )),
        });
    }
    Ok(rows)
}

/// Runs `burnish logprobs`.
pub fn run(args: LogprobsArgs) -> anyhow::Result<()> {
    let device = args.device;
    dispatch(device, Scoring { args })
}
