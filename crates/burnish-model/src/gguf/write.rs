//! Writing a model as a GGUF file in llama.cpp's layout, so an aligned model goes back to
//! llama.cpp or Ollama: the hyper-parameters under the architecture's keys with the types
//! llama.cpp checks, the tokenizer and chat template in the metadata, norms and biases in F32 and
//! matrices in F16 or F32.

use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::names::{convert_layout, gguf_name};
use super::quant::{GgmlType, encode_f16, encode_f32};
use super::{DEFAULT_ALIGNMENT, GgufFile, MAGIC, MetaValue, VERSION};
use crate::config::Family;
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use burn::tensor::backend::Backend;

/// The float type of an exported GGUF file's matrices (norms and biases are always F32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufDtype {
    /// Half precision: half the size, what llama.cpp's converter writes by default.
    #[default]
    F16,
    /// Full precision: loads back with exactly the trained weights.
    F32,
}

impl std::str::FromStr for GgufDtype {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Ok(GgufDtype::F16),
            "f32" => Ok(GgufDtype::F32),
            other => Err(format!("GGUF dtype {other:?}: expected \"f16\" or \"f32\"")),
        }
    }
}

/// The `tokenizer.*` metadata of a GGUF file, to carry over unchanged into an export.
pub fn tokenizer_metadata_from_gguf(file: &GgufFile) -> Vec<(String, MetaValue)> {
    file.metadata()
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .cloned()
        .collect()
}

fn string_array(items: Vec<String>) -> MetaValue {
    MetaValue::Array(8, items.into_iter().map(MetaValue::Str).collect())
}

/// The `tokenizer.*` metadata for a model's source: carried over from a GGUF file, or built from
/// a Hugging Face folder's `tokenizer.json` ([`tokenizer_metadata_from_hf`]).
pub fn tokenizer_metadata_for(
    source: &Path,
    vocab_size: usize,
) -> Result<Vec<(String, MetaValue)>> {
    if super::is_gguf(source) {
        Ok(tokenizer_metadata_from_gguf(&GgufFile::open(source)?))
    } else {
        tokenizer_metadata_from_hf(source, vocab_size)
    }
}

/// llama.cpp's `tokenizer.ggml.pre` name for a `tokenizer.json` pre-tokenizer, if it is one of
/// the byte-level ones burnish rebuilds on load.
fn pre_name(pre: &Value) -> Option<&'static str> {
    let kind = pre.get("type")?.as_str()?;
    match kind {
        "ByteLevel" if pre.get("use_regex")?.as_bool()? => Some("gpt-2"),
        "Sequence" => {
            let parts = pre.get("pretokenizers")?.as_array()?;
            let types: Vec<&str> = parts
                .iter()
                .filter_map(|p| p.get("type")?.as_str())
                .collect();
            match types.as_slice() {
                ["Digits", "ByteLevel"] => Some("smollm"),
                ["Split", "ByteLevel"] => {
                    let regex = parts[0].get("pattern")?.get("Regex")?.as_str()?;
                    if regex.contains(r"\p{N}{1,3}") {
                        Some("llama-bpe")
                    } else {
                        Some("qwen2")
                    }
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The `tokenizer.*` metadata for a Hugging Face folder's byte-level BPE `tokenizer.json` (with
/// `tokenizer_config.json`'s chat template and special tokens when present), padded with unused
/// tokens to the model's `vocab_size` as llama.cpp's converter does.
pub fn tokenizer_metadata_from_hf(
    dir: &Path,
    vocab_size: usize,
) -> Result<Vec<(String, MetaValue)>> {
    tokenizer_metadata_from_files(
        &dir.join("tokenizer.json"),
        &dir.join("tokenizer_config.json"),
        vocab_size,
    )
}

/// As [`tokenizer_metadata_from_hf`], from a `tokenizer.json` and a `tokenizer_config.json`
/// (used when present) wherever they are.
pub fn tokenizer_metadata_from_files(
    tokenizer_json: &Path,
    tokenizer_config: &Path,
    vocab_size: usize,
) -> Result<Vec<(String, MetaValue)>> {
    let path = tokenizer_json.to_path_buf();
    let read_json = |path: &Path| -> Result<Value> {
        let text = std::fs::read_to_string(path).map_err(|cause| ModelError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        serde_json::from_str(&text).map_err(|cause| ModelError::Json {
            path: path.to_path_buf(),
            cause,
        })
    };
    let json = read_json(&path)?;
    let fail = |reason: String| ModelError::Tokenizer {
        path: path.clone(),
        reason,
    };
    let model = &json["model"];
    if model["type"].as_str() != Some("BPE") || model["byte_fallback"].as_bool() == Some(true) {
        return Err(fail(
            "GGUF export writes byte-level BPE tokenizers (GPT-2, Llama 3, Qwen, SmolLM); this one is not".into(),
        ));
    }
    let pre = pre_name(&json["pre_tokenizer"]).ok_or_else(|| {
        fail(format!(
            "its pre-tokenizer {} has no llama.cpp `tokenizer.ggml.pre` name burnish knows",
            json["pre_tokenizer"]
        ))
    })?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![1i32; vocab_size];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| fail("no `model.vocab` object".into()))?;
    let mut place = |token: &str, id: u64, ty: i32| -> Result<()> {
        let slot = usize::try_from(id)
            .ok()
            .filter(|&i| i < vocab_size)
            .ok_or_else(|| {
                fail(format!(
                    "token {token:?} has id {id}, beyond the model's {vocab_size}"
                ))
            })?;
        tokens[slot] = Some(token.to_owned());
        types[slot] = ty;
        Ok(())
    };
    for (token, id) in vocab {
        place(token, id.as_u64().unwrap_or(u64::MAX), 1)?;
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(token), Some(id)) = (added["content"].as_str(), added["id"].as_u64()) else {
            continue;
        };
        let ty = if added["special"].as_bool() == Some(true) {
            3
        } else {
            4
        };
        place(token, id, ty)?;
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            })
        })
        .collect();
    let merges: Vec<String> = model["merges"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| match m {
            Value::String(s) => Some(s.clone()),
            Value::Array(pair) => Some(format!(
                "{} {}",
                pair.first()?.as_str()?,
                pair.get(1)?.as_str()?
            )),
            _ => None,
        })
        .collect();
    let mut meta = vec![
        (
            "tokenizer.ggml.model".to_string(),
            MetaValue::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), MetaValue::Str(pre.into())),
    ];
    let id_of = |token: &str| tokens.iter().position(|t| t == token);
    meta.push(("tokenizer.ggml.tokens".into(), string_array(tokens.clone())));
    meta.push((
        "tokenizer.ggml.token_type".into(),
        MetaValue::Array(5, types.into_iter().map(MetaValue::I32).collect()),
    ));
    meta.push(("tokenizer.ggml.merges".into(), string_array(merges)));
    let config_path = tokenizer_config.to_path_buf();
    if config_path.is_file() {
        let config = read_json(&config_path)?;
        let special = |key: &str| -> Option<String> {
            match &config[key] {
                Value::String(s) => Some(s.clone()),
                Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
                _ => None,
            }
        };
        for (key, name) in [
            ("bos_token", "tokenizer.ggml.bos_token_id"),
            ("eos_token", "tokenizer.ggml.eos_token_id"),
            ("pad_token", "tokenizer.ggml.padding_token_id"),
        ] {
            if let Some(id) = special(key).and_then(|t| id_of(&t)) {
                meta.push((name.into(), MetaValue::U32(id as u32)));
            }
        }
        if let Some(add) = config["add_bos_token"].as_bool() {
            meta.push(("tokenizer.ggml.add_bos_token".into(), MetaValue::Bool(add)));
        }
        if let Some(template) = config["chat_template"].as_str() {
            meta.push((
                "tokenizer.chat_template".into(),
                MetaValue::Str(template.into()),
            ));
        }
    }
    Ok(meta)
}

/// The architecture hyper-parameters under llama.cpp's keys and types.
fn model_metadata<B: Backend>(model: &CausalLm<B>) -> Vec<(String, MetaValue)> {
    let c = &model.config;
    let arch = match c.family {
        Family::Gpt2 => "gpt2",
        Family::Llama | Family::Mistral => "llama",
        Family::Qwen2 => "qwen2",
        Family::Qwen3 => "qwen3",
    };
    let u32_of = |v: usize| MetaValue::U32(v as u32);
    let mut meta = vec![
        (
            "general.architecture".to_string(),
            MetaValue::Str(arch.into()),
        ),
        (
            "general.name".to_string(),
            MetaValue::Str(
                c.raw
                    .get("_name_or_path")
                    .and_then(Value::as_str)
                    .unwrap_or("burnish")
                    .into(),
            ),
        ),
    ];
    let mut set = |key: &str, value: MetaValue| meta.push((format!("{arch}.{key}"), value));
    set("context_length", u32_of(c.max_positions));
    set("embedding_length", u32_of(c.hidden_size));
    set("block_count", u32_of(c.num_layers));
    set("feed_forward_length", u32_of(c.intermediate_size));
    set("attention.head_count", u32_of(c.num_heads));
    set("vocab_size", u32_of(c.vocab_size));
    if c.family == Family::Gpt2 {
        set(
            "attention.layer_norm_epsilon",
            MetaValue::F32(c.norm_eps as f32),
        );
    } else {
        set("attention.head_count_kv", u32_of(c.num_kv_heads));
        set("rope.freq_base", MetaValue::F32(c.rope_theta as f32));
        set("rope.dimension_count", u32_of(c.head_dim));
        set("attention.key_length", u32_of(c.head_dim));
        set("attention.value_length", u32_of(c.head_dim));
        set(
            "attention.layer_norm_rms_epsilon",
            MetaValue::F32(c.norm_eps as f32),
        );
        if let crate::config::RopeScaling::Linear { factor } = c.rope_scaling {
            set("rope.scaling.type", MetaValue::Str("linear".into()));
            set("rope.scaling.factor", MetaValue::F32(factor as f32));
        }
    }
    meta
}

impl<B: Backend> CausalLm<B> {
    /// Writes the model as a GGUF file with `tokenizer` metadata (from
    /// [`tokenizer_metadata_from_gguf`] or [`tokenizer_metadata_from_hf`]); it loads back, in
    /// burnish or llama.cpp, with the same logits (F32) or within F16 rounding (F16).
    pub fn save_gguf(
        &self,
        path: impl AsRef<Path>,
        dtype: GgufDtype,
        tokenizer: Vec<(String, MetaValue)>,
    ) -> Result<()> {
        let path = path.as_ref();
        let fail = |reason: String| ModelError::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        // A value head only serves PPO's training, so the language model goes out without it;
        // a reward model is not a language model llama.cpp could run.
        if self.reward_head.is_some() {
            return Err(fail(
                "GGUF holds language models; this is a reward model (export it as a Hugging Face folder)".into(),
            ));
        }
        if !matches!(
            self.config.rope_scaling,
            crate::config::RopeScaling::Default | crate::config::RopeScaling::Linear { .. }
        ) {
            return Err(fail(
                "Llama 3.1 RoPE scaling is not written to GGUF yet (export a Hugging Face folder)"
                    .into(),
            ));
        }
        let mut model = self.clone();
        let mut tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)> = Vec::new();
        for entry in crate::hf::table(&self.config, "transformer.") {
            let name = gguf_name(&entry.name)
                .ok_or_else(|| fail(format!("no GGUF name for `{}`", entry.name)))?;
            let host = convert_layout(&self.config, &entry.name, model.export_tensor(&entry), true);
            let dims: Vec<usize> = host.shape.iter().rev().copied().collect();
            let (ty, bytes) = if dims.len() == 1 || dtype == GgufDtype::F32 {
                (GgmlType::F32, encode_f32(&host.values))
            } else {
                (GgmlType::F16, encode_f16(&host.values))
            };
            if self.config.family == Family::Gpt2 && name == "token_embd.weight" {
                // llama.cpp's converter writes GPT-2's tied head out as `output.weight` too.
                tensors.push(("output.weight".into(), dims.clone(), ty, bytes.clone()));
            }
            tensors.push((name, dims, ty, bytes));
        }
        let mut meta = model_metadata(self);
        meta.push((
            "general.file_type".into(),
            MetaValue::U32(match dtype {
                GgufDtype::F32 => 0,
                GgufDtype::F16 => 1,
            }),
        ));
        // A tokenizer_config.json without special tokens leaves the ids to the model's
        // config.json; llama.cpp needs at least the EOS id to stop generating.
        for (key, id) in [
            (
                "tokenizer.ggml.bos_token_id",
                config_token(&self.config.raw, "bos_token_id"),
            ),
            ("tokenizer.ggml.eos_token_id", self.config.eos_token_id),
            ("tokenizer.ggml.padding_token_id", self.config.pad_token_id),
        ] {
            if let Some(id) = id
                && !tokenizer.iter().any(|(k, _)| k == key)
                && (id as usize) < self.config.vocab_size
            {
                meta.push((key.into(), MetaValue::U32(id)));
            }
        }
        meta.extend(tokenizer);

        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
        for (key, value) in &meta {
            put_string(&mut out, key);
            out.extend_from_slice(&value.type_id().to_le_bytes());
            put_value(&mut out, value);
        }
        let mut offset = 0usize;
        for (name, dims, ty, bytes) in &tensors {
            put_string(&mut out, name);
            out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
            for &d in dims {
                out.extend_from_slice(&(d as u64).to_le_bytes());
            }
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(offset as u64).to_le_bytes());
            offset = (offset + bytes.len()).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        pad(&mut out);
        for (_, _, _, bytes) in &tensors {
            out.extend_from_slice(bytes);
            pad(&mut out);
        }
        // Written beside and renamed, so a crash never leaves a half-written model.
        let partial = path.with_extension("gguf.partial");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&out)?;
            file.sync_all()?;
            std::fs::rename(&partial, path)
        };
        write().map_err(|cause| ModelError::Io {
            path: path.to_path_buf(),
            cause,
        })
    }
}

/// A token id from a config.json key (an integer, or the first of a list).
fn config_token(raw: &serde_json::Map<String, Value>, key: &str) -> Option<u32> {
    let value = match raw.get(key)? {
        Value::Array(items) => items.first()?.clone(),
        other => other.clone(),
    };
    value.as_u64().and_then(|v| u32::try_from(v).ok())
}

fn pad(out: &mut Vec<u8>) {
    let len = out.len().div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
    out.resize(len, 0);
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &MetaValue) {
    match value {
        MetaValue::U8(v) => out.push(*v),
        MetaValue::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        MetaValue::Bool(v) => out.push(u8::from(*v)),
        MetaValue::Str(s) => put_string(out, s),
        MetaValue::Array(item_ty, items) => {
            out.extend_from_slice(&item_ty.to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
