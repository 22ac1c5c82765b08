//! The Hugging Face tokenizer (`tokenizer.json`) and the rule that splits prompt from completion.
//!
//! Scoring tokenizes the prompt alone and the prompt + completion together, and scores the
//! tokens after the prompt's. When a BPE merge crosses the boundary (the prompt's tokens are not
//! a prefix of the joint tokens, e.g. prompt `"The movie was grea"` + completion `"t"`), there is
//! no honest split: burnish refuses with [`ModelError::PromptBoundary`] instead of scoring a
//! token that is half prompt.

use std::path::{Path, PathBuf};

use crate::error::{ModelError, Result};

/// A loaded `tokenizer.json`.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

/// Prompt + completion token ids, and where the completion starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCompletion {
    /// All ids, prompt first.
    pub ids: Vec<u32>,
    /// Number of prompt ids; the completion is `ids[prompt_len..]`.
    pub prompt_len: usize,
}

impl TextTokenizer {
    /// Loads a `tokenizer.json` file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Err(ModelError::Io {
                path,
                cause: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let inner = tokenizers::Tokenizer::from_file(&path).map_err(|e| ModelError::Tokenizer {
            path: path.clone(),
            reason: format!("does not parse as a Hugging Face tokenizer: {e}"),
        })?;
        Ok(Self { inner, path })
    }

    /// Loads `tokenizer.json` from a model folder, or the tokenizer a GGUF file's metadata
    /// describes.
    pub fn from_model_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        if crate::gguf::is_gguf(dir) {
            let file = crate::gguf::GgufFile::open(dir)?;
            return Ok(Self {
                inner: crate::gguf::GgufTokenizer::from_file(&file)?.tokenizer,
                path: dir.to_path_buf(),
            });
        }
        Self::from_file(dir.join("tokenizer.json"))
    }

    /// Trains a byte-level BPE tokenizer (GPT-2's scheme) of `vocab_size` tokens on `texts`, with
    /// `special` tokens (e.g. `<|endoftext|>`) given the first ids.
    pub fn train_byte_level_bpe<S: AsRef<str> + Send>(
        texts: impl Iterator<Item = S> + Send,
        vocab_size: usize,
        special: &[&str],
    ) -> Result<Self> {
        use tokenizers::models::TrainerWrapper;
        use tokenizers::models::bpe::{BPE, BpeTrainer};
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        let path = PathBuf::from("(trained in memory)");
        let fail = |e: tokenizers::Error| ModelError::Tokenizer {
            path: path.clone(),
            reason: format!("training failed: {e}"),
        };
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(
                special
                    .iter()
                    .map(|t| tokenizers::AddedToken::from(t.to_string(), true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::default().add_prefix_space(false)));
        inner.with_decoder(Some(ByteLevel::default()));
        inner.train(&mut trainer, texts).map_err(fail)?;
        Ok(Self { inner, path })
    }

    /// Writes the tokenizer as a Hugging Face `tokenizer.json`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        self.inner
            .save(path, false)
            .map_err(|e| ModelError::Tokenizer {
                path: path.to_path_buf(),
                reason: format!("cannot write: {e}"),
            })
    }

    /// Number of tokens in the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Checks that every id the tokenizer can produce is a row of the model's embedding (see
    /// [`check_vocab`]).
    pub fn check_fits(&self, config: &crate::ModelConfig) -> Result<()> {
        check_vocab(&self.inner, &self.path, config)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of a text, with the tokenizer's special tokens (e.g. a BOS) added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot encode {text:?}: {e}"),
            })
    }

    /// Text of token ids, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| ModelError::Tokenizer {
                path: self.path.clone(),
                reason: format!("cannot decode: {e}"),
            })
    }

    /// The id of a token string, if the vocabulary has it.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokenizes prompt and prompt + completion and splits at the prompt's length (see the
    /// module docs for what happens when a merge crosses the boundary).
    pub fn prompt_completion(&self, prompt: &str, completion: &str) -> Result<PromptCompletion> {
        let prompt_ids = self.encode(prompt)?;
        if prompt_ids.is_empty() {
            // A causal LM scores token t from the tokens before it; the first token of the
            // sequence has none (TRL's trainers likewise never score it).
            return Err(ModelError::InvalidArgument(
                "the prompt has no tokens, so the completion's first token would have nothing to be predicted from; give a prompt (or use a tokenizer that adds a BOS token)".into(),
            ));
        }
        let ids = self.encode(&format!("{prompt}{completion}"))?;
        if !ids.starts_with(&prompt_ids) {
            let tail: String = prompt
                .chars()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            return Err(ModelError::PromptBoundary {
                prompt_end: tail,
                completion_start: completion.chars().take(12).collect(),
                prompt_tokens: prompt_ids.len(),
            });
        }
        if ids.len() == prompt_ids.len() {
            return Err(ModelError::EmptyCompletion {
                completion: completion.to_string(),
            });
        }
        Ok(PromptCompletion {
            ids,
            prompt_len: prompt_ids.len(),
        })
    }
}

/// Refuses a tokenizer with more tokens (special tokens included) than the model has embedding
/// rows: its ids past the vocabulary would index out of the embedding. A smaller tokenizer is
/// fine (models often pad their vocabulary).
pub fn check_vocab(
    tokenizer: &tokenizers::Tokenizer,
    path: &Path,
    config: &crate::ModelConfig,
) -> Result<()> {
    let tokens = tokenizer.get_vocab_size(true);
    if tokens > config.vocab_size {
        return Err(ModelError::Tokenizer {
            path: path.to_path_buf(),
            reason: format!(
                "has {tokens} tokens but the model's vocabulary has {} (vocab_size in config.json): this tokenizer does not belong to this model",
                config.vocab_size
            ),
        });
    }
    Ok(())
}
