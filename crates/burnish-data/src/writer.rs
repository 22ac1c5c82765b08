//! Parquet writers for pairwise, listwise, unpaired (KTO) and supervised rows.
//!
//! Rows are buffered into Arrow record batches of a fixed row count and row groups are flushed
//! at a byte budget, so writing, like reading, runs in bounded memory. The column kinds (plain
//! text or message lists) and optional columns are fixed when the file is created: a Parquet
//! column has one type.

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
        let mut f = Vec::new();
        if self.id {
            f.push(Field::new("id", DataType::Utf8, true));
        }
        for name in ["prompt", "chosen", "rejected"] {
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

/// Writes [`PreferencePair`]s to a pairwise Parquet file.
///
/// To cache reference log-probs, read pairs, set `ref_chosen_logp` / `ref_rejected_logp` and
/// write them with a schema whose `ref_logps` is true.
pub struct PairWriter {
    path: PathBuf,
    schema: PairSchema,
    arrow_schema: SchemaRef,
    inner: ArrowWriter<File>,
    buffer: Vec<PreferencePair>,
    rows: u64,
}

impl PairWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: PairSchema) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let arrow_schema = schema.arrow_schema();
        let inner = open_writer(&path, arrow_schema.clone())?;
        Ok(PairWriter {
            path,
            schema,
            arrow_schema,
            inner,
            buffer: Vec::with_capacity(ROWS_PER_BATCH),
            rows: 0,
        })
    }

    /// The file's column layout.
    pub fn schema(&self) -> PairSchema {
        self.schema
    }

    /// Rows written so far (including buffered ones).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes flushed to the file so far.
    pub fn bytes_written(&self) -> usize {
        self.inner.bytes_written()
    }

    /// Appends one row; fails if its kind of content does not fit the file (see [`PairSchema::accepts`]).
    pub fn write(&mut self, pair: PreferencePair) -> Result<()> {
        self.schema
            .accepts(&pair)
            .map_err(|reason| DataError::Invalid {
                path: self.path.clone(),
                reason,
            })?;
        self.buffer.push(pair);
        self.rows += 1;
        if self.buffer.len() >= ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let bad = |e: String| DataError::Invalid {
            path: self.path.clone(),
            reason: e,
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.schema.id {
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.id.as_deref())
                    .collect::<StringArray>(),
            ));
        }
        let m = self.schema.messages;
        cols.push(
            content_array(&rows.iter().map(|r| &r.prompt).collect::<Vec<_>>(), m).map_err(bad)?,
        );
        cols.push(
            content_array(&rows.iter().map(|r| &r.chosen).collect::<Vec<_>>(), m).map_err(bad)?,
        );
        cols.push(
            content_array(&rows.iter().map(|r| &r.rejected).collect::<Vec<_>>(), m).map_err(bad)?,
        );
        if self.schema.margin {
            cols.push(Arc::new(
                rows.iter().map(|r| r.margin).collect::<Float32Array>(),
            ));
        }
        if self.schema.ref_logps {
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.ref_chosen_logp)
                    .collect::<Float32Array>(),
            ));
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.ref_rejected_logp)
                    .collect::<Float32Array>(),
            ));
        }
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), cols)
            .map_err(|e| DataError::arrow(&self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.path, e))?;
        self.buffer = rows;
        self.buffer.clear();
        Ok(())
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        self.inner
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(self.rows)
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
        let mut f = Vec::new();
        if self.id {
            f.push(Field::new("id", DataType::Utf8, true));
        }
        f.push(Field::new("prompt", content_type(self.messages), false));
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
            return Err("the row's ranking kind (ranks or scores) differs from the file's".into());
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
pub struct ListwiseWriter {
    path: PathBuf,
    schema: ListwiseSchema,
    arrow_schema: SchemaRef,
    inner: ArrowWriter<File>,
    buffer: Vec<ListwiseRow>,
    rows: u64,
}

impl ListwiseWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: ListwiseSchema) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let arrow_schema = schema.arrow_schema();
        let inner = open_writer(&path, arrow_schema.clone())?;
        Ok(ListwiseWriter {
            path,
            schema,
            arrow_schema,
            inner,
            buffer: Vec::new(),
            rows: 0,
        })
    }

    /// The file's column layout.
    pub fn schema(&self) -> ListwiseSchema {
        self.schema
    }

    /// Appends one row; fails if it does not fit the file (see [`ListwiseSchema::accepts`]).
    pub fn write(&mut self, row: ListwiseRow) -> Result<()> {
        self.schema
            .accepts(&row)
            .map_err(|reason| DataError::Invalid {
                path: self.path.clone(),
                reason,
            })?;
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let bad = |e: String| DataError::Invalid {
            path: self.path.clone(),
            reason: e,
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.schema.id {
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.id.as_deref())
                    .collect::<StringArray>(),
            ));
        }
        let m = self.schema.messages;
        cols.push(
            content_array(&rows.iter().map(|r| &r.prompt).collect::<Vec<_>>(), m).map_err(bad)?,
        );
        cols.push(
            content_list_array(
                &rows
                    .iter()
                    .map(|r| r.responses.as_slice())
                    .collect::<Vec<_>>(),
                m,
            )
            .map_err(bad)?,
        );
        let offsets = OffsetBuffer::from_lengths(rows.iter().map(|r| r.ranking.len()));
        let ranking: ArrayRef = if self.schema.scores {
            let v: Vec<f64> = rows
                .iter()
                .flat_map(|r| match &r.ranking {
                    Ranking::Scores(s) => s.clone(),
                    Ranking::Ranks(_) => unreachable!("checked by accepts"),
                })
                .collect();
            let field = Arc::new(Field::new("item", DataType::Float64, false));
            Arc::new(ListArray::new(
                field,
                offsets,
                Arc::new(Float64Array::from(v)),
                None,
            ))
        } else {
            let v: Vec<i64> = rows
                .iter()
                .flat_map(|r| match &r.ranking {
                    Ranking::Ranks(s) => s.clone(),
                    Ranking::Scores(_) => unreachable!("checked by accepts"),
                })
                .collect();
            let field = Arc::new(Field::new("item", DataType::Int64, false));
            Arc::new(ListArray::new(
                field,
                offsets,
                Arc::new(Int64Array::from(v)),
                None,
            ))
        };
        cols.push(ranking);
        if self.schema.ref_logps {
            cols.push(ref_logps_array(&rows));
        }
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), cols)
            .map_err(|e| DataError::arrow(&self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(())
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        self.inner
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(self.rows)
    }
}

/// Writes [`PromptCompletion`]s (supervised rows: `prompt`, `completion`, optional `id`).
pub struct PromptCompletionWriter {
    path: PathBuf,
    messages: bool,
    id: bool,
    arrow_schema: SchemaRef,
    inner: ArrowWriter<File>,
    buffer: Vec<PromptCompletion>,
    rows: u64,
}

impl PromptCompletionWriter {
    /// Creates (or truncates) `path`; `messages` picks message-list columns, `id` adds an id column.
    pub fn create(path: impl AsRef<Path>, messages: bool, id: bool) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut f = Vec::new();
        if id {
            f.push(Field::new("id", DataType::Utf8, true));
        }
        f.push(Field::new("prompt", content_type(messages), false));
        f.push(Field::new("completion", content_type(messages), false));
        let arrow_schema: SchemaRef = Arc::new(Schema::new(f));
        let inner = open_writer(&path, arrow_schema.clone())?;
        Ok(PromptCompletionWriter {
            path,
            messages,
            id,
            arrow_schema,
            inner,
            buffer: Vec::new(),
            rows: 0,
        })
    }

    /// Appends one row.
    pub fn write(&mut self, row: PromptCompletion) -> Result<()> {
        kind_check("prompt", &row.prompt, self.messages)
            .and_then(|_| kind_check("completion", &row.completion, self.messages))
            .map_err(|reason| DataError::Invalid {
                path: self.path.clone(),
                reason,
            })?;
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let bad = |e: String| DataError::Invalid {
            path: self.path.clone(),
            reason: e,
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.id {
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.id.as_deref())
                    .collect::<StringArray>(),
            ));
        }
        cols.push(
            content_array(
                &rows.iter().map(|r| &r.prompt).collect::<Vec<_>>(),
                self.messages,
            )
            .map_err(bad)?,
        );
        cols.push(
            content_array(
                &rows.iter().map(|r| &r.completion).collect::<Vec<_>>(),
                self.messages,
            )
            .map_err(bad)?,
        );
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), cols)
            .map_err(|e| DataError::arrow(&self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.path, e))
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        self.inner
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(self.rows)
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
        let mut f = Vec::new();
        if self.id {
            f.push(Field::new("id", DataType::Utf8, true));
        }
        f.push(Field::new("prompt", content_type(self.messages), false));
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

/// Writes [`UnpairedRow`]s to an unpaired (KTO) Parquet file.
pub struct UnpairedWriter {
    path: PathBuf,
    schema: UnpairedSchema,
    arrow_schema: SchemaRef,
    inner: ArrowWriter<File>,
    buffer: Vec<UnpairedRow>,
    rows: u64,
}

impl UnpairedWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: impl AsRef<Path>, schema: UnpairedSchema) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let arrow_schema = schema.arrow_schema();
        let inner = open_writer(&path, arrow_schema.clone())?;
        Ok(UnpairedWriter {
            path,
            schema,
            arrow_schema,
            inner,
            buffer: Vec::with_capacity(ROWS_PER_BATCH),
            rows: 0,
        })
    }

    /// The file's column layout.
    pub fn schema(&self) -> UnpairedSchema {
        self.schema
    }

    /// Appends one row; fails if its kind of content does not fit the file.
    pub fn write(&mut self, row: UnpairedRow) -> Result<()> {
        self.schema
            .accepts(&row)
            .map_err(|reason| DataError::Invalid {
                path: self.path.clone(),
                reason,
            })?;
        self.buffer.push(row);
        self.rows += 1;
        if self.buffer.len() >= ROWS_PER_BATCH {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush_batch(&mut self) -> Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let rows = std::mem::take(&mut self.buffer);
        let bad = |e: String| DataError::Invalid {
            path: self.path.clone(),
            reason: e,
        };
        let mut cols: Vec<ArrayRef> = Vec::new();
        if self.schema.id {
            cols.push(Arc::new(
                rows.iter()
                    .map(|r| r.id.as_deref())
                    .collect::<StringArray>(),
            ));
        }
        let m = self.schema.messages;
        cols.push(
            content_array(&rows.iter().map(|r| &r.prompt).collect::<Vec<_>>(), m).map_err(bad)?,
        );
        cols.push(
            content_array(&rows.iter().map(|r| &r.completion).collect::<Vec<_>>(), m)
                .map_err(bad)?,
        );
        cols.push(Arc::new(
            rows.iter().map(|r| Some(r.label)).collect::<BooleanArray>(),
        ));
        if self.schema.ref_logps {
            cols.push(Arc::new(
                rows.iter().map(|r| r.ref_logp).collect::<Float32Array>(),
            ));
            cols.push(Arc::new(
                rows.iter().map(|r| r.ref_kl_logp).collect::<Float32Array>(),
            ));
        }
        let batch = RecordBatch::try_new(self.arrow_schema.clone(), cols)
            .map_err(|e| DataError::arrow(&self.path, e))?;
        self.inner
            .write(&batch)
            .map_err(|e| DataError::parquet(&self.path, e))?;
        self.buffer = rows;
        self.buffer.clear();
        Ok(())
    }

    /// Flushes and closes the file; returns the number of rows written.
    pub fn finish(mut self) -> Result<u64> {
        self.flush_batch()?;
        self.inner
            .close()
            .map_err(|e| DataError::parquet(&self.path, e))?;
        Ok(self.rows)
    }
}
