//! Errors of the data layer.
//!
//! Every message names the file and, where there is one, the row and the column, so that a user
//! can fix the input without a debugger. Errors that concern one row only (a row that cannot be
//! rendered or tokenized) are [`EncodeError`]s: callers count them and write them to a rejects
//! file instead of stopping.
//!
//! A wrapped error (I/O, Parquet, Arrow) is part of the message and not also returned by
//! `source()`: `anyhow`'s `{:#}` prints the whole chain, and a cause both in the message and in
//! the chain would be printed twice.

use std::path::PathBuf;

/// An error reading, writing or converting a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be opened, read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`).
        cause: std::io::Error,
    },
    /// The Parquet layer failed (corrupt or truncated file, unsupported encoding).
    #[error("{}: Parquet: {cause}", path.display())]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`).
        cause: parquet::errors::ParquetError,
    },
    /// Building or casting an Arrow array failed.
    #[error("{}: Arrow: {cause}", path.display())]
    Arrow {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`).
        cause: arrow::error::ArrowError,
    },
    /// A required column is absent.
    #[error("{}: missing column `{column}` (found: {found})", path.display())]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The column that was looked for.
        column: String,
        /// The columns the file has, comma-separated.
        found: String,
    },
    /// A column mapping names a file column that the file does not have.
    #[error(
        "{}: column `{file_column}` (mapped to `{column}`) is not in the file (found: {found})",
        path.display()
    )]
    MappedColumn {
        /// The file.
        path: PathBuf,
        /// The TRL column the mapping fills.
        column: String,
        /// The file column the mapping names.
        file_column: String,
        /// The columns the file has, comma-separated.
        found: String,
    },
    /// A column has a type this crate cannot read.
    #[error("{}: column `{column}` has type {found}, expected {expected}", path.display())]
    ColumnType {
        /// The file.
        path: PathBuf,
        /// The column.
        column: String,
        /// The Arrow type found.
        found: String,
        /// What was expected, in words.
        expected: String,
    },
    /// One value of one row is unusable (null, wrong shape).
    #[error("{}, row {row}, column `{column}`: {reason}", path.display())]
    Row {
        /// The file.
        path: PathBuf,
        /// Row number in the file, from 0.
        row: u64,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A column cannot be read at all (wrong type, JSON message lists in a CSV file): every row
    /// of the file from `row` on is unusable.
    #[error("{}, rows from {row}, column `{column}`: {reason}", path.display())]
    Column {
        /// The file.
        path: PathBuf,
        /// The first row of the record batch where the column failed, from 0.
        row: u64,
        /// The column.
        column: String,
        /// What is wrong.
        reason: String,
    },
    /// A folder given as input holds no data file.
    #[error("{}: no data files (.parquet, .arrow, .csv) in this folder", .0.display())]
    NoFiles(PathBuf),
    /// An input file has no rows at all.
    #[error("{}: the file is empty", .0.display())]
    EmptyInput(PathBuf),
    /// The chat template is missing or does not compile.
    #[error("{}: chat template: {reason}", path.display())]
    Template {
        /// The tokenizer_config.json (or other origin) of the template.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be loaded.
    #[error("{}: tokenizer: {reason}", path.display())]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A conversion that does not allow rejects rejected some records, so its output was not
    /// written (the rejects file says why each one was rejected).
    #[error(
        "{}: {rejected} of {read} records rejected (reasons in {}), so the output was not written",
        path.display(),
        rejects.display()
    )]
    Rejected {
        /// The output that was not written.
        path: PathBuf,
        /// Records read.
        read: u64,
        /// Records rejected.
        rejected: u64,
        /// The rejects file.
        rejects: PathBuf,
    },
    /// Anything else about a file's content (bad JSON, bad option for this file).
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            cause,
        }
    }
    pub(crate) fn parquet(path: impl Into<PathBuf>, cause: parquet::errors::ParquetError) -> Self {
        DataError::Parquet {
            path: path.into(),
            cause,
        }
    }
    pub(crate) fn arrow(path: impl Into<PathBuf>, cause: arrow::error::ArrowError) -> Self {
        DataError::Arrow {
            path: path.into(),
            cause,
        }
    }

    /// The file the error names (every variant names one).
    pub(crate) fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            DataError::Io { path, .. }
            | DataError::Parquet { path, .. }
            | DataError::Arrow { path, .. }
            | DataError::MissingColumn { path, .. }
            | DataError::MappedColumn { path, .. }
            | DataError::ColumnType { path, .. }
            | DataError::Row { path, .. }
            | DataError::Column { path, .. }
            | DataError::NoFiles(path)
            | DataError::EmptyInput(path)
            | DataError::Template { path, .. }
            | DataError::Tokenizer { path, .. }
            | DataError::Rejected { path, .. }
            | DataError::Invalid { path, .. } => path,
        }
    }
}

/// Why one row could not be rendered, tokenized or validated; the row is rejected, not trained on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EncodeError {
    /// A completion is empty before any truncation.
    #[error("`{0}` is empty")]
    EmptyCompletion(&'static str),
    /// Truncation to the maximum length left nothing of a completion.
    #[error(
        "nothing left of `{which}` after truncation (prompt {prompt_tokens} tokens, max_length {max_length})"
    )]
    CompletionTruncatedAway {
        /// `chosen`, `rejected` or `completion`.
        which: &'static str,
        /// Prompt length after prompt truncation.
        prompt_tokens: usize,
        /// The configured maximum total length.
        max_length: usize,
    },
    /// The row mixes plain text and message lists.
    #[error("`{0}` is a message list but the prompt is plain text, or the other way round")]
    MixedContent(&'static str),
    /// A conversational row needs a chat template and none was given.
    #[error("the row is conversational but the tokenizer has no chat template")]
    NoChatTemplate,
    /// The chat template failed on this row.
    #[error("chat template: {0}")]
    Template(String),
    /// The tokenizer failed on this row.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Result with a [`DataError`].
pub type Result<T, E = DataError> = std::result::Result<T, E>;
