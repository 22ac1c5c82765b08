//! Listwise preference losses: one prompt, n ranked responses (rank 0 = best, equal ranks are
//! ties, as in "D > C > A = B").
//!
//! Both losses are a Plackett-Luce negative log-likelihood over per-response scores `s_i`:
//! for each response i outside the worst group, `-s_i + log sum_{j: rank_j >= rank_i} exp(s_j)`
//! (log-sum-exp with max subtraction), summed over positions for one prompt and averaged over
//! prompts. With strict ranks this is `-sum_k log(exp(s_k) / sum_{i >= k} exp(s_i))`; a tied
//! response normalises over its own group too, and the worst group adds nothing.
//!
//! A batch is `[n_prompts, max_responses]` tensors plus one ranking per prompt. A prompt with
//! fewer responses than `max_responses` gives a shorter ranking; its remaining columns are
//! padding (any value, masked out). The longest ranking must fill every column.
//!
//! Metrics: `rewards/rank_{r}` and `logps/rank_{r}` for each rank r present (mean score and
//! mean summed policy log-prob of the responses ranked r), `rewards/accuracies` (ranking accuracy:
//! the fraction of ordered pairs `rank_i < rank_j` with `s_i > s_j`) and `rewards/margins` (mean
//! `s_i - s_j` over those pairs); pair means are per prompt, then over prompts.

use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::numerics::masked_logsumexp;
use crate::output::{LossOutput, Metrics, names};
use crate::pairwise::per_token;
use crate::params::{check_beta, check_non_negative};
use crate::ranking::RankLayout;

/// Summed log-probs and token counts of a batch of ranked responses; tensors are
/// `[n_prompts, max_responses]`.
#[derive(Debug, Clone)]
pub struct ListwiseInputs<B: Backend> {
    /// Policy log-prob of each response, summed over its tokens. `[n_prompts, max_responses]`
    pub policy_logps: Tensor<B, 2>,
    /// Reference-model log-prob of each response (None for reference-free losses).
    /// `[n_prompts, max_responses]`
    pub reference_logps: Option<Tensor<B, 2>>,
    /// Token count of each response, as floats. `[n_prompts, max_responses]`
    pub lengths: Tensor<B, 2>,
    /// One ranking per prompt: `ranks[p][i]` is the rank of response i (0 = best, ties equal);
    /// `ranks[p].len()` is prompt p's number of real responses.
    pub ranks: Vec<Vec<usize>>,
}

impl<B: Backend> ListwiseInputs<B> {
    /// Inputs without reference log-probs (enough for PRO).
    pub fn new(policy_logps: Tensor<B, 2>, lengths: Tensor<B, 2>, ranks: Vec<Vec<usize>>) -> Self {
        Self {
            policy_logps,
            reference_logps: None,
            lengths,
            ranks,
        }
    }

    /// Adds the reference model's summed log-probs. `[n_prompts, max_responses]`
    pub fn with_reference(mut self, reference_logps: Tensor<B, 2>) -> Self {
        self.reference_logps = Some(reference_logps);
        self
    }

    /// Checks shapes and rankings; returns the validated layout.
    fn check(&self, loss: &'static str) -> Result<RankLayout, LossError> {
        let [n, k] = self.policy_logps.dims();
        let mut present = vec![("lengths", &self.lengths)];
        if let Some(t) = &self.reference_logps {
            present.push(("reference_logps", t));
        }
        for (input, tensor) in present {
            let found = tensor.dims();
            if found != [n, k] {
                return Err(LossError::ShapeMismatch {
                    loss,
                    input,
                    expected: vec![n, k],
                    found: found.to_vec(),
                });
            }
        }
        RankLayout::new(loss, &self.ranks, n, k)
    }
}

/// Plackett-Luce negative log-likelihood of the rankings under scores `[n, k]` (padding
/// already zeroed): the mean over prompts of the sum over positions, as in the module doc.
pub(crate) fn plackett_luce_nll<B: Backend>(
    scores: Tensor<B, 2>,
    layout: &RankLayout,
) -> Tensor<B, 1> {
    let [n, k] = scores.dims();
    let (excluded, active) = layout.plackett_luce_masks::<B>(&scores.device(), scores.dtype());
    let candidates = scores.clone().unsqueeze_dim::<3>(1).expand([n, k, k]);
    let log_normaliser = masked_logsumexp(candidates, excluded);
    ((log_normaliser - scores) * active).sum()
}

/// Ranking metrics from detached scores and log-probs `[n, k]` (padding zeroed).
pub(crate) fn ranking_metrics<B: Backend>(
    scores: Tensor<B, 2>,
    logps: Tensor<B, 2>,
    layout: &RankLayout,
) -> Metrics<B> {
    let [n, k] = scores.dims();
    let (device, dtype) = (scores.device(), scores.dtype());
    let mut metrics = Metrics::new();
    let (levels, level_weights) = layout.level_weights::<B>(&device, dtype);
    let per_level = |x: Tensor<B, 2>| -> Tensor<B, 1> {
        (level_weights.clone() * x.reshape([1, n * k]))
            .sum_dim(1)
            .reshape([levels.len()])
    };
    let level_scores = per_level(scores.clone());
    let level_logps = per_level(logps);
    for (l, &level) in levels.iter().enumerate() {
        metrics.push(
            names::rewards_rank(level),
            level_scores.clone().slice(l..l + 1),
        );
    }
    for (l, &level) in levels.iter().enumerate() {
        metrics.push(
            names::logps_rank(level),
            level_logps.clone().slice(l..l + 1),
        );
    }
    let pair_weights = layout.pair_weights::<B>(&device, dtype);
    let gaps = pairwise_gaps(scores);
    metrics.push(
        names::REWARDS_ACCURACIES,
        (pair_weights.clone() * gaps.clone().sign().clamp_min(0.0)).sum(),
    );
    metrics.push(names::REWARDS_MARGINS, (pair_weights * gaps).sum());
    metrics
}

/// `gaps[p, i, j] = x[p, i] - x[p, j]`. `[n, k] -> [n, k, k]`
pub(crate) fn pairwise_gaps<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 3> {
    let [n, k] = x.dims();
    x.clone().unsqueeze_dim::<3>(2).expand([n, k, k]) - x.unsqueeze_dim::<3>(1).expand([n, k, k])
}

/// PRO, Preference Ranking Optimisation (Song et al. 2024): Plackett-Luce over length-normalised
/// policy log-probs `s_i = logp_i / |y_i|`, plus an optional SFT term on the best response:
/// `sum_k -log(exp(s_k) / sum_{i >= k} exp(s_i)) + sft_weight * (-s_best)`.
///
/// Reference-free, no temperature weighting. With ties at the top, the SFT term averages over the
/// best group. The reward metrics are the scores `s`. `sft_weight >= 0`.
pub fn pro<B: Backend>(
    inputs: &ListwiseInputs<B>,
    sft_weight: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "pro";
    check_non_negative(LOSS, "sft_weight", sft_weight)?;
    let layout = inputs.check(LOSS)?;
    let logps = layout.zero_padding(inputs.policy_logps.clone());
    let scores = per_token(logps.clone(), inputs.lengths.clone());
    let scores = layout.zero_padding(scores);
    let mut loss = plackett_luce_nll(scores.clone(), &layout);
    if sft_weight > 0.0 {
        let best = layout.best_weights::<B>(&scores.device(), scores.dtype());
        loss = loss - (best * scores.clone()).sum().mul_scalar(sft_weight);
    }
    Ok(LossOutput {
        loss,
        metrics: ranking_metrics(scores.detach(), logps.detach(), &layout),
    })
}

/// Plackett-Luce DPO (DPO paper, appendix A.3): Plackett-Luce over the implicit rewards
/// `s_i = beta (logp_i - ref_logp_i)`, `sum_k -log(exp(s_k) / sum_{i >= k} exp(s_i))`.
///
/// With two responses it is DPO. The reward metrics are the implicit rewards `s`. `beta > 0`.
pub fn plackett_luce_dpo<B: Backend>(
    inputs: &ListwiseInputs<B>,
    beta: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "plackett_luce";
    check_beta(LOSS, beta)?;
    let layout = inputs.check(LOSS)?;
    let reference = inputs
        .reference_logps
        .clone()
        .ok_or(LossError::MissingReference {
            loss: LOSS,
            input: "reference_logps",
        })?;
    let logps = layout.zero_padding(inputs.policy_logps.clone());
    let scores = (logps.clone() - layout.zero_padding(reference)).mul_scalar(beta);
    let loss = plackett_luce_nll(scores.clone(), &layout);
    Ok(LossOutput {
        loss,
        metrics: ranking_metrics(scores.detach(), logps.detach(), &layout),
    })
}
