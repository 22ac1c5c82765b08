//! Parquet writers for pairwise, listwise, unpaired (KTO) and supervised rows.
//!
//! Rows are buffered into Arrow record batches of a fixed row count and row groups are flushed
//! at a byte budget, so writing, like reading, runs in bounded memory. The column kinds (plain
//! text or message lists) and optional columns are fixed when the file is created: a Parquet
//! column has one type.
//!
//! The four public writers are thin wrappers over one `BufferedWriter`; what differs between
//! them (which rows fit, which columns a batch becomes) is a `RowSchema`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch,
    StringArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::columns::{content_array, content_list_array, content_list_type, content_type};
use crate::error::{DataError, Result};
use crate::row::{Content, ListwiseRow, PreferencePair, PromptCompletion, Ranking, UnpairedRow};

const ROWS_PER_BATCH: usize = 1024;
// Row groups are buffered whole by the Parquet writer; 64 MiB keeps that bounded and still
// large enough for efficient scans.
const ROW_GROUP_BYTES: usize = 64 << 20;

fn open_writer(path: &Path, schema: SchemaRef) -> Result<ArrowWriter<File>> {
    let file = File::create(path).map_err(|e| DataError::io(path, e))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .build();
    ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| DataError::parquet(path, e))
}

fn kind_check(name: &str, c: &Content, messages: bool) -> std::result::Result<(), String> {
    if c.is_messages() == messages {
        Ok(())
    } else if messages {
        Err(format!(
            "`{name}` is plain text but this file's `{name}` column holds message lists"
        ))
    } else {
        Err(format!(
            "`{name}` is a message list but this file's `{name}` column holds plain text"
        ))
    }
}

/// A file layout for one kind of row: which rows fit it and how a batch of them becomes columns.
///
/// The public schemas implement it by forwarding to their inherent `arrow_schema` and
/// `accepts`, which stay the public API.
trait RowSchema: Copy {
    /// The row written.
    type Row;

    /// The Arrow schema written.
    fn arrow_schema(&self) -> SchemaRef;

    /// Whether a row fits the file; the reason when it does not.
    fn accepts(&self, row: &Self::Row) -> std::result::Result<(), String>;

    /// A batch of accepted rows as columns, in the order of [`RowSchema::arrow_schema`].
    fn columns(&self, rows: &[Self::Row]) -> std::result::Result<Vec<ArrayRef>, String>;
}

/// The fields every file starts with: the optional `id`, then `prompt`.
fn lead_fields(id: bool, messages: bool) -> Vec<Field> {
    let mut f = Vec::new();
    if id {
        f.push(Field::new("id", DataType::Utf8, true));
    }
    f.push(Field::new("prompt", content_type(messages), false));
    f
}

/// The columns of [`lead_fields`].
fn lead_columns<'a, R>(
    rows: &'a [R],
    id: bool,
    messages: bool,
    id_of: impl Fn(&'a R) -> Option<&'a str>,
    prompt_of: impl Fn(&'a R) -> &'a Content,
) -> std::result::Result<Vec<ArrayRef>, String> {
    let mut cols: Vec<ArrayRef> = Vec::new();
    if id {
        cols.push(Arc::new(rows.iter().map(id_of).collect::<StringArray>()));
    }
    cols.push(content_column(rows, prompt_of, messages)?);
    Ok(cols)
}

/// One content column (plain text or message lists) of a batch.
fn content_column<'a, R>(
    rows: &'a [R],
    content_of: impl Fn(&'a R) -> &'a Content,
    messages: bool,
) -> std::result::Result<ArrayRef, String> {
    content_array(&rows.iter().map(content_of).collect::<Vec<_>>(), messages)
}

/// One nullable float32 column of a batch.
fn f32_column<R>(rows: &[R], value_of: impl Fn(&R) -> Option<f32>) -> ArrayRef {
    Arc::new(rows.iter().map(value_of).collect::<Float32Array>())
}

/// What every writer shares: rows checked, buffered into batches of `ROWS_PER_BATCH` and
/// written to one Parquet file.
struct BufferedWriter<S: RowSchema> {
    path: PathBuf,
    schema: S,
    arrow_schema: SchemaRef,
    inner: ArrowWriter<File>,
    buffer: Vec<S::Row>,
    rows: u64,
}

impl<S: RowSchema> BufferedWriter<S> {
    /// Creates (or truncates) `path`.
    fn create(path: &Path, schema: S) -> Result<Self> {
        let arrow_schema = schema.arrow_schema();
        let inner = open_writer(path, arrow_schema.clone())?;
        Ok(BufferedWriter {
            path: path.to_path_buf(),
            schema,
            arrow_schema,
            inner,
            buffer: Vec::with_capacity(ROWS_PER_BATCH),
            rows: 0,
        })
    }

    /// Appends one row if the schema accepts it; writes a batch once `ROWS_PER_BATCH` are buffered.
    fn write(&mut self, row: S::Row) -> Result<()> {
        self.schema
            .accepts(&row)
            .map_err(|reason| self.invalid(reason))?;
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn invalid(&self, reason: String) -> DataError {
        DataError::Invalid {
            path: self.path.clone(),
            reason,
        }
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let written = self.write_buffer();
        // Cleared even when writing failed, so a bad batch is dropped rather than retried with
        // every later row; the capacity is kept for the next batch.
        self.buffer.clear();
        written
    }

    fn write_buffer(&mut self) -> Result<()> {
        let cols = self
            .schema
            .columns(&self.buffer)
            .map_err(|reason| self.invalid(reason))?;
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), cols)
            .map_err(|e| DataError::arrow(&self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.path, e))
    }

    /// Flushes and closes the file; returns the number of rows written.
    fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        self.inner
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Which columns a pairwise file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PairSchema {
    /// Prompt, chosen and rejected are message lists (conversational) rather than strings.
    pub messages: bool,
    /// Write an `id` column (Utf8, nullable).
    pub id: bool,
    /// Write a `margin` column (float32, nullable).
    pub margin: bool,
    /// Write `ref_chosen_logp` and `ref_rejected_logp` (float32, nullable).
    pub ref_logps: bool,
}

impl PairSchema {
    /// The schema that holds everything this pair has.
    pub fn of(pair: &PreferencePair) -> Self {
        PairSchema {
            messages: pair.is_conversational(),
            id: pair.id.is_some(),
            margin: pair.margin.is_some(),
            ref_logps: pair.ref_chosen_logp.is_some() || pair.ref_rejected_logp.is_some(),
        }
    }

    /// The Arrow schema written.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut f = lead_fields(self.id, self.messages);
        for name in ["chosen", "rejected"] {
            f.push(Field::new(name, content_type(self.messages), false));
        }
        if self.margin {
            f.push(Field::new("margin", DataType::Float32, true));
        }
        if self.ref_logps {
            f.push(Field::new("ref_chosen_logp", DataType::Float32, true));
            f.push(Field::new("ref_rejected_logp", DataType::Float32, true));
        }
        Arc::new(Schema::new(f))
    }

    /// Whether a pair fits the file: its contents must be of the file's kind.
    pub fn accepts(&self, pair: &PreferencePair) -> std::result::Result<(), String> {
        kind_check("prompt", &pair.prompt, self.messages)?;
        kind_check("chosen", &pair.chosen, self.messages)?;
        kind_check("rejected", &pair.rejected, self.messages)
    }
}

impl RowSchema for PairSchema {
    type Row = PreferencePair;

    fn arrow_schema(&self) -> SchemaRef {
        PairSchema::arrow_schema(self)
    }

    fn accepts(&self, pair: &PreferencePair) -> std::result::Result<(), String> {
        PairSchema::accepts(self, pair)
    }

    fn columns(&self, rows: &[PreferencePair]) -> std::result::Result<Vec<ArrayRef>, String> {
        let m = self.messages;
        let mut cols = lead_columns(rows, self.id, m, |r| r.id.as_deref(), |r| &r.prompt)?;
        cols.push(content_column(rows, |r| &r.chosen, m)?);
        cols.push(content_column(rows, |r| &r.rejected, m)?);
        if self.margin {
            cols.push(f32_column(rows, |r| r.margin));
        }
        if self.ref_logps {
            cols.push(f32_column(rows, |r| r.ref_chosen_logp));
            cols.push(f32_column(rows, |r| r.ref_rejected_logp));
        }
        Ok(cols)
    }
}

/// Writes [`PreferencePair`]s to a pairwise Parquet file.
///
/// To cache reference log-probs, read pairs, set `ref_chosen_logp` / `ref_rejected_logp` and
/// write them with a schema whose `ref_logps` is true.
pub struct PairWriter(BufferedWriter<PairSchema>);

impl PairWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: PairSchema) -> Result<Self> {
        BufferedWriter::create(path.as_ref(), schema).map(PairWriter)
    }

    /// The file's column layout.
    pub fn schema(&self) -> PairSchema {
        self.0.schema
    }

    /// Rows written so far (including buffered ones).
    pub fn rows(&self) -> u64 {
        self.0.rows
    }

    /// Bytes flushed to the file so far.
    pub fn bytes_written(&self) -> usize {
        self.0.inner.bytes_written()
    }

    /// Appends one row; fails if its kind of content does not fit the file (see [`PairSchema::accepts`]).
    pub fn write(&mut self, pair: PreferencePair) -> Result<()> {
        self.0.write(pair)
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        self.0.finish()
    }
}

/// Which columns a listwise file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListwiseSchema {
    /// Prompt and responses are message lists.
    pub messages: bool,
    /// Write an `id` column.
    pub id: bool,
    /// Write `scores` (list of float64) instead of `ranks` (list of int64).
    pub scores: bool,
    /// Write `ref_logps` (list of float32, one per response, nullable).
    pub ref_logps: bool,
}

impl ListwiseSchema {
    /// The schema that holds this row.
    pub fn of(row: &ListwiseRow) -> Self {
        ListwiseSchema {
            messages: row.prompt.is_messages(),
            id: row.id.is_some(),
            scores: matches!(row.ranking, Ranking::Scores(_)),
            ref_logps: row.ref_logps.is_some(),
        }
    }

    /// The Arrow schema written.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut f = lead_fields(self.id, self.messages);
        f.push(Field::new(
            "responses",
            content_list_type(self.messages),
            false,
        ));
        let (name, item) = if self.scores {
            ("scores", DataType::Float64)
        } else {
            ("ranks", DataType::Int64)
        };
        f.push(Field::new(
            name,
            DataType::List(Arc::new(Field::new("item", item, false))),
            false,
        ));
        if self.ref_logps {
            f.push(Field::new("ref_logps", ref_logps_type(), true));
        }
        Arc::new(Schema::new(f))
    }

    /// Whether a row fits the file.
    pub fn accepts(&self, row: &ListwiseRow) -> std::result::Result<(), String> {
        kind_check("prompt", &row.prompt, self.messages)?;
        for r in &row.responses {
            kind_check("responses", r, self.messages)?;
        }
        if matches!(row.ranking, Ranking::Scores(_)) != self.scores {
            return Err(MIXED_RANKING.into());
        }
        if let Some(r) = &row.ref_logps
            && r.len() != row.responses.len()
        {
            return Err(format!(
                "{} responses but {} reference log-probs",
                row.responses.len(),
                r.len()
            ));
        }
        Ok(())
    }
}

const MIXED_RANKING: &str = "the row's ranking kind (ranks or scores) differs from the file's";

impl RowSchema for ListwiseSchema {
    type Row = ListwiseRow;

    fn arrow_schema(&self) -> SchemaRef {
        ListwiseSchema::arrow_schema(self)
    }

    fn accepts(&self, row: &ListwiseRow) -> std::result::Result<(), String> {
        ListwiseSchema::accepts(self, row)
    }

    fn columns(&self, rows: &[ListwiseRow]) -> std::result::Result<Vec<ArrayRef>, String> {
        let m = self.messages;
        let mut cols = lead_columns(rows, self.id, m, |r| r.id.as_deref(), |r| &r.prompt)?;
        let responses: Vec<&[Content]> = rows.iter().map(|r| r.responses.as_slice()).collect();
        cols.push(content_list_array(&responses, m)?);
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.ranking.len()));
        // `accepts` has checked every row's ranking kind; a mismatch here is an error, not a panic.
        let ranking: ArrayRef = if self.scores {
            let mut v: Vec<f64> = Vec::new();
            for r in rows {
                match &r.ranking {
                    Ranking::Scores(s) => v.extend_from_slice(s),
                    Ranking::Ranks(_) => return Err(MIXED_RANKING.into()),
                }
            }
            let field = Arc::new(Field::new("item", DataType::Float64, false));
            Arc::new(ListArray::new(
                field,
                offsets,
                Arc::new(Float64Array::from(v)),
                None,
            ))
        } else {
            let mut v: Vec<i64> = Vec::new();
            for r in rows {
                match &r.ranking {
                    Ranking::Ranks(s) => v.extend_from_slice(s),
                    Ranking::Scores(_) => return Err(MIXED_RANKING.into()),
                }
            }
            let field = Arc::new(Field::new("item", DataType::Int64, false));
            Arc::new(ListArray::new(
                field,
                offsets,
                Arc::new(Int64Array::from(v)),
                None,
            ))
        };
        cols.push(ranking);
        if self.ref_logps {
            cols.push(ref_logps_array(rows));
        }
        Ok(cols)
    }
}

/// The type of the listwise `ref_logps` column.
fn ref_logps_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, false)))
}

/// The `ref_logps` column of listwise rows; a row without them is null.
fn ref_logps_array(rows: &[ListwiseRow]) -> ArrayRef {
    let lengths = rows
        .iter()
        .map(|r| r.ref_logps.as_ref().map_or(0, Vec::len));
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.ref_logps.iter().flatten().copied())
        .collect();
    let nulls: arrow::buffer::NullBuffer = rows.iter().map(|r| r.ref_logps.is_some()).collect();
    Arc::new(ListArray::new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        OffsetBuffer::from_lengths(lengths),
        Arc::new(Float32Array::from(values)),
        Some(nulls),
    ))
}

/// Writes [`ListwiseRow`]s to a listwise Parquet file.
pub struct ListwiseWriter(BufferedWriter<ListwiseSchema>);

impl ListwiseWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: ListwiseSchema) -> Result<Self> {
        BufferedWriter::create(path.as_ref(), schema).map(ListwiseWriter)
    }

    /// The file's column layout.
    pub fn schema(&self) -> ListwiseSchema {
        self.0.schema
    }

    /// Appends one row; fails if it does not fit the file (see [`ListwiseSchema::accepts`]).
    pub fn write(&mut self, row: ListwiseRow) -> Result<()> {
        self.0.write(row)
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        self.0.finish()
    }
}

/// The columns of a supervised file: optional `id`, `prompt`, `completion`. Private because
/// [`PromptCompletionWriter::create`] takes the two flags directly.
#[derive(Debug, Clone, Copy)]
struct PromptCompletionSchema {
    messages: bool,
    id: bool,
}

impl RowSchema for PromptCompletionSchema {
    type Row = PromptCompletion;

    fn arrow_schema(&self) -> SchemaRef {
        let mut f = lead_fields(self.id, self.messages);
        f.push(Field::new("completion", content_type(self.messages), false));
        Arc::new(Schema::new(f))
    }

    fn accepts(&self, row: &PromptCompletion) -> std::result::Result<(), String> {
        kind_check("prompt", &row.prompt, self.messages)?;
        kind_check("completion", &row.completion, self.messages)
    }

    fn columns(&self, rows: &[PromptCompletion]) -> std::result::Result<Vec<ArrayRef>, String> {
        let m = self.messages;
        let mut cols = lead_columns(rows, self.id, m, |r| r.id.as_deref(), |r| &r.prompt)?;
        cols.push(content_column(rows, |r| &r.completion, m)?);
        Ok(cols)
    }
}

/// Writes [`PromptCompletion`]s (supervised rows: `prompt`, `completion`, optional `id`).
pub struct PromptCompletionWriter(BufferedWriter<PromptCompletionSchema>);

impl PromptCompletionWriter {
    /// Creates (or truncates) `path`; `messages` picks message-list columns, `id` adds an id column.
    pub fn create(path: impl AsRef<Path>, messages: bool, id: bool) -> Result<Self> {
        let schema = PromptCompletionSchema { messages, id };
        BufferedWriter::create(path.as_ref(), schema).map(PromptCompletionWriter)
    }

    /// Appends one row.
    pub fn write(&mut self, row: PromptCompletion) -> Result<()> {
        self.0.write(row)
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        self.0.finish()
    }
}

/// Which columns an unpaired (KTO) file has: `prompt`, `completion`, `label` (boolean) always.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UnpairedSchema {
    /// Prompt and completion are message lists.
    pub messages: bool,
    /// Write an `id` column (Utf8, nullable).
    pub id: bool,
    /// Write `ref_logp` and `ref_kl_logp` (float32, nullable).
    pub ref_logps: bool,
}

impl UnpairedSchema {
    /// The schema that holds everything this row has.
    pub fn of(row: &UnpairedRow) -> Self {
        UnpairedSchema {
            messages: row.is_conversational(),
            id: row.id.is_some(),
            ref_logps: row.ref_logp.is_some() || row.ref_kl_logp.is_some(),
        }
    }

    /// The Arrow schema written.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut f = lead_fields(self.id, self.messages);
        f.push(Field::new("completion", content_type(self.messages), false));
        f.push(Field::new("label", DataType::Boolean, false));
        if self.ref_logps {
            f.push(Field::new("ref_logp", DataType::Float32, true));
            f.push(Field::new("ref_kl_logp", DataType::Float32, true));
        }
        Arc::new(Schema::new(f))
    }

    /// Whether a row fits the file: its contents must be of the file's kind.
    pub fn accepts(&self, row: &UnpairedRow) -> std::result::Result<(), String> {
        kind_check("prompt", &row.prompt, self.messages)?;
        kind_check("completion", &row.completion, self.messages)
    }
}

impl RowSchema for UnpairedSchema {
    type Row = UnpairedRow;

    fn arrow_schema(&self) -> SchemaRef {
        UnpairedSchema::arrow_schema(self)
    }

    fn accepts(&self, row: &UnpairedRow) -> std::result::Result<(), String> {
        UnpairedSchema::accepts(self, row)
    }

    fn columns(&self, rows: &[UnpairedRow]) -> std::result::Result<Vec<ArrayRef>, String> {
        let m = self.messages;
        let mut cols = lead_columns(rows, self.id, m, |r| r.id.as_deref(), |r| &r.prompt)?;
        cols.push(content_column(rows, |r| &r.completion, m)?);
        cols.push(Arc::new(
            rows.iter().map(|r| Some(r.label)).collect::<BooleanArray>(),
        ));
        if self.ref_logps {
            cols.push(f32_column(rows, |r| r.ref_logp));
            cols.push(f32_column(rows, |r| r.ref_kl_logp));
        }
        Ok(cols)
    }
}

/// Writes [`UnpairedRow`]s to an unpaired (KTO) Parquet file.
pub struct UnpairedWriter(BufferedWriter<UnpairedSchema>);

impl UnpairedWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: UnpairedSchema) -> Result<Self> {
        BufferedWriter::create(path.as_ref(), schema).map(UnpairedWriter)
    }

    /// The file's column layout.
    pub fn schema(&self) -> UnpairedSchema {
        self.0.schema
    }

    /// Appends one row; fails if its kind of content does not fit the file.
    pub fn write(&mut self, row: UnpairedRow) -> Result<()> {
        self.0.write(row)
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(self) -> Result<u64> {
        self.0.finish()
    }
}
