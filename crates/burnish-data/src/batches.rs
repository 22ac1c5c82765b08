//! Arrow record batches from tabular files: Parquet, Arrow IPC (file and stream formats) and CSV.
//!
//! A file is opened with a projection, so only the columns a reader needs are decoded, and read
//! one record batch at a time: memory is bounded by the batch size, never by the file size.
//! Arrow IPC batches keep the size their writer gave them (`datasets` writes 1000 rows), cut to
//! the requested batch size when larger. Every CSV column is read as text (`Utf8`, an empty cell
//! is null) with arrow-csv; a malformed CSV line fails its batch with arrow-csv's message, which
//! names the line.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::{FileReader, StreamReader};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{DataError, Result};
use crate::layout::{FileKind, read_head};

/// A stream of record batches from one file.
pub(crate) type Batches =
    Box<dyn Iterator<Item = std::result::Result<RecordBatch, ArrowError>> + Send>;

/// Opens a file for reading, decompressing `.gz` on the fly.
pub(crate) fn open_text(path: &Path) -> Result<Box<dyn BufRead + Send>> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    if path.extension().is_some_and(|e| e == "gz") {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(file),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

/// True when an Arrow IPC file is in the file format (`ARROW1` magic) rather than the stream
/// format that `datasets.save_to_disk` writes.
fn is_ipc_file_format(path: &Path) -> Result<bool> {
    let mut head = [0u8; 6];
    let n = read_head(path, &mut head)?;
    Ok(&head[..n] == b"ARROW1")
}

/// The header of a CSV file as a schema of nullable text columns.
fn csv_schema(path: &Path) -> Result<SchemaRef> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(open_text(path)?);
    let header = reader.headers().map_err(|e| DataError::Invalid {
        path: path.to_owned(),
        reason: format!("CSV header: {e}"),
    })?;
    if header.is_empty() {
        return Err(DataError::EmptyInput(path.to_owned()));
    }
    Ok(Arc::new(Schema::new(
        header
            .iter()
            .map(|name| Field::new(name, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    )))
}

/// The schema of a tabular file (its column names and types, in file order).
pub(crate) fn schema(path: &Path, kind: FileKind) -> Result<SchemaRef> {
    match kind {
        FileKind::Parquet => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| DataError::parquet(path, e))?;
            Ok(b.schema().clone())
        }
        FileKind::Arrow => {
            let file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
            if is_ipc_file_format(path)? {
                FileReader::try_new(file, None)
                    .map(|r| r.schema())
                    .map_err(|e| DataError::arrow(path, e))
            } else {
                StreamReader::try_new(file, None)
                    .map(|r| r.schema())
                    .map_err(|e| DataError::arrow(path, e))
            }
        }
        FileKind::Csv => csv_schema(path),
        FileKind::Json => Err(not_tabular(path)),
    }
}

fn not_tabular(path: &Path) -> DataError {
    DataError::Invalid {
        path: path.to_owned(),
        reason: "JSON is read by `burnish convert`, not as Arrow batches: convert this file first"
            .into(),
    }
}

/// Cuts batches longer than `rows` into slices of `rows` (zero-copy).
struct Rebatch<I> {
    inner: I,
    rows: usize,
    current: Option<(RecordBatch, usize)>,
}

impl<I: Iterator<Item = std::result::Result<RecordBatch, ArrowError>>> Iterator for Rebatch<I> {
    type Item = std::result::Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((batch, offset)) = self.current.take()
                && offset < batch.num_rows()
            {
                let len = self.rows.min(batch.num_rows() - offset);
                let slice = batch.slice(offset, len);
                self.current = Some((batch, offset + len));
                return Some(Ok(slice));
            }
            match self.inner.next()? {
                Ok(batch) if batch.num_rows() <= self.rows => return Some(Ok(batch)),
                Ok(batch) => self.current = Some((batch, 0)),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// Opens a tabular file reading only the columns at `projection` (indices into [`schema`]'s
/// fields; `None` for all), in batches of at most `batch_size` rows.
pub(crate) fn open(
    path: &Path,
    kind: FileKind,
    projection: Option<Vec<usize>>,
    batch_size: usize,
) -> Result<Batches> {
    let batch_size = batch_size.max(1);
    match kind {
        FileKind::Parquet => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| DataError::parquet(path, e))?;
            if let Some(p) = projection {
                // Top-level columns are the roots of the Parquet schema in the same order.
                let mask = ProjectionMask::roots(builder.parquet_schema(), p);
                builder = builder.with_projection(mask);
            }
            let reader = builder
                .with_batch_size(batch_size)
                .build()
                .map_err(|e| DataError::parquet(path, e))?;
            Ok(Box::new(reader))
        }
        FileKind::Arrow => {
            let file = BufReader::new(File::open(path).map_err(|e| DataError::io(path, e))?);
            let inner: Batches = if is_ipc_file_format(path)? {
                Box::new(
                    FileReader::try_new(file, projection).map_err(|e| DataError::arrow(path, e))?,
                )
            } else {
                Box::new(
                    StreamReader::try_new(file, projection)
                        .map_err(|e| DataError::arrow(path, e))?,
                )
            };
            Ok(Box::new(Rebatch {
                inner,
                rows: batch_size,
                current: None,
            }))
        }
        FileKind::Csv => {
            let schema = csv_schema(path)?;
            let mut builder = arrow::csv::ReaderBuilder::new(schema)
                .with_header(true)
                .with_batch_size(batch_size);
            if let Some(p) = projection {
                builder = builder.with_projection(p);
            }
            let reader = builder
                .build_buffered(open_text(path)?)
                .map_err(|e| DataError::arrow(path, e))?;
            Ok(Box::new(reader))
        }
        FileKind::Json => Err(not_tabular(path)),
    }
}

/// Number of rows of a tabular file: the Parquet footer, or a pass over the file for Arrow IPC
/// (one column decoded) and CSV (records counted, nothing decoded).
pub(crate) fn count_rows(path: &Path, kind: FileKind) -> Result<u64> {
    match kind {
        FileKind::Parquet => {
            let file = File::open(path).map_err(|e| DataError::io(path, e))?;
            let b = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| DataError::parquet(path, e))?;
            Ok(b.metadata().file_metadata().num_rows() as u64)
        }
        FileKind::Arrow => {
            let columns = schema(path, kind)?.fields().len();
            let mut n = 0u64;
            for batch in open(path, kind, Some(vec![0; columns.min(1)]), usize::MAX)? {
                n += batch.map_err(|e| DataError::arrow(path, e))?.num_rows() as u64;
            }
            Ok(n)
        }
        FileKind::Csv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(open_text(path)?);
            let mut record = csv::ByteRecord::new();
            let mut n = 0u64;
            while reader
                .read_byte_record(&mut record)
                .map_err(|e| DataError::Invalid {
                    path: path.to_owned(),
                    reason: format!("CSV: {e}"),
                })?
            {
                n += 1;
            }
            Ok(n)
        }
        FileKind::Json => Err(not_tabular(path)),
    }
}
