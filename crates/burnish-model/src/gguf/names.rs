//! llama.cpp's view of a model mapped onto transformers': the config from the GGUF metadata,
//! tensor names both ways, and the two layout differences its converter introduces.
//!
//! - `convert_hf_to_gguf.py` permutes the rows of Llama's `attn_q` / `attn_k` (weights and
//!   biases) from transformers' rotate-half RoPE layout to ggml's interleaved one; reading undoes
//!   it and writing redoes it. Qwen2 and Qwen3 use the rotate-half layout in ggml too.
//! - GPT-2's Conv1D weights (`[in, out]` in transformers) are stored transposed, `[out, in]`, like
//!   every other projection.

use serde_json::{Map, Value};

use super::{GgufFile, MetaValue};
use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::hf::TensorSource;
use crate::safetensors_io::HostTensor;

/// The `general.architecture` values burnish loads.
pub(crate) const ARCHITECTURES: [&str; 4] = ["llama", "qwen2", "qwen3", "gpt2"];

/// Per-layer names: (transformers' suffix after `model.layers.N.` or `transformer.h.N.`,
/// llama.cpp's suffix after `blk.N.`).
const LAYER_NAMES: &[(&str, &str)] = &[
    ("input_layernorm.weight", "attn_norm.weight"),
    ("self_attn.q_proj.weight", "attn_q.weight"),
    ("self_attn.q_proj.bias", "attn_q.bias"),
    ("self_attn.k_proj.weight", "attn_k.weight"),
    ("self_attn.k_proj.bias", "attn_k.bias"),
    ("self_attn.v_proj.weight", "attn_v.weight"),
    ("self_attn.v_proj.bias", "attn_v.bias"),
    ("self_attn.o_proj.weight", "attn_output.weight"),
    ("self_attn.o_proj.bias", "attn_output.bias"),
    ("self_attn.q_norm.weight", "attn_q_norm.weight"),
    ("self_attn.k_norm.weight", "attn_k_norm.weight"),
    ("post_attention_layernorm.weight", "ffn_norm.weight"),
    ("mlp.gate_proj.weight", "ffn_gate.weight"),
    ("mlp.up_proj.weight", "ffn_up.weight"),
    ("mlp.down_proj.weight", "ffn_down.weight"),
    ("ln_1.weight", "attn_norm.weight"),
    ("ln_1.bias", "attn_norm.bias"),
    ("attn.c_attn.weight", "attn_qkv.weight"),
    ("attn.c_attn.bias", "attn_qkv.bias"),
    ("attn.c_proj.weight", "attn_output.weight"),
    ("attn.c_proj.bias", "attn_output.bias"),
    ("ln_2.weight", "ffn_norm.weight"),
    ("ln_2.bias", "ffn_norm.bias"),
    ("mlp.c_fc.weight", "ffn_up.weight"),
    ("mlp.c_fc.bias", "ffn_up.bias"),
    ("mlp.c_proj.weight", "ffn_down.weight"),
    ("mlp.c_proj.bias", "ffn_down.bias"),
    ("mlp.gate_proj.bias", "ffn_gate.bias"),
    ("mlp.up_proj.bias", "ffn_up.bias"),
    ("mlp.down_proj.bias", "ffn_down.bias"),
];

/// Whole-model names: (transformers, llama.cpp).
const GLOBAL_NAMES: [(&str, &str); 7] = [
    ("model.embed_tokens.weight", "token_embd.weight"),
    ("model.norm.weight", "output_norm.weight"),
    ("lm_head.weight", "output.weight"),
    ("transformer.wte.weight", "token_embd.weight"),
    ("transformer.wpe.weight", "position_embd.weight"),
    ("transformer.ln_f.weight", "output_norm.weight"),
    ("transformer.ln_f.bias", "output_norm.bias"),
];

/// llama.cpp's name for a transformers tensor name, if it has one.
pub(crate) fn gguf_name(hf: &str) -> Option<String> {
    if let Some((_, g)) = GLOBAL_NAMES.iter().find(|(h, _)| *h == hf) {
        return Some((*g).to_string());
    }
    let rest = hf
        .strip_prefix("model.layers.")
        .or_else(|| hf.strip_prefix("transformer.h."))?;
    let (layer, suffix) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = LAYER_NAMES.iter().find(|(h, _)| *h == suffix)?.1;
    Some(format!("blk.{layer}.{g}"))
}

/// Whether llama.cpp stores this tensor with its Q/K rows interleaved (Llama only).
fn permuted_heads(config: &ModelConfig, hf: &str) -> Option<usize> {
    if config.family != Family::Llama && config.family != Family::Mistral {
        return None;
    }
    if hf.contains("self_attn.q_proj.") {
        Some(config.num_heads)
    } else if hf.contains("self_attn.k_proj.") {
        Some(config.num_kv_heads)
    } else {
        None
    }
}

/// GPT-2's Conv1D weights, stored `[in, out]` by transformers and `[out, in]` by llama.cpp.
fn conv1d(config: &ModelConfig, hf: &str) -> bool {
    config.family == Family::Gpt2
        && hf.ends_with(".weight")
        && (hf.contains("attn.c_attn")
            || hf.contains("attn.c_proj")
            || hf.contains("mlp.c_fc")
            || hf.contains("mlp.c_proj"))
}

/// Moves rows `(head, half, j)` of a `[heads * head_dim, cols]` matrix between transformers'
/// rotate-half order and ggml's interleaved order (`interleave` = towards ggml).
pub(crate) fn permute_rows(
    values: &[f32],
    heads: usize,
    cols: usize,
    interleave: bool,
) -> Vec<f32> {
    let rows = values.len() / cols.max(1);
    let head_dim = rows / heads.max(1);
    let half = head_dim / 2;
    let mut out = vec![0.0; values.len()];
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let rotate_half = h * head_dim + s * half + j;
                let interleaved = h * head_dim + 2 * j + s;
                let (from, to) = if interleave {
                    (rotate_half, interleaved)
                } else {
                    (interleaved, rotate_half)
                };
                out[to * cols..(to + 1) * cols]
                    .copy_from_slice(&values[from * cols..(from + 1) * cols]);
            }
        }
    }
    out
}

/// A transformers-layout tensor from its llama.cpp-layout counterpart, or the reverse.
pub(crate) fn convert_layout(
    config: &ModelConfig,
    hf: &str,
    mut host: HostTensor,
    to_gguf: bool,
) -> HostTensor {
    if let Some(heads) = permuted_heads(config, hf) {
        let cols = if host.shape.len() == 2 {
            host.shape[1]
        } else {
            1
        };
        host.values = permute_rows(&host.values, heads, cols, to_gguf);
    }
    if conv1d(config, hf) && host.shape.len() == 2 {
        host = host.transposed();
    }
    host
}

/// A GGUF file seen as a transformers checkpoint.
pub(crate) struct GgufSource<'a> {
    /// The file.
    pub file: &'a GgufFile,
    /// The config read from its metadata.
    pub config: &'a ModelConfig,
}

impl TensorSource for GgufSource<'_> {
    fn read(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let gguf = gguf_name(name)
            .ok_or_else(|| self.file.error(format!("no GGUF name for tensor `{name}`")))?;
        let host = self.file.read_f32(&gguf)?;
        let host = convert_layout(self.config, name, host, false);
        if host.shape != expected {
            return Err(ModelError::Shape {
                file: self.file.path().to_path_buf(),
                name: format!("{gguf}` (`{name}"),
                found: host.shape,
                expected: expected.to_vec(),
            });
        }
        Ok(host)
    }
}

/// The model config a GGUF file's metadata describes, as the `config.json` transformers would
/// write for it (so an export to a Hugging Face folder carries a real config).
pub(crate) fn config_from_gguf(file: &GgufFile) -> Result<ModelConfig> {
    let arch = file.architecture()?.to_string();
    if !ARCHITECTURES.contains(&arch.as_str()) {
        return Err(file.error(format!(
            "architecture {arch:?} is not supported (burnish loads {})",
            ARCHITECTURES.join(", ")
        )));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let uint = |k: &str| -> Result<Option<u64>> {
        match file.meta(&key(k)) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                file.error(format!("metadata `{}` is {v:?}, not an integer", key(k)))
            }),
        }
    };
    let need = |k: &str| -> Result<u64> {
        uint(k)?.ok_or_else(|| file.error(format!("missing metadata `{}`", key(k))))
    };
    let float = |k: &str| file.meta(&key(k)).and_then(MetaValue::as_f64);
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(file.error(
            "RoPE frequency factors (`rope_freqs.weight`, Llama 3.1-3.3) are not supported in GGUF files yet; load the Hugging Face folder, whose `rope_scaling` burnish reads",
        ));
    }
    let token_embd = file
        .tensor("token_embd.weight")
        .ok_or_else(|| file.error("missing tensor `token_embd.weight`"))?;
    let vocab_size = match uint("vocab_size")? {
        Some(v) => v,
        None => token_embd.dims.get(1).copied().unwrap_or(0) as u64,
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let mut raw = Map::new();
    let mut set = |k: &str, v: Value| {
        raw.insert(k.to_string(), v);
    };
    let token_id = |k: &str| {
        file.meta(&format!("tokenizer.ggml.{k}"))
            .and_then(MetaValue::as_u64)
    };
    set("vocab_size", vocab_size.into());
    set("bos_token_id", token_id("bos_token_id").into());
    set("eos_token_id", token_id("eos_token_id").into());
    set("pad_token_id", token_id("padding_token_id").into());
    set("torch_dtype", "float32".into());
    // llama.cpp's GPT-2 converter writes the tied head out again as `output.weight`: the
    // model stays tied when that copy equals the embedding.
    let untied = match file.tensor("output.weight") {
        None => false,
        Some(_) if arch == "gpt2" => {
            file.read_f32("output.weight")?.values != file.read_f32("token_embd.weight")?.values
        }
        Some(_) => true,
    };
    set("tie_word_embeddings", (!untied).into());
    if arch == "gpt2" {
        set("model_type", "gpt2".into());
        set("architectures", vec![Value::from("GPT2LMHeadModel")].into());
        set("n_embd", hidden.into());
        set("n_layer", need("block_count")?.into());
        set("n_head", heads.into());
        set("n_positions", need("context_length")?.into());
        set("n_inner", uint("feed_forward_length")?.into());
        set("activation_function", "gelu_new".into());
        if let Some(eps) = float("attention.layer_norm_epsilon") {
            set("layer_norm_epsilon", eps.into());
        }
    } else {
        let (model_type, class) = match arch.as_str() {
            "qwen2" => ("qwen2", "Qwen2ForCausalLM"),
            "qwen3" => ("qwen3", "Qwen3ForCausalLM"),
            _ => ("llama", "LlamaForCausalLM"),
        };
        set("model_type", model_type.into());
        set("architectures", vec![Value::from(class)].into());
        set("hidden_size", hidden.into());
        set("num_hidden_layers", need("block_count")?.into());
        set("num_attention_heads", heads.into());
        set(
            "num_key_value_heads",
            uint("attention.head_count_kv")?.unwrap_or(heads).into(),
        );
        set("intermediate_size", need("feed_forward_length")?.into());
        set(
            "max_position_embeddings",
            uint("context_length")?.unwrap_or(2048).into(),
        );
        if let Some(eps) = float("attention.layer_norm_rms_epsilon") {
            // Stored as f32: rounding back to the decimal transformers writes keeps an exported
            // config.json identical to the original one.
            set("rms_norm_eps", round_f32(eps).into());
        }
        let head_dim = match uint("attention.key_length")? {
            Some(d) => d,
            None if heads > 0 => hidden / heads,
            None => 0,
        };
        set("head_dim", head_dim.into());
        if let Some(rot) = uint("rope.dimension_count")?
            && rot != head_dim
        {
            return Err(file.error(format!(
                "RoPE on {rot} of each head's {head_dim} dimensions (partial rotary) is not supported"
            )));
        }
        let mut rope = Map::new();
        if let Some(theta) = float("rope.freq_base") {
            rope.insert("rope_theta".into(), round_f32(theta).into());
        }
        match file
            .meta(&key("rope.scaling.type"))
            .and_then(MetaValue::as_str)
        {
            None | Some("none") => {
                rope.insert("rope_type".into(), "default".into());
            }
            Some(kind) => {
                rope.insert("rope_type".into(), kind.into());
                if let Some(factor) = float("rope.scaling.factor") {
                    rope.insert("factor".into(), factor.into());
                }
            }
        }
        set("rope_parameters", Value::Object(rope));
        set("hidden_act", "silu".into());
        if arch == "llama" {
            set(
                "attention_bias",
                file.tensor("blk.0.attn_q.bias").is_some().into(),
            );
        }
    }
    ModelConfig::from_json(Value::Object(raw), file.path()).map_err(|e| match e {
        ModelError::Config { key, reason, .. } => {
            file.error(format!("metadata for config key `{key}`: {reason}"))
        }
        other => other,
    })
}

/// The shortest decimal that rounds to the same f32: GGUF stores these hyper-parameters as f32.
fn round_f32(x: f64) -> f64 {
    let short = format!("{}", x as f32);
    short.parse().unwrap_or(x)
}
