//! The building blocks every family shares: normalisation, MLP, rotary positions and
//! self-attention with grouped-query heads and a KV cache.
//!
//! The families differ only in which variant of each block they use (see `gpt2.rs` and
//! `llama.rs` for the checkpoint names that fill them).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::activation::{gelu, relu, silu};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::config::Activation;
use crate::lora::{self, AttentionLora, MlpLora};
use crate::ops::{
    ModelBackend, NormKind, gelu_tanh, linear, masked_softmax, matmul, norm, rope, swiglu,
};
use crate::precision::Precision;

/// LayerNorm (GPT-2) or RMSNorm (Llama, Qwen2), computed in the tensor's float type.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    /// Scale, `[d_model]`.
    pub weight: Param<Tensor<B, 1>>,
    /// Shift, `[d_model]`; present for LayerNorm only.
    pub bias: Option<Param<Tensor<B, 1>>>,
    /// Numerical-stability epsilon.
    pub eps: f64,
    /// RMSNorm when true (no centring, no bias).
    pub rms: bool,
}

impl<B: ModelBackend> Norm<B> {
    /// `[..., d_model] -> [..., d_model]`, through the fused norm op.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let kind = NormKind {
            rms: self.rms,
            eps: self.eps,
        };
        let out = norm(x, self.weight.val(), kind);
        match &self.bias {
            Some(bias) => out + bias.val().unsqueeze::<D>(),
            None => out,
        }
    }
}

/// The feed-forward block: `down(act(up(x)))`, or gated `down(act(gate(x)) * up(x))` (SwiGLU).
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// Gate projection, present for the gated (SwiGLU) form.
    pub gate: Option<Linear<B>>,
    /// Up projection `[d_model -> d_ff]`.
    pub up: Linear<B>,
    /// Down projection `[d_ff -> d_model]`.
    pub down: Linear<B>,
    /// The activation function.
    #[module(skip)]
    pub activation: Activation,
    /// LoRA adapters on the projections, when training with them.
    pub lora: Option<MlpLora<B>>,
}

impl<B: ModelBackend> Mlp<B> {
    /// `[batch, seq, d_model] -> [batch, seq, d_model]`, the projections in `precision`.
    pub fn forward(&self, x: Tensor<B, 3>, precision: Precision) -> Tensor<B, 3> {
        let act = |t: Tensor<B, 3>| match self.activation {
            Activation::GeluTanh => gelu_tanh(t),
            Activation::Gelu => gelu(t),
            Activation::Relu => relu(t),
            Activation::Silu => silu(t),
        };
        let lora = self.lora.as_ref();
        let up = lora::add(
            linear(&self.up, x.clone(), precision),
            lora.and_then(|l| l.up.as_ref()),
            &x,
            precision,
        );
        let hidden = match &self.gate {
            Some(gate) => {
                let gate = lora::add(
                    linear(gate, x.clone(), precision),
                    lora.and_then(|l| l.gate.as_ref()),
                    &x,
                    precision,
                );
                match self.activation {
                    Activation::Silu => swiglu(gate, up),
                    _ => act(gate) * up,
                }
            }
            None => act(up),
        };
        lora::add(
            linear(&self.down, hidden.clone(), precision),
            lora.and_then(|l| l.down.as_ref()),
            &hidden,
            precision,
        )
    }
}

/// Rotary position embedding in the rotate-half layout transformers uses for Llama and Qwen2.
#[derive(Debug, Clone)]
pub struct Rope<B: Backend> {
    /// `cos(position * inv_freq)`, `[batch, seq, head_dim / 2]`.
    cos: Tensor<B, 3>,
    /// The matching sines.
    sin: Tensor<B, 3>,
}

impl<B: ModelBackend> Rope<B> {
    /// Angles for integer positions `[batch, seq]` and the head's inverse frequencies
    /// (`ModelConfig::rope_scaling.inv_freq`, `head_dim / 2` of them).
    pub fn new(positions: Tensor<B, 2, Int>, inv_freq: Vec<f32>) -> Self {
        let device = positions.device();
        let half = inv_freq.len();
        let inv_freq = Tensor::<B, 1>::from_data(TensorData::new(inv_freq, [half]), &device)
            .reshape([1, 1, half]);
        let freqs = positions.float().unsqueeze_dim::<3>(2) * inv_freq;
        Self {
            cos: freqs.clone().cos(),
            sin: freqs.sin(),
        }
    }

    /// Rotates queries or keys and splits their heads, times `scale`: `[batch, seq, heads,
    /// head_dim]` in, `[batch, heads, seq, head_dim]` out (the fused op, [`crate::ops::rope`]).
    pub fn apply(&self, x: Tensor<B, 4>, scale: f32) -> Tensor<B, 4> {
        rope(x, self.cos.clone(), self.sin.clone(), scale)
    }
}

/// Cached keys and values of one layer, `[batch, kv_heads, seq, head_dim]` each.
#[derive(Debug, Clone)]
pub struct LayerCache<B: Backend> {
    keys: Tensor<B, 4>,
    values: Tensor<B, 4>,
}

/// Multi-head self-attention with grouped-query heads, optional RoPE and an optional KV cache.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    /// Query projection `[d_model -> heads * head_dim]`.
    pub q: Linear<B>,
    /// Key projection `[d_model -> kv_heads * head_dim]`.
    pub k: Linear<B>,
    /// Value projection `[d_model -> kv_heads * head_dim]`.
    pub v: Linear<B>,
    /// Output projection `[heads * head_dim -> d_model]`.
    pub o: Linear<B>,
    /// RMSNorm over each query head's `head_dim` before RoPE (Qwen3).
    pub q_norm: Option<Norm<B>>,
    /// RMSNorm over each key head's `head_dim` before RoPE (Qwen3).
    pub k_norm: Option<Norm<B>>,
    /// LoRA adapters on the projections, when training with them.
    pub lora: Option<AttentionLora<B>>,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads; each serves `num_heads / num_kv_heads` query heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl<B: ModelBackend> SelfAttention<B> {
    /// `[batch, seq, d_model] -> [batch, seq, d_model]`.
    ///
    /// `allowed` is `[batch, 1, seq, keys]`: which keys each query may attend to (causal and
    /// not padding). With a cache, the new keys/values are appended to it and `keys` counts the
    /// cached ones too. The matrix products (projections and attention) run in `precision`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: Option<&Rope<B>>,
        allowed: Tensor<B, 4, Bool>,
        cache: &mut Option<LayerCache<B>>,
        precision: Precision,
    ) -> Tensor<B, 3> {
        let [batch, seq, _] = x.dims();
        let heads = |t: Tensor<B, 3>, heads: usize| t.reshape([batch, seq, heads, self.head_dim]);
        let lora = self.lora.as_ref();
        let mut q = lora::add(
            linear(&self.q, x.clone(), precision),
            lora.and_then(|l| l.q.as_ref()),
            &x,
            precision,
        );
        let mut k = lora::add(
            linear(&self.k, x.clone(), precision),
            lora.and_then(|l| l.k.as_ref()),
            &x,
            precision,
        );
        let mut v = lora::add(
            linear(&self.v, x.clone(), precision),
            lora.and_then(|l| l.v.as_ref()),
            &x,
            precision,
        );
        if let Some(qkv) = lora.and_then(|l| l.qkv.as_ref()) {
            let (q_width, kv_width) = (q.dims()[2], k.dims()[2]);
            let delta = qkv.forward(x, precision);
            q = q + delta.clone().narrow(2, 0, q_width);
            k = k + delta.clone().narrow(2, q_width, kv_width);
            v = v + delta.narrow(2, q_width + kv_width, kv_width);
        }
        // `[batch, seq, heads, head_dim]`: the norms work on the last axis in either layout.
        let mut q = heads(q, self.num_heads);
        let mut k = heads(k, self.num_kv_heads);
        let mut v = heads(v, self.num_kv_heads).swap_dims(1, 2);
        if let Some(q_norm) = &self.q_norm {
            q = q_norm.forward(q);
        }
        if let Some(k_norm) = &self.k_norm {
            k = k_norm.forward(k);
        }
        // The scores' `1/sqrt(head_dim)` is applied to the queries, where it costs the least
        // (with RoPE it rides in the fused op).
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        let (q, mut k) = match rope {
            Some(rope) => (rope.apply(q, scale), rope.apply(k, 1.0)),
            None => (q.swap_dims(1, 2) * scale, k.swap_dims(1, 2)),
        };
        if let Some(past) = cache.take() {
            k = Tensor::cat(vec![past.keys, k], 2);
            v = Tensor::cat(vec![past.values, v], 2);
        }
        *cache = Some(LayerCache {
            keys: k.clone(),
            values: v.clone(),
        });
        // Grouped-query attention without copying the shared key/value heads (transformers'
        // `repeat_kv`): the query heads that share key/value head `j` are heads
        // `j * groups .. (j + 1) * groups`, so `[batch, heads, seq, d]` read as `[batch,
        // kv_heads, groups * seq, d]` puts each group's queries against its one key/value head.
        // The softmax reads query row `g * seq + i` against mask row `i`.
        let groups = self.num_heads / self.num_kv_heads;
        let q = if groups > 1 {
            q.reshape([batch, self.num_kv_heads, groups * seq, self.head_dim])
        } else {
            q
        };
        let scores = matmul(q, k.swap_dims(2, 3), precision);
        let weights = masked_softmax(scores, allowed);
        let out = matmul(weights, v, precision)
            .reshape([batch, self.num_heads, seq, self.head_dim])
            .swap_dims(1, 2)
            .reshape([batch, seq, self.num_heads * self.head_dim]);
        lora::add(
            linear(&self.o, out.clone(), precision),
            lora.and_then(|l| l.o.as_ref()),
            &out,
            precision,
        )
    }
}

/// The per-layer caches of a generation in progress, plus the key padding mask so far.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub(crate) layers: Vec<Option<LayerCache<B>>>,
    /// `[batch, keys]`, 1 for real tokens: positions and padding of everything cached.
    pub(crate) key_mask: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for a model of `num_layers` blocks.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            key_mask: None,
        }
    }

    /// How many positions are cached.
    pub fn len(&self) -> usize {
        self.key_mask.as_ref().map_or(0, |m| m.dims()[1])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Which keys each new query may see, `[batch, 1, seq, past + seq]`: keys that are real tokens
/// (`key_mask` is 1) and not in the future of the query.
pub fn attention_allowed<B: Backend>(
    key_mask: &Tensor<B, 2, Int>,
    seq: usize,
) -> Tensor<B, 4, Bool> {
    let [batch, keys] = key_mask.dims();
    let past = keys - seq;
    let causal: Vec<bool> = (0..seq)
        .flat_map(|i| (0..keys).map(move |j| j <= past + i))
        .collect();
    let device = key_mask.device();
    let causal = Tensor::<B, 2, Bool>::from_data(TensorData::new(causal, [seq, keys]), &device)
        .reshape([1, 1, seq, keys])
        .expand([batch, 1, seq, keys]);
    let real = key_mask
        .clone()
        .equal_elem(1)
        .reshape([batch, 1, 1, keys])
        .expand([batch, 1, seq, keys]);
    causal.bool_and(real)
}

/// Positions of the last `seq` tokens from the full mask: `cumsum(mask) - 1`, clamped at 0, so a
/// left-padded row numbers its first real token 0 exactly as it would unpadded.
pub fn positions_from_mask<B: Backend>(
    key_mask: &Tensor<B, 2, Int>,
    seq: usize,
) -> Tensor<B, 2, Int> {
    let [_, keys] = key_mask.dims();
    key_mask
        .clone()
        .cumsum(1)
        .sub_scalar(1)
        .clamp_min(0)
        .narrow(1, keys - seq, seq)
}
