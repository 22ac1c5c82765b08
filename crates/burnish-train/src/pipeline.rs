//! The high-level entry points that the `burnish` command line and the examples both call: read
//! and split the data, load the models, train with the one loop in [`crate::trainer`], export the
//! result as a Hugging Face folder and plot the curves.
//!
//! Data are never dropped silently: every row read is either used (train or eval) or rejected,
//! and rejected rows go to a JSON Lines file with their reason ([`DataReport`] holds the counts,
//! `read = used + rejected`). The held-out split is `[data] eval` when given, else a stable hash
//! split of the training file holding out `data.eval_fraction` of its rows.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::tensor::backend::AutodiffBackend;
use burnish_data::split::SplitKey;
use burnish_data::{
    Collator, DataError, EncodeError, Encoder, EncoderConfig, ListwiseRow, ListwiseSchema,
    ListwiseWriter, PairSchema, PairWriter, PreferencePair, PromptCompletion, PromptRow,
    ReaderBuilder, RowReader, Split, Subset, TokenizedList, TokenizedPair,
    TokenizedPromptCompletion, UnpairedRow,
};
use burnish_losses::{InputKind, LossError, PreferenceLoss, RewardLoss, UnpairedLoss};
use burnish_model::{
    CausalLm, LoraConfig, ModelAutodiffBackend, ModelBackend, ModelConfig, ModelError, check_vocab,
    copy_tokenizer_files,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::config::{ConfigError, TrainingConfig};
use crate::metrics_log::{EvalRecord, Metrics};
use crate::objectives::{
    ListwiseObjective, PreferenceObjective, RewardListObjective, RewardObjective, SftObjective,
    precompute_list_reference, precompute_reference, reference_batch_size,
};
use crate::progress::Progress;
use crate::run_dir::{RunDir, RunDirError, prepare_run_dir};
use crate::trainer::{Objective, RunOptions, TrainError, TrainOutcome, evaluate, plot_run, train};
use crate::unpaired::{
    KtoObjective, TokenizedUnpaired, pair_mismatched, precompute_unpaired_reference,
};

/// Errors of the high-level entry points; each message names the file or key at fault.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A data file could not be read or written.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A model could not be loaded or saved.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The loss configuration is invalid.
    #[error(transparent)]
    Loss(#[from] LossError),
    /// The output folder cannot be used (locked, holds a run, or a resume would not be exact).
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// A file could not be written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// Anything else a user can fix, with its message.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PipelineError + '_ {
    move |cause| PipelineError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Where the rows of a run went: `read = used + rejected`, `used = train + eval`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DataReport {
    /// Rows read from the data files.
    pub read: u64,
    /// Rows tokenized and used (train + eval).
    pub used: u64,
    /// Rows that could not be tokenized; written to `rejects_path`.
    pub rejected: u64,
    /// Rows used for training.
    pub train: usize,
    /// Rows held out for evaluation.
    pub eval: usize,
    /// The rejects file (JSON Lines), when any row was rejected.
    pub rejects_path: Option<PathBuf>,
}

/// A JSON Lines file of rejected rows, created on the first reject.
struct Rejects {
    path: PathBuf,
    out: Option<BufWriter<File>>,
}

impl Rejects {
    fn new(path: PathBuf) -> Self {
        Rejects { path, out: None }
    }

    fn write(&mut self, file: &Path, row: usize, error: &str) -> Result<(), PipelineError> {
        if self.out.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            let f = File::create(&self.path).map_err(io_err(&self.path))?;
            self.out = Some(BufWriter::new(f));
        }
        let line = serde_json::json!({"file": file, "row": row, "error": error});
        let out = self.out.as_mut().expect("opened above");
        writeln!(out, "{line}").map_err(io_err(&self.path))
    }

    fn finish(self) -> Result<Option<PathBuf>, PipelineError> {
        match self.out {
            Some(mut out) => {
                out.flush().map_err(io_err(&self.path))?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

/// Where the evaluation rows come from.
#[derive(Debug, Clone, Copy)]
pub enum EvalSource<'a> {
    /// A separate held-out file.
    File(&'a Path),
    /// This fraction of the training file, by a stable hash of each row.
    Fraction(f64),
}

impl<'a> EvalSource<'a> {
    /// `[data] eval` when given, else `data.eval_fraction` of the training file.
    pub fn of(config: &'a TrainingConfig) -> Self {
        match &config.data.eval {
            Some(path) => EvalSource::File(path),
            None => EvalSource::Fraction(config.data.eval_fraction),
        }
    }
}

/// A run's data: the training file (or folder), where the held-out rows come from, and how to
/// read them (the split of a `datasets` folder, the column mapping).
#[derive(Debug, Clone)]
pub struct DataInput<'a> {
    /// The training data: a Parquet, Arrow IPC or CSV file, or a folder of them.
    pub train: PathBuf,
    /// Where the evaluation rows come from.
    pub eval: EvalSource<'a>,
    /// A reader with the split and column mapping set and no paths; each file is added to it.
    pub reader: ReaderBuilder,
}

impl<'a> DataInput<'a> {
    /// `[data] train`, `eval` / `eval_fraction`, `split` and `columns` of a run's config.
    pub fn of(config: &'a TrainingConfig) -> Result<Self, PipelineError> {
        let mut reader = ReaderBuilder::new().column_map(config.data.columns.clone());
        if let Some(split) = &config.data.split {
            reader = reader.split(split.clone());
        }
        Ok(DataInput {
            train: train_file(config)?,
            eval: EvalSource::of(config),
            reader,
        })
    }

    /// Every row of `path` for training, none held out, read with TRL's column names.
    pub fn all_train(path: &Path) -> Self {
        DataInput {
            train: path.to_path_buf(),
            eval: EvalSource::Fraction(0.0),
            reader: ReaderBuilder::new(),
        }
    }

    /// The reader of one of the run's files.
    pub fn read(&self, path: &Path) -> ReaderBuilder {
        self.reader.clone().path(path)
    }
}

/// Rows read by [`read_rows`], each with its file (an index into the reader's files) and row.
struct ReadRows<R> {
    rows: Vec<R>,
    at: Vec<(usize, u64)>,
    unreadable: u64,
    exhausted: bool,
}

/// Reads up to `limit` rows. A row with an unreadable cell is written to `rejects` with its
/// own file, row and reason (and counted in `unreadable`) instead of failing the whole file;
/// any other error stops.
fn read_rows<R: burnish_data::ArrowRow>(
    reader: &mut RowReader<R>,
    limit: usize,
    rejects: &mut Rejects,
    note: &str,
) -> Result<ReadRows<R>, PipelineError> {
    let mut out = ReadRows {
        rows: Vec::new(),
        at: Vec::new(),
        unreadable: 0,
        exhausted: false,
    };
    while out.rows.len() < limit {
        let Some(item) = reader.next() else {
            out.exhausted = true;
            break;
        };
        match item {
            Ok(row) => {
                out.rows.push(row);
                out.at.push(reader.position_index().unwrap_or((0, 0)));
            }
            Err(DataError::Row {
                path,
                row,
                column,
                reason,
            }) => {
                out.unreadable += 1;
                rejects.write(
                    &path,
                    row as usize,
                    &format!("column `{column}`: {reason}{note}"),
                )?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// Reads rows of the training data (and the eval file), splits, tokenizes in parallel; rejects
/// go to `rejects`.
fn load_rows<R, T>(
    input: &DataInput<'_>,
    rejects: &Path,
    read: impl Fn(ReaderBuilder) -> Result<RowReader<R>, DataError>,
    check: impl Fn(&R) -> Result<(), String>,
    encode: impl Fn(&[R]) -> Vec<Result<T, EncodeError>>,
) -> Result<(Vec<T>, Vec<T>, DataReport), PipelineError>
where
    R: SplitKey + burnish_data::ArrowRow,
{
    let (train, eval) = (input.train.as_path(), input.eval);
    let mut report = DataReport::default();
    let mut rejects = Rejects::new(rejects.to_path_buf());
    let (mut train_rows, mut eval_rows) = (Vec::new(), Vec::new());
    let mut files: Vec<(&Path, Option<bool>)> = vec![(train, None)];
    let split = match eval {
        EvalSource::File(path) => {
            files[0].1 = Some(false);
            files.push((path, Some(true)));
            None
        }
        EvalSource::Fraction(f) => Some(Split::new(f)),
    };
    for (path, held_out) in files {
        // Each row keeps its own file and row number (a folder's shard, not the folder), and
        // a row that cannot be decoded is rejected with its reason rather than failing the run.
        let mut reader = read(input.read(path))?;
        let ReadRows {
            rows,
            at: positions,
            unreadable,
            ..
        } = read_rows(&mut reader, usize::MAX, &mut rejects, "")?;
        report.read += rows.len() as u64 + unreadable;
        report.rejected += unreadable;
        let shards = reader.files();
        let subsets: Vec<bool> = rows
            .iter()
            .map(|r| match (held_out, &split) {
                (Some(h), _) => h,
                (None, Some(s)) => s.subset(r) == Subset::Eval,
                (None, None) => false,
            })
            .collect();
        let checked = rows.iter().map(&check);
        let encoded = encode(&rows);
        if encoded.len() != rows.len() {
            // A zip below would otherwise drop the rows without an encoding silently.
            return Err(PipelineError::Invalid(format!(
                "{}: the encoder returned {} results for {} rows (a bug)",
                path.display(),
                encoded.len(),
                rows.len()
            )));
        }
        for (((encoded, is_eval), checked), &(file, row)) in encoded
            .into_iter()
            .zip(subsets)
            .zip(checked)
            .zip(&positions)
        {
            let file = &shards[file];
            match (checked, encoded) {
                (Err(reason), _) => {
                    report.rejected += 1;
                    rejects.write(file, row as usize, &reason)?;
                }
                (Ok(()), Ok(t)) if is_eval => eval_rows.push(t),
                (Ok(()), Ok(t)) => train_rows.push(t),
                (Ok(()), Err(e)) => {
                    report.rejected += 1;
                    rejects.write(file, row as usize, &e.to_string())?;
                }
            }
        }
    }
    report.train = train_rows.len();
    report.eval = eval_rows.len();
    report.used = (report.train + report.eval) as u64;
    report.rejects_path = rejects.finish()?;
    if train_rows.is_empty() {
        return Err(PipelineError::Invalid(format!(
            "{}: no usable training rows ({} read, {} rejected{})",
            train.display(),
            report.read,
            report.rejected,
            report
                .rejects_path
                .as_ref()
                .map_or(String::new(), |p| format!(", reasons in {}", p.display()))
        )));
    }
    Ok((train_rows, eval_rows, report))
}

/// Reads, splits and tokenizes pairwise rows; rows that fail to encode are counted and written to
/// `rejects` (JSON Lines), never dropped silently.
pub fn load_pairs(
    input: &DataInput<'_>,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<(Vec<TokenizedPair>, Vec<TokenizedPair>, DataReport), PipelineError> {
    load_rows(
        input,
        rejects,
        |r| r.pairs(),
        PreferencePair::validate,
        |rows: &[PreferencePair]| encoder.encode_pairs(rows),
    )
}

/// Reads, splits and tokenizes prompt/completion rows (supervised fine-tuning), like [`load_pairs`].
pub fn load_prompt_completions(
    input: &DataInput<'_>,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<
    (
        Vec<TokenizedPromptCompletion>,
        Vec<TokenizedPromptCompletion>,
        DataReport,
    ),
    PipelineError,
> {
    load_rows(
        input,
        rejects,
        |r| r.prompt_completions(),
        |_| Ok(()),
        |rows: &[PromptCompletion]| encoder.encode_prompt_completions(rows),
    )
}

/// Reads, splits and tokenizes listwise rows (`prompt`, `responses`, `ranks` or `scores`), like
/// [`load_pairs`].
pub fn load_lists(
    input: &DataInput<'_>,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<(Vec<TokenizedList>, Vec<TokenizedList>, DataReport), PipelineError> {
    load_rows(
        input,
        rejects,
        |r| r.listwise(),
        ListwiseRow::validate,
        |rows: &[ListwiseRow]| encoder.encode_lists(rows),
    )
}

/// Reads, splits and tokenizes unpaired rows (`prompt`, `completion`, `label`), like
/// [`load_pairs`]; the mismatched completions of KTO's reference point are not assigned yet.
pub fn load_unpaired(
    input: &DataInput<'_>,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<(Vec<TokenizedUnpaired>, Vec<TokenizedUnpaired>, DataReport), PipelineError> {
    load_rows(
        input,
        rejects,
        |r| r.unpaired(),
        UnpairedRow::validate,
        |rows: &[UnpairedRow]| {
            let demonstrations: Vec<PromptCompletion> = rows
                .iter()
                .map(|r| PromptCompletion {
                    id: r.id.clone(),
                    prompt: r.prompt.clone(),
                    completion: r.completion.clone(),
                })
                .collect();
            encoder
                .encode_prompt_completions(&demonstrations)
                .into_iter()
                .zip(rows)
                .map(|(encoded, row)| {
                    encoded
                        .map(|t| TokenizedUnpaired::new(t.prompt_ids, t.completion_ids, row.label))
                })
                .collect()
        },
    )
}

/// One tokenized prompt.
pub type TokenIds = Vec<u32>;

/// Reads, splits and tokenizes prompts (a `prompt` column; messages get the chat template's
/// generation prompt), like [`load_pairs`].
pub fn load_prompts(
    input: &DataInput<'_>,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<(Vec<TokenIds>, Vec<TokenIds>, DataReport), PipelineError> {
    load_rows(
        input,
        rejects,
        |r| r.prompts(),
        |_| Ok(()),
        |rows: &[PromptRow]| encoder.encode_prompts(rows),
    )
}

/// The encoder of a model folder: its `tokenizer.json` (or `tokenizer`), lengths clamped to the
/// model's positions, EOS and padding from `config.json` when the tokenizer files name none.
pub fn encoder_for(
    model_dir: &Path,
    tokenizer: Option<&Path>,
    max_prompt_length: usize,
    max_length: usize,
) -> Result<Encoder, PipelineError> {
    // The same rule as `data.max_length` / `data.max_prompt_length` in a config, for the
    // commands that take the lengths as flags (`eval`, `precompute-ref`).
    if max_length < 2 || max_prompt_length == 0 {
        return Err(PipelineError::Invalid(format!(
            "max_length must be at least 2 and max_prompt_length at least 1 (one prompt token to predict from, one completion token), got {max_length} and {max_prompt_length}"
        )));
    }
    // A GGUF file is read once: its metadata holds both the config and the tokenizer.
    let gguf = match tokenizer {
        None if burnish_model::gguf::is_gguf(model_dir) => {
            Some(burnish_model::gguf::GgufFile::open(model_dir)?)
        }
        _ => None,
    };
    let model_config = match &gguf {
        Some(file) => ModelConfig::from_gguf(file)?,
        None => ModelConfig::from_model_path(model_dir)?,
    };
    let max_length = max_length.min(model_config.max_positions.max(2));
    let config = EncoderConfig {
        max_prompt_length: Some(max_prompt_length.min(max_length - 1)),
        max_length: Some(max_length),
        ..EncoderConfig::default()
    };
    let (mut encoder, tokenizer) = match &gguf {
        // A GGUF file carries its tokenizer and chat template in its metadata.
        Some(file) => {
            let gguf = burnish_model::gguf::GgufTokenizer::from_file(file)?;
            let encoder = Encoder::from_tokenizer_config(
                gguf.tokenizer,
                &gguf.tokenizer_config.to_string(),
                model_dir,
                config,
            )?;
            (encoder, model_dir.to_path_buf())
        }
        None => {
            let tokenizer =
                tokenizer.map_or_else(|| model_dir.join("tokenizer.json"), Path::to_path_buf);
            (Encoder::from_files(&tokenizer, config)?, tokenizer)
        }
    };
    check_vocab(encoder.tokenizer(), &tokenizer, &model_config)?;
    if encoder.eos_token_id().is_none() {
        encoder = encoder.with_eos_token_id(model_config.eos_token_id);
    }
    if encoder.pad_token_id().is_none() {
        let pad = model_config.pad_token_id.or(encoder.eos_token_id());
        encoder = encoder.with_pad_token_id(pad);
    }
    Ok(encoder)
}

/// Pads with the encoder's padding id (0 when it has none: padded positions are masked anyway).
pub fn collator_for(encoder: &Encoder) -> Collator {
    Collator::new(encoder.pad_token_id().unwrap_or(0))
}

/// Deserialises the `[loss]` table; an empty table gives the loss's default.
pub fn loss_from_table<L: DeserializeOwned + Default>(
    table: &toml::Table,
) -> Result<L, PipelineError> {
    if table.is_empty() {
        return Ok(L::default());
    }
    toml::Value::Table(table.clone())
        .try_into::<L>()
        .map_err(|e| PipelineError::Invalid(format!("[loss]: {}", e.message().trim())))
}

/// What a finished pipeline run leaves besides the model: data counts, export and plots.
pub struct RunSummary<B: AutodiffBackend> {
    /// The trainer's outcome (model, steps, metrics path, last evaluation).
    pub outcome: TrainOutcome<B>,
    /// Where the rows went.
    pub data: DataReport,
    /// The held-out evaluation before the first step (fresh runs with held-out rows only).
    pub initial_eval: Option<EvalRecord>,
    /// The exported Hugging Face folder (`output_dir/final`), when the run finished.
    pub final_dir: Option<PathBuf>,
    /// The SVG plots drawn from `metrics.jsonl`.
    pub plots: Vec<PathBuf>,
    /// Why the plots could not be drawn, if they could not (the run itself succeeded).
    pub plot_error: Option<String>,
}

/// `model.path`, or an error naming the key.
pub fn model_dir(config: &TrainingConfig) -> Result<PathBuf, PipelineError> {
    config.model.path.clone().ok_or_else(|| {
        PipelineError::Invalid(
            "config key `model.path` is required: a Hugging Face model folder or a GGUF file"
                .into(),
        )
    })
}

/// `data.train`, or an error naming the key.
pub fn train_file(config: &TrainingConfig) -> Result<PathBuf, PipelineError> {
    config.data.train.clone().ok_or_else(|| {
        PipelineError::Invalid("config key `data.train` is required: a Parquet file".into())
    })
}

/// The encoder a run's config describes.
pub fn run_encoder(config: &TrainingConfig) -> Result<Encoder, PipelineError> {
    encoder_for(
        &model_dir(config)?,
        config.model.tokenizer.as_deref(),
        config.data.max_prompt_length,
        config.data.max_length,
    )
}

/// Creates and locks `train.output_dir` for this run and writes the resolved `config.toml`
/// (see [`crate::run_dir`]: a fresh run refuses a folder that holds a run unless
/// `options.overwrite`; a resume refuses a changed configuration or data). Call it before any
/// other work of the run, and keep the returned value alive until the run ends.
///
/// On a node other than node 0 of a multi-node run the folder is `output_dir/node-R`: node 0
/// writes the run (metrics, checkpoints, the export), and each other node keeps only its lock,
/// its resolved config and its rejected rows there.
pub fn prepare_output(
    config: &TrainingConfig,
    options: &RunOptions,
) -> Result<RunDir, PipelineError> {
    let dist = &config.distributed;
    if !dist.is_main_node() {
        let mut own = config.clone();
        own.train.output_dir = config
            .train
            .output_dir
            .join(format!("node-{}", dist.node_rank));
        return Ok(prepare_run_dir(&own, options.resume, true)?);
    }
    Ok(prepare_run_dir(config, options.resume, options.overwrite)?)
}

/// Held-out loss and metrics of `model` as an [`EvalRecord`] at `step`.
pub fn eval_record<B: AutodiffBackend, O: Objective<B>>(
    model: &CausalLm<B>,
    objective: &O,
    batch_size: usize,
    step: u64,
) -> Result<Option<EvalRecord>, PipelineError> {
    Ok(
        evaluate(model, objective, batch_size)?.map(|(loss, examples, metrics)| EvalRecord {
            step,
            epoch: 0.0,
            loss,
            examples,
            metrics,
        }),
    )
}

/// Trains `model` on `objective`, then exports `output_dir/final` (with the tokenizer files) and
/// plots the curves.
fn finish_run<B: AutodiffBackend, O: Objective<B> + Sync>(
    run_dir: RunDir,
    model: CausalLm<B>,
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
    data: DataReport,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let out = run_dir.path.clone();
    check_gguf_export(&model, config)?;
    let model = attach_lora(model, config, options, device)?;
    let main = config.distributed.is_main_node();
    let initial_eval = if options.resume || !main {
        None
    } else {
        eval_record(&model, objective, config.train.batch_size, 0)?
    };
    let outcome = train(model, objective, config, options, device)?;
    if !main {
        // Node 0 exports and plots the run.
        return Ok(RunSummary {
            outcome,
            data,
            initial_eval,
            final_dir: None,
            plots: Vec::new(),
            plot_error: None,
        });
    }
    let finished = options.stop_after.is_none_or(|s| s >= outcome.steps);
    let final_dir = if finished {
        Some(export_final(&outcome.model.valid(), config, &out)?)
    } else {
        None
    };
    let (plots, plot_error) = match plot_run(&outcome.metrics_path, &out) {
        Ok(p) => (p, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(RunSummary {
        outcome,
        data,
        initial_eval,
        final_dir,
        plots,
        plot_error,
    })
}

/// The adapters a run trains, if any: a PEFT folder's (`model.adapter`) or fresh ones
/// (`[lora]`), on a frozen base. Seeded, so a resumed run builds the same structure before its
/// checkpoint is loaded into it.
pub fn attach_lora<B: AutodiffBackend>(
    model: CausalLm<B>,
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<CausalLm<B>, PipelineError> {
    let model = match (&config.model.adapter, &config.lora) {
        (Some(dir), _) => model.load_peft_adapter(dir, device)?.0,
        (None, Some(lora)) => {
            B::seed(device, config.train.seed);
            model.with_lora(lora, device)?
        }
        (None, None) => return Ok(model),
    };
    if !options.quiet {
        let (trainable, total) = model.parameter_counts();
        eprintln!(
            "LoRA: training {trainable} of {total} parameters ({:.2}%), the base frozen",
            100.0 * trainable as f64 / total.max(1) as f64
        );
    }
    Ok(model)
}

/// Refuses, before the first step, a `train.export_gguf` the end of the run could not honour: a
/// reward model, or a tokenizer GGUF cannot carry.
pub fn check_gguf_export<B: burn::tensor::backend::Backend>(
    model: &CausalLm<B>,
    config: &TrainingConfig,
) -> Result<(), PipelineError> {
    if config.train.export_gguf.is_none() {
        return Ok(());
    }
    if model.reward_head.is_some() {
        return Err(PipelineError::Invalid(
            "train.export_gguf: a reward model cannot be written as GGUF (llama.cpp runs language models); remove the key".into(),
        ));
    }
    export_tokenizer_metadata(config, model.config.vocab_size)?;
    Ok(())
}

/// The `tokenizer.*` GGUF metadata of a run's export: a GGUF source's carried over unchanged,
/// otherwise built from the run's `tokenizer.json` (`model.tokenizer`, else the model folder's)
/// and the `tokenizer_config.json` beside it.
fn export_tokenizer_metadata(
    config: &TrainingConfig,
    vocab_size: usize,
) -> Result<Vec<(String, burnish_model::gguf::MetaValue)>, PipelineError> {
    let source = model_dir(config)?;
    if config.model.tokenizer.is_none() && burnish_model::gguf::is_gguf(&source) {
        let file = burnish_model::gguf::GgufFile::open(&source)?;
        return Ok(burnish_model::gguf::tokenizer_metadata_from_gguf(&file));
    }
    let tokenizer = config
        .model
        .tokenizer
        .clone()
        .unwrap_or_else(|| source.join("tokenizer.json"));
    // The chat template and special tokens come from beside the tokenizer, as the encoder
    // reads them.
    Ok(burnish_model::gguf::tokenizer_metadata_from_files(
        &tokenizer,
        &tokenizer.with_file_name("tokenizer_config.json"),
        vocab_size,
    )?)
}

/// The LoRA config of a run's adapters: `[lora]`, or the one `model.adapter` was trained with.
fn run_lora_config(config: &TrainingConfig) -> Result<Option<LoraConfig>, PipelineError> {
    Ok(match (&config.model.adapter, &config.lora) {
        (Some(dir), _) => Some(LoraConfig::from_peft_dir(dir)?),
        (None, lora) => lora.clone(),
    })
}

/// Exports `model` with its tokenizer files as `out/final`, complete or not at all: written to
/// `out/final.partial` first and renamed into place, so a kill during the export leaves the
/// previous `final` (or none), never a half-written one.
pub fn export_final<B: burn::tensor::backend::Backend>(
    model: &CausalLm<B>,
    config: &TrainingConfig,
    out: &Path,
) -> Result<PathBuf, PipelineError> {
    let (partial, dir) = (out.join("final.partial"), out.join("final"));
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    let source = model_dir(config)?;
    // A LoRA run writes its adapters as a PEFT folder (`final/adapter`) and the merged model as
    // the Hugging Face (and GGUF) export, so either can be used.
    let merged;
    let model = match run_lora_config(config)? {
        Some(lora) if model.has_lora() => {
            model.save_peft_adapter(
                &partial.join("adapter"),
                &lora,
                &source.display().to_string(),
            )?;
            merged = model.clone().merge_lora();
            &merged
        }
        _ => model,
    };
    model.save_pretrained(&partial)?;
    copy_tokenizer_files(&source, &partial)?;
    if let Some(tokenizer) = &config.model.tokenizer {
        let to = partial.join("tokenizer.json");
        std::fs::copy(tokenizer, &to).map_err(io_err(tokenizer))?;
    }
    if let Some(dtype) = &config.train.export_gguf {
        let dtype = dtype.parse().map_err(PipelineError::Invalid)?;
        let meta = export_tokenizer_metadata(config, model.config.vocab_size)?;
        model.save_gguf(partial.join("model.gguf"), dtype, meta)?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
    }
    std::fs::rename(&partial, &dir).map_err(io_err(&dir))?;
    Ok(dir)
}

/// Computes the reference log-probs of the rows (train and held out, in one pass with one
/// progress bar) that the data did not carry: `missing` picks them, `compute` fills them. A row
/// whose reference cells are null costs that row only; the others keep their cached values.
fn fill_missing<T: Clone>(
    mut train: Vec<T>,
    mut eval: Vec<T>,
    missing: impl Fn(&T) -> bool,
    options: &RunOptions,
    compute: impl FnOnce(&mut [T], Option<&mut Progress>) -> Result<(), PipelineError>,
) -> Result<(Vec<T>, Vec<T>), PipelineError> {
    let n_train = train.len();
    train.append(&mut eval);
    let todo: Vec<usize> = (0..train.len()).filter(|&i| missing(&train[i])).collect();
    if !todo.is_empty() {
        let mut rows: Vec<T> = todo.iter().map(|&i| train[i].clone()).collect();
        let mut progress = (!options.quiet).then(|| Progress::new(rows.len() as u64, 0));
        compute(&mut rows, progress.as_mut())?;
        if !options.quiet && todo.len() < train.len() {
            eprintln!(
                "reference log-probs: computed for {} of {} rows (the others were in the data)",
                todo.len(),
                train.len()
            );
        }
        for (i, row) in todo.into_iter().zip(rows) {
            train[i] = row;
        }
    }
    let eval = train.split_off(n_train);
    Ok((train, eval))
}

/// Runs `compute` with `reference` on `rows` split into one contiguous shard per data-parallel
/// peer of this node (`[distributed] devices`), each shard on its peer's device (a copy of the
/// reference there) and thread: the reference pass of a data-parallel run. With one peer it is
/// a plain call. With several, the progress follows the first shard (the shards are equal to
/// within one row).
fn on_peer_devices<B: ModelBackend, T: Send>(
    config: &TrainingConfig,
    reference: &CausalLm<B>,
    device: &B::Device,
    rows: &mut [T],
    progress: Option<&mut Progress>,
    compute: impl Fn(
        &CausalLm<B>,
        &mut [T],
        &B::Device,
        Option<&mut Progress>,
    ) -> Result<(), PipelineError>
    + Sync,
) -> Result<(), PipelineError> {
    let devices = config.distributed.peer_devices::<B>(device);
    if devices.len() == 1 || rows.len() < 2 {
        return compute(reference, rows, device, progress);
    }
    let shard = rows.len().div_ceil(devices.len());
    let mut first = progress.map(|_| Progress::new(shard as u64, 0));
    let compute = &compute;
    std::thread::scope(|scope| {
        let peers: Vec<_> = rows
            .chunks_mut(shard)
            .zip(&devices)
            .map(|(rows, dev)| {
                let mut progress = first.take();
                scope.spawn(move || {
                    compute(&reference.clone().fork(dev), rows, dev, progress.as_mut())
                })
            })
            .collect();
        peers
            .into_iter()
            .map(|p| {
                p.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<()>, _>>()
            .map(|_| ())
    })
}

/// True when every pair carries precomputed reference log-probs.
pub fn all_precomputed(pairs: &[TokenizedPair]) -> bool {
    pairs
        .iter()
        .all(|p| p.ref_chosen_logp.is_some() && p.ref_rejected_logp.is_some())
}

/// DPO (or any pairwise preference loss of `[loss]`): policy from `model.path`; the reference is
/// `model.reference`, else a frozen copy of the starting policy, else none when every pair has
/// precomputed `ref_*_logp` columns or the loss needs no reference. Reference log-probs are
/// computed once before the first step, so training holds one model.
///
/// Listwise data (`responses` with `ranks` or `scores`) train a listwise loss (`pro`,
/// `plackett_luce`) through [`run_listwise`]; a pairwise loss on listwise data is an error that
/// says how to pair the rankings.
pub fn run_dpo<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let model_path = model_dir(config)?;
    let loss: PreferenceLoss = loss_from_table(&config.loss)?;
    loss.validate()?;
    let input = DataInput::of(config)?;
    if is_listwise(&input)? {
        if loss.input_kind() != InputKind::Listwise {
            return Err(PipelineError::Invalid(format!(
                "{}: the data are listwise (`responses` with `ranks` or `scores`) but loss `{}` is pairwise; use `loss_type = \"pro\"` or `\"plackett_luce\"`, or pair the rankings with `burnish convert --from ranking --pairing all-pairs`",
                input.train.display(),
                loss.name()
            )));
        }
        return run_listwise(config, loss, options, device);
    }
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = &run_dir.path;
    let (mut train_pairs, mut eval_pairs, data) = load_pairs(
        &DataInput::of(config)?,
        &encoder,
        &out.join("rejects.jsonl"),
    )?;
    let collator = collator_for(&encoder);
    let policy = CausalLm::<B>::from_pretrained(&model_path, device)?
        .with_precision(config.train.precision());
    if loss.needs_reference() {
        let batch = reference_batch_size(config.train.batch_size);
        let (train, eval) = fill_missing(
            train_pairs,
            eval_pairs,
            |p| p.ref_chosen_logp.is_none() || p.ref_rejected_logp.is_none(),
            options,
            |todo, progress| {
                let reference = reference_model(config, &policy, device)?;
                on_peer_devices(
                    config,
                    &reference,
                    device,
                    todo,
                    progress,
                    |r, rows, dev, p| {
                        precompute_reference(r, rows, &collator, batch, dev, p);
                        Ok(())
                    },
                )
            },
        )?;
        (train_pairs, eval_pairs) = (train, eval);
    }
    let objective = PreferenceObjective::<B> {
        train: train_pairs,
        eval: eval_pairs,
        collator,
        loss,
        reference: None,
        device: device.clone(),
    };
    finish_run(run_dir, policy, &objective, config, options, data, device)
}

/// The column names of the first data file of the training data (folders expanded), if any.
fn first_columns(input: &DataInput<'_>) -> Result<Option<Vec<String>>, PipelineError> {
    match input.read(&input.train).files()?.first() {
        Some(first) => Ok(Some(
            burnish_data::reader::file_schema(first)?
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect(),
        )),
        None => Ok(None),
    }
}

/// True when the training data are listwise: a `responses` column (or the file column mapped
/// to it), in the first data file.
pub fn is_listwise(input: &DataInput<'_>) -> Result<bool, PipelineError> {
    let column = input
        .reader
        .mapped_column("responses")
        .unwrap_or("responses");
    Ok(first_columns(input)?.is_some_and(|names| names.iter().any(|n| n == column)))
}

/// The reference a run trains against: `model.reference`, else the starting policy.
fn reference_model<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    policy: &CausalLm<B>,
    device: &B::Device,
) -> Result<CausalLm<B::InnerBackend>, PipelineError> {
    Ok(match &config.model.reference {
        Some(dir) => {
            CausalLm::from_pretrained(dir, device)?.with_precision(config.train.precision())
        }
        None => policy.valid(),
    })
}

/// Listwise preference optimisation (PRO, Plackett-Luce DPO) on rankings; the reference's
/// log-probs of every response are computed once before the first step unless every row has
/// them (`ref_logps`, from `burnish precompute-ref`).
pub fn run_listwise<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    loss: PreferenceLoss,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = &run_dir.path;
    let (mut train_rows, mut eval_rows, data) = load_lists(
        &DataInput::of(config)?,
        &encoder,
        &out.join("rejects.jsonl"),
    )?;
    let collator = collator_for(&encoder);
    let policy = CausalLm::<B>::from_pretrained(&model_dir(config)?, device)?
        .with_precision(config.train.precision());
    if loss.needs_reference() {
        let batch = config.train.batch_size.max(1);
        (train_rows, eval_rows) = fill_missing(
            train_rows,
            eval_rows,
            |r| r.ref_logps.is_none(),
            options,
            |todo, progress| {
                let reference = reference_model(config, &policy, device)?;
                on_peer_devices(
                    config,
                    &reference,
                    device,
                    todo,
                    progress,
                    |r, rows, dev, p| {
                        Ok(precompute_list_reference(
                            r, rows, &collator, batch, dev, p,
                        )?)
                    },
                )
            },
        )?;
    }
    let objective = ListwiseObjective::<B> {
        train: train_rows,
        eval: eval_rows,
        collator,
        loss,
        reference: None,
        device: device.clone(),
    };
    finish_run(run_dir, policy, &objective, config, options, data, device)
}

/// KTO (or `apo_zero_unpaired`) on unpaired rows (`prompt`, `completion`, `label`): each row
/// gets another row's completion for the KL reference point ([`pair_mismatched`]), and the
/// reference (`model.reference`, else the starting policy) scores both once before the first step.
pub fn run_kto<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let loss: UnpairedLoss = loss_from_table(&config.loss)?;
    loss.validate()?;
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = &run_dir.path;
    let (mut train_rows, mut eval_rows, data) = load_unpaired(
        &DataInput::of(config)?,
        &encoder,
        &out.join("rejects.jsonl"),
    )?;
    let max_length = encoder.config().max_length.unwrap_or(usize::MAX);
    let same_prompt =
        pair_mismatched(&mut train_rows, max_length) + pair_mismatched(&mut eval_rows, max_length);
    if same_prompt > 0 && !options.quiet {
        eprintln!(
            "warning: {same_prompt} rows found no row with another prompt among the next 64, so their KL reference point uses a completion of their own prompt (it then underestimates the KL); shuffle the data so that prompts are mixed"
        );
    }
    let collator = collator_for(&encoder);
    let policy = CausalLm::<B>::from_pretrained(&model_dir(config)?, device)?
        .with_precision(config.train.precision());
    let reference = reference_model(config, &policy, device)?;
    let n_train = train_rows.len();
    train_rows.append(&mut eval_rows);
    let mut progress = (!options.quiet).then(|| Progress::new(train_rows.len() as u64, 0));
    on_peer_devices(
        config,
        &reference,
        device,
        &mut train_rows,
        progress.as_mut(),
        |reference, rows, dev, progress| {
            Ok(precompute_unpaired_reference(
                reference,
                rows,
                &collator,
                reference_batch_size(config.train.batch_size),
                loss.needs_kl(),
                dev,
                progress,
            )?)
        },
    )?;
    drop(reference);
    eval_rows = train_rows.split_off(n_train);
    let objective = KtoObjective::<B> {
        train: train_rows,
        eval: eval_rows,
        collator,
        loss,
        device: device.clone(),
    };
    finish_run(run_dir, policy, &objective, config, options, data, device)
}

/// Supervised fine-tuning on `prompt` / `completion` rows (token-mean NLL of the completions).
pub fn run_sft<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let model_path = model_dir(config)?;
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = &run_dir.path;
    let (train_rows, eval_rows, data) = load_prompt_completions(
        &DataInput::of(config)?,
        &encoder,
        &out.join("rejects.jsonl"),
    )?;
    let objective = SftObjective::<B> {
        train: train_rows,
        eval: eval_rows,
        collator: collator_for(&encoder),
        device: device.clone(),
    };
    let model = CausalLm::<B>::from_pretrained(&model_path, device)?
        .with_precision(config.train.precision());
    finish_run(run_dir, model, &objective, config, options, data, device)
}

/// A Bradley-Terry reward model on pairs, or K-wise on rankings when the data are listwise
/// (every ordered pair of a ranking, one forward pass per ranking): the model of `model.path`
/// gets a fresh reward head (unless it has one); held-out accuracy is in the evaluations
/// (`accuracy`).
pub fn run_reward<B: ModelAutodiffBackend>(
    config: &TrainingConfig,
    options: &RunOptions,
    device: &B::Device,
) -> Result<RunSummary<B>, PipelineError> {
    let model_path = model_dir(config)?;
    let loss: RewardLoss = loss_from_table(&config.loss)?;
    loss.validate()?;
    let encoder = run_encoder(config)?;
    let run_dir = prepare_output(config, options)?;
    let out = &run_dir.path;
    let input = DataInput::of(config)?;
    let rejects = out.join("rejects.jsonl");
    // Seeded so that a resumed run builds the same head before loading the checkpoint.
    B::seed(device, config.train.seed);
    let mut model = CausalLm::<B>::from_pretrained(&model_path, device)?
        .with_precision(config.train.precision());
    if model.reward_head.is_none() {
        model = model.with_reward_head(device);
    }
    let collator = collator_for(&encoder);
    if is_listwise(&input)? {
        let (train_rows, eval_rows, data) = load_lists(&input, &encoder, &rejects)?;
        let objective = RewardListObjective::<B> {
            train: train_rows,
            eval: eval_rows,
            collator,
            loss,
            device: device.clone(),
        };
        return finish_run(run_dir, model, &objective, config, options, data, device);
    }
    let (train_pairs, eval_pairs, data) = load_pairs(&input, &encoder, &rejects)?;
    let objective = RewardObjective::<B> {
        train: train_pairs,
        eval: eval_pairs,
        collator,
        loss,
        device: device.clone(),
    };
    finish_run(run_dir, model, &objective, config, options, data, device)
}

/// Counts of [`precompute_reference_file`]: `read = scored + rejected`, every row written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrecomputeReport {
    /// Rows read.
    pub read: u64,
    /// Rows written (every row that could be read).
    pub written: u64,
    /// Rows whose reference log-probs were computed.
    pub scored: u64,
    /// Rows that could not be tokenized: written with null `ref_*_logp`, reasons in `rejects_path`.
    pub rejected: u64,
    /// Rows with a cell that cannot be read (a null prompt, a wrong shape): not written, since
    /// there is nothing to write, reasons in `rejects_path`. `read = written + unreadable`.
    pub unreadable: u64,
    /// The rejects file (JSON Lines), when any row was rejected.
    pub rejects_path: Option<PathBuf>,
}

/// Lengths and batching of [`precompute_reference_file`].
#[derive(Debug, Clone)]
pub struct PrecomputeOptions {
    /// A `tokenizer.json` other than the model folder's.
    pub tokenizer: Option<PathBuf>,
    /// Maximum prompt tokens (use the training run's value).
    pub max_prompt_length: usize,
    /// Maximum prompt + completion tokens (use the training run's value).
    pub max_length: usize,
    /// Pairs per forward pass.
    pub batch_size: usize,
    /// Show a progress bar (or periodic lines when stderr is not a terminal).
    pub progress: bool,
    /// Precision of the model's matrix products.
    pub precision: burnish_model::Precision,
}

impl Default for PrecomputeOptions {
    /// The model's tokenizer, the config defaults (256 / 512 tokens), 16 pairs per pass, progress
    /// shown, fp32.
    fn default() -> Self {
        let data = crate::config::DataSection::default();
        PrecomputeOptions {
            tokenizer: None,
            max_prompt_length: data.max_prompt_length,
            max_length: data.max_length,
            batch_size: 16,
            progress: true,
            precision: burnish_model::Precision::Fp32,
        }
    }
}

/// Reads the rows of `input` in chunks, tokenizes them, scores the ones that tokenize with
/// `score`, copies the cached values into the rows with `attach` (`None` for a row that did not
/// tokenize: its cache is cleared) and hands every row to `write`, in order. Rows that do not
/// tokenize are counted and written to the rejects file; `read = written`.
#[allow(clippy::too_many_arguments)]
fn precompute_chunks<R: burnish_data::ArrowRow, T>(
    input: &Path,
    output: &Path,
    rows: RowReader<R>,
    total: u64,
    options: &PrecomputeOptions,
    encode: impl Fn(&[R]) -> Vec<Result<T, EncodeError>>,
    mut score: impl FnMut(&mut [T]) -> Result<(), PipelineError>,
    attach: impl Fn(&mut R, Option<&T>),
    mut write: impl FnMut(R) -> Result<(), PipelineError>,
) -> Result<PrecomputeReport, PipelineError> {
    let mut rejects = Rejects::new(burnish_data::convert::default_rejects_path(output));
    let mut report = PrecomputeReport::default();
    let mut reader = rows;
    let chunk_rows = options.batch_size.max(1) * 32;
    let mut progress = options.progress.then(|| Progress::new(total, 0));
    let mut exhausted = false;
    while !exhausted {
        let read = read_rows(
            &mut reader,
            chunk_rows,
            &mut rejects,
            " (the row is not written)",
        )?;
        exhausted = read.exhausted;
        report.read += read.unreadable;
        report.unreadable += read.unreadable;
        let (mut chunk, at) = (read.rows, read.at);
        if chunk.is_empty() {
            continue;
        }
        let (mut ok, mut slots) = (Vec::new(), Vec::new());
        for (i, e) in encode(&chunk).into_iter().enumerate() {
            match e {
                Ok(t) => {
                    ok.push(t);
                    slots.push(i);
                }
                Err(err) => {
                    report.rejected += 1;
                    let (file, row) = at[i];
                    rejects.write(&reader.files()[file], row as usize, &err.to_string())?;
                }
            }
        }
        score(&mut ok)?;
        let mut scored = ok.iter().zip(&slots).peekable();
        for (i, row) in chunk.iter_mut().enumerate() {
            match scored.peek() {
                Some((t, slot)) if **slot == i => {
                    attach(row, Some(t));
                    scored.next();
                }
                _ => attach(row, None),
            }
        }
        report.read += chunk.len() as u64;
        report.scored += ok.len() as u64;
        if let Some(progress) = progress.as_mut() {
            progress.advance(report.read, "reference log-probs (rows)");
        }
        for row in chunk {
            write(row)?;
            report.written += 1;
        }
    }
    report.rejects_path = rejects.finish()?;
    if report.written == 0 {
        return Err(PipelineError::Invalid(format!(
            "{}: no rows to score ({} read, {} unreadable{})",
            input.display(),
            report.read,
            report.unreadable,
            report
                .rejects_path
                .as_ref()
                .map_or(String::new(), |p| format!(", reasons in {}", p.display()))
        )));
    }
    Ok(report)
}

/// Reads the rows of `input`, computes the reference model's summed completion log-probs in
/// batches and writes `output` with them added, the other columns kept, streaming in chunks of
/// rows. Pairwise files get `ref_chosen_logp` / `ref_rejected_logp`; listwise files (a
/// `responses` column) get `ref_logps`, one per response.
pub fn precompute_reference_file<B: ModelBackend>(
    model_dir: &Path,
    input: &Path,
    output: &Path,
    options: &PrecomputeOptions,
    device: &B::Device,
) -> Result<PrecomputeReport, PipelineError> {
    let encoder = encoder_for(
        model_dir,
        options.tokenizer.as_deref(),
        options.max_prompt_length,
        options.max_length,
    )?;
    let collator = collator_for(&encoder);
    let model =
        CausalLm::<B>::from_pretrained(model_dir, device)?.with_precision(options.precision);
    // Any input the trainers read (Parquet, Arrow IPC, CSV, a folder), not only Parquet.
    let data = DataInput::all_train(input);
    let listwise = is_listwise(&data)?;
    let columns = first_columns(&data)?
        .ok_or_else(|| PipelineError::Invalid(format!("{}: no data files", input.display())))?;
    let total = data.read(input).num_rows()?;
    let has = |name: &str| columns.iter().any(|c| c == name);
    let batch = options.batch_size;
    // Written beside the output and renamed when complete: a failed or killed run leaves no
    // half-written output (and an older one at that path stays as it was).
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = (|| -> Result<PrecomputeReport, PipelineError> {
        if listwise {
            let mut writer: Option<ListwiseWriter> = None;
            let report = precompute_chunks(
                input,
                output,
                data.read(input).listwise()?,
                total,
                options,
                |rows: &[ListwiseRow]| encoder.encode_lists(rows),
                |rows: &mut [TokenizedList]| {
                    precompute_list_reference(&model, rows, &collator, batch, device, None)
                        .map_err(PipelineError::from)
                },
                |row, t| row.ref_logps = t.and_then(|t| t.ref_logps.clone()),
                |row| {
                    let w = match writer.as_mut() {
                        Some(w) => w,
                        None => {
                            let mut schema = ListwiseSchema::of(&row);
                            schema.id = has("id");
                            schema.ref_logps = true;
                            writer.insert(ListwiseWriter::create(&partial, schema)?)
                        }
                    };
                    Ok(w.write(row)?)
                },
            )?;
            if let Some(w) = writer {
                w.finish()?;
            }
            return Ok(report);
        }
        let mut writer: Option<PairWriter> = None;
        let report = precompute_chunks(
            input,
            output,
            data.read(input).pairs()?,
            total,
            options,
            |rows: &[PreferencePair]| encoder.encode_pairs(rows),
            |pairs: &mut [TokenizedPair]| {
                precompute_reference(&model, pairs, &collator, batch, device, None);
                Ok(())
            },
            |pair, t| {
                pair.ref_chosen_logp = t.and_then(|t| t.ref_chosen_logp);
                pair.ref_rejected_logp = t.and_then(|t| t.ref_rejected_logp);
            },
            |pair| {
                let w = match writer.as_mut() {
                    Some(w) => w,
                    None => {
                        let mut schema = PairSchema::of(&pair);
                        schema.id = has("id");
                        schema.margin = has("margin");
                        schema.ref_logps = true;
                        writer.insert(PairWriter::create(&partial, schema)?)
                    }
                };
                Ok(w.write(pair)?)
            },
        )?;
        if let Some(w) = writer {
            w.finish()?;
        }
        Ok(report)
    })();
    match result {
        Ok(report) => {
            std::fs::rename(&partial, output).map_err(io_err(output))?;
            Ok(report)
        }
        Err(e) => {
            // Best effort: the error is what the user needs to see.
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

/// Which loss [`evaluate_file`] measures.
#[derive(Debug, Clone)]
pub enum EvalLoss {
    /// A pairwise preference loss of the policy against a reference.
    Preference(PreferenceLoss),
    /// A reward model's Bradley-Terry loss and accuracy.
    Reward(RewardLoss),
}

/// The result of [`evaluate_file`].
#[derive(Debug, Clone, Serialize)]
pub struct FileEval {
    /// The loss's `loss_type`.
    pub loss_type: String,
    /// Mean loss over the scored pairs.
    pub loss: f64,
    /// Pairs scored.
    pub examples: u64,
    /// Mean metrics (TRL's names).
    pub metrics: std::collections::BTreeMap<String, f64>,
    /// Where the rows went (every row counts as held out).
    pub data: DataReport,
}

/// Held-out loss and metrics of the model in `model_dir` on every pair of `data`. `loss: None`
/// means Bradley-Terry for a model with a reward head, else DPO's sigmoid loss. A preference
/// loss takes its reference log-probs from the file's `ref_*_logp` columns, else from the model
/// in `reference`, else from the model itself (the starting point: margins of zero). Rows that
/// do not tokenize go to `rejects` (JSON Lines, created only when a row is rejected).
pub fn evaluate_file<B: ModelAutodiffBackend>(
    model_dir: &Path,
    reference: Option<&Path>,
    data: &Path,
    rejects: &Path,
    loss: Option<EvalLoss>,
    options: &PrecomputeOptions,
    device: &B::Device,
) -> Result<FileEval, PipelineError> {
    let encoder = encoder_for(
        model_dir,
        options.tokenizer.as_deref(),
        options.max_prompt_length,
        options.max_length,
    )?;
    let collator = collator_for(&encoder);
    let (_, mut pairs, report) = load_rows_all_eval(data, &encoder, rejects)?;
    let model =
        CausalLm::<B>::from_pretrained(model_dir, device)?.with_precision(options.precision);
    let batch = options.batch_size.max(1);
    let loss = loss.unwrap_or_else(|| match model.reward_head {
        Some(_) => EvalLoss::Reward(RewardLoss::default()),
        None => EvalLoss::Preference(PreferenceLoss::default()),
    });
    let (name, result) = match loss {
        EvalLoss::Preference(loss) => {
            loss.validate()?;
            if loss.needs_reference() && !all_precomputed(&pairs) {
                let reference: CausalLm<B::InnerBackend> = match reference {
                    Some(dir) => {
                        CausalLm::from_pretrained(dir, device)?.with_precision(options.precision)
                    }
                    None => model.valid(),
                };
                precompute_reference(&reference, &mut pairs, &collator, batch, device, None);
            }
            let name = loss.name().to_string();
            let objective = PreferenceObjective::<B> {
                train: Vec::new(),
                eval: pairs,
                collator,
                loss,
                reference: None,
                device: device.clone(),
            };
            (name, evaluate(&model, &objective, batch)?)
        }
        EvalLoss::Reward(loss) => {
            loss.validate()?;
            if model.reward_head.is_none() {
                return Err(PipelineError::Invalid(format!(
                    "{}: the model has no reward head (`score.weight`); train one with `burnish train reward`",
                    model_dir.display()
                )));
            }
            let name = loss.name().to_string();
            let objective = RewardObjective::<B> {
                train: Vec::new(),
                eval: pairs,
                collator,
                loss,
                device: device.clone(),
            };
            (name, evaluate(&model, &objective, batch)?)
        }
    };
    let (loss, examples, metrics) = result.unwrap_or((f64::NAN, 0, Metrics::new()));
    Ok(FileEval {
        loss_type: name,
        loss,
        examples,
        metrics: metrics.iter().map(|(n, v)| (n.to_string(), v)).collect(),
        data: report,
    })
}

/// Every row of `data` as held out (train stays empty).
fn load_rows_all_eval(
    data: &Path,
    encoder: &Encoder,
    rejects: &Path,
) -> Result<(Vec<TokenizedPair>, Vec<TokenizedPair>, DataReport), PipelineError> {
    // Hold nothing out, then call every row held out.
    let (all, _, mut report) = load_pairs(&DataInput::all_train(data), encoder, rejects)?;
    report.eval = report.train;
    report.train = 0;
    Ok((Vec::new(), all, report))
}
