//! Conversion of public preference formats into burnish's Parquet files, with a rejects file.
//!
//! Inputs are JSON, JSON Lines (optionally `.gz`), Parquet, Arrow IPC and CSV files, and folders
//! (Hugging Face `save_to_disk` and `DatasetDict` folders, Hub-style folders of shards, plain
//! folders; see [`crate::layout`]), read through an optional column mapping; see
//! [`crate::source`] for how tabular rows become records.
//!
//! Nothing is lost silently: every input record is either written (as one or more output rows)
//! or written to the rejects file as a JSON line `{"source", "line" | "row", "reason"}`, where
//! `source` is the file the record came from (the shard, for a folder) and the line or row
//! number is within that file; the [`ConvertReport`]'s counts reconcile:
//! `read == written + rejected`. Pairwise output is the TRL layout; listwise output keeps every
//! response with its ranks or scores; unpaired (KTO) output has `prompt`, `completion` and a
//! boolean `label`, and a pair given for it becomes two rows, its chosen one desirable and its
//! rejected one undesirable.
//!
//! The Parquet schema (plain text or message lists, `id`, `margin`) is taken from the first
//! valid row; a later row that does not fit it (say, a message list after plain text) is
//! rejected with that reason rather than coerced.
//!
//! The output is written under a temporary name beside it and renamed into place only when the
//! conversion succeeded, so a failed conversion (an unreadable shard half-way, a full disk, or
//! rejects that [`ConvertOptions::allow_rejects`] does not allow) leaves no output behind, and an
//! earlier output at that path stays as it was. The rejects file is written as records are
//! rejected: when rejects fail the conversion it is what says why.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

use crate::batches;
use crate::column_map::ColumnMap;
use crate::encode::Encoder;
use crate::error::{DataError, Result};
use crate::formats::{InputFormat, Parsed, parse_record};
use crate::layout::{FileKind, Readable, data_files};
use crate::pairing::{all_pairs, best_vs_random};
use crate::row::{ListwiseRow, PreferencePair, PromptCompletion, UnpairedRow};
use crate::source::{Location, for_each_mapped_record};
use crate::writer::{
    ListwiseSchema, ListwiseWriter, PairSchema, PairWriter, UnpairedSchema, UnpairedWriter,
};

/// How listwise inputs (UltraFeedback, rankings, scores) become output rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pairing {
    /// Every pair with different ranks/scores (InstructGPT); ties give no pair.
    AllPairs,
    /// The best response against one strictly worse response drawn with the seed (Zephyr).
    BestVsRandom,
    /// No pairing: write listwise rows (`prompt`, `responses`, `ranks`/`scores`).
    Listwise,
}

impl std::str::FromStr for Pairing {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "all-pairs" => Ok(Pairing::AllPairs),
            "best-vs-random" => Ok(Pairing::BestVsRandom),
            "listwise" => Ok(Pairing::Listwise),
            other => Err(format!(
                "unknown pairing `{other}` (expected all-pairs, best-vs-random, listwise)"
            )),
        }
    }
}

/// Options of [`convert`].
#[derive(Debug)]
pub struct ConvertOptions<'a> {
    /// The input format.
    pub format: InputFormat,
    /// Pairing of listwise inputs; `None` picks best-vs-random for UltraFeedback and all-pairs
    /// for rankings and scores.
    pub pairing: Option<Pairing>,
    /// Seed of best-vs-random.
    pub seed: u64,
    /// Where rejected records go (JSON Lines); created only when something is rejected.
    pub rejects: PathBuf,
    /// When given, every output row is also rendered and tokenized with it, and rows that fail
    /// (template error, nothing left of a completion after truncation) are rejected.
    pub encoder: Option<&'a Encoder>,
    /// Write unpaired (KTO) rows: each pair gives a desirable row (prompt, chosen, label true)
    /// and an undesirable one (prompt, rejected, label false), both with the pair's id, so that
    /// a split by id keeps them together. Listwise inputs are paired first, best-vs-random
    /// only. Always on for [`InputFormat::Kto`].
    pub unpaired: bool,
    /// Column mapping as `(TRL name, file column)` pairs: `("prompt", "question")` reads each
    /// input's `question` as `prompt`. A mapped column an input lacks fails the conversion with
    /// one error naming both names and listing the input's columns (a JSON input's columns are
    /// its first record's keys).
    pub columns: Vec<(String, String)>,
    /// The split read from folders that hold several; `None` for `train`.
    pub split: Option<String>,
    /// Write the output even when records were rejected. When false, any reject fails the
    /// conversion with [`DataError::Rejected`] after every record was read (so the rejects file
    /// lists them all), and the output is not written.
    pub allow_rejects: bool,
}

impl ConvertOptions<'_> {
    /// Options for `format` with default pairing, seed 0, `OUT.rejects.jsonl` beside `output`,
    /// and rejects allowed.
    pub fn new(format: InputFormat, output: &Path) -> Self {
        ConvertOptions {
            format,
            pairing: None,
            seed: 0,
            rejects: default_rejects_path(output),
            encoder: None,
            unpaired: false,
            columns: Vec::new(),
            split: None,
            allow_rejects: true,
        }
    }
}

/// `OUT.parquet` -> `OUT.rejects.jsonl`.
pub fn default_rejects_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    output.with_file_name(format!("{stem}.rejects.jsonl"))
}

/// What a conversion did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConvertReport {
    /// Input records read (every record, including unparseable ones).
    pub read: u64,
    /// Input records written (each gives one or more output rows).
    pub written: u64,
    /// Input records rejected (each is one line of the rejects file).
    pub rejected: u64,
    /// Rows in the output file (more than `written` when a ranking gives several pairs).
    pub output_rows: u64,
    /// The rejects file, when anything was rejected.
    pub rejects_path: Option<PathBuf>,
}

enum Out {
    Pairs(Vec<PreferencePair>),
    List(ListwiseRow),
    Unpaired(Vec<UnpairedRow>),
}

enum Sink {
    None,
    Pairs(PairWriter),
    List(ListwiseWriter),
    Unpaired(UnpairedWriter),
}

struct Rejects {
    path: PathBuf,
    file: Option<BufWriter<File>>,
}

impl Rejects {
    fn write(&mut self, source: &Path, loc: Location, reason: &str) -> Result<()> {
        if self.file.is_none() {
            let f = File::create(&self.path).map_err(|e| DataError::io(&self.path, e))?;
            self.file = Some(BufWriter::new(f));
        }
        let (key, n) = match loc {
            Location::Line(n) => ("line", n),
            Location::Row(n) => ("row", n),
        };
        let mut rec = serde_json::Map::new();
        rec.insert("source".into(), source.display().to_string().into());
        rec.insert(key.into(), n.into());
        rec.insert("reason".into(), reason.into());
        let line = serde_json::Value::Object(rec);
        match self.file.as_mut() {
            Some(f) => writeln!(f, "{line}").map_err(|e| DataError::io(&self.path, e)),
            None => Ok(()),
        }
    }
}

/// A pair as two unpaired rows: chosen desirable, rejected undesirable.
fn unpair(p: PreferencePair) -> [UnpairedRow; 2] {
    [
        UnpairedRow {
            id: p.id.clone(),
            prompt: p.prompt.clone(),
            completion: p.chosen,
            label: true,
            ref_logp: p.ref_chosen_logp,
            ref_kl_logp: None,
        },
        UnpairedRow {
            id: p.id,
            prompt: p.prompt,
            completion: p.rejected,
            label: false,
            ref_logp: p.ref_rejected_logp,
            ref_kl_logp: None,
        },
    ]
}

fn to_out(
    parsed: Parsed,
    pairing: Pairing,
    unpaired: bool,
    rng: &mut StdRng,
) -> std::result::Result<Out, String> {
    let pairs = match parsed {
        Parsed::Unpaired(r) => {
            r.validate()?;
            return Ok(Out::Unpaired(vec![r]));
        }
        Parsed::Pair(p) => {
            p.validate()?;
            vec![p]
        }
        Parsed::List(row) => {
            row.validate()?;
            match pairing {
                Pairing::Listwise => return Ok(Out::List(row)),
                Pairing::AllPairs => {
                    let pairs = all_pairs(&row);
                    if pairs.is_empty() {
                        return Err("every response ties: no pair".into());
                    }
                    for p in &pairs {
                        p.validate()?;
                    }
                    pairs
                }
                Pairing::BestVsRandom => {
                    let p = best_vs_random(&row, rng).ok_or("every response ties: no pair")?;
                    p.validate()?;
                    vec![p]
                }
            }
        }
    };
    if unpaired {
        Ok(Out::Unpaired(pairs.into_iter().flat_map(unpair).collect()))
    } else {
        Ok(Out::Pairs(pairs))
    }
}

fn check_with_encoder(out: &Out, encoder: &Encoder) -> std::result::Result<(), String> {
    match out {
        Out::Pairs(ps) => ps.iter().try_for_each(|p| {
            encoder
                .encode_pair(p)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
        Out::List(r) => encoder
            .encode_list(r)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Out::Unpaired(rs) => rs.iter().try_for_each(|r| {
            let row = PromptCompletion {
                id: None,
                prompt: r.prompt.clone(),
                completion: r.completion.clone(),
            };
            encoder
                .encode_prompt_completion(&row)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }),
    }
}

/// Fields a row has that the file (schema fixed by the first row) cannot hold.
fn pair_fit(schema: &PairSchema, p: &PreferencePair) -> std::result::Result<(), String> {
    schema.accepts(p)?;
    if p.id.is_some() && !schema.id {
        return Err(
            "row has an `id` but the first row had none, so the file has no id column".into(),
        );
    }
    if p.margin.is_some() && !schema.margin {
        return Err(
            "row has a `margin` but the first row had none, so the file has no margin column"
                .into(),
        );
    }
    Ok(())
}

/// Fields an unpaired row has that the file (schema fixed by the first row) cannot hold.
fn unpaired_fit(schema: &UnpairedSchema, r: &UnpairedRow) -> std::result::Result<(), String> {
    schema.accepts(r)?;
    if r.id.is_some() && !schema.id {
        return Err(
            "row has an `id` but the first row had none, so the file has no id column".into(),
        );
    }
    Ok(())
}

/// The path as the file system resolves it (for a file that does not exist yet, its folder).
fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            parent
                .canonicalize()
                .map(|p| p.join(name))
                .unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// The output under a temporary name in its own folder (so that the rename is atomic), removed
/// again unless [`Staged::commit`] renamed it into place.
struct Staged {
    temporary: PathBuf,
    output: PathBuf,
    committed: bool,
}

impl Staged {
    fn new(output: &Path) -> Self {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "out".into());
        // Hidden, and with the process id so that two conversions to one path do not collide.
        let temporary = output.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        Staged {
            temporary,
            output: output.to_owned(),
            committed: false,
        }
    }

    /// An error about the temporary file as one about the output, the file the user named.
    fn name_output(&self, mut e: DataError) -> DataError {
        let path = e.path_mut();
        if *path == self.temporary {
            *path = self.output.clone();
        }
        e
    }

    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temporary, &self.output)
            .map_err(|e| DataError::io(&self.output, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: the conversion already failed with the error that matters, and a
            // temporary file that was never created is nothing to report.
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// Whether two paths name the same file as the file system resolves them (`a/../b`, links),
/// either of them possibly not created yet.
pub fn is_same_file(a: &Path, b: &Path) -> bool {
    resolved(a) == resolved(b)
}

/// Refuses to write `output` (or the rejects file) over an input or one of its files.
fn refuse_overwriting_inputs(
    output: &Path,
    what: &str,
    inputs: &[PathBuf],
    shards: &[PathBuf],
) -> Result<()> {
    let out = resolved(output);
    if let Some(input) = inputs.iter().chain(shards).find(|i| resolved(i) == out) {
        return Err(DataError::Invalid {
            path: output.to_owned(),
            reason: format!(
                "the {what} is also the input {}: writing it would destroy what is being read",
                input.display()
            ),
        });
    }
    Ok(())
}

/// Converts `inputs` (files and folders of any kind [`crate::source`] reads) of one format
/// into `output`.
///
/// Fails on file-level problems (unreadable or empty input, a mapped column an input lacks, an
/// output or rejects file that is also an input, a rejects file that is also the output,
/// unwritable output), and on rejects when `options.allow_rejects` is false; row problems are
/// counted and written to `options.rejects`. A failed conversion leaves no output.
pub fn convert(
    inputs: &[PathBuf],
    output: &Path,
    options: &ConvertOptions<'_>,
) -> Result<ConvertReport> {
    let pairing = options.pairing.unwrap_or(match options.format {
        InputFormat::UltraFeedback => Pairing::BestVsRandom,
        _ => Pairing::AllPairs,
    });
    if pairing == Pairing::Listwise && !options.format.is_listwise() {
        return Err(DataError::Invalid {
            path: output.to_owned(),
            reason: format!(
                "--pairing listwise needs a listwise input format, not {:?}",
                options.format
            ),
        });
    }
    let unpaired = options.unpaired || options.format == InputFormat::Kto;
    if unpaired && options.format.is_listwise() && pairing != Pairing::BestVsRandom {
        return Err(DataError::Invalid {
            path: output.to_owned(),
            reason: format!(
                "unpaired output from a listwise format needs best-vs-random pairing, not \
                 {pairing:?} (all pairs would label one response both desirable and undesirable)"
            ),
        });
    }
    let map = ColumnMap::new(options.columns.iter().cloned());
    let mut shards = Vec::new();
    for input in inputs {
        shards.extend(data_files(
            input,
            options.split.as_deref(),
            Readable { json: true },
        )?);
    }
    refuse_overwriting_inputs(output, "output", inputs, &shards)?;
    refuse_overwriting_inputs(&options.rejects, "rejects file", inputs, &shards)?;
    if is_same_file(&options.rejects, output) {
        return Err(DataError::Invalid {
            path: options.rejects.clone(),
            reason: "the rejects file is also the output: give them different paths".into(),
        });
    }
    // Refuse empty inputs, and mapped columns a tabular input lacks, before anything is written.
    for shard in &shards {
        let meta = std::fs::metadata(shard).map_err(|e| DataError::io(shard, e))?;
        if meta.len() == 0 {
            return Err(DataError::EmptyInput(shard.clone()));
        }
        if let Some(kind @ (FileKind::Parquet | FileKind::Arrow | FileKind::Csv)) =
            FileKind::detect(shard)?
        {
            let schema = batches::schema(shard, kind)?;
            let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
            map.check(shard, &names)?;
        }
    }
    let staged = Staged::new(output);
    let report = write_records(&shards, &staged.temporary, options, pairing, unpaired, &map)
        .map_err(|e| staged.name_output(e))?;
    if report.rejected > 0 && !options.allow_rejects {
        // `staged` is dropped here, and the temporary output with it.
        return Err(DataError::Rejected {
            path: output.to_owned(),
            read: report.read,
            rejected: report.rejected,
            rejects: options.rejects.clone(),
        });
    }
    staged.commit()?;
    Ok(report)
}

/// Reads every record of `shards` and writes the output rows to `output` (the temporary file)
/// and the rejects to `options.rejects`.
fn write_records(
    shards: &[PathBuf],
    output: &Path,
    options: &ConvertOptions<'_>,
    pairing: Pairing,
    unpaired: bool,
    map: &ColumnMap,
) -> Result<ConvertReport> {
    let mut rng = StdRng::seed_from_u64(options.seed);
    let mut report = ConvertReport::default();
    let mut rejects = Rejects {
        path: options.rejects.clone(),
        file: None,
    };
    let mut sink = Sink::None;
    const CHUNK: usize = 1024;

    for input in shards {
        let mut chunk: Vec<(Location, std::result::Result<Out, String>)> =
            Vec::with_capacity(CHUNK);
        let flush = |chunk: &mut Vec<(Location, std::result::Result<Out, String>)>,
                     report: &mut ConvertReport,
                     sink: &mut Sink,
                     rejects: &mut Rejects|
         -> Result<()> {
            if let Some(enc) = options.encoder {
                chunk.par_iter_mut().for_each(|(_, r)| {
                    if let Ok(out) = r
                        && let Err(e) = check_with_encoder(out, enc)
                    {
                        *r = Err(e);
                    }
                });
            }
            for (loc, r) in chunk.drain(..) {
                report.read += 1;
                let out = match r {
                    Ok(out) => out,
                    Err(reason) => {
                        report.rejected += 1;
                        rejects.write(input, loc, &reason)?;
                        continue;
                    }
                };
                if matches!(sink, Sink::None) {
                    *sink = match &out {
                        Out::Pairs(ps) => {
                            Sink::Pairs(PairWriter::create(output, PairSchema::of(&ps[0]))?)
                        }
                        Out::List(r) => {
                            Sink::List(ListwiseWriter::create(output, ListwiseSchema::of(r))?)
                        }
                        Out::Unpaired(rs) => Sink::Unpaired(UnpairedWriter::create(
                            output,
                            UnpairedSchema::of(&rs[0]),
                        )?),
                    };
                }
                let fit = match (&*sink, &out) {
                    (Sink::Pairs(w), Out::Pairs(ps)) => {
                        ps.iter().try_for_each(|p| pair_fit(&w.schema(), p))
                    }
                    (Sink::List(w), Out::List(r)) => w.schema().accepts(r),
                    (Sink::Unpaired(w), Out::Unpaired(rs)) => {
                        rs.iter().try_for_each(|r| unpaired_fit(&w.schema(), r))
                    }
                    _ => Err("row kind differs from the file's".into()),
                };
                if let Err(reason) = fit {
                    report.rejected += 1;
                    rejects.write(input, loc, &reason)?;
                    continue;
                }
                report.written += 1;
                match (&mut *sink, out) {
                    (Sink::Pairs(w), Out::Pairs(ps)) => {
                        for p in ps {
                            w.write(p)?;
                            report.output_rows += 1;
                        }
                    }
                    (Sink::List(w), Out::List(r)) => {
                        w.write(r)?;
                        report.output_rows += 1;
                    }
                    (Sink::Unpaired(w), Out::Unpaired(rs)) => {
                        for r in rs {
                            w.write(r)?;
                            report.output_rows += 1;
                        }
                    }
                    // `fit` rejected every other combination above.
                    _ => {}
                }
            }
            Ok(())
        };
        for_each_mapped_record(input, map, |loc, value| {
            let out = value
                .and_then(|v| parse_record(options.format, &v))
                .and_then(|p| to_out(p, pairing, unpaired, &mut rng));
            chunk.push((loc, out));
            if chunk.len() >= CHUNK {
                flush(&mut chunk, &mut report, &mut sink, &mut rejects)?;
            }
            Ok(())
        })?;
        flush(&mut chunk, &mut report, &mut sink, &mut rejects)?;
    }

    match sink {
        Sink::Pairs(w) => {
            w.finish()?;
        }
        Sink::List(w) => {
            w.finish()?;
        }
        Sink::Unpaired(w) => {
            w.finish()?;
        }
        // Still leave a valid (empty) file of the kind asked for, so that the output always
        // exists and reads as that kind.
        Sink::None if unpaired => {
            UnpairedWriter::create(output, UnpairedSchema::default())?.finish()?;
        }
        Sink::None if pairing == Pairing::Listwise => {
            ListwiseWriter::create(output, ListwiseSchema::default())?.finish()?;
        }
        Sink::None => {
            PairWriter::create(output, PairSchema::default())?.finish()?;
        }
    }
    if let Some(mut f) = rejects.file.take() {
        f.flush().map_err(|e| DataError::io(&rejects.path, e))?;
        report.rejects_path = Some(rejects.path.clone());
    } else if rejects.path.exists() {
        // A rejects file left by an earlier run would describe rows this run did not reject.
        std::fs::remove_file(&rejects.path).map_err(|e| DataError::io(&rejects.path, e))?;
    }
    debug_assert_eq!(report.read, report.written + report.rejected);
    Ok(report)
}
