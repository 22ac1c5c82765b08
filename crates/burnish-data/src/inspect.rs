//! A summary of a data set: schema, row count, length percentiles and sample rows.
//!
//! Lengths are in tokens when an [`Encoder`] is given (conversational rows rendered with its
//! chat template, no truncation applied beyond the encoder's own configuration), in characters
//! otherwise. Rows are streamed; only one length per row and column is kept.
//!
//! Every bad row is counted, each once: a value that cannot be decoded, a row a trainer would
//! reject before tokenizing it (empty completion, chosen identical to rejected, plain text mixed
//! with messages), a row that does not tokenize, and every remaining row of a file whose column
//! cannot be read at all (the reader skips the rest of such a file). Bad rows are neither
//! sampled nor measured; the first one's file, row and reason are kept for the report.

use std::fmt;
use std::path::PathBuf;

use rayon::prelude::*;

use crate::batches;
use crate::encode::Encoder;
use crate::error::{DataError, Result};
use crate::reader::{ArrowRow, ReaderBuilder, RowPosition, file_schema, kind_of};
use crate::row::{Content, ListwiseRow, PreferencePair, PromptCompletion};

/// Percentiles of one column's lengths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LengthStats {
    /// Median.
    pub p50: usize,
    /// 90th percentile.
    pub p90: usize,
    /// 99th percentile.
    pub p99: usize,
    /// Longest.
    pub max: usize,
}

impl LengthStats {
    /// Nearest-rank percentiles of `lengths` (sorted in place).
    pub fn of(lengths: &mut [usize]) -> Self {
        if lengths.is_empty() {
            return LengthStats::default();
        }
        lengths.sort_unstable();
        let pick = |q: f64| {
            lengths[((q * lengths.len() as f64).ceil() as usize).clamp(1, lengths.len()) - 1]
        };
        LengthStats {
            p50: pick(0.5),
            p90: pick(0.9),
            p99: pick(0.99),
            max: lengths[lengths.len() - 1],
        }
    }
}

/// The kind of rows a file holds, from its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// `prompt`, `chosen`, `rejected`.
    Pairwise,
    /// `prompt`, `responses`, `ranks`/`scores`.
    Listwise,
    /// `prompt`, `completion`.
    PromptCompletion,
}

/// What [`inspect`] found.
#[derive(Debug, Clone)]
pub struct InspectReport {
    /// The files read.
    pub files: Vec<PathBuf>,
    /// `name: type` of every column of the first file.
    pub schema: Vec<String>,
    /// The row kind.
    pub kind: RowKind,
    /// Rows of all files (Parquet footers; Arrow IPC and CSV files are counted by reading).
    pub rows: u64,
    /// `"tokens"` or `"chars"`.
    pub unit: &'static str,
    /// Length percentiles per column (`prompt`, `chosen`, `rejected`, ...).
    pub lengths: Vec<(String, LengthStats)>,
    /// Rows that could not be decoded, failed validation or could not be tokenized (neither
    /// sampled nor in the percentiles).
    pub bad_rows: u64,
    /// The first bad row: its file, row and reason.
    pub first_bad: Option<String>,
    /// The first sample rows, rendered for display.
    pub samples: Vec<String>,
}

fn short(c: &Content) -> String {
    let t = c.to_display_text();
    let mut s: String = t.chars().take(300).collect();
    if s.len() < t.len() {
        s.push_str(" [...]");
    }
    s.replace('\n', "\\n")
}

trait Inspectable: ArrowRow + Sync {
    const COLUMNS: &'static [&'static str];
    /// Why a trainer would reject the row before tokenizing it.
    fn check(&self) -> std::result::Result<(), String>;
    fn char_lengths(&self) -> Vec<usize>;
    fn token_lengths(&self, enc: &Encoder) -> std::result::Result<Vec<usize>, String>;
    fn sample(&self) -> String;
}

impl Inspectable for PreferencePair {
    const COLUMNS: &'static [&'static str] = &["prompt", "chosen", "rejected"];
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
    fn char_lengths(&self) -> Vec<usize> {
        vec![
            self.prompt.char_len(),
            self.chosen.char_len(),
            self.rejected.char_len(),
        ]
    }
    fn token_lengths(&self, enc: &Encoder) -> std::result::Result<Vec<usize>, String> {
        let t = enc.encode_pair(self).map_err(|e| e.to_string())?;
        Ok(vec![
            t.prompt_ids.len(),
            t.chosen_ids.len(),
            t.rejected_ids.len(),
        ])
    }
    fn sample(&self) -> String {
        format!(
            "prompt: {}\n    chosen: {}\n    rejected: {}",
            short(&self.prompt),
            short(&self.chosen),
            short(&self.rejected)
        )
    }
}

impl Inspectable for ListwiseRow {
    const COLUMNS: &'static [&'static str] = &["prompt", "responses"];
    fn check(&self) -> std::result::Result<(), String> {
        self.validate()
    }
    fn char_lengths(&self) -> Vec<usize> {
        vec![
            self.prompt.char_len(),
            self.responses
                .iter()
                .map(Content::char_len)
                .max()
                .unwrap_or(0),
        ]
    }
    fn token_lengths(&self, enc: &Encoder) -> std::result::Result<Vec<usize>, String> {
        let t = enc.encode_list(self).map_err(|e| e.to_string())?;
        Ok(vec![
            t.prompt_ids.len(),
            t.response_ids.iter().map(Vec::len).max().unwrap_or(0),
        ])
    }
    fn sample(&self) -> String {
        let mut s = format!("prompt: {}", short(&self.prompt));
        for (i, r) in self.responses.iter().enumerate() {
            s.push_str(&format!("\n    responses[{i}]: {}", short(r)));
        }
        s.push_str(&format!("\n    ranking: {:?}", self.ranking));
        s
    }
}

impl Inspectable for PromptCompletion {
    const COLUMNS: &'static [&'static str] = &["prompt", "completion"];
    fn check(&self) -> std::result::Result<(), String> {
        // What the encoder would refuse; supervised rows have no `validate` of their own.
        if self.completion.is_messages() != self.prompt.is_messages() {
            return Err("`completion` and `prompt` mix plain text and message lists".into());
        }
        if self.completion.is_empty() {
            return Err("`completion` is empty".into());
        }
        Ok(())
    }
    fn char_lengths(&self) -> Vec<usize> {
        vec![self.prompt.char_len(), self.completion.char_len()]
    }
    fn token_lengths(&self, enc: &Encoder) -> std::result::Result<Vec<usize>, String> {
        let t = enc
            .encode_prompt_completion(self)
            .map_err(|e| e.to_string())?;
        Ok(vec![t.prompt_ids.len(), t.completion_ids.len()])
    }
    fn sample(&self) -> String {
        format!(
            "prompt: {}\n    completion: {}",
            short(&self.prompt),
            short(&self.completion)
        )
    }
}

/// Bad rows: how many, and the first one's file, row and reason.
#[derive(Default)]
struct BadRows {
    count: u64,
    first: Option<String>,
}

impl BadRows {
    fn add(&mut self, rows: u64, why: impl FnOnce() -> String) {
        self.count += rows;
        if rows > 0 && self.first.is_none() {
            self.first = Some(why());
        }
    }
}

/// Length statistics per column, bad rows, sample texts.
type Scan = (Vec<(String, LengthStats)>, BadRows, Vec<String>);

fn at(pos: &Option<RowPosition>) -> String {
    match pos {
        Some(p) => format!("{}, row {}", p.file.display(), p.row),
        None => "a row".into(),
    }
}

fn scan<T: Inspectable>(
    builder: ReaderBuilder,
    encoder: Option<&Encoder>,
    n_samples: usize,
) -> Result<Scan> {
    let mut reader = builder.rows::<T>()?;
    let mut lengths: Vec<Vec<usize>> = vec![Vec::new(); T::COLUMNS.len()];
    let mut bad = BadRows::default();
    let mut samples = Vec::new();
    // Valid rows with where they are, tokenized (or measured) a chunk at a time.
    let mut chunk: Vec<(T, Option<RowPosition>)> = Vec::with_capacity(4096);
    let mut done = false;
    while !done {
        chunk.clear();
        while chunk.len() < 4096 {
            match reader.next() {
                Some(Ok(r)) => match r.check() {
                    Ok(()) => chunk.push((r, reader.position())),
                    Err(reason) => bad.add(1, || format!("{}: {reason}", at(&reader.position()))),
                },
                Some(Err(e)) => match &e {
                    DataError::Row { .. } => bad.add(1, || e.to_string()),
                    // The reader skips the rest of such a file: every row from `row` on is bad.
                    DataError::Column { path, row, .. } => {
                        let rows = batches::count_rows(path, kind_of(path)?)?;
                        bad.add(rows.saturating_sub(*row), || e.to_string());
                    }
                    DataError::MissingColumn { path, .. } => {
                        bad.add(batches::count_rows(path, kind_of(path)?)?, || e.to_string());
                    }
                    _ => return Err(e),
                },
                None => {
                    done = true;
                    break;
                }
            }
        }
        let ls: Vec<std::result::Result<Vec<usize>, String>> = match encoder {
            Some(enc) => chunk
                .par_iter()
                .map(|(r, _)| r.token_lengths(enc))
                .collect(),
            None => chunk.iter().map(|(r, _)| Ok(r.char_lengths())).collect(),
        };
        for ((r, pos), l) in chunk.iter().zip(ls) {
            match l {
                Ok(l) => {
                    if samples.len() < n_samples {
                        samples.push(r.sample());
                    }
                    l.into_iter()
                        .enumerate()
                        .for_each(|(i, n)| lengths[i].push(n));
                }
                Err(reason) => bad.add(1, || format!("{}: {reason}", at(pos))),
            }
        }
    }
    let stats = T::COLUMNS
        .iter()
        .zip(lengths.iter_mut())
        .map(|(c, l)| (c.to_string(), LengthStats::of(l)))
        .collect();
    Ok((stats, bad, samples))
}

/// Summarises the data files or folders in `paths` as one data set.
pub fn inspect(
    paths: &[PathBuf],
    encoder: Option<&Encoder>,
    n_samples: usize,
) -> Result<InspectReport> {
    let builder = ReaderBuilder::new().paths(paths.iter().cloned());
    let files = builder.files()?;
    let first = files.first().ok_or_else(|| DataError::Invalid {
        path: PathBuf::new(),
        reason: "no input".into(),
    })?;
    let schema = file_schema(first)?;
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let kind = if names.contains(&"chosen") {
        RowKind::Pairwise
    } else if names.contains(&"responses") {
        RowKind::Listwise
    } else if names.contains(&"completion") {
        RowKind::PromptCompletion
    } else {
        return Err(DataError::MissingColumn {
            path: first.clone(),
            column: "chosen".into(),
            found: names.join(", "),
        });
    };
    let rows = builder.num_rows()?;
    let (lengths, bad, samples) = match kind {
        RowKind::Pairwise => scan::<PreferencePair>(builder, encoder, n_samples)?,
        RowKind::Listwise => scan::<ListwiseRow>(builder, encoder, n_samples)?,
        RowKind::PromptCompletion => scan::<PromptCompletion>(builder, encoder, n_samples)?,
    };
    Ok(InspectReport {
        schema: schema
            .fields()
            .iter()
            .map(|f| format!("{}: {}", f.name(), f.data_type()))
            .collect(),
        files,
        kind,
        rows,
        unit: if encoder.is_some() { "tokens" } else { "chars" },
        lengths,
        bad_rows: bad.count,
        first_bad: bad.first,
        samples,
    })
}

impl fmt::Display for InspectReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "files: {}",
            self.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )?;
        writeln!(f, "kind: {:?}", self.kind)?;
        writeln!(f, "schema:")?;
        for s in &self.schema {
            writeln!(f, "  {s}")?;
        }
        writeln!(f, "rows: {}", self.rows)?;
        if self.bad_rows > 0 {
            writeln!(
                f,
                "bad rows (unreadable, invalid or not tokenizable; not measured): {}",
                self.bad_rows
            )?;
            if let Some(first) = &self.first_bad {
                writeln!(f, "  first: {first}")?;
            }
        }
        writeln!(
            f,
            "lengths ({}):{:>8}{:>8}{:>8}{:>8}",
            self.unit, "p50", "p90", "p99", "max"
        )?;
        for (name, s) in &self.lengths {
            writeln!(
                f,
                "  {name:<17}{:>8}{:>8}{:>8}{:>8}",
                s.p50, s.p90, s.p99, s.max
            )?;
        }
        writeln!(f, "samples:")?;
        for (i, s) in self.samples.iter().enumerate() {
            writeln!(f, "  [{i}] {s}")?;
        }
        Ok(())
    }
}
