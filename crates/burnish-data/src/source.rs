//! Input records of `convert`, from any data file, each with its location in its file.
//!
//! A JSON Lines file is streamed line by line; a JSON array is cut into its elements by a small
//! byte-level scanner (strings, escapes and nesting) before any element is parsed, so that one
//! bad element (invalid UTF-8, a syntax error) costs that element only, and a truncated file
//! costs only its unfinished tail. Files ending in `.gz` are decompressed on the fly.
//!
//! Parquet and Arrow IPC files are read batch by batch and each row becomes a JSON object
//! (arrow-json: strings, numbers, booleans, lists and structs as JSON has them; a null is an
//! absent key), so that [`crate::formats::parse_record`] stays the one parser of every format.
//!
//! CSV files need a header row and are read record by record, so a malformed row costs that row
//! only. Cells are typed by these rules, in order:
//! - an empty cell is an absent value (CSV cannot tell an empty string from no value);
//! - a cell that starts with `[` or `{` and parses as JSON is that JSON value (a message list,
//!   `ranks`, `scores`, UltraFeedback's `completions`), in any column; a cell that starts so but
//!   is not valid JSON stays text;
//! - in the numeric columns (`margin`, `score`, `rating`, `overall_score`, `ref_chosen_logp`,
//!   `ref_rejected_logp`, `ref_logp`, `ref_kl_logp`) and the label columns (`label`, `kto_tag`)
//!   a number is a number, and in the label columns `true`/`false` (any case) is a boolean;
//! - every other cell is a string, even one that looks like a number (an `id` of `007` keeps
//!   its zeros, a prompt of `42` is text).
//!
//! The names in these rules are those after column mapping. Locations are JSON Lines line
//! numbers (from 1), JSON array elements (from 0), and rows of tabular files (from 0, the CSV
//! header not counted).

use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::Value;

use crate::batches;
use crate::column_map::ColumnMap;
use crate::error::{DataError, Result};
use crate::layout::FileKind;

/// Where a record is in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// Line number of a JSON Lines file, from 1.
    Line(u64),
    /// Element index of a JSON array, from 0.
    Row(u64),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Line(n) => write!(f, "line {n}"),
            Location::Row(n) => write!(f, "row {n}"),
        }
    }
}

fn parse(bytes: &[u8]) -> std::result::Result<Value, String> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(format!(
            "invalid UTF-8 at byte {} of the record",
            e.valid_up_to()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// Calls `f` for every record of a data file (JSON, JSON Lines, Parquet, Arrow IPC or CSV; a
/// file whose kind neither its name nor its first bytes tell is read as JSON), with the parsed
/// value or the reason it could not be parsed. Fails on an unreadable or empty file, or when
/// `f` fails.
pub fn for_each_record(
    path: &Path,
    f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    for_each_mapped_record(path, &ColumnMap::default(), f)
}

/// [`for_each_record`] with `map` applied to every record; a mapped column missing from the
/// file (the first record's keys for JSON) fails the file.
pub(crate) fn for_each_mapped_record(
    path: &Path,
    map: &ColumnMap,
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    match FileKind::detect(path)?.unwrap_or(FileKind::Json) {
        FileKind::Json if map.is_empty() => json_records(path, f),
        FileKind::Json => {
            let mut checked = false;
            json_records(path, |loc, value| match value {
                Ok(mut v) => {
                    if !checked && let Value::Object(o) = &v {
                        let keys: Vec<String> = o.keys().cloned().collect();
                        map.check(path, &keys)?;
                        checked = true;
                    }
                    map.apply(&mut v);
                    f(loc, Ok(v))
                }
                Err(e) => f(loc, Err(e)),
            })
        }
        FileKind::Csv => csv_records(path, map, f),
        kind => arrow_records(path, kind, map, f),
    }
}

/// Records of a JSON array or JSON Lines file.
fn json_records(
    path: &Path,
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    let mut reader = batches::open_text(path)?;
    // Peek at the first non-blank byte: `[` means one JSON array, anything else JSON Lines.
    let first = loop {
        let buf = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
        if buf.is_empty() {
            return Err(DataError::EmptyInput(path.to_owned()));
        }
        match buf.iter().position(|b| !b.is_ascii_whitespace()) {
            Some(i) => {
                let b = buf[i];
                break b;
            }
            None => {
                let n = buf.len();
                reader.consume(n);
            }
        }
    };
    if first == b'[' {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        json_array(&bytes, f)
    } else {
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            let n = reader
                .read_until(b'\n', &mut line)
                .map_err(|e| DataError::io(path, e))?;
            if n == 0 {
                return Ok(());
            }
            number += 1;
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            f(Location::Line(number), parse(&line))?;
        }
    }
}

fn json_array(
    bytes: &[u8],
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    let mut pos = bytes
        .iter()
        .position(|&b| b == b'[')
        .map_or(bytes.len(), |p| p + 1);
    let mut row = 0u64;
    let skip_ws = |mut p: usize| {
        while p < bytes.len() && bytes[p].is_ascii_whitespace() {
            p += 1;
        }
        p
    };
    loop {
        pos = skip_ws(pos);
        if pos >= bytes.len() {
            // A file cut right after a comma: rows may be missing, and that must not go unnoticed.
            return f(
                Location::Row(row),
                Err("file ends before the closing `]` (truncated file?)".into()),
            );
        }
        if bytes[pos] == b']' && row == 0 {
            return Ok(());
        }
        let start = pos;
        let (mut depth, mut in_str, mut esc) = (0i64, false, false);
        let mut end = None;
        while pos < bytes.len() {
            let b = bytes[pos];
            if in_str {
                if esc {
                    esc = false;
                } else if b == b'\\' {
                    esc = true;
                } else if b == b'"' {
                    in_str = false;
                }
            } else {
                match b {
                    b'"' => in_str = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    b',' | b']' if depth == 0 => {
                        end = Some(pos);
                        break;
                    }
                    _ => {}
                }
            }
            pos += 1;
        }
        let Some(end) = end else {
            return f(
                Location::Row(row),
                Err("file ends inside this row (truncated file?)".into()),
            );
        };
        f(Location::Row(row), parse(bytes[start..end].trim_ascii()))?;
        row += 1;
        if bytes[end] == b']' {
            return Ok(());
        }
        pos = end + 1;
    }
}

/// Rows of a Parquet or Arrow IPC file as JSON objects, one record batch at a time.
fn arrow_records(
    path: &Path,
    kind: FileKind,
    map: &ColumnMap,
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    let schema = batches::schema(path, kind)?;
    let names: Vec<String> = schema.fields().iter().map(|c| c.name().clone()).collect();
    let view = map.view(path, &names)?;
    let mut row = 0u64;
    for batch in batches::open(path, kind, None, 1024)? {
        let batch = batch.map_err(|e| DataError::arrow(path, e))?;
        let fields: Vec<arrow::datatypes::Field> = view
            .iter()
            .map(|(name, i)| schema.field(*i).clone().with_name(name))
            .collect();
        let columns = view.iter().map(|(_, i)| batch.column(*i).clone()).collect();
        let mapped = arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            columns,
        )
        .map_err(|e| DataError::arrow(path, e))?;
        let mut lines = Vec::new();
        {
            let mut writer = arrow::json::LineDelimitedWriter::new(&mut lines);
            writer
                .write(&mapped)
                .and_then(|_| writer.finish())
                .map_err(|e| DataError::arrow(path, e))?;
        }
        let mut emitted = 0;
        for line in lines.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            f(Location::Row(row), parse(line))?;
            row += 1;
            emitted += 1;
        }
        if emitted != batch.num_rows() {
            return Err(DataError::Invalid {
                path: path.to_owned(),
                reason: format!(
                    "a batch of {} rows gave {emitted} JSON records",
                    batch.num_rows()
                ),
            });
        }
    }
    Ok(())
}

/// Columns whose CSV cells are read as numbers when they hold one.
const NUMERIC_COLUMNS: [&str; 8] = [
    "margin",
    "score",
    "rating",
    "overall_score",
    "ref_chosen_logp",
    "ref_rejected_logp",
    "ref_logp",
    "ref_kl_logp",
];

/// Columns whose CSV cells are read as booleans (`true`/`false`, any case) or numbers.
const LABEL_COLUMNS: [&str; 2] = ["label", "kto_tag"];

/// One CSV cell as a JSON value by the module's rules; `None` for an empty cell.
fn csv_cell(column: &str, text: &str) -> Option<Value> {
    if text.is_empty() {
        return None;
    }
    let t = text.trim();
    if (t.starts_with('[') || t.starts_with('{'))
        && let Ok(v) = serde_json::from_str::<Value>(t)
    {
        return Some(v);
    }
    let label = LABEL_COLUMNS.contains(&column);
    if label || NUMERIC_COLUMNS.contains(&column) {
        if let Ok(v @ Value::Number(_)) = serde_json::from_str::<Value>(t) {
            return Some(v);
        }
        if label {
            if t.eq_ignore_ascii_case("true") {
                return Some(Value::Bool(true));
            }
            if t.eq_ignore_ascii_case("false") {
                return Some(Value::Bool(false));
            }
        }
    }
    Some(Value::String(text.to_owned()))
}

/// Rows of a CSV file with a header as JSON objects, one record at a time.
fn csv_records(
    path: &Path,
    map: &ColumnMap,
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(batches::open_text(path)?);
    let bad_header = |reason: String| DataError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let header = reader
        .headers()
        .map_err(|e| bad_header(format!("CSV header: {e}")))?
        .clone();
    if header.is_empty() {
        return Err(DataError::EmptyInput(path.to_owned()));
    }
    let names: Vec<String> = header.iter().map(str::to_owned).collect();
    let view = map.view(path, &names)?;
    let mut record = csv::ByteRecord::new();
    let mut row = 0u64;
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(false) => return Ok(()),
            Ok(true) => {
                f(Location::Row(row), csv_record(&record, &names, &view))?;
            }
            Err(e) if e.is_io_error() => return Err(bad_header(format!("CSV: {e}"))),
            Err(e) => f(Location::Row(row), Err(format!("CSV: {e}")))?,
        }
        row += 1;
    }
}

fn csv_record(
    record: &csv::ByteRecord,
    names: &[String],
    view: &[(String, usize)],
) -> std::result::Result<Value, String> {
    if record.len() != names.len() {
        return Err(format!(
            "the row has {} fields, the header {}",
            record.len(),
            names.len()
        ));
    }
    let mut obj = serde_json::Map::new();
    for (name, i) in view {
        let bytes = record.get(*i).unwrap_or_default();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            format!(
                "column `{}`: invalid UTF-8 at byte {}",
                names[*i],
                e.valid_up_to()
            )
        })?;
        if let Some(v) = csv_cell(name, text) {
            obj.insert(name.clone(), v);
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_are_typed_by_column() {
        assert_eq!(csv_cell("prompt", ""), None);
        assert_eq!(csv_cell("prompt", "42"), Some(Value::from("42")));
        assert_eq!(csv_cell("id", "007"), Some(Value::from("007")));
        assert_eq!(csv_cell("margin", " 1.5 "), Some(Value::from(1.5)));
        assert_eq!(csv_cell("margin", "high"), Some(Value::from("high")));
        assert_eq!(csv_cell("label", "True"), Some(Value::Bool(true)));
        assert_eq!(csv_cell("label", "0"), Some(Value::from(0)));
        assert_eq!(csv_cell("prompt", "true"), Some(Value::from("true")));
        assert_eq!(csv_cell("ranks", "[0, 1]"), Some(serde_json::json!([0, 1])));
        assert_eq!(
            csv_cell("prompt", "[INST] hi [/INST]"),
            Some(Value::from("[INST] hi [/INST]"))
        );
    }
}
