//! The model configuration, read from a Hugging Face `config.json`.
//!
//! Checkpoints in the wild were written by transformers 4 (top-level `rope_theta`, optional
//! `rope_scaling`) or 5 (`rope_parameters: {rope_theta, rope_type, ...}`); both are read, with
//! RoPE types `default`, `linear` and `llama3` (Llama 3.1-3.3) and a clear error for any other. Only what changes the
//! computation is kept in typed fields; the original JSON is kept too, so an export writes back
//! every key the user's tooling may rely on.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{ModelError, Result};
use crate::precision::Precision;

/// The architecture families burnish implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// GPT-2: learned positions, LayerNorm, fused q/k/v Conv1D, GELU MLP, tied lm_head.
    Gpt2,
    /// Llama: rotate-half RoPE, RMSNorm, grouped-query attention, SwiGLU MLP.
    Llama,
    /// Mistral: Llama's layout (sequences kept within its sliding window, if any).
    Mistral,
    /// Qwen2: Llama with biases on q/k/v.
    Qwen2,
    /// Qwen3: Llama with a per-head RMSNorm on queries and keys (`q_norm`, `k_norm`) before RoPE.
    Qwen3,
}

impl Family {
    /// The `model_type` string transformers uses.
    pub fn model_type(self) -> &'static str {
        match self {
            Family::Gpt2 => "gpt2",
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Qwen3 => "qwen3",
        }
    }

    /// Whether attention normalises each query and key head (Qwen3's `q_norm` / `k_norm`).
    pub fn qk_norm(self) -> bool {
        self == Family::Qwen3
    }
}

/// The MLP's activation function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU with the tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// Exact GELU (erf).
    Gelu,
    /// ReLU.
    Relu,
    /// SiLU, used gated (SwiGLU).
    Silu,
}

/// The hyper-parameters that determine a causal LM's computation.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Architecture family.
    pub family: Family,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Number of query heads.
    pub num_heads: usize,
    /// Number of key/value heads (grouped-query attention when below `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Width of the MLP's hidden layer.
    pub intermediate_size: usize,
    /// Longest sequence (learned position table size for GPT-2).
    pub max_positions: usize,
    /// Epsilon of the normalisation layers.
    pub norm_eps: f64,
    /// RoPE base (ignored by GPT-2).
    pub rope_theta: f64,
    /// How RoPE's frequencies are rescaled for long contexts (`rope_type`).
    pub rope_scaling: RopeScaling,
    /// Whether the output projection shares the token embedding.
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections.
    pub qkv_bias: bool,
    /// Bias on the attention output projection.
    pub o_bias: bool,
    /// Bias on the MLP projections.
    pub mlp_bias: bool,
    /// MLP activation.
    pub activation: Activation,
    /// End-of-sequence token, where the config names one.
    pub eos_token_id: Option<u32>,
    /// Padding token, where the config names one.
    pub pad_token_id: Option<u32>,
    /// Whether the model carries a scalar reward head (`score`).
    pub reward_head: bool,
    /// Whether the model carries a per-token value head (`v_head`).
    pub value_head: bool,
    /// The JSON the config was read from, written back on export.
    pub raw: Map<String, Value>,
    /// The precision of the matrix products: a run setting, never read from or written to
    /// `config.json` (fp32 until the run says otherwise).
    pub precision: Precision,
}

struct Reader<'a> {
    path: &'a Path,
    map: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ModelError {
        ModelError::Config {
            path: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(|x| Some(x as usize)).ok_or_else(|| {
                self.err(key, format!("expected a non-negative integer, found {v}"))
            }),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?.ok_or_else(|| self.err(key, "missing"))
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a number, found {v}"))),
        }
    }

    fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected true or false, found {v}"))),
        }
    }

    fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(key, format!("expected a string, found {v}"))),
        }
    }

    /// A token id: an integer, or a list whose first element is used (Llama 3 lists several EOS).
    fn opt_token(&self, key: &str) -> Result<Option<u32>> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Array(items)) => {
                Ok(items.first().and_then(Value::as_u64).map(|x| x as u32))
            }
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as u32))
                .ok_or_else(|| self.err(key, format!("expected a token id, found {v}"))),
        }
    }
}

impl ModelConfig {
    /// Reads `config.json` from a file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|cause| ModelError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        let value: Value = serde_json::from_str(&text).map_err(|cause| ModelError::Json {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_json(value, path)
    }

    /// The config of a model folder (`config.json`) or of a GGUF file (its metadata).
    pub fn from_model_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if crate::gguf::is_gguf(path) {
            return Self::from_gguf(&crate::gguf::GgufFile::open(path)?);
        }
        Self::from_file(path.join("config.json"))
    }

    /// The config a GGUF file's metadata describes, as transformers' `config.json` for it.
    pub fn from_gguf(file: &crate::gguf::GgufFile) -> Result<Self> {
        crate::gguf::config_from_gguf(file)
    }

    /// Parses a config already read as JSON; `path` only names the source in errors.
    pub fn from_json(value: Value, path: &Path) -> Result<Self> {
        let Value::Object(map) = value else {
            return Err(ModelError::Config {
                path: path.to_path_buf(),
                key: "(root)".into(),
                reason: "expected a JSON object".into(),
            });
        };
        let r = Reader { path, map: &map };
        let model_type = r
            .opt_str("model_type")?
            .ok_or_else(|| r.err("model_type", "missing"))?;
        let family = match model_type {
            "gpt2" => Family::Gpt2,
            "llama" => Family::Llama,
            "mistral" => Family::Mistral,
            "qwen2" => Family::Qwen2,
            "qwen3" => Family::Qwen3,
            other => {
                return Err(ModelError::UnsupportedModelType {
                    path: path.to_path_buf(),
                    found: other.to_string(),
                });
            }
        };
        let burnish = map.get("burnish").and_then(Value::as_object);
        let head_flag = |key: &str| {
            burnish
                .and_then(|b| b.get(key))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        };
        let reward_head = head_flag("reward_head");
        let value_head = head_flag("value_head");
        let eos_token_id = r.opt_token("eos_token_id")?;
        let pad_token_id = r.opt_token("pad_token_id")?;

        let config = match family {
            Family::Gpt2 => {
                for key in ["scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"] {
                    if r.opt_bool(key)? == Some(true) {
                        return Err(r.err(key, "true is not supported"));
                    }
                }
                if r.opt_bool("scale_attn_weights")? == Some(false) {
                    return Err(r.err("scale_attn_weights", "false is not supported"));
                }
                let hidden_size = r.usize("n_embd")?;
                let num_heads = r.usize("n_head")?;
                let activation = match r.opt_str("activation_function")?.unwrap_or("gelu_new") {
                    "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
                    "gelu" => Activation::Gelu,
                    "relu" => Activation::Relu,
                    other => {
                        return Err(
                            r.err("activation_function", format!("{other:?} is not supported"))
                        );
                    }
                };
                ModelConfig {
                    family,
                    vocab_size: r.usize("vocab_size")?,
                    hidden_size,
                    num_layers: r.usize("n_layer")?,
                    num_heads,
                    num_kv_heads: num_heads,
                    head_dim: divide(&r, "n_head", hidden_size, num_heads)?,
                    intermediate_size: r.opt_usize("n_inner")?.unwrap_or(4 * hidden_size),
                    max_positions: r.usize("n_positions")?,
                    norm_eps: r.opt_f64("layer_norm_epsilon")?.unwrap_or(1e-5),
                    rope_theta: 0.0,
                    rope_scaling: RopeScaling::Default,
                    tie_word_embeddings: r.opt_bool("tie_word_embeddings")?.unwrap_or(true),
                    qkv_bias: true,
                    o_bias: true,
                    mlp_bias: true,
                    activation,
                    eos_token_id,
                    pad_token_id,
                    reward_head,
                    value_head,
                    raw: map.clone(),
                    precision: Precision::Fp32,
                }
            }
            Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => {
                let hidden_size = r.usize("hidden_size")?;
                let num_heads = r.usize("num_attention_heads")?;
                let num_kv_heads = r.opt_usize("num_key_value_heads")?.unwrap_or(num_heads);
                if num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
                    return Err(r.err(
                        "num_key_value_heads",
                        format!("{num_kv_heads} does not divide num_attention_heads = {num_heads}"),
                    ));
                }
                let head_dim = match r.opt_usize("head_dim")? {
                    Some(d) => d,
                    None => divide(&r, "num_attention_heads", hidden_size, num_heads)?,
                };
                if !head_dim.is_multiple_of(2) {
                    return Err(r.err("head_dim", "RoPE needs an even head_dim"));
                }
                match r.opt_str("hidden_act")?.unwrap_or("silu") {
                    "silu" | "swish" => {}
                    other => return Err(r.err("hidden_act", format!("{other:?} is not supported"))),
                }
                let (rope_theta, rope_scaling) = rope_parameters(&r, family)?;
                // Mistral's sliding window changes attention only past `sliding_window` tokens:
                // keeping sequences within it makes the full attention here exact.
                let max_positions = r.opt_usize("max_position_embeddings")?.unwrap_or(2048);
                let max_positions = match r.opt_usize("sliding_window")? {
                    Some(window) if family == Family::Mistral && window > 0 => {
                        max_positions.min(window)
                    }
                    _ => max_positions,
                };
                let attention_bias = r.opt_bool("attention_bias")?.unwrap_or(false);
                let qkv_bias = family == Family::Qwen2 || attention_bias;
                ModelConfig {
                    family,
                    vocab_size: r.usize("vocab_size")?,
                    hidden_size,
                    num_layers: r.usize("num_hidden_layers")?,
                    num_heads,
                    num_kv_heads,
                    head_dim,
                    intermediate_size: r.usize("intermediate_size")?,
                    max_positions,
                    norm_eps: r.opt_f64("rms_norm_eps")?.unwrap_or(1e-6),
                    rope_theta,
                    rope_scaling,
                    tie_word_embeddings: r.opt_bool("tie_word_embeddings")?.unwrap_or(false),
                    qkv_bias,
                    o_bias: family != Family::Qwen2 && attention_bias,
                    mlp_bias: r.opt_bool("mlp_bias")?.unwrap_or(false),
                    activation: Activation::Silu,
                    eos_token_id,
                    pad_token_id,
                    reward_head,
                    value_head,
                    raw: map.clone(),
                    precision: Precision::Fp32,
                }
            }
        };
        Ok(config)
    }

    /// A small GPT-2 configuration for training from scratch (the quickstart's model).
    pub fn gpt2(
        vocab_size: usize,
        hidden_size: usize,
        num_layers: usize,
        num_heads: usize,
        max_positions: usize,
    ) -> Self {
        let mut raw = Map::new();
        raw.insert("model_type".into(), "gpt2".into());
        raw.insert(
            "architectures".into(),
            vec![Value::from("GPT2LMHeadModel")].into(),
        );
        raw.insert("vocab_size".into(), vocab_size.into());
        raw.insert("n_embd".into(), hidden_size.into());
        raw.insert("n_layer".into(), num_layers.into());
        raw.insert("n_head".into(), num_heads.into());
        raw.insert("n_positions".into(), max_positions.into());
        raw.insert("n_inner".into(), Value::Null);
        raw.insert("activation_function".into(), "gelu_new".into());
        raw.insert("layer_norm_epsilon".into(), 1e-5.into());
        raw.insert("tie_word_embeddings".into(), true.into());
        Self::from_json(Value::Object(raw), Path::new("(built-in gpt2 config)"))
            .expect("the built-in GPT-2 config is valid")
    }

    /// The config as JSON, with the `burnish` key recording which heads the model carries.
    pub fn to_json(&self) -> Value {
        let mut raw = self.raw.clone();
        raw.insert("model_type".into(), self.family.model_type().into());
        if self.reward_head || self.value_head {
            let mut burnish = Map::new();
            burnish.insert("reward_head".into(), self.reward_head.into());
            burnish.insert("value_head".into(), self.value_head.into());
            raw.insert("burnish".into(), Value::Object(burnish));
        } else {
            raw.remove("burnish");
        }
        Value::Object(raw)
    }

    /// Writes the config as pretty JSON.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path: PathBuf = path.as_ref().to_path_buf();
        let text = serde_json::to_string_pretty(&self.to_json()).expect("a JSON value serialises");
        std::fs::write(&path, text).map_err(|cause| ModelError::Io { path, cause })
    }
}

fn divide(r: &Reader<'_>, key: &str, hidden: usize, heads: usize) -> Result<usize> {
    if heads == 0 || !hidden.is_multiple_of(heads) {
        return Err(r.err(
            key,
            format!("{heads} heads do not divide the hidden size {hidden}"),
        ));
    }
    Ok(hidden / heads)
}

/// RoPE's base and scaling, from transformers 5's `rope_parameters` or transformers 4's
/// top-level `rope_theta` with `rope_scaling`.
fn rope_parameters(r: &Reader<'_>, family: Family) -> Result<(f64, RopeScaling)> {
    let params = r.map.get("rope_parameters").and_then(Value::as_object);
    let scaling = r.map.get("rope_scaling").and_then(Value::as_object);
    let key = if params.is_some() {
        "rope_parameters"
    } else {
        "rope_scaling"
    };
    let mut rope_scaling = RopeScaling::Default;
    if let Some(table) = params.or(scaling) {
        let kind = table
            .get("rope_type")
            .or_else(|| table.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        let number = |name: &str| {
            table
                .get(name)
                .and_then(Value::as_f64)
                .ok_or_else(|| r.err(key, format!("rope_type {kind:?} needs a number `{name}`")))
        };
        rope_scaling = match kind {
            "default" => RopeScaling::Default,
            "linear" => RopeScaling::Linear {
                factor: number("factor")?,
            },
            "llama3" => RopeScaling::Llama3 {
                factor: number("factor")?,
                low_freq_factor: number("low_freq_factor")?,
                high_freq_factor: number("high_freq_factor")?,
                original_max_positions: number("original_max_position_embeddings")?,
            },
            other => {
                return Err(r.err(
                    key,
                    format!(
                        "rope_type {other:?} is not supported (supported: \"default\", \"linear\", \"llama3\")"
                    ),
                ));
            }
        };
    }
    let theta = params
        .and_then(|p| p.get("rope_theta"))
        .and_then(Value::as_f64)
        .or(r.opt_f64("rope_theta")?);
    let theta = theta.unwrap_or(match family {
        Family::Qwen2 | Family::Qwen3 => 1_000_000.0,
        _ => 10_000.0,
    });
    Ok((theta, rope_scaling))
}

/// How RoPE's inverse frequencies are rescaled (transformers' `rope_type`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// `inv_freq_i = theta^(-2i/d)`.
    Default,
    /// Every frequency divided by `factor` (position interpolation).
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Llama 3.1's scaling: long wavelengths divided by `factor`, short ones kept, a smooth
    /// blend between `original_max_positions / low_freq_factor` and `/ high_freq_factor`.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Wavelengths above `original_max_positions / low_freq_factor` are fully scaled.
        low_freq_factor: f64,
        /// Wavelengths below `original_max_positions / high_freq_factor` are kept.
        high_freq_factor: f64,
        /// The context length the model was pre-trained with.
        original_max_positions: f64,
    },
}

impl RopeScaling {
    /// The inverse frequencies of a head of width `head_dim` with base `theta`, each rounded to
    /// f32 (transformers computes them in float32).
    pub fn inv_freq(&self, theta: f64, head_dim: usize) -> Vec<f32> {
        let base = (0..head_dim / 2).map(|i| {
            let f = (1.0 / theta.powf((2 * i) as f64 / head_dim as f64)) as f32;
            f64::from(f)
        });
        base.map(|f| match *self {
            RopeScaling::Default => f as f32,
            RopeScaling::Linear { factor } => (f / factor) as f32,
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_positions,
            } => {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                let low_freq_wavelen = original_max_positions / low_freq_factor;
                let high_freq_wavelen = original_max_positions / high_freq_factor;
                if wavelen > low_freq_wavelen {
                    (f / factor) as f32
                } else if wavelen < high_freq_wavelen {
                    f as f32
                } else {
                    let smooth = (original_max_positions / wavelen - low_freq_factor)
                        / (high_freq_factor - low_freq_factor);
                    ((1.0 - smooth) * f / factor + smooth * f) as f32
                }
            }
        })
        .collect()
    }
}
