//! The tokenizer a GGUF file carries in its metadata, rebuilt as a Hugging Face `tokenizers`
//! tokenizer, and the reverse for export.
//!
//! `tokenizer.ggml.model = "gpt2"` is byte-level BPE (`tokens` + `merges`), split first by the
//! regex llama.cpp names in `tokenizer.ggml.pre`; `"llama"` is SentencePiece-style BPE with byte
//! fallback, whose merges follow the merged pieces' `scores` (what transformers' converter does).
//! Control tokens (`token_type` 3) become special added tokens, user-defined ones (4) plain added
//! tokens, so `<|im_start|>` and friends stay whole. `tokenizer_config` carries the chat
//! template and the BOS/EOS/PAD strings the way a `tokenizer_config.json` would.

use serde_json::{Map, Value};
use tokenizers::decoders::DecoderWrapper;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, unicode::NFC};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use super::{GgufFile, MetaValue};
use crate::error::{ModelError, Result};

/// Qwen2's split regex (digits one by one); GPT-2's own is applied by `ByteLevel`.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Llama 3's split regex (numbers in groups of up to three).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The `tokenizer.ggml.pre` names burnish knows, for the error that lists them.
const PRE_NAMES: &str =
    "gpt-2, gpt2, default, qwen2, llama-bpe, llama3, smaug-bpe, smollm, starcoder, refact";

/// A GGUF file's tokenizer and the `tokenizer_config.json` equivalent of its metadata.
pub struct GgufTokenizer {
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// `chat_template`, `bos_token`, `eos_token`, `pad_token`, `add_bos_token`, as
    /// `tokenizer_config.json` holds them.
    pub tokenizer_config: Value,
}

fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>> {
    let items = file
        .meta(key)
        .and_then(MetaValue::as_array)
        .ok_or_else(|| file.error(format!("missing array `{key}` in the metadata")))?;
    items
        .iter()
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| file.error(format!("`{key}` holds a non-string: {v:?}")))
        })
        .collect()
}

fn numbers(file: &GgufFile, key: &str, len: usize) -> Result<Option<Vec<f64>>> {
    let Some(items) = file.meta(key).and_then(MetaValue::as_array) else {
        return Ok(None);
    };
    if items.len() != len {
        return Err(file.error(format!(
            "`{key}` has {} entries for {len} tokens",
            items.len()
        )));
    }
    items
        .iter()
        .map(|v| {
            v.as_f64()
                .ok_or_else(|| file.error(format!("`{key}` holds a non-number: {v:?}")))
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

fn tokenizer_error(file: &GgufFile, e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer {
        path: file.path().to_path_buf(),
        reason: format!("building the tokenizer from the GGUF metadata: {e}"),
    }
}

fn pre_tokenizer(
    file: &GgufFile,
    pre: &str,
) -> Result<(Option<NormalizerWrapper>, PreTokenizerWrapper)> {
    let split = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| tokenizer_error(file, e))?;
        Ok(Sequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, false).into(),
        ])
        .into())
    };
    Ok(match pre {
        "gpt-2" | "gpt2" | "default" | "starcoder" | "refact" => {
            (None, ByteLevel::new(false, true, true).into())
        }
        "qwen2" => (Some(NFC.into()), split(QWEN2_REGEX)?),
        "llama-bpe" | "llama3" | "smaug-bpe" => (None, split(LLAMA3_REGEX)?),
        "smollm" => (
            None,
            Sequence::new(vec![
                Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
        ),
        other => {
            return Err(file.error(format!(
                "tokenizer.ggml.pre {other:?} is not supported (supported: {PRE_NAMES})"
            )));
        }
    })
}

/// SentencePiece-BPE merges from the vocabulary: every split of a piece into two pieces of the
/// vocabulary, ranked by the merged piece's score (higher merges first), as transformers'
/// SentencePiece extractor ranks them.
fn spm_merges(tokens: &[String], scores: &[f64], vocab: &Vocab) -> Vec<(String, String)> {
    let mut ranked: Vec<(f64, u32, usize, (String, String))> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        for (cut, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(cut);
            if let (Some(&l), Some(&r)) = (vocab.get(left), vocab.get(right)) {
                ranked.push((
                    scores[id],
                    l.max(r),
                    cut,
                    (left.to_owned(), right.to_owned()),
                ));
            }
        }
    }
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    ranked.into_iter().map(|(_, _, _, pair)| pair).collect()
}

impl GgufTokenizer {
    /// Rebuilds the tokenizer a GGUF file describes.
    pub fn from_file(file: &GgufFile) -> Result<Self> {
        let kind = file
            .meta("tokenizer.ggml.model")
            .and_then(MetaValue::as_str)
            .ok_or_else(|| file.error("no tokenizer in the metadata (`tokenizer.ggml.model`)"))?
            .to_owned();
        let tokens = strings(file, "tokenizer.ggml.tokens")?;
        let types = numbers(file, "tokenizer.ggml.token_type", tokens.len())?
            .unwrap_or_else(|| vec![1.0; tokens.len()]);
        let mut vocab = Vocab::with_capacity(tokens.len());
        for (id, token) in tokens.iter().enumerate() {
            // A later duplicate (llama.cpp pads vocabularies with unused tokens) keeps the
            // first id, as transformers' converter does.
            vocab.entry(token.clone()).or_insert(id as u32);
        }
        let token_id = |key: &str| {
            file.meta(&format!("tokenizer.ggml.{key}"))
                .and_then(MetaValue::as_u64)
                .and_then(|id| u32::try_from(id).ok())
                .filter(|&id| (id as usize) < tokens.len())
        };
        let mut tokenizer = match kind.as_str() {
            "gpt2" => {
                let merges = strings(file, "tokenizer.ggml.merges")?
                    .into_iter()
                    .map(|m| {
                        m.split_once(' ')
                            .map(|(a, b)| (a.to_owned(), b.to_owned()))
                            .ok_or_else(|| file.error(format!("merge {m:?} is not two tokens")))
                    })
                    .collect::<Result<Vec<_>>>()?;
                let bpe = BPE::builder()
                    .vocab_and_merges(vocab.clone(), merges)
                    .build()
                    .map_err(|e| tokenizer_error(file, e))?;
                let pre = file
                    .meta("tokenizer.ggml.pre")
                    .and_then(MetaValue::as_str)
                    .unwrap_or("gpt-2");
                let (normalizer, pre_tokenizer) = pre_tokenizer(file, pre)?;
                let mut tokenizer = Tokenizer::new(bpe);
                tokenizer.with_normalizer(normalizer);
                tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
                tokenizer.with_decoder(Some(ByteLevelDecoder::new(true, true, true)));
                tokenizer
            }
            "llama" => {
                let scores =
                    numbers(file, "tokenizer.ggml.scores", tokens.len())?.ok_or_else(|| {
                        file.error("a \"llama\" tokenizer needs `tokenizer.ggml.scores`")
                    })?;
                let merges = spm_merges(&tokens, &scores, &vocab);
                let mut builder = BPE::builder()
                    .vocab_and_merges(vocab.clone(), merges)
                    .byte_fallback(true)
                    .fuse_unk(true);
                if let Some(unk) = token_id("unknown_token_id") {
                    builder = builder.unk_token(tokens[unk as usize].clone());
                }
                let bpe = builder.build().map_err(|e| tokenizer_error(file, e))?;
                let mut tokenizer = Tokenizer::new(bpe);
                let replace =
                    Replace::new(" ", "\u{2581}").map_err(|e| tokenizer_error(file, e))?;
                let normalizer = tokenizers::normalizers::Sequence::new(vec![
                    Prepend::new("\u{2581}".into()).into(),
                    replace.into(),
                ]);
                tokenizer.with_normalizer(Some(normalizer));
                let decoder: DecoderWrapper = DecoderSequence::new(vec![
                    Replace::new("\u{2581}", " ")
                        .map_err(|e| tokenizer_error(file, e))?
                        .into(),
                    ByteFallback::new().into(),
                    Fuse::new().into(),
                    Strip::new(' ', 1, 0).into(),
                ])
                .into();
                tokenizer.with_decoder(Some(decoder));
                tokenizer
            }
            other => {
                return Err(file.error(format!(
                    "tokenizer.ggml.model {other:?} is not supported (supported: \"gpt2\", \"llama\")"
                )));
            }
        };
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, ty)| **ty == 3.0 || **ty == 4.0)
            .map(|(t, ty)| AddedToken::from(t.clone(), *ty == 3.0).normalized(*ty == 4.0))
            .collect();
        tokenizer.add_special_tokens(
            &added
                .iter()
                .filter(|t| t.special)
                .cloned()
                .collect::<Vec<_>>(),
        );
        tokenizer.add_tokens(&added.into_iter().filter(|t| !t.special).collect::<Vec<_>>());
        let default_bos = kind == "llama";
        let add_bos = file
            .meta("tokenizer.ggml.add_bos_token")
            .and_then(MetaValue::as_bool)
            .unwrap_or(default_bos);
        let bos = token_id("bos_token_id");
        if add_bos && let Some(bos) = bos {
            let token = tokens[bos as usize].clone();
            let template = TemplateProcessing::builder()
                .try_single(format!("{token} $A"))
                .and_then(|b| b.try_pair(format!("{token} $A {token} $B")))
                .map_err(|e| tokenizer_error(file, e))?
                .special_tokens(vec![(token, bos)])
                .build()
                .map_err(|e| tokenizer_error(file, e))?;
            tokenizer.with_post_processor(Some(template));
        }
        let mut config = Map::new();
        let name = |id: Option<u32>| id.map(|id| Value::from(tokens[id as usize].clone()));
        if let Some(t) = name(bos) {
            config.insert("bos_token".into(), t);
        }
        if let Some(t) = name(token_id("eos_token_id")) {
            config.insert("eos_token".into(), t);
        }
        if let Some(t) = name(token_id("padding_token_id")) {
            config.insert("pad_token".into(), t);
        }
        config.insert("add_bos_token".into(), add_bos.into());
        if let Some(template) = file
            .meta("tokenizer.chat_template")
            .and_then(MetaValue::as_str)
        {
            config.insert("chat_template".into(), template.into());
        }
        Ok(Self {
            tokenizer,
            tokenizer_config: Value::Object(config),
        })
    }

    /// Writes `tokenizer.json` and `tokenizer_config.json` into a folder, so the tokenizer of a
    /// model loaded from GGUF travels with its Hugging Face export.
    pub fn save(&self, dir: &std::path::Path) -> Result<()> {
        let json_path = dir.join("tokenizer.json");
        self.tokenizer
            .save(&json_path, true)
            .map_err(|e| ModelError::Tokenizer {
                path: json_path.clone(),
                reason: format!("could not be written: {e}"),
            })?;
        let config_path = dir.join("tokenizer_config.json");
        let text = serde_json::to_string_pretty(&self.tokenizer_config).map_err(|cause| {
            ModelError::Json {
                path: config_path.clone(),
                cause,
            }
        })?;
        std::fs::write(&config_path, text).map_err(|cause| ModelError::Io {
            path: config_path,
            cause,
        })
    }
}
