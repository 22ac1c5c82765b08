//! Streaming Parquet readers.
//!
//! A [`ReaderBuilder`] takes files and folders (a folder means every `*.parquet` file in it, in
//! name order) and yields typed rows through [`RowReader`], an iterator that holds one Arrow
//! record batch at a time: memory is bounded by the batch size and the Parquet page size, never
//! by the file size. Only the columns the row type uses are read; other columns in the file are
//! not even decompressed.

use std::fs::File;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::columns::{
    ContentColumn, ContentListColumn, f32_column, id_column, list_f64, list_i64, number_list_column,
};
use crate::error::{DataError, Result};
use crate::row::{ListwiseRow, PreferencePair, PromptCompletion, PromptRow, Ranking};

/// A row type that can be decoded from Arrow record batches.
pub trait ArrowRow: Sized + Send {
    /// Columns that must be present.
    const REQUIRED: &'static [&'static str];
    /// Columns read when present.
    const OPTIONAL: &'static [&'static str];
    /// Decodes every row of a batch. The outer error is a column-level problem (`column`,
    /// `reason`); inner errors are per row.
    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)>;
}

/// The result of decoding one row: the row, or the column and the reason it failed.
pub type RowResult<T> = std::result::Result<T, (String, String)>;

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Option<&'a arrow::array::ArrayRef> {
    batch.column_by_name(name)
}

fn content_col(batch: &RecordBatch, name: &str) -> Result<ContentColumn, (String, String)> {
    let a = column(batch, name).ok_or_else(|| (name.to_owned(), "missing".to_owned()))?;
    ContentColumn::new(a).map_err(|e| (name.to_owned(), e))
}

fn opt<T>(
    batch: &RecordBatch,
    name: &str,
    f: impl Fn(&arrow::array::ArrayRef) -> std::result::Result<T, String>,
) -> Result<Option<T>, (String, String)> {
    match column(batch, name) {
        None => Ok(None),
        Some(a) => f(a).map(Some).map_err(|e| (name.to_owned(), e)),
    }
}

fn get_f32(col: &Option<arrow::array::Float32Array>, row: usize) -> Option<f32> {
    col.as_ref().and_then(|c| {
        if c.is_null(row) {
            None
        } else {
            Some(c.value(row))
        }
    })
}

fn get_id(col: &Option<arrow::array::StringArray>, row: usize) -> Option<String> {
    col.as_ref().and_then(|c| {
        if c.is_null(row) {
            None
        } else {
            Some(c.value(row).to_owned())
        }
    })
}

fn named<T>(name: &str, r: std::result::Result<T, String>) -> RowResult<T> {
    r.map_err(|e| (name.to_owned(), e))
}

impl ArrowRow for PreferencePair {
    const REQUIRED: &'static [&'static str] = &["prompt", "chosen", "rejected"];
    const OPTIONAL: &'static [&'static str] =
        &["id", "margin", "ref_chosen_logp", "ref_rejected_logp"];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let prompt = content_col(batch, "prompt")?;
        let chosen = content_col(batch, "chosen")?;
        let rejected = content_col(batch, "rejected")?;
        let id = opt(batch, "id", id_column)?;
        let margin = opt(batch, "margin", f32_column)?;
        let ref_c = opt(batch, "ref_chosen_logp", f32_column)?;
        let ref_r = opt(batch, "ref_rejected_logp", f32_column)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                Ok(PreferencePair {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                    chosen: named("chosen", chosen.get(i))?,
                    rejected: named("rejected", rejected.get(i))?,
                    margin: get_f32(&margin, i),
                    ref_chosen_logp: get_f32(&ref_c, i),
                    ref_rejected_logp: get_f32(&ref_r, i),
                })
            })
            .collect())
    }
}

impl ArrowRow for ListwiseRow {
    const REQUIRED: &'static [&'static str] = &["prompt", "responses"];
    const OPTIONAL: &'static [&'static str] = &["id", "ranks", "scores"];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let prompt = content_col(batch, "prompt")?;
        let responses = column(batch, "responses")
            .ok_or_else(|| ("responses".to_owned(), "missing".to_owned()))
            .and_then(|a| ContentListColumn::new(a).map_err(|e| ("responses".to_owned(), e)))?;
        let id = opt(batch, "id", id_column)?;
        let ranks = opt(batch, "ranks", |a| {
            number_list_column(a, arrow::datatypes::DataType::Int64)
        })?;
        let scores = opt(batch, "scores", |a| {
            number_list_column(a, arrow::datatypes::DataType::Float64)
        })?;
        if ranks.is_none() && scores.is_none() {
            return Err((
                "ranks".into(),
                "missing: a listwise file needs `ranks` or `scores`".into(),
            ));
        }
        Ok((0..batch.num_rows())
            .map(|i| {
                let ranking = match (&ranks, &scores) {
                    (Some(r), _) if !r.is_null(i) => {
                        Ranking::Ranks(named("ranks", list_i64(r, i))?)
                    }
                    (_, Some(s)) => Ranking::Scores(named("scores", list_f64(s, i))?),
                    _ => return Err(("ranks".into(), "is null".into())),
                };
                Ok(ListwiseRow {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                    responses: named("responses", responses.get(i))?,
                    ranking,
                })
            })
            .collect())
    }
}

impl ArrowRow for PromptCompletion {
    const REQUIRED: &'static [&'static str] = &["prompt", "completion"];
    const OPTIONAL: &'static [&'static str] = &["id"];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let prompt = content_col(batch, "prompt")?;
        let completion = content_col(batch, "completion")?;
        let id = opt(batch, "id", id_column)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                Ok(PromptCompletion {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                    completion: named("completion", completion.get(i))?,
                })
            })
            .collect())
    }
}

impl ArrowRow for PromptRow {
    const REQUIRED: &'static [&'static str] = &["prompt"];
    const OPTIONAL: &'static [&'static str] = &["id"];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let prompt = content_col(batch, "prompt")?;
        let id = opt(batch, "id", id_column)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                Ok(PromptRow {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                })
            })
            .collect())
    }
}

/// A row of plain text (a `text` column), such as a corpus of reviews for SFT or for prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextRow {
    /// The text.
    pub text: String,
}

impl ArrowRow for TextRow {
    const REQUIRED: &'static [&'static str] = &["text"];
    const OPTIONAL: &'static [&'static str] = &[];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let text = content_col(batch, "text")?;
        Ok((0..batch.num_rows())
            .map(|i| match named("text", text.get(i))? {
                crate::row::Content::Text(text) => Ok(TextRow { text }),
                crate::row::Content::Messages(_) => Err((
                    "text".to_owned(),
                    "expected a string, found a message list".to_owned(),
                )),
            })
            .collect())
    }
}

/// Where a row came from: its file and its row number in that file (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPosition {
    /// The Parquet file.
    pub file: PathBuf,
    /// Row number within the file, from 0.
    pub row: u64,
}

/// Builds a [`RowReader`] over Parquet files and folders read as one data set.
#[derive(Debug, Clone)]
pub struct ReaderBuilder {
    paths: Vec<PathBuf>,
    batch_size: usize,
    optional: Option<Vec<String>>,
}

impl Default for ReaderBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ReaderBuilder {
    /// No inputs yet; batch size 1024 rows.
    pub fn new() -> Self {
        ReaderBuilder {
            paths: Vec::new(),
            batch_size: 1024,
            optional: None,
        }
    }

    /// Adds a file, or a folder (all its `*.parquet` files, in name order).
    pub fn path(mut self, path: impl Into<PathBuf>) -> Self {
        self.paths.push(path.into());
        self
    }

    /// Adds several files or folders, read in the order given.
    pub fn paths<P: Into<PathBuf>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.paths.extend(paths.into_iter().map(Into::into));
        self
    }

    /// Rows per Arrow record batch (memory per batch grows with it); default 1024.
    pub fn batch_size(mut self, rows: usize) -> Self {
        self.batch_size = rows.max(1);
        self
    }

    /// Reads only these of the row type's optional columns (e.g. `&["id"]` to skip cached
    /// reference log-probs); by default every optional column present is read.
    pub fn columns<S: AsRef<str>>(mut self, optional: &[S]) -> Self {
        self.optional = Some(optional.iter().map(|s| s.as_ref().to_owned()).collect());
        self
    }

    /// The Parquet files the inputs stand for, folders expanded.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for p in &self.paths {
            if p.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(p)
                    .map_err(|e| DataError::io(p, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "parquet"))
                    .collect();
                if found.is_empty() {
                    return Err(DataError::NoFiles(p.clone()));
                }
                found.sort();
                files.extend(found);
            } else {
                files.push(p.clone());
            }
        }
        Ok(files)
    }

    /// Total row count of all inputs, from the Parquet footers (no data is read).
    pub fn num_rows(&self) -> Result<u64> {
        let mut n = 0;
        for f in self.files()? {
            let file = File::open(&f).map_err(|e| DataError::io(&f, e))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| DataError::parquet(&f, e))?;
            n += b.metadata().file_metadata().num_rows() as u64;
        }
        Ok(n)
    }

    /// A reader of rows of type `T`.
    pub fn rows<T: ArrowRow>(self) -> Result<RowReader<T>> {
        let files = self.files()?;
        Ok(RowReader {
            files,
            batch_size: self.batch_size,
            optional: self.optional,
            next_file: 0,
            current: None,
            pending: Vec::new().into_iter(),
            batch_start: 0,
            emitted_in_batch: 0,
            last: None,
            cur_file: 0,
            _row: PhantomData,
        })
    }

    /// A reader of pairwise rows (`prompt`, `chosen`, `rejected`, optional `id`, `margin`,
    /// `ref_chosen_logp`, `ref_rejected_logp`).
    pub fn pairs(self) -> Result<RowReader<PreferencePair>> {
        self.rows()
    }

    /// A reader of listwise rows (`prompt`, `responses`, `ranks` or `scores`, optional `id`).
    pub fn listwise(self) -> Result<RowReader<ListwiseRow>> {
        self.rows()
    }

    /// A reader of plain-text rows (a `text` column).
    pub fn texts(self) -> Result<RowReader<TextRow>> {
        self.rows()
    }

    /// A reader of prompts alone (`prompt`, optional `id`; other columns are ignored).
    pub fn prompts(self) -> Result<RowReader<PromptRow>> {
        self.rows()
    }

    /// A reader of supervised rows (`prompt`, `completion`, optional `id`).
    pub fn prompt_completions(self) -> Result<RowReader<PromptCompletion>> {
        self.rows()
    }
}

/// An iterator of rows over several Parquet files, one record batch in memory at a time.
///
/// A file-level problem (unreadable file, missing column) is yielded as one error and the reader
/// moves on to the next file; a bad value is yielded as an error for its row only.
pub struct RowReader<T> {
    files: Vec<PathBuf>,
    batch_size: usize,
    optional: Option<Vec<String>>,
    next_file: usize,
    current: Option<(usize, ParquetRecordBatchReader)>,
    pending: std::vec::IntoIter<RowResult<T>>,
    batch_start: u64,
    emitted_in_batch: u64,
    last: Option<(usize, u64)>,
    cur_file: usize,
    _row: PhantomData<T>,
}

impl<T: ArrowRow> RowReader<T> {
    /// The files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// File and row number of the row (or row error) returned last.
    pub fn position(&self) -> Option<RowPosition> {
        self.last.map(|(f, row)| RowPosition {
            file: self.files[f].clone(),
            row,
        })
    }

    fn open(&self, idx: usize) -> Result<ParquetRecordBatchReader> {
        let path = &self.files[idx];
        let file = File::open(path).map_err(|e| DataError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| DataError::parquet(path, e))?;
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let mut wanted = Vec::new();
        for &c in T::REQUIRED {
            match names.iter().position(|n| *n == c) {
                Some(i) => wanted.push(i),
                None => {
                    return Err(DataError::MissingColumn {
                        path: path.clone(),
                        column: c.to_owned(),
                        found: names.join(", "),
                    });
                }
            }
        }
        for &c in T::OPTIONAL {
            let allowed = self
                .optional
                .as_ref()
                .is_none_or(|o| o.iter().any(|x| x == c));
            if let (true, Some(i)) = (allowed, names.iter().position(|n| *n == c)) {
                wanted.push(i);
            }
        }
        // Top-level columns are the roots of the Parquet schema in the same order.
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        builder
            .with_projection(mask)
            .with_batch_size(self.batch_size)
            .build()
            .map_err(|e| DataError::parquet(path, e))
    }
}

impl<T: ArrowRow> Iterator for RowReader<T> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        loop {
            if let Some(r) = self.pending.next() {
                let file = self.cur_file;
                let row = self.batch_start + self.emitted_in_batch;
                self.emitted_in_batch += 1;
                self.last = Some((file, row));
                return Some(r.map_err(|(column, reason)| DataError::Row {
                    path: self.files[file].clone(),
                    row,
                    column,
                    reason,
                }));
            }
            if let Some((file, reader)) = self.current.as_mut() {
                let file = *file;
                match reader.next() {
                    Some(Ok(batch)) => {
                        self.batch_start += self.emitted_in_batch;
                        self.emitted_in_batch = 0;
                        match T::decode_batch(&batch) {
                            Ok(rows) => self.pending = rows.into_iter(),
                            Err((column, reason)) => {
                                self.current = None;
                                return Some(Err(DataError::Row {
                                    path: self.files[file].clone(),
                                    row: self.batch_start,
                                    column,
                                    reason,
                                }));
                            }
                        }
                        continue;
                    }
                    Some(Err(e)) => {
                        self.current = None;
                        return Some(Err(DataError::arrow(&self.files[file], e)));
                    }
                    None => {
                        self.current = None;
                        continue;
                    }
                }
            }
            if self.next_file >= self.files.len() {
                return None;
            }
            let idx = self.next_file;
            self.next_file += 1;
            self.batch_start = 0;
            self.emitted_in_batch = 0;
            match self.open(idx) {
                Ok(r) => {
                    self.current = Some((idx, r));
                    self.cur_file = idx;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Opens one Parquet file's Arrow schema and row count (for `inspect`).
pub fn parquet_schema(path: &Path) -> Result<(arrow::datatypes::SchemaRef, u64)> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let b =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| DataError::parquet(path, e))?;
    Ok((
        b.schema().clone(),
        b.metadata().file_metadata().num_rows() as u64,
    ))
}
