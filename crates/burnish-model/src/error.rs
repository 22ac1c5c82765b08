//! Errors of the model crate: each names the file, key or tensor a user has to fix.

use std::path::PathBuf;

/// Everything that can go wrong while loading, saving or running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A JSON file did not parse.
    #[error("{path}: invalid JSON: {cause}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        cause: serde_json::Error,
    },
    /// The config's `model_type` is not one burnish implements.
    #[error(
        "{path}: unsupported model_type {found:?} (burnish supports gpt2, llama, mistral, qwen2, qwen3)"
    )]
    UnsupportedModelType {
        /// The config file.
        path: PathBuf,
        /// The value found.
        found: String,
    },
    /// A config key is missing or holds a value burnish cannot use.
    #[error("{path}: config key `{key}`: {reason}")]
    Config {
        /// The config file.
        path: PathBuf,
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint tensor's shape disagrees with the config.
    #[error("{file}: tensor `{name}` has shape {found:?}, but the config implies {expected:?}")]
    Shape {
        /// The safetensors file.
        file: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape in the file.
        found: Vec<usize>,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("{dir}: missing tensor `{name}`")]
    MissingTensor {
        /// The model folder.
        dir: PathBuf,
        /// The tensor name transformers uses.
        name: String,
    },
    /// A safetensors file is malformed or holds an unsupported dtype.
    #[error("{path}: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A GGUF file is malformed, truncated, or holds something burnish does not support.
    #[error("{path}: {reason}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A burn record could not be written or read.
    #[error("{path}: {reason}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// `tokenizer.json` did not parse, or encoding failed.
    #[error("{path}: {reason}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The prompt's tokens are not a prefix of the prompt+completion tokens.
    #[error(
        "a token merges across the prompt/completion boundary (prompt ends {prompt_end:?}, completion starts {completion_start:?}): the prompt's {prompt_tokens} tokens are not a prefix of the prompt+completion tokens; end the prompt or start the completion with a separator (usually a space) so the boundary falls between tokens"
    )]
    PromptBoundary {
        /// The last characters of the prompt.
        prompt_end: String,
        /// The first characters of the completion.
        completion_start: String,
        /// How many tokens the prompt alone has.
        prompt_tokens: usize,
    },
    /// The completion tokenizes to nothing, so there is nothing to score.
    #[error("the completion {completion:?} has no tokens of its own after the prompt")]
    EmptyCompletion {
        /// The completion text.
        completion: String,
    },
    /// An argument out of its valid range (e.g. a negative temperature).
    #[error("{0}")]
    InvalidArgument(String),
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
