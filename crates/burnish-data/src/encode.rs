//! Rendering and tokenization of rows, with truncation.
//!
//! Prompt and completion are tokenized separately and their ids concatenated, as TRL does: the
//! boundary between prompt and completion is then exact (no BPE merge across it), which the
//! completion mask needs, at the price of a tokenization that can differ from tokenizing the
//! joined text at that one boundary. Special tokens in the rendered text (`<|im_start|>`) are
//! recognised; the tokenizer's own post-processor (automatic BOS/EOS) is not applied, and BOS/EOS
//! are added here by configuration instead.
//!
//! Truncation: the prompt is cut first to `max_prompt_length`, keeping its start or its end;
//! then each completion is cut, keeping its start, so that prompt + completion fits
//! `max_length`. A completion with nothing left is an error: the row is rejected, not trained on.

use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use tokenizers::Tokenizer;

use crate::chat_template::ChatTemplate;
use crate::error::{DataError, EncodeError, Result};
use crate::row::{Content, ListwiseRow, PreferencePair, PromptCompletion, PromptRow, Ranking};

/// Which end of an over-long prompt survives truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TruncationSide {
    /// Keep the first tokens (drop the end).
    KeepStart,
    /// Keep the last tokens (drop the start): the question nearest the answer survives. TRL's default.
    #[default]
    KeepEnd,
}

/// Lengths and special-token policy of an [`Encoder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Maximum prompt tokens; `None` for no limit.
    pub max_prompt_length: Option<usize>,
    /// Maximum prompt + completion tokens; `None` for no limit.
    pub max_length: Option<usize>,
    /// Which end of the prompt to keep when it is cut.
    pub prompt_truncation: TruncationSide,
    /// Append the EOS id to plain-text completions (chat templates already close their turns).
    pub append_eos_to_text: bool,
    /// Prepend the BOS id to prompts that do not start with it.
    pub add_bos: bool,
}

impl Default for EncoderConfig {
    /// No length limits, keep the end of the prompt, EOS after text completions, no BOS.
    fn default() -> Self {
        EncoderConfig {
            max_prompt_length: None,
            max_length: None,
            prompt_truncation: TruncationSide::KeepEnd,
            append_eos_to_text: true,
            add_bos: false,
        }
    }
}

/// A tokenized pair, ready for [`crate::Collator::collate_pairs`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedPair {
    /// Prompt ids (after truncation).
    pub prompt_ids: Vec<u32>,
    /// Chosen completion ids (after truncation).
    pub chosen_ids: Vec<u32>,
    /// Rejected completion ids (after truncation).
    pub rejected_ids: Vec<u32>,
    /// The pair's margin, carried through.
    pub margin: Option<f32>,
    /// Cached reference log-prob of chosen, carried through.
    pub ref_chosen_logp: Option<f32>,
    /// Cached reference log-prob of rejected, carried through.
    pub ref_rejected_logp: Option<f32>,
}

/// A tokenized supervised row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedPromptCompletion {
    /// Prompt ids (after truncation).
    pub prompt_ids: Vec<u32>,
    /// Completion ids (after truncation).
    pub completion_ids: Vec<u32>,
}

/// A tokenized listwise row.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedList {
    /// Prompt ids (after truncation).
    pub prompt_ids: Vec<u32>,
    /// One id list per response (after truncation).
    pub response_ids: Vec<Vec<u32>>,
    /// The responses' ranks or scores.
    pub ranking: Ranking,
    /// Cached reference log-prob of each response, carried through.
    pub ref_logps: Option<Vec<f32>>,
}

/// Loads a Hugging Face `tokenizer.json` (or a gzipped `tokenizer.json.gz`).
pub fn load_tokenizer(path: impl AsRef<Path>) -> Result<Tokenizer> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::io(path, e))?;
        out
    } else {
        bytes
    };
    Tokenizer::from_bytes(&bytes).map_err(|e| DataError::Tokenizer {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Turns rows into token ids: chat template for conversational rows, tokenizer, truncation.
pub struct Encoder {
    tokenizer: Tokenizer,
    template: Option<ChatTemplate>,
    config: EncoderConfig,
    bos_id: Option<u32>,
    eos_id: Option<u32>,
    pad_id: Option<u32>,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("template", &self.template)
            .field("config", &self.config)
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

fn config_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match config.get(key)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

impl Encoder {
    /// An encoder from a tokenizer and an optional chat template; special-token ids are looked up
    /// from the template's `bos_token` / `eos_token`, and padding defaults to EOS.
    pub fn new(
        tokenizer: Tokenizer,
        template: Option<ChatTemplate>,
        config: EncoderConfig,
    ) -> Self {
        let id = |s: &str| {
            if s.is_empty() {
                None
            } else {
                tokenizer.token_to_id(s)
            }
        };
        let (bos_id, eos_id) = match &template {
            Some(t) => (id(t.bos_token()), id(t.eos_token())),
            None => (None, None),
        };
        Encoder {
            bos_id,
            eos_id,
            pad_id: eos_id,
            tokenizer,
            template,
            config,
        }
    }

    /// Loads `tokenizer.json` (or `.json.gz`) and, when a `tokenizer_config.json` sits beside it,
    /// its chat template and its BOS/EOS/PAD tokens.
    pub fn from_files(tokenizer_json: impl AsRef<Path>, config: EncoderConfig) -> Result<Self> {
        let path = tokenizer_json.as_ref();
        let tokenizer = load_tokenizer(path)?;
        let cfg_path = path.with_file_name("tokenizer_config.json");
        if !cfg_path.is_file() {
            return Ok(Self::new(tokenizer, None, config));
        }
        let text = std::fs::read_to_string(&cfg_path).map_err(|e| DataError::io(&cfg_path, e))?;
        Self::from_tokenizer_config(tokenizer, &text, &cfg_path, config)
    }

    /// An encoder from a tokenizer already built and the text of its `tokenizer_config.json`
    /// (chat template, BOS/EOS/PAD tokens); `origin` names that config in errors. This is how a
    /// GGUF file's tokenizer, rebuilt from its metadata, is used.
    pub fn from_tokenizer_config(
        tokenizer: Tokenizer,
        tokenizer_config: &str,
        origin: &Path,
        config: EncoderConfig,
    ) -> Result<Self> {
        let json: serde_json::Value =
            serde_json::from_str(tokenizer_config).map_err(|e| DataError::Invalid {
                path: origin.to_path_buf(),
                reason: format!("invalid JSON: {e}"),
            })?;
        let template = if json.get("chat_template").is_some() {
            Some(ChatTemplate::from_tokenizer_config_str(
                tokenizer_config,
                origin,
            )?)
        } else {
            None
        };
        let id = |k: &str| config_token(&json, k).and_then(|s| tokenizer.token_to_id(&s));
        let (bos_id, eos_id, pad_id) = (id("bos_token"), id("eos_token"), id("pad_token"));
        Ok(Encoder {
            bos_id,
            eos_id,
            pad_id: pad_id.or(eos_id),
            tokenizer,
            template,
            config,
        })
    }

    /// Sets the EOS id (appended to plain-text completions).
    pub fn with_eos_token_id(mut self, id: Option<u32>) -> Self {
        self.eos_id = id;
        self
    }

    /// Sets the BOS id (prepended to prompts when `add_bos`).
    pub fn with_bos_token_id(mut self, id: Option<u32>) -> Self {
        self.bos_id = id;
        self
    }

    /// Sets the padding id reported by [`Encoder::pad_token_id`].
    pub fn with_pad_token_id(mut self, id: Option<u32>) -> Self {
        self.pad_id = id;
        self
    }

    /// The underlying tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, if any.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.template.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The EOS id, if known.
    pub fn eos_token_id(&self) -> Option<u32> {
        self.eos_id
    }

    /// The padding id: `pad_token`, else EOS, else `None`.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Token ids of a text, without the tokenizer's automatic special tokens.
    pub fn tokenize(&self, text: &str) -> std::result::Result<Vec<u32>, EncodeError> {
        self.tokenizer
            .encode(text, false)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| EncodeError::Tokenizer(e.to_string()))
    }

    /// The prompt text and one completion text, rendered with the chat template when conversational.
    pub fn render(
        &self,
        prompt: &Content,
        completion: &Content,
    ) -> std::result::Result<(String, String), EncodeError> {
        match (prompt, completion) {
            (Content::Text(p), Content::Text(c)) => Ok((p.clone(), c.clone())),
            (Content::Messages(p), Content::Messages(c)) => {
                let t = self.template.as_ref().ok_or(EncodeError::NoChatTemplate)?;
                t.render_prompt_completion(p, c)
            }
            _ => Err(EncodeError::MixedContent("completion")),
        }
    }

    fn prompt_ids(&self, text: &str) -> std::result::Result<Vec<u32>, EncodeError> {
        let mut ids = self.tokenize(text)?;
        if self.config.add_bos
            && let Some(bos) = self.bos_id
            && ids.first() != Some(&bos)
        {
            ids.insert(0, bos);
        }
        if ids.is_empty() {
            // The first completion token would have no token before it to be predicted from.
            return Err(EncodeError::EmptyCompletion("prompt"));
        }
        if let Some(max) = self.config.max_prompt_length
            && ids.len() > max
        {
            match self.config.prompt_truncation {
                TruncationSide::KeepStart => ids.truncate(max),
                TruncationSide::KeepEnd => {
                    ids.drain(..ids.len() - max);
                }
            }
        }
        Ok(ids)
    }

    fn completion_ids(
        &self,
        which: &'static str,
        prompt_len: usize,
        content: &Content,
        text: &str,
    ) -> std::result::Result<Vec<u32>, EncodeError> {
        if content.is_empty() {
            return Err(EncodeError::EmptyCompletion(which));
        }
        let mut ids = self.tokenize(text)?;
        if !content.is_messages()
            && self.config.append_eos_to_text
            && let Some(eos) = self.eos_id
        {
            ids.push(eos);
        }
        if let Some(max) = self.config.max_length {
            ids.truncate(max.saturating_sub(prompt_len));
            if ids.is_empty() {
                return Err(EncodeError::CompletionTruncatedAway {
                    which,
                    prompt_tokens: prompt_len,
                    max_length: max,
                });
            }
        }
        Ok(ids)
    }

    /// Renders, tokenizes and truncates one pair.
    pub fn encode_pair(
        &self,
        pair: &PreferencePair,
    ) -> std::result::Result<TokenizedPair, EncodeError> {
        if pair.chosen.is_messages() != pair.prompt.is_messages() {
            return Err(EncodeError::MixedContent("chosen"));
        }
        if pair.rejected.is_messages() != pair.prompt.is_messages() {
            return Err(EncodeError::MixedContent("rejected"));
        }
        let (prompt_text, chosen_text) = self.render(&pair.prompt, &pair.chosen)?;
        let (_, rejected_text) = self.render(&pair.prompt, &pair.rejected)?;
        let prompt_ids = self.prompt_ids(&prompt_text)?;
        let chosen_ids =
            self.completion_ids("chosen", prompt_ids.len(), &pair.chosen, &chosen_text)?;
        let rejected_ids =
            self.completion_ids("rejected", prompt_ids.len(), &pair.rejected, &rejected_text)?;
        Ok(TokenizedPair {
            prompt_ids,
            chosen_ids,
            rejected_ids,
            margin: pair.margin,
            ref_chosen_logp: pair.ref_chosen_logp,
            ref_rejected_logp: pair.ref_rejected_logp,
        })
    }

    /// [`Encoder::encode_pair`] on every pair, in parallel on all cores; results keep the input order.
    pub fn encode_pairs(
        &self,
        pairs: &[PreferencePair],
    ) -> Vec<std::result::Result<TokenizedPair, EncodeError>> {
        pairs.par_iter().map(|p| self.encode_pair(p)).collect()
    }

    /// Renders, tokenizes and truncates one supervised row.
    pub fn encode_prompt_completion(
        &self,
        row: &PromptCompletion,
    ) -> std::result::Result<TokenizedPromptCompletion, EncodeError> {
        let (prompt_text, completion_text) = self.render(&row.prompt, &row.completion)?;
        let prompt_ids = self.prompt_ids(&prompt_text)?;
        let completion_ids = self.completion_ids(
            "completion",
            prompt_ids.len(),
            &row.completion,
            &completion_text,
        )?;
        Ok(TokenizedPromptCompletion {
            prompt_ids,
            completion_ids,
        })
    }

    /// [`Encoder::encode_prompt_completion`] on every row, in parallel; results keep the input order.
    pub fn encode_prompt_completions(
        &self,
        rows: &[PromptCompletion],
    ) -> Vec<std::result::Result<TokenizedPromptCompletion, EncodeError>> {
        rows.par_iter()
            .map(|r| self.encode_prompt_completion(r))
            .collect()
    }

    /// Renders (messages with the chat template's generation prompt), tokenizes and truncates
    /// one prompt, for a policy to complete; an empty prompt is rejected.
    pub fn encode_prompt(&self, row: &PromptRow) -> std::result::Result<Vec<u32>, EncodeError> {
        if row.prompt.is_empty() {
            return Err(EncodeError::EmptyCompletion("prompt"));
        }
        let text = match &row.prompt {
            Content::Text(t) => t.clone(),
            Content::Messages(m) => self
                .template
                .as_ref()
                .ok_or(EncodeError::NoChatTemplate)?
                .render(m, true)?,
        };
        let ids = self.prompt_ids(&text)?;
        if ids.is_empty() {
            return Err(EncodeError::EmptyCompletion("prompt"));
        }
        Ok(ids)
    }

    /// [`Encoder::encode_prompt`] on every row, in parallel; results keep the input order.
    pub fn encode_prompts(
        &self,
        rows: &[PromptRow],
    ) -> Vec<std::result::Result<Vec<u32>, EncodeError>> {
        rows.par_iter().map(|r| self.encode_prompt(r)).collect()
    }

    /// Renders, tokenizes and truncates one listwise row; any response with nothing left rejects it.
    pub fn encode_list(
        &self,
        row: &ListwiseRow,
    ) -> std::result::Result<TokenizedList, EncodeError> {
        let mut prompt_ids = None;
        let mut response_ids = Vec::with_capacity(row.responses.len());
        for r in &row.responses {
            let (p, c) = self.render(&row.prompt, r)?;
            if prompt_ids.is_none() {
                prompt_ids = Some(self.prompt_ids(&p)?);
            }
            let plen = prompt_ids.as_ref().map_or(0, Vec::len);
            response_ids.push(self.completion_ids("responses", plen, r, &c)?);
        }
        let prompt_ids = match prompt_ids {
            Some(p) => p,
            None => self.prompt_ids(&row.prompt.to_display_text())?,
        };
        Ok(TokenizedList {
            prompt_ids,
            response_ids,
            ranking: row.ranking.clone(),
            ref_logps: row.ref_logps.clone(),
        })
    }

    /// [`Encoder::encode_list`] on every row, in parallel; results keep the input order.
    pub fn encode_lists(
        &self,
        rows: &[ListwiseRow],
    ) -> Vec<std::result::Result<TokenizedList, EncodeError>> {
        rows.par_iter().map(|r| self.encode_list(r)).collect()
    }
}
