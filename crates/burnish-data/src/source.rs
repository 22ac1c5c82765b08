//! JSON and JSON Lines inputs, split into records that keep their location.
//!
//! A JSON Lines file is streamed line by line; a JSON array is cut into its elements by a small
//! byte-level scanner (strings, escapes and nesting) before any element is parsed, so that one
//! bad element (invalid UTF-8, a syntax error) costs that element only, and a truncated file
//! costs only its unfinished tail. Files ending in `.gz` are decompressed on the fly.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::Value;

use crate::error::{DataError, Result};

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

fn open(path: &Path) -> Result<Box<dyn BufRead>> {
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

fn parse(bytes: &[u8]) -> std::result::Result<Value, String> {
    if let Err(e) = std::str::from_utf8(bytes) {
        return Err(format!(
            "invalid UTF-8 at byte {} of the record",
            e.valid_up_to()
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
}

/// Calls `f` for every record of a JSON array or JSON Lines file, with the parsed value or the
/// reason it could not be parsed. Fails on an unreadable or empty file, or when `f` fails.
pub fn for_each_record(
    path: &Path,
    mut f: impl FnMut(Location, std::result::Result<Value, String>) -> Result<()>,
) -> Result<()> {
    let mut reader = open(path)?;
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
