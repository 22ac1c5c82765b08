//! Preference data for burnish: Parquet, Arrow IPC and CSV files and Hugging Face `datasets`
//! folders streamed as Arrow record batches, chat templates, tokenization and collation, and
//! conversion from the common public formats.
//!
//! Column names follow TRL (`prompt`, `chosen`, `rejected`; `responses` with `ranks` or
//! `scores` for listwise data; `prompt`, `completion`, `label` for unpaired (KTO) data; `prompt`,
//! `completion` for supervised fine-tuning), each text either a string or a list of
//! `{role, content}` messages; files with other column names are read through a column mapping.
//! The path from file to batch:
//!
//! ```text
//! ReaderBuilder::new().path("data/").pairs()?   -> Iterator<Item = Result<PreferencePair>>
//!   ShuffleBuffer::new(rows, 10_000, seed)       -> same rows, seeded order
//!   Split::new(0.05).is_eval(&row)               -> stable train/eval assignment
//!   Encoder::from_files("tokenizer.json", cfg)?  -> encode_pairs(&rows) (parallel)
//!   Collator::new(pad).collate_pairs(&tokenized) -> PairBatch (plain Vec, [2B, T])
//! ```
//!
//! The crate does not depend on burn or on the model crate.

#![warn(missing_docs)]

mod batches;
pub mod chat_template;
pub mod collate;
mod column_map;
mod columns;
pub mod convert;
pub mod encode;
pub mod error;
pub mod formats;
pub mod inspect;
pub mod layout;
pub mod packing;
pub mod pairing;
pub mod reader;
pub mod row;
pub mod shuffle;
pub mod source;
pub mod split;
pub mod writer;

pub use chat_template::ChatTemplate;
pub use collate::{Collator, ListBatch, PadSide, PairBatch, SequenceBatch};
pub use encode::{
    Encoder, EncoderConfig, TokenizedList, TokenizedPair, TokenizedPromptCompletion,
    TruncationSide, load_tokenizer,
};
pub use error::{DataError, EncodeError, Result};
pub use layout::FileKind;
pub use packing::{PackedPairBatch, ScoredToken};
pub use reader::{ArrowRow, ReaderBuilder, RowPosition, RowReader, TextRow};
pub use row::{
    Content, ListwiseRow, Message, PreferencePair, PromptCompletion, PromptRow, Ranking,
    UnpairedRow,
};
pub use shuffle::ShuffleBuffer;
pub use split::{Split, Subset};
/// Re-exported so users need no direct dependency to build an [`Encoder`].
pub use tokenizers::Tokenizer;
pub use writer::{
    ListwiseSchema, ListwiseWriter, PairSchema, PairWriter, PromptCompletionWriter, UnpairedSchema,
    UnpairedWriter,
};
