//! Rewards: one trait, [`RewardFunction`], scoring a batch of (query, response) pairs, with a
//! reward model ([`RewardModelScorer`]), a rule on the response text ([`TextReward`], e.g.
//! [`TextReward::vader`]) and a closure from library code ([`ClosureReward`]).

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burnish_model::{CausalLm, ModelBackend};

use crate::error::PpoError;

/// A batch of responses to score.
pub struct ScoreInput<'a> {
    /// The prompt tokens of each row.
    pub queries: &'a [Vec<u32>],
    /// The response tokens of each row (ending with EOS when it stopped).
    pub responses: &'a [Vec<u32>],
    /// Each response decoded to text (special tokens skipped).
    pub response_texts: &'a [String],
}

/// Something that gives each response of a batch a scalar score.
pub trait RewardFunction {
    /// One score per row of `batch`.
    fn score(&mut self, batch: &ScoreInput<'_>) -> Result<Vec<f32>, PpoError>;
}

/// A reward model: a [`CausalLm`] with its reward head, read at the last real token of
/// query + response, optionally rescaled by `gain * score + bias`.
pub struct RewardModelScorer<B: ModelBackend> {
    model: CausalLm<B>,
    pad: u32,
    batch_size: usize,
    device: B::Device,
    /// Multiplies the raw score.
    pub gain: f32,
    /// Added after the gain.
    pub bias: f32,
}

impl<B: ModelBackend> RewardModelScorer<B> {
    /// Wraps a reward model; `pad` fills the right of shorter rows.
    pub fn new(model: CausalLm<B>, pad: u32, device: &B::Device) -> Result<Self, PpoError> {
        if model.reward_head.is_none() {
            return Err(PpoError::Reward(
                "the reward model has no reward head (`score.weight`); train one with `burnish train reward`".into(),
            ));
        }
        Ok(RewardModelScorer {
            model,
            pad,
            batch_size: 32,
            device: device.clone(),
            gain: 1.0,
            bias: 0.0,
        })
    }

    /// The model's scores before gain and bias.
    pub fn raw_scores(&self, queries: &[Vec<u32>], responses: &[Vec<u32>]) -> Vec<f32> {
        let rows: Vec<Vec<u32>> = queries
            .iter()
            .zip(responses)
            .map(|(q, r)| [q.as_slice(), r.as_slice()].concat())
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(self.batch_size) {
            let width = chunk.iter().map(Vec::len).max().unwrap_or(1).max(1);
            let (mut ids, mut mask) = (Vec::new(), Vec::new());
            for row in chunk {
                let pad = width - row.len();
                ids.extend(row.iter().map(|&t| t as i64));
                ids.extend(std::iter::repeat_n(self.pad as i64, pad));
                mask.extend(std::iter::repeat_n(1i64, row.len()));
                mask.extend(std::iter::repeat_n(0i64, pad));
            }
            let shape = [chunk.len(), width];
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &self.device);
            let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, shape), &self.device);
            let scores = self.model.reward(ids, mask).into_data().convert::<f32>();
            out.extend(scores.iter::<f32>());
        }
        out
    }

    /// Gives `policy` a value head that starts from this reward model's head (InstructGPT's
    /// initialisation: the same weights, bias 0) when their widths match; a fresh head
    /// otherwise. A policy that has a value head already is returned as it is.
    pub fn init_value_head<P: Backend>(
        &self,
        policy: CausalLm<P>,
        device: &P::Device,
    ) -> CausalLm<P> {
        if policy.value_head.is_some() {
            return policy;
        }
        let mut policy = policy.with_value_head(device);
        if let (Some(value), Some(head)) = (policy.value_head.as_mut(), &self.model.reward_head)
            && self.model.config.hidden_size == policy.config.hidden_size
        {
            value.weight =
                Param::from_tensor(Tensor::from_data(head.weight.val().into_data(), device));
            value.bias = value
                .bias
                .take()
                .map(|b| Param::from_tensor(b.val().zeros_like()));
        }
        policy
    }

    /// Sets gain and bias so that the scores of `queries`/`responses` (samples of the starting
    /// policy) have mean 0 and standard deviation 1 (Ziegler et al. 2019).
    pub fn normalize_on(&mut self, queries: &[Vec<u32>], responses: &[Vec<u32>]) {
        let raw = self.raw_scores(queries, responses);
        let n = raw.len().max(1) as f64;
        let mean = raw.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = raw.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        let std = var.sqrt().max(1e-6);
        self.gain = (1.0 / std) as f32;
        self.bias = (-mean / std) as f32;
    }
}

impl<B: ModelBackend> RewardFunction for RewardModelScorer<B> {
    fn score(&mut self, batch: &ScoreInput<'_>) -> Result<Vec<f32>, PpoError> {
        Ok(self
            .raw_scores(batch.queries, batch.responses)
            .into_iter()
            .map(|s| self.gain * s + self.bias)
            .collect())
    }
}

/// A rule on the response text alone, such as a sentiment score.
pub struct TextReward<F: FnMut(&str) -> f64> {
    rule: F,
}

impl<F: FnMut(&str) -> f64> TextReward<F> {
    /// Scores each response's text with `rule`.
    pub fn new(rule: F) -> Self {
        TextReward { rule }
    }
}

impl TextReward<fn(&str) -> f64> {
    /// VADER's compound sentiment of the response, in [-1, 1] (the quickstart's gold reward).
    pub fn vader() -> Self {
        TextReward::new(crate::sentiment::compound as fn(&str) -> f64)
    }
}

impl<F: FnMut(&str) -> f64> RewardFunction for TextReward<F> {
    fn score(&mut self, batch: &ScoreInput<'_>) -> Result<Vec<f32>, PpoError> {
        Ok(batch
            .response_texts
            .iter()
            .map(|t| (self.rule)(t) as f32)
            .collect())
    }
}

/// Any function of the whole batch, from library code.
pub struct ClosureReward<F: FnMut(&ScoreInput<'_>) -> Vec<f32>> {
    f: F,
}

impl<F: FnMut(&ScoreInput<'_>) -> Vec<f32>> ClosureReward<F> {
    /// Scores with `f`, which must return one value per row.
    pub fn new(f: F) -> Self {
        ClosureReward { f }
    }
}

impl<F: FnMut(&ScoreInput<'_>) -> Vec<f32>> RewardFunction for ClosureReward<F> {
    fn score(&mut self, batch: &ScoreInput<'_>) -> Result<Vec<f32>, PpoError> {
        let scores = (self.f)(batch);
        if scores.len() != batch.responses.len() {
            return Err(PpoError::Reward(format!(
                "the reward closure returned {} scores for {} responses",
                scores.len(),
                batch.responses.len()
            )));
        }
        Ok(scores)
    }
}
