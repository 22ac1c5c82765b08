//! Streaming readers of Parquet, Arrow IPC and CSV files, and of Hugging Face `datasets` folders.
//!
//! A [`ReaderBuilder`] takes files and folders and yields typed rows through [`RowReader`], an
//! iterator that holds one Arrow record batch at a time: memory is bounded by the batch size
//! (and the Parquet page size), never by the file size. Only the columns the row type uses are
//! read; other columns in the file are not even decompressed.
//!
//! Inputs: Parquet files, Arrow IPC files (file or stream format, as `datasets.save_to_disk`
//! writes them), CSV files, and folders: a folder of such files (read in name order), a
//! `save_to_disk` folder, a `DatasetDict` folder, or a Hub-style folder of shards, of which one
//! split is read ([`ReaderBuilder::split`]; see [`crate::layout`]). JSON and JSON Lines are not
//! read here: `burnish convert` turns them into Parquet.
//!
//! CSV files give text columns only: `prompt`, `chosen`, `rejected`, `completion`, `text` and
//! `id` as strings, `label` as `true`/`false`/`1`/`0`, and float columns (`margin`, the cached
//! reference log-probs) parsed as numbers. Message lists and list columns (`responses`, `ranks`,
//! `scores`) cannot be held in CSV cells here: a CSV column of JSON message lists is refused
//! rather than read as text; convert such a file with `burnish convert` first.
//!
//! Column names follow TRL; a file with other names is read through a column mapping
//! ([`ReaderBuilder::rename`], [`ReaderBuilder::column_map`]).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Schema};

use crate::batches::{self, Batches};
use crate::column_map::ColumnMap;
use crate::columns::{
    ContentColumn, ContentListColumn, LabelColumn, f32_column, id_column, list_f32, list_f64,
    list_i64, number_list_column,
};
use crate::error::{DataError, Result};
use crate::layout::{FileKind, Readable, data_files};
use crate::row::{ListwiseRow, PreferencePair, PromptCompletion, PromptRow, Ranking, UnpairedRow};

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
    const OPTIONAL: &'static [&'static str] = &["id", "ranks", "scores", "ref_logps"];

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
        let ref_logps = opt(batch, "ref_logps", |a| {
            number_list_column(a, arrow::datatypes::DataType::Float32)
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
                let responses = named("responses", responses.get(i))?;
                let ref_logps = match &ref_logps {
                    Some(r) if !r.is_null(i) => {
                        let v = named("ref_logps", list_f32(r, i))?;
                        if v.len() != responses.len() {
                            return Err((
                                "ref_logps".into(),
                                format!("has {} values for {} responses", v.len(), responses.len()),
                            ));
                        }
                        Some(v)
                    }
                    _ => None,
                };
                Ok(ListwiseRow {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                    responses,
                    ranking,
                    ref_logps,
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

impl ArrowRow for UnpairedRow {
    const REQUIRED: &'static [&'static str] = &["prompt", "completion", "label"];
    const OPTIONAL: &'static [&'static str] = &["id", "ref_logp", "ref_kl_logp"];

    fn decode_batch(batch: &RecordBatch) -> Result<Vec<RowResult<Self>>, (String, String)> {
        let prompt = content_col(batch, "prompt")?;
        let completion = content_col(batch, "completion")?;
        let label = column(batch, "label")
            .ok_or_else(|| ("label".to_owned(), "missing".to_owned()))
            .and_then(|a| LabelColumn::new(a).map_err(|e| ("label".to_owned(), e)))?;
        let id = opt(batch, "id", id_column)?;
        let ref_logp = opt(batch, "ref_logp", f32_column)?;
        let ref_kl = opt(batch, "ref_kl_logp", f32_column)?;
        Ok((0..batch.num_rows())
            .map(|i| {
                Ok(UnpairedRow {
                    id: get_id(&id, i),
                    prompt: named("prompt", prompt.get(i))?,
                    completion: named("completion", completion.get(i))?,
                    label: named("label", label.get(i))?,
                    ref_logp: get_f32(&ref_logp, i),
                    ref_kl_logp: get_f32(&ref_kl, i),
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

/// Where a row came from: its file (the shard, for a folder) and its row number in that file
/// (from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowPosition {
    /// The data file.
    pub file: PathBuf,
    /// Row number within the file, from 0.
    pub row: u64,
}

/// Builds a [`RowReader`] over data files and folders read as one data set.
#[derive(Debug, Clone)]
pub struct ReaderBuilder {
    paths: Vec<PathBuf>,
    batch_size: usize,
    optional: Option<Vec<String>>,
    split: Option<String>,
    columns: Vec<(String, String)>,
}

impl Default for ReaderBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ReaderBuilder {
    /// No inputs yet; batch size 1024 rows, split `train` where a folder has several, no mapping.
    pub fn new() -> Self {
        ReaderBuilder {
            paths: Vec::new(),
            batch_size: 1024,
            optional: None,
            split: None,
            columns: Vec::new(),
        }
    }

    /// Adds a file (Parquet, Arrow IPC, CSV) or a folder (see the module documentation).
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

    /// The split to read from folders that hold several (`DatasetDict` and Hub-style folders);
    /// default `train`. Plain files and folders ignore it.
    pub fn split(mut self, name: impl Into<String>) -> Self {
        self.split = Some(name.into());
        self
    }

    /// Reads the file column `from_file_column` as the TRL column `to_trl_name`
    /// (`rename("question", "prompt")`); a later mapping of the same TRL name replaces this one.
    pub fn rename(
        mut self,
        from_file_column: impl Into<String>,
        to_trl_name: impl Into<String>,
    ) -> Self {
        self.columns
            .push((to_trl_name.into(), from_file_column.into()));
        self
    }

    /// Adds a column mapping given as TRL name -> file column, as a config's
    /// `[data] columns = { prompt = "question" }` holds it (a `BTreeMap<String, String>`, or
    /// any pairs in that direction).
    pub fn column_map<K: Into<String>, V: Into<String>>(
        mut self,
        trl_to_file: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        self.columns
            .extend(trl_to_file.into_iter().map(|(k, v)| (k.into(), v.into())));
        self
    }

    /// The file column read as the TRL column `trl_name`, when a mapping names it (the last
    /// mapping of that name wins, as when reading).
    pub fn mapped_column(&self, trl_name: &str) -> Option<&str> {
        self.columns
            .iter()
            .rev()
            .find(|(trl, _)| trl == trl_name)
            .map(|(_, file)| file.as_str())
    }

    /// The data files the inputs stand for, folders expanded (the chosen split's shards).
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for p in &self.paths {
            files.extend(data_files(
                p,
                self.split.as_deref(),
                Readable { json: false },
            )?);
        }
        Ok(files)
    }

    /// Total row count of all inputs: from the Parquet footers (no data is read), or by a pass
    /// over Arrow IPC and CSV files.
    pub fn num_rows(&self) -> Result<u64> {
        let mut n = 0;
        for f in self.files()? {
            n += batches::count_rows(&f, kind_of(&f)?)?;
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
            map: ColumnMap::new(self.columns),
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

    /// A reader of listwise rows (`prompt`, `responses`, `ranks` or `scores`, optional `id`,
    /// `ref_logps`).
    pub fn listwise(self) -> Result<RowReader<ListwiseRow>> {
        self.rows()
    }

    /// A reader of unpaired (KTO) rows (`prompt`, `completion`, `label`, optional `id`,
    /// `ref_logp`, `ref_kl_logp`).
    pub fn unpaired(self) -> Result<RowReader<UnpairedRow>> {
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

/// The kind of a file the trainers read: by name or magic number, else Parquet (whose reader
/// then says what is wrong with the file).
pub(crate) fn kind_of(path: &Path) -> Result<FileKind> {
    Ok(FileKind::detect(path)?.unwrap_or(FileKind::Parquet))
}

/// One open file of a [`RowReader`]: its batches and how to rename their columns.
struct OpenFile {
    index: usize,
    batches: Batches,
    /// `(TRL name, column index in a projected batch)` of every column the row type reads.
    columns: Vec<(String, usize)>,
    /// CSV: text columns are checked for JSON message lists.
    csv: bool,
}

impl OpenFile {
    /// The batch with its columns under their TRL names.
    fn rename(&self, batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
        let schema = batch.schema();
        let fields: Vec<_> = self
            .columns
            .iter()
            .map(|(name, i)| schema.field(*i).clone().with_name(name))
            .collect();
        let arrays = self
            .columns
            .iter()
            .map(|(_, i)| batch.column(*i).clone())
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
    }
}

/// A CSV column that holds JSON message lists (`[{"role": ...}]`), which the trainers would
/// otherwise read as plain text.
fn csv_message_lists(batch: &RecordBatch) -> Option<String> {
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.data_type() != &DataType::Utf8 {
            continue;
        }
        let looks_like_messages = array.as_string::<i32>().iter().flatten().any(|v| {
            v.trim_start()
                .strip_prefix('[')
                .is_some_and(|rest| rest.trim_start().starts_with('{'))
        });
        if looks_like_messages {
            return Some(field.name().clone());
        }
    }
    None
}

/// An iterator of rows over several data files, one record batch in memory at a time.
///
/// A file-level problem (unreadable file, missing column, a column that cannot be read:
/// [`DataError::Column`]) is yielded as one error and the reader moves on to the next file; a
/// bad value is yielded as a [`DataError::Row`] for its row only.
pub struct RowReader<T> {
    files: Vec<PathBuf>,
    batch_size: usize,
    optional: Option<Vec<String>>,
    map: ColumnMap,
    next_file: usize,
    current: Option<OpenFile>,
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

    /// Index into [`RowReader::files`] and row number of the row (or row error) returned last:
    /// [`RowReader::position`] without cloning the path, for callers that keep one per row.
    pub fn position_index(&self) -> Option<(usize, u64)> {
        self.last
    }

    /// File and row number of the row (or row error) returned last.
    pub fn position(&self) -> Option<RowPosition> {
        self.last.map(|(f, row)| RowPosition {
            file: self.files[f].clone(),
            row,
        })
    }

    fn open(&self, index: usize) -> Result<OpenFile> {
        let path = &self.files[index];
        let kind = kind_of(path)?;
        let schema = batches::schema(path, kind)?;
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let view = self.map.view(path, &names)?;
        let find = |c: &str| view.iter().find(|(n, _)| n == c).map(|(_, i)| *i);
        // (TRL name, file column index) of every column read.
        let mut wanted: Vec<(String, usize)> = Vec::new();
        for &c in T::REQUIRED {
            match find(c) {
                Some(i) => wanted.push((c.to_owned(), i)),
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
            if let (true, Some(i)) = (allowed, find(c)) {
                wanted.push((c.to_owned(), i));
            }
        }
        // Every reader returns projected columns in file order, so a sorted projection maps
        // file index -> batch index by position.
        let mut projection: Vec<usize> = wanted.iter().map(|(_, i)| *i).collect();
        projection.sort_unstable();
        projection.dedup();
        let columns = wanted
            .into_iter()
            .map(|(name, i)| {
                let at = projection.iter().position(|p| *p == i).unwrap_or_default();
                (name, at)
            })
            .collect();
        let batches = batches::open(path, kind, Some(projection), self.batch_size)?;
        Ok(OpenFile {
            index,
            batches,
            columns,
            csv: kind == FileKind::Csv,
        })
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
            if let Some(open) = self.current.as_mut() {
                let file = open.index;
                match open.batches.next() {
                    Some(Ok(batch)) => {
                        self.batch_start += self.emitted_in_batch;
                        self.emitted_in_batch = 0;
                        let decoded = open
                            .rename(&batch)
                            .map_err(|e| ("(all)".to_owned(), e.to_string()))
                            .and_then(|b| match csv_message_lists(&b) {
                                Some(c) if open.csv => Err((
                                    c,
                                    "holds JSON message lists, which are not read from CSV \
                                     here: convert the file with `burnish convert` first"
                                        .to_owned(),
                                )),
                                _ => T::decode_batch(&b),
                            });
                        match decoded {
                            Ok(rows) => self.pending = rows.into_iter(),
                            Err((column, reason)) => {
                                self.current = None;
                                return Some(Err(DataError::Column {
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
                Ok(open) => {
                    self.current = Some(open);
                    self.cur_file = idx;
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// The Arrow schema of one data file (Parquet, Arrow IPC, or CSV with every column text).
pub fn file_schema(path: &Path) -> Result<arrow::datatypes::SchemaRef> {
    batches::schema(path, kind_of(path)?)
}

/// Opens one Parquet file's Arrow schema and row count (for `inspect`).
pub fn parquet_schema(path: &Path) -> Result<(arrow::datatypes::SchemaRef, u64)> {
    Ok((
        batches::schema(path, FileKind::Parquet)?,
        batches::count_rows(path, FileKind::Parquet)?,
    ))
}
