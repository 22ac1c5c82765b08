//! Rollouts: responses sampled from the policy with the KV cache (left-padded prompt batches,
//! stop at EOS or at the length limit), and the per-token log-probs, entropies and values of
//! query + response sequences, computed from temperature-scaled logits so that they are the
//! sampler's own distribution.
//!
//! Scoring batches are right-padded `[query | response]` rows; the log-prob of response token
//! `j` is read at the position that predicts it, and every per-token quantity is a flat vector
//! over the real response tokens of the mini-batch, row after row, so padding never enters a
//! mean.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor, TensorData};
use burnish_model::{CausalLm, Generation, ModelBackend, SamplingConfig};

use crate::config::PpoConfig;
use crate::error::PpoError;

/// Rows sampled per `generate` call.
const SAMPLE_CHUNK: usize = 64;

/// Samples one response per query with the policy's KV cache; `seed` makes it reproducible
/// (chunk `c` of the batch uses `seed + c`).
pub fn sample_responses<B: ModelBackend>(
    policy: &CausalLm<B>,
    queries: &[Vec<u32>],
    config: &PpoConfig,
    eos: u32,
    seed: u64,
    device: &B::Device,
) -> Result<Vec<Generation>, PpoError> {
    let mut out = Vec::with_capacity(queries.len());
    for (chunk_index, chunk) in queries.chunks(SAMPLE_CHUNK).enumerate() {
        let sampling = SamplingConfig {
            max_new_tokens: config.response_length,
            temperature: config.temperature,
            top_k: (config.top_k > 0).then_some(config.top_k),
            top_p: (config.top_p < 1.0).then_some(config.top_p),
            seed: seed.wrapping_add(chunk_index as u64),
            stop_token: Some(eos),
            use_cache: true,
        };
        out.extend(policy.generate_with_logps(chunk, &sampling, device)?);
    }
    Ok(out)
}

/// Some rows of a rollout, padded into one scoring batch.
#[derive(Debug, Clone)]
pub struct MiniBatch {
    /// The rollout rows it holds, in order.
    pub rows: Vec<usize>,
    /// `[rows, width]` token ids, right-padded.
    pub ids: Vec<i64>,
    /// `[rows, width]`, 1 at real tokens.
    pub mask: Vec<i64>,
    /// The padded length.
    pub width: usize,
    /// For each response token (row after row), its index in the flattened `[rows, width - 1]`
    /// grid of predicting positions.
    pub token_index: Vec<i64>,
    /// Response tokens per row.
    pub lengths: Vec<usize>,
}

impl MiniBatch {
    /// Pads `rows` of the rollout (`queries[i] ++ responses[i]`) to one width.
    pub fn new(rows: &[usize], queries: &[Vec<u32>], responses: &[Vec<u32>], pad: u32) -> Self {
        let width = rows
            .iter()
            .map(|&i| queries[i].len() + responses[i].len())
            .max()
            .unwrap_or(2)
            .max(2);
        let (mut ids, mut mask, mut token_index, mut lengths) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (local, &i) in rows.iter().enumerate() {
            let (q, r) = (&queries[i], &responses[i]);
            let len = q.len() + r.len();
            ids.extend(q.iter().chain(r).map(|&t| t as i64));
            ids.extend(std::iter::repeat_n(pad as i64, width - len));
            mask.extend(std::iter::repeat_n(1i64, len));
            mask.extend(std::iter::repeat_n(0i64, width - len));
            // Response token j sits at q.len() + j and is predicted one position earlier.
            let base = local * (width - 1) + q.len() - 1;
            token_index.extend((0..r.len()).map(|j| (base + j) as i64));
            lengths.push(r.len());
        }
        MiniBatch {
            rows: rows.to_vec(),
            ids,
            mask,
            width,
            token_index,
            lengths,
        }
    }

    /// Response tokens in the mini-batch.
    pub fn tokens(&self) -> usize {
        self.token_index.len()
    }
}

/// Per-token quantities of a mini-batch's response tokens, flat.
pub struct TokenScores<B: burn::tensor::backend::Backend> {
    /// `log p(token)` under `softmax(logits / temperature)`.
    pub logps: Tensor<B, 1>,
    /// Entropy of that distribution at each token (detached: a metric).
    pub entropy: Tensor<B, 1>,
    /// The value head's estimate before each token, when the model has a value head.
    pub values: Option<Tensor<B, 1>>,
}

/// Scores a mini-batch with `model` (the policy on the autodiff backend for the update, or
/// the reference / rollout policy on the inner one).
pub fn score_tokens<B: ModelBackend>(
    model: &CausalLm<B>,
    batch: &MiniBatch,
    temperature: f64,
    device: &B::Device,
) -> TokenScores<B> {
    let (rows, width) = (batch.rows.len(), batch.width);
    let shape = [rows, width];
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.ids.clone(), shape), device);
    let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(batch.mask.clone(), shape), device);
    let index = Tensor::<B, 1, Int>::from_data(
        TensorData::new(batch.token_index.clone(), [batch.tokens()]),
        device,
    );
    let predicting = model
        .hidden(ids.clone(), mask, None)
        .narrow(1, 0, width - 1);
    let logits = model.logits(predicting.clone()).div_scalar(temperature);
    let logp_all = log_softmax(logits, 2);
    let targets = ids.narrow(1, 1, width - 1).unsqueeze_dim::<3>(2);
    let flat = rows * (width - 1);
    let logps = logp_all
        .clone()
        .gather(2, targets)
        .reshape([flat])
        .select(0, index.clone());
    let detached = logp_all.detach();
    let entropy = (detached.clone().exp() * detached)
        .sum_dim(2)
        .neg()
        .reshape([flat])
        .select(0, index.clone());
    let values = model
        .value_head
        .as_ref()
        .map(|head| head.forward(predicting).reshape([flat]).select(0, index));
    TokenScores {
        logps,
        entropy,
        values,
    }
}

/// A flat per-token tensor back on the host, split into rows of `lengths`.
pub fn to_rows<B: burn::tensor::backend::Backend>(
    flat: Tensor<B, 1>,
    lengths: &[usize],
) -> Vec<Vec<f32>> {
    let values: Vec<f32> = flat.into_data().convert::<f32>().iter::<f32>().collect();
    let mut rows = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &n in lengths {
        rows.push(values[start..start + n].to_vec());
        start += n;
    }
    rows
}

/// Rows of a rollout as one flat tensor, in mini-batch order.
pub fn from_rows<B: burn::tensor::backend::Backend>(
    rows: &[usize],
    per_row: &[Vec<f32>],
    device: &B::Device,
) -> Tensor<B, 1> {
    let flat: Vec<f32> = rows
        .iter()
        .flat_map(|&i| per_row[i].iter().copied())
        .collect();
    let n = flat.len();
    Tensor::from_data(TensorData::new(flat, [n]), device)
}
