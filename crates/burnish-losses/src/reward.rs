//! Reward-model losses: Bradley-Terry on pairs (with an optional per-pair margin and TRL's
//! center-rewards term) and its K-wise form over rankings (InstructGPT).
//!
//! Inputs are the scalar rewards the model's reward head gives each completion. Metrics:
//! `accuracy` (fraction of pairs whose better response gets the strictly larger reward),
//! `margin` (mean `r_better - r_worse`) and, for pairs, `rewards/chosen` and `rewards/rejected`.

use serde::{Deserialize, Serialize};

use burn::tensor::{Tensor, backend::Backend};

use crate::error::LossError;
use crate::listwise::pairwise_gaps;
use crate::numerics::neg_log_sigmoid;
use crate::output::{LossOutput, Metrics, names};
use crate::params::check_non_negative;
use crate::ranking::RankLayout;

/// Rewards of a batch of preference pairs; every tensor is `[batch]`.
#[derive(Debug, Clone)]
pub struct RewardPairInputs<B: Backend> {
    /// Reward of each chosen completion. `[batch]`
    pub rewards_chosen: Tensor<B, 1>,
    /// Reward of each rejected completion. `[batch]`
    pub rewards_rejected: Tensor<B, 1>,
    /// Optional per-pair margin (the data set's `margin` column); None means 0. `[batch]`
    pub margin: Option<Tensor<B, 1>>,
}

impl<B: Backend> RewardPairInputs<B> {
    /// Inputs without margins.
    pub fn new(rewards_chosen: Tensor<B, 1>, rewards_rejected: Tensor<B, 1>) -> Self {
        Self {
            rewards_chosen,
            rewards_rejected,
            margin: None,
        }
    }

    /// Adds a per-pair margin. `[batch]`
    pub fn with_margin(mut self, margin: Tensor<B, 1>) -> Self {
        self.margin = Some(margin);
        self
    }

    /// Checks that every tensor present is `[batch]` with the same, non-zero batch.
    fn check(&self, loss: &'static str) -> Result<usize, LossError> {
        let n = self.rewards_chosen.dims()[0];
        if n == 0 {
            return Err(LossError::EmptyBatch { loss });
        }
        let mut present = vec![("rewards_rejected", &self.rewards_rejected)];
        if let Some(t) = &self.margin {
            present.push(("margin", t));
        }
        for (input, tensor) in present {
            let found = tensor.dims()[0];
            if found != n {
                return Err(LossError::ShapeMismatch {
                    loss,
                    input,
                    expected: vec![n],
                    found: vec![found],
                });
            }
        }
        Ok(n)
    }
}

/// Rewards of a batch of ranked responses: `[n_prompts, max_responses]` plus one ranking per
/// prompt (0 = best, ties equal; a shorter ranking marks the remaining columns as padding).
#[derive(Debug, Clone)]
pub struct RewardListInputs<B: Backend> {
    /// Reward of each response. `[n_prompts, max_responses]`
    pub rewards: Tensor<B, 2>,
    /// One ranking per prompt: `ranks[p][i]` is the rank of response i.
    pub ranks: Vec<Vec<usize>>,
}

impl<B: Backend> RewardListInputs<B> {
    /// Rewards and their rankings.
    pub fn new(rewards: Tensor<B, 2>, ranks: Vec<Vec<usize>>) -> Self {
        Self { rewards, ranks }
    }
}

/// Pairwise Bradley-Terry reward-model loss (InstructGPT; TRL's RewardTrainer):
/// `mean[ -log sigma(r_w - r_l - margin) ] + c * mean[ (r_w + r_l)^2 ]`.
///
/// The second term, with `c = center_rewards_coefficient` (Eisenstein et al. 2023), keeps rewards
/// centred on 0. `c >= 0`.
pub fn bradley_terry<B: Backend>(
    inputs: &RewardPairInputs<B>,
    center_rewards_coefficient: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "bradley_terry";
    check_non_negative(
        LOSS,
        "center_rewards_coefficient",
        center_rewards_coefficient,
    )?;
    inputs.check(LOSS)?;
    let chosen = inputs.rewards_chosen.clone();
    let rejected = inputs.rewards_rejected.clone();
    let gaps = chosen.clone() - rejected.clone();
    let logits = match &inputs.margin {
        Some(margin) => gaps.clone() - margin.clone(),
        None => gaps.clone(),
    };
    let mut loss = neg_log_sigmoid(logits).mean();
    if center_rewards_coefficient > 0.0 {
        let center = (chosen.clone() + rejected.clone()).square().mean();
        loss = loss + center.mul_scalar(center_rewards_coefficient);
    }
    let gaps = gaps.detach();
    let mut metrics = Metrics::new();
    metrics.push(names::ACCURACY, gaps.clone().sign().clamp_min(0.0).mean());
    metrics.push(names::MARGIN, gaps.mean());
    metrics.push(names::REWARDS_CHOSEN, chosen.detach().mean());
    metrics.push(names::REWARDS_REJECTED, rejected.detach().mean());
    Ok(LossOutput { loss, metrics })
}

/// K-wise Bradley-Terry (InstructGPT): for each prompt, the mean of `-log sigma(r_i - r_j)` over
/// every ordered pair with `rank_i < rank_j` (ties give no pair), then the mean over prompts, so
/// each prompt weighs the same whatever its K. With `c = center_rewards_coefficient > 0`, adds
/// `c * (r_i + r_j)^2` averaged the same way (for K = 2 this is [`bradley_terry`]'s term).
pub fn kwise_bradley_terry<B: Backend>(
    inputs: &RewardListInputs<B>,
    center_rewards_coefficient: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "kwise_bradley_terry";
    check_non_negative(
        LOSS,
        "center_rewards_coefficient",
        center_rewards_coefficient,
    )?;
    let [n, k] = inputs.rewards.dims();
    let layout = RankLayout::new(LOSS, &inputs.ranks, n, k)?;
    let rewards = layout.zero_padding(inputs.rewards.clone());
    let weights = layout.pair_weights::<B>(&rewards.device(), rewards.dtype());
    let gaps = pairwise_gaps(rewards.clone());
    let mut loss = (weights.clone() * neg_log_sigmoid(gaps.clone())).sum();
    if center_rewards_coefficient > 0.0 {
        let sums = rewards.clone().unsqueeze_dim::<3>(2).expand([n, k, k])
            + rewards.unsqueeze_dim::<3>(1).expand([n, k, k]);
        loss = loss
            + (weights.clone() * sums.square())
                .sum()
                .mul_scalar(center_rewards_coefficient);
    }
    let gaps = gaps.detach();
    let mut metrics = Metrics::new();
    metrics.push(
        names::ACCURACY,
        (weights.clone() * gaps.clone().sign().clamp_min(0.0)).sum(),
    );
    metrics.push(names::MARGIN, (weights * gaps).sum());
    Ok(LossOutput { loss, metrics })
}

/// Reward-model loss configuration, loadable from a TOML `[loss]` table
/// (`loss_type = "bradley_terry"`, `center_rewards_coefficient = 0.01`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RewardLoss {
    /// Bradley-Terry: [`bradley_terry`] on pairs, [`kwise_bradley_terry`] on rankings.
    BradleyTerry {
        /// Weight of the `(r_w + r_l)^2` centring term; default 0 (off).
        #[serde(default)]
        center_rewards_coefficient: f64,
    },
}

impl Default for RewardLoss {
    fn default() -> Self {
        RewardLoss::BradleyTerry {
            center_rewards_coefficient: 0.0,
        }
    }
}

impl RewardLoss {
    /// The `loss_type` name.
    pub fn name(&self) -> &'static str {
        match self {
            RewardLoss::BradleyTerry { .. } => "bradley_terry",
        }
    }

    /// Checks the parameters' ranges.
    pub fn validate(&self) -> Result<(), LossError> {
        match *self {
            RewardLoss::BradleyTerry {
                center_rewards_coefficient,
            } => check_non_negative(
                self.name(),
                "center_rewards_coefficient",
                center_rewards_coefficient,
            ),
        }
    }

    /// The loss on a batch of pairs.
    pub fn pairwise<B: Backend>(
        &self,
        inputs: &RewardPairInputs<B>,
    ) -> Result<LossOutput<B>, LossError> {
        match *self {
            RewardLoss::BradleyTerry {
                center_rewards_coefficient,
            } => bradley_terry(inputs, center_rewards_coefficient),
        }
    }

    /// The loss on a batch of rankings.
    pub fn listwise<B: Backend>(
        &self,
        inputs: &RewardListInputs<B>,
    ) -> Result<LossOutput<B>, LossError> {
        match *self {
            RewardLoss::BradleyTerry {
                center_rewards_coefficient,
            } => kwise_bradley_terry(inputs, center_rewards_coefficient),
        }
    }
}
