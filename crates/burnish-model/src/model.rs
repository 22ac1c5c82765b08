//! `CausalLm<B>`: the decoder-only language model every trainer and scorer uses.
//!
//! One struct serves the three families: GPT-2 is a pre-LayerNorm block with learned positions
//! and a GELU MLP, Llama and Qwen2 are pre-RMSNorm blocks with RoPE and a SwiGLU MLP. Positions
//! always come from the attention mask (`cumsum(mask) - 1`), so a left- or right-padded row
//! scores exactly as it would alone.

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Distribution, Int, Tensor, TensorData};

use crate::config::{Activation, Family, ModelConfig};
use crate::layers::{
    KvCache, Mlp, Norm, Rope, SelfAttention, attention_allowed, positions_from_mask,
};
use crate::ops::{self, ModelBackend, logprob_head};
use crate::precision::Precision;

/// Standard deviation of freshly initialised weights (GPT-2's `initializer_range`).
const INIT_STD: f64 = 0.02;

/// One pre-norm transformer block: `x + attn(norm(x))`, then `x + mlp(norm(x))`.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention (`ln_1` / `input_layernorm`).
    pub attn_norm: Norm<B>,
    /// Self-attention.
    pub attn: SelfAttention<B>,
    /// Norm before the MLP (`ln_2` / `post_attention_layernorm`).
    pub mlp_norm: Norm<B>,
    /// Feed-forward block.
    pub mlp: Mlp<B>,
}

/// A causal language model with optional reward and value heads.
#[derive(Module, Debug)]
pub struct CausalLm<B: Backend> {
    /// Token embedding `[vocab, d_model]`.
    pub embed: Embedding<B>,
    /// Learned position embedding `[max_positions, d_model]` (GPT-2 only).
    pub pos_embed: Option<Embedding<B>>,
    /// The transformer blocks.
    pub blocks: Vec<Block<B>>,
    /// Final norm (`ln_f` / `norm`).
    pub final_norm: Norm<B>,
    /// Output projection `[d_model -> vocab]`; `None` when tied to the embedding.
    pub lm_head: Option<Linear<B>>,
    /// Scalar reward head `[d_model -> 1]` read at the last real token.
    pub reward_head: Option<Linear<B>>,
    /// Per-token value head `[d_model -> 1]` (PPO's critic).
    pub value_head: Option<Linear<B>>,
    /// The configuration the model was built from.
    #[module(skip)]
    pub config: ModelConfig,
}

/// Summed completion log-probs and completion token counts, one entry per sequence.
#[derive(Debug, Clone)]
pub struct CompletionLogps<B: Backend> {
    /// `[batch]`: sum over completion tokens of `log p(token | prefix)`.
    pub logps: Tensor<B, 1>,
    /// `[batch]`: number of completion tokens scored.
    pub tokens: Tensor<B, 1>,
}

fn normal<B: Backend, const D: usize>(
    shape: [usize; D],
    std: f64,
    device: &B::Device,
) -> Param<Tensor<B, D>> {
    Param::from_tensor(Tensor::random(
        shape,
        Distribution::Normal(0.0, std),
        device,
    ))
}

fn linear<B: Backend>(
    d_in: usize,
    d_out: usize,
    bias: bool,
    std: f64,
    device: &B::Device,
) -> Linear<B> {
    Linear {
        weight: normal([d_in, d_out], std, device),
        bias: bias.then(|| Param::from_tensor(Tensor::zeros([d_out], device))),
    }
}

fn norm<B: Backend>(config: &ModelConfig, width: usize, device: &B::Device) -> Norm<B> {
    let rms = config.family != Family::Gpt2;
    Norm {
        weight: Param::from_tensor(Tensor::ones([width], device)),
        bias: (!rms).then(|| Param::from_tensor(Tensor::zeros([width], device))),
        eps: config.norm_eps,
        rms,
    }
}

impl<B: Backend> CausalLm<B> {
    /// Checks token ids before they reach the embedding: each must be below the vocabulary
    /// size, so a wrong tokenizer or a corrupt cache is one error instead of an out-of-bounds
    /// panic inside a kernel.
    pub fn check_ids(&self, ids: impl IntoIterator<Item = u32>) -> crate::Result<()> {
        let vocab = self.config.vocab_size;
        match ids.into_iter().find(|&id| id as usize >= vocab) {
            Some(id) => Err(crate::ModelError::InvalidArgument(format!(
                "token id {id} is outside the model's vocabulary of {vocab}: the tokenizer does not belong to this model"
            ))),
            None => Ok(()),
        }
    }

    /// Checks that a sequence of `len` tokens fits the model's positions.
    pub fn check_length(&self, len: usize) -> crate::Result<()> {
        let limit = self.config.max_positions;
        if len > limit {
            return Err(crate::ModelError::InvalidArgument(format!(
                "{len} tokens exceed the model's {limit} positions (training truncates to them; shorten the text)"
            )));
        }
        Ok(())
    }

    /// A freshly initialised model (normal(0, 0.02) weights, residual projections scaled by
    /// `1/sqrt(2 * layers)` as in GPT-2), for training from scratch or as a loading template.
    pub fn init(config: &ModelConfig, device: &B::Device) -> Self {
        let c = config;
        let d = c.hidden_size;
        let residual_std = INIT_STD / (2.0 * c.num_layers.max(1) as f64).sqrt();
        let blocks = (0..c.num_layers)
            .map(|_| Block {
                attn_norm: norm(c, d, device),
                attn: SelfAttention {
                    q: linear(d, c.num_heads * c.head_dim, c.qkv_bias, INIT_STD, device),
                    k: linear(d, c.num_kv_heads * c.head_dim, c.qkv_bias, INIT_STD, device),
                    v: linear(d, c.num_kv_heads * c.head_dim, c.qkv_bias, INIT_STD, device),
                    o: linear(c.num_heads * c.head_dim, d, c.o_bias, residual_std, device),
                    q_norm: c.family.qk_norm().then(|| norm(c, c.head_dim, device)),
                    k_norm: c.family.qk_norm().then(|| norm(c, c.head_dim, device)),
                    lora: None,
                    num_heads: c.num_heads,
                    num_kv_heads: c.num_kv_heads,
                    head_dim: c.head_dim,
                },
                mlp_norm: norm(c, d, device),
                mlp: Mlp {
                    gate: (c.activation == Activation::Silu)
                        .then(|| linear(d, c.intermediate_size, c.mlp_bias, INIT_STD, device)),
                    up: linear(d, c.intermediate_size, c.mlp_bias, INIT_STD, device),
                    down: linear(c.intermediate_size, d, c.mlp_bias, residual_std, device),
                    activation: c.activation,
                    lora: None,
                },
            })
            .collect();
        Self {
            embed: Embedding {
                weight: normal([c.vocab_size, d], INIT_STD, device),
            },
            pos_embed: (c.family == Family::Gpt2).then(|| Embedding {
                weight: normal([c.max_positions, d], INIT_STD / 2.0, device),
            }),
            blocks,
            final_norm: norm(c, d, device),
            lm_head: (!c.tie_word_embeddings)
                .then(|| linear(d, c.vocab_size, false, INIT_STD, device)),
            reward_head: c
                .reward_head
                .then(|| linear(d, 1, false, 1.0 / (d as f64 + 1.0).sqrt(), device)),
            value_head: c.value_head.then(|| linear(d, 1, true, INIT_STD, device)),
            config: config.clone(),
        }
    }

    /// Adds a freshly initialised scalar reward head (e.g. to train a reward model from an SFT
    /// model); the LM weights are kept.
    pub fn with_reward_head(mut self, device: &B::Device) -> Self {
        let d = self.config.hidden_size;
        self.reward_head = Some(linear(d, 1, false, 1.0 / (d as f64 + 1.0).sqrt(), device));
        self.config.reward_head = true;
        self
    }

    /// Adds a freshly initialised per-token value head.
    pub fn with_value_head(mut self, device: &B::Device) -> Self {
        self.value_head = Some(linear(self.config.hidden_size, 1, true, INIT_STD, device));
        self.config.value_head = true;
        self
    }

    /// Number of blocks.
    pub fn num_layers(&self) -> usize {
        self.blocks.len()
    }

    /// The model computing its matrix products in `precision` (see [`Precision`]).
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.config.precision = precision;
        self
    }
}

impl<B: ModelBackend> CausalLm<B> {
    /// The final hidden states after the last norm: `[batch, seq] ids and mask -> [batch, seq,
    /// d_model]`. With a cache, `ids` are the new tokens only and the cache grows by `seq`.
    pub fn hidden(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [_, seq] = ids.dims();
        let mut scratch;
        let cache = match cache {
            Some(cache) => cache,
            None => {
                scratch = KvCache::new(self.blocks.len());
                &mut scratch
            }
        };
        let key_mask = match cache.key_mask.take() {
            Some(past) => Tensor::cat(vec![past, attention_mask], 1),
            None => attention_mask,
        };
        let positions = positions_from_mask(&key_mask, seq);
        let allowed = attention_allowed(&key_mask, seq);
        cache.key_mask = Some(key_mask);
        self.run_blocks(ids, positions, allowed, cache)
    }

    /// The final hidden states for an explicit layout: `[batch, seq]` ids and positions, and
    /// `allowed [batch, 1, seq, seq]` saying which keys each query sees. Lets several sequences
    /// share a row or a prefix (see burnish-data's `pack_pairs`).
    pub fn hidden_at(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        allowed: Tensor<B, 4, Bool>,
    ) -> Tensor<B, 3> {
        let mut cache = KvCache::new(self.blocks.len());
        self.run_blocks(ids, positions, allowed, &mut cache)
    }

    fn run_blocks(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Tensor<B, 2, Int>,
        allowed: Tensor<B, 4, Bool>,
        cache: &mut KvCache<B>,
    ) -> Tensor<B, 3> {
        let mut x = self.embed.forward(ids);
        if let Some(pos_embed) = &self.pos_embed {
            x = x + pos_embed.forward(positions.clone());
        }
        let rope = (self.config.family != Family::Gpt2).then(|| {
            let c = &self.config;
            Rope::new(positions, c.rope_scaling.inv_freq(c.rope_theta, c.head_dim))
        });
        let precision = self.config.precision;
        for (block, layer_cache) in self.blocks.iter().zip(cache.layers.iter_mut()) {
            let attn = block.attn.forward(
                block.attn_norm.forward(x.clone()),
                rope.as_ref(),
                allowed.clone(),
                layer_cache,
                precision,
            );
            x = x + attn;
            x = x.clone() + block.mlp.forward(block.mlp_norm.forward(x), precision);
        }
        self.final_norm.forward(x)
    }

    /// Projects hidden states to vocabulary logits: `[batch, seq, d_model] -> [batch, seq, vocab]`.
    pub fn logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.lm_head {
            Some(head) => ops::linear(head, hidden, self.config.precision),
            None => {
                let [batch, seq, d] = hidden.dims();
                let weight = self.embed.weight.val();
                ops::matmul(
                    hidden.reshape([batch * seq, d]),
                    weight.transpose(),
                    self.config.precision,
                )
                .reshape([batch, seq, self.config.vocab_size])
            }
        }
    }

    /// Next-token logits for every position: `[batch, seq]` ids and mask (1 = real token, 0 =
    /// padding, either side) `-> [batch, seq, vocab]`.
    pub fn forward(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        self.logits(self.hidden(ids, attention_mask, None))
    }

    /// Log-prob of each token given its prefix: `[batch, seq] -> [batch, seq - 1]`, entry `t`
    /// being `log p(ids[t + 1] | ids[..=t])`.
    pub fn token_logps(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let [batch, seq] = ids.dims();
        let logits = self
            .forward(ids.clone(), attention_mask)
            .narrow(1, 0, seq - 1);
        let targets = ids.narrow(1, 1, seq - 1).unsqueeze_dim::<3>(2);
        log_softmax(logits, 2)
            .gather(2, targets)
            .reshape([batch, seq - 1])
    }

    /// [`CausalLm::completion_logps`] the straightforward way: logits and a full log-softmax
    /// at every position, then a gather. The reference the fused path is tested against, and
    /// the path for an output head with a bias.
    pub fn completion_logps_unfused(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        completion_mask: Tensor<B, 2, Int>,
    ) -> CompletionLogps<B> {
        let [batch, seq] = ids.dims();
        let per_token = self.token_logps(ids, attention_mask);
        // Token t + 1 is predicted at position t, so the mask shifts by one.
        let mask = completion_mask.narrow(1, 1, seq - 1).float();
        CompletionLogps {
            logps: (per_token * mask.clone()).sum_dim(1).reshape([batch]),
            tokens: mask.sum_dim(1).reshape([batch]),
        }
    }

    /// The output projection as `[vocab, d_model]` (the tied embedding, or the head's weight
    /// transposed), or `None` when the head has a bias and cannot be fused.
    fn output_embedding(&self) -> Option<Tensor<B, 2>> {
        match &self.lm_head {
            Some(head) if head.bias.is_some() => None,
            Some(head) => Some(head.weight.val().transpose()),
            None => Some(self.embed.weight.val()),
        }
    }

    /// Scalar reward of each sequence, read at its last real token: `[batch, seq] -> [batch]`.
    ///
    /// # Panics
    /// If the model has no reward head (see [`CausalLm::with_reward_head`]).
    pub fn reward(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 1> {
        let head = self
            .reward_head
            .as_ref()
            .expect("the model has no reward head");
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let scores = head
            .forward(self.hidden(ids, attention_mask.clone(), None))
            .reshape([batch, seq]);
        // The last real token is the largest position index whose mask is 1, whatever the side
        // of the padding.
        let index = Tensor::<B, 1, Int>::arange(0..seq as i64, &device)
            .reshape([1, seq])
            .expand([batch, seq])
            .mul(attention_mask)
            .argmax(1);
        scores.gather(1, index).reshape([batch])
    }

    /// Per-token values from the value head: `[batch, seq] -> [batch, seq]`.
    ///
    /// # Panics
    /// If the model has no value head (see [`CausalLm::with_value_head`]).
    pub fn values(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 2> {
        let head = self
            .value_head
            .as_ref()
            .expect("the model has no value head");
        let [batch, seq] = ids.dims();
        head.forward(self.hidden(ids, attention_mask, None))
            .reshape([batch, seq])
    }
}

impl<B: ModelBackend> CausalLm<B> {
    /// Summed log-probs of the completion tokens (where `completion_mask` is 1) of each
    /// sequence. Stack chosen and rejected on the batch axis to score both in one pass.
    ///
    /// The output head runs only on the positions that predict a completion token, through the
    /// fused chunked head ([`crate::ops::logprob_head`]): no `[batch, seq, vocab]` tensor is
    /// ever made. [`CausalLm::completion_logps_unfused`] is the straightforward path it equals.
    pub fn completion_logps(
        &self,
        ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        completion_mask: Tensor<B, 2, Int>,
    ) -> CompletionLogps<B> {
        let Some(weight) = self.output_embedding() else {
            return self.completion_logps_unfused(ids, attention_mask, completion_mask);
        };
        let [batch, seq] = ids.dims();
        let host = |t: &Tensor<B, 2, Int>| -> Vec<i64> { t.to_data().iter::<i64>().collect() };
        let (id_values, completion) = (host(&ids), host(&completion_mask));
        // Position t predicts token t + 1: it is scored when token t + 1 is a completion token.
        let mut scored = ScoredTokens::default();
        for b in 0..batch {
            for t in 0..seq.saturating_sub(1) {
                if completion[b * seq + t + 1] == 1 {
                    scored.push(b * seq + t, id_values[b * seq + t + 1], b);
                }
            }
        }
        let hidden = self.hidden(ids, attention_mask, None);
        self.score_tokens(hidden, &scored, batch, weight)
    }

    /// Summed log-probs of the scored tokens of each of `sequences` sequences, from hidden
    /// states `[rows, seq, d_model]` of any layout, through the fused head.
    pub fn sequence_logps(
        &self,
        hidden: Tensor<B, 3>,
        scored: &ScoredTokens,
        sequences: usize,
    ) -> CompletionLogps<B> {
        match self.output_embedding() {
            Some(weight) => self.score_tokens(hidden, scored, sequences, weight),
            None => {
                let [rows, seq, d] = hidden.dims();
                let logits = self.logits(hidden.reshape([1, rows * seq, d]));
                let logits = logits.reshape([rows * seq, self.config.vocab_size]);
                let device = logits.device();
                let per_token = log_softmax(logits.select(0, scored.predictors_tensor(&device)), 1)
                    .gather(1, scored.targets_tensor(&device).unsqueeze_dim::<2>(1))
                    .reshape([scored.len()]);
                scored.sum_per_sequence(per_token, sequences)
            }
        }
    }

    fn score_tokens(
        &self,
        hidden: Tensor<B, 3>,
        scored: &ScoredTokens,
        sequences: usize,
        weight: Tensor<B, 2>,
    ) -> CompletionLogps<B> {
        let device = hidden.device();
        if scored.is_empty() {
            return scored.sum_per_sequence(Tensor::zeros([0], &device), sequences);
        }
        let [rows, seq, d] = hidden.dims();
        let hidden = hidden
            .reshape([rows * seq, d])
            .select(0, scored.predictors_tensor(&device));
        let targets = scored.targets_tensor(&device);
        let per_token = logprob_head(hidden, weight, targets, self.config.precision);
        scored.sum_per_sequence(per_token, sequences)
    }
}

/// The completion tokens to score: for each, the flat index (`row * seq + column`) of the
/// position that predicts it, its id, and the sequence whose log-prob it adds to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScoredTokens {
    predictors: Vec<i64>,
    targets: Vec<i64>,
    sequences: Vec<usize>,
}

impl ScoredTokens {
    /// Adds one scored token.
    pub fn push(&mut self, predictor: usize, target: i64, sequence: usize) {
        self.predictors.push(predictor as i64);
        self.targets.push(target);
        self.sequences.push(sequence);
    }

    /// How many tokens are scored.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no token is scored.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    fn predictors_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(
            TensorData::new(self.predictors.clone(), [self.len()]),
            device,
        )
    }

    fn targets_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1, Int> {
        Tensor::from_data(TensorData::new(self.targets.clone(), [self.len()]), device)
    }

    /// Sums per-token log-probs `[n]` into `[sequences]`, with each sequence's token count:
    /// a `[sequences, n]` 0/1 membership matrix times the log-probs.
    fn sum_per_sequence<B: Backend>(
        &self,
        per_token: Tensor<B, 1>,
        sequences: usize,
    ) -> CompletionLogps<B> {
        let device = per_token.device();
        let n = self.len();
        let mut tokens = vec![0.0f32; sequences];
        let mut membership = vec![0.0f32; sequences * n];
        for (i, &s) in self.sequences.iter().enumerate() {
            membership[s * n + i] = 1.0;
            tokens[s] += 1.0;
        }
        let tokens = Tensor::from_data(TensorData::new(tokens, [sequences]), &device);
        if n == 0 {
            return CompletionLogps {
                logps: Tensor::zeros([sequences], &device),
                tokens,
            };
        }
        let membership =
            Tensor::<B, 2>::from_data(TensorData::new(membership, [sequences, n]), &device);
        CompletionLogps {
            logps: membership
                .matmul(per_token.reshape([n, 1]))
                .reshape([sequences]),
            tokens,
        }
    }
}

/// Splits a `[2 * batch]` tensor laid out chosen-first into its chosen and rejected halves.
pub fn split_pair<B: Backend>(stacked: Tensor<B, 1>) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let [n] = stacked.dims();
    let half = n / 2;
    (
        stacked.clone().narrow(0, 0, half),
        stacked.narrow(0, half, half),
    )
}
