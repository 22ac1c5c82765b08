//! Sampling from a [`CausalLm`]: greedy, temperature, top-k and top-p, seeded, with a KV cache.
//!
//! With the cache, the prompt runs once (prefill) and each new token attends over the cached
//! keys and values; without it, every step re-runs the whole sequence. Both give the same
//! tokens; the uncached path exists to check that and to measure what the cache saves.
//! Prompts of different lengths are left-padded so every row's next token is the last column.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{ModelError, Result};
use crate::layers::KvCache;
use crate::model::CausalLm;

/// How to pick new tokens.
#[derive(Debug, Clone)]
pub struct SamplingConfig {
    /// Tokens to generate after the prompt (fewer if every row stops).
    pub max_new_tokens: usize,
    /// Softmax temperature; 0 means greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 or `None` = all).
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (`None` = all).
    pub top_p: Option<f64>,
    /// Seed of the sampler.
    pub seed: u64,
    /// A row stops after emitting this token (usually EOS).
    pub stop_token: Option<u32>,
    /// Use the KV cache (true) or re-run the full sequence each step (false).
    pub use_cache: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: None,
            top_p: None,
            seed: 0,
            stop_token: None,
            use_cache: true,
        }
    }
}

impl SamplingConfig {
    fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(ModelError::InvalidArgument(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            )));
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return Err(ModelError::InvalidArgument(format!(
                "top_p must be in (0, 1], got {p}"
            )));
        }
        Ok(())
    }
}

/// Log-prob of `token` under the temperature-scaled softmax of the whole row (temperature 0
/// counts as 1): the sampler's own distribution before top-k / top-p, which is what PPO's ratio
/// is taken against (as TRL does).
fn temperature_logp(logits: &[f32], token: u32, temperature: f64) -> f32 {
    let t = if temperature > 0.0 { temperature } else { 1.0 };
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
    let sum: f64 = logits.iter().map(|&v| ((v as f64 - max) / t).exp()).sum();
    ((logits[token as usize] as f64 - max) / t - sum.ln()) as f32
}

/// The new tokens of one row and the sampler's log-prob of each.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Generation {
    /// New tokens, ending with the stop token when the row stopped.
    pub tokens: Vec<u32>,
    /// `log p(token)` under the temperature-scaled softmax it was drawn from.
    pub logps: Vec<f32>,
}

/// Picks one token from a row of logits.
fn sample_row(logits: &[f32], config: &SamplingConfig, rng: &mut StdRng) -> u32 {
    if config.temperature == 0.0 {
        return argmax(logits);
    }
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
    if let Some(k) = config.top_k.filter(|&k| k > 0) {
        order.truncate(k);
    }
    let max = logits[order[0]] as f64;
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - max) / config.temperature).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if let Some(top_p) = config.top_p {
        let mut cumulative = 0.0;
        let keep = probs
            .iter()
            .position(|p| {
                cumulative += p;
                cumulative >= top_p
            })
            .map_or(probs.len(), |i| i + 1);
        probs.truncate(keep);
        order.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut target = rng.random::<f64>() * total;
    for (&token, p) in order.iter().zip(&probs) {
        target -= p;
        if target <= 0.0 {
            return token as u32;
        }
    }
    order[probs.len() - 1] as u32
}

fn argmax(row: &[f32]) -> u32 {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
            if v > best.1 { (i, v) } else { best }
        })
        .0 as u32
}

fn int_tensor<B: Backend>(
    values: Vec<i64>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

impl<B: crate::ops::ModelBackend> CausalLm<B> {
    /// Logits of the last position only: `[batch, vocab]` on the host.
    fn last_logits(
        &self,
        ids: Tensor<B, 2, Int>,
        mask: Tensor<B, 2, Int>,
        cache: Option<&mut KvCache<B>>,
    ) -> Vec<Vec<f32>> {
        let hidden = self.hidden(ids, mask, cache);
        let [batch, seq, _] = hidden.dims();
        let logits = self
            .logits(hidden.narrow(1, seq - 1, 1))
            .reshape([batch, self.config.vocab_size]);
        let values = logits
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .expect("f32 logits");
        values
            .chunks(self.config.vocab_size)
            .map(<[f32]>::to_vec)
            .collect()
    }

    /// Generates continuations of each prompt; returns the new tokens of each row (stopping
    /// after `stop_token` where it appears).
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        config: &SamplingConfig,
        device: &B::Device,
    ) -> Result<Vec<Vec<u32>>> {
        Ok(self
            .generate_with_logps(prompts, config, device)?
            .into_iter()
            .map(|g| g.tokens)
            .collect())
    }

    /// [`CausalLm::generate`], also returning the log-prob of each new token under the
    /// temperature-scaled distribution it was drawn from (before top-k / top-p truncation).
    pub fn generate_with_logps(
        &self,
        prompts: &[Vec<u32>],
        config: &SamplingConfig,
        device: &B::Device,
    ) -> Result<Vec<Generation>> {
        config.validate()?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(i) = prompts.iter().position(Vec::is_empty) {
            return Err(ModelError::InvalidArgument(format!(
                "prompt {i} has no tokens"
            )));
        }
        let batch = prompts.len();
        let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
        // Every model command keeps to the model's positions: `logprobs` refuses longer rows,
        // training truncates to them. Saturating, so a huge max_new_tokens is this error too.
        let limit = self.config.max_positions;
        if width.saturating_add(config.max_new_tokens) > limit {
            return Err(ModelError::InvalidArgument(format!(
                "prompt ({width} tokens) + max_new_tokens ({}) exceeds the model's {limit} positions",
                config.max_new_tokens
            )));
        }
        self.check_ids(prompts.iter().flatten().copied())?;
        // Left padding keeps every row's newest token in the last column.
        let mut ids: Vec<Vec<i64>> = Vec::with_capacity(batch);
        let mut mask: Vec<Vec<i64>> = Vec::with_capacity(batch);
        for prompt in prompts {
            let pad = width - prompt.len();
            ids.push(
                std::iter::repeat_n(0, pad)
                    .chain(prompt.iter().map(|&t| t as i64))
                    .collect(),
            );
            mask.push(
                std::iter::repeat_n(0, pad)
                    .chain(std::iter::repeat_n(1, prompt.len()))
                    .collect(),
            );
        }
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut outputs: Vec<Generation> = vec![Generation::default(); batch];
        let mut done = vec![false; batch];
        let mut cache = KvCache::new(self.num_layers());
        let flat = |rows: &[Vec<i64>]| rows.iter().flatten().copied().collect::<Vec<i64>>();
        let mut logits = self.last_logits(
            int_tensor(flat(&ids), [batch, width], device),
            int_tensor(flat(&mask), [batch, width], device),
            config.use_cache.then_some(&mut cache),
        );
        for step in 0..config.max_new_tokens {
            let next: Vec<u32> = logits
                .iter()
                .map(|row| sample_row(row, config, &mut rng))
                .collect();
            for (row, &token) in next.iter().enumerate() {
                if !done[row] {
                    outputs[row].tokens.push(token);
                    outputs[row].logps.push(temperature_logp(
                        &logits[row],
                        token,
                        config.temperature,
                    ));
                    done[row] = config.stop_token == Some(token);
                }
            }
            if done.iter().all(|&d| d) || step + 1 == config.max_new_tokens {
                break;
            }
            if config.use_cache {
                let new_ids = next.iter().map(|&t| t as i64).collect();
                logits = self.last_logits(
                    int_tensor(new_ids, [batch, 1], device),
                    int_tensor(vec![1; batch], [batch, 1], device),
                    Some(&mut cache),
                );
            } else {
                for (row, &token) in next.iter().enumerate() {
                    ids[row].push(token as i64);
                    mask[row].push(1);
                }
                let len = ids[0].len();
                logits = self.last_logits(
                    int_tensor(flat(&ids), [batch, len], device),
                    int_tensor(flat(&mask), [batch, len], device),
                    None,
                );
            }
        }
        Ok(outputs)
    }
}
