//! Unpaired feedback losses: each example is one completion labelled desirable or undesirable,
//! with no partner to compare it with (KTO, Ethayarajh et al. 2024, as TRL's `KTOTrainer`).
//!
//! KTO scores a completion by its implicit reward `r = beta (logp - ref_logp)` against a
//! reference point `z = beta KL(policy || reference)`, estimated from *mismatched* pairs (a
//! prompt with another example's completion) and clamped at 0, with no gradient through it:
//!
//! ```text
//! desirable:   w_d (1 - sigma(r - z))        undesirable:   w_u (1 - sigma(z - r))
//! ```
//!
//! and the loss is the mean over the batch. `apo_zero_unpaired` (TRL's anchored variant) drops
//! the reference point: `w_d (1 - sigma(r))` and `w_u sigma(r)`.
//!
//! Metrics follow TRL: `rewards/chosen` and `rewards/rejected` are the mean implicit rewards of
//! the desirable and undesirable rows (absent when the batch has none of that kind),
//! `logps/chosen` / `logps/rejected` their mean summed policy log-probs, `kl` the reference
//! point before `beta`, and `count/chosen` / `count/rejected` the rows of each kind.

use burn::tensor::{Tensor, TensorData, activation, backend::Backend};
use serde::{Deserialize, Serialize};

use crate::error::LossError;
use crate::output::{LossOutput, Metrics, names};
use crate::params::{check_beta, check_non_negative};

/// Metric name of the KL reference point (TRL's `kl`).
pub const KL: &str = "kl";
/// Metric name of the number of desirable rows in the batch.
pub const COUNT_CHOSEN: &str = "count/chosen";
/// Metric name of the number of undesirable rows in the batch.
pub const COUNT_REJECTED: &str = "count/rejected";

/// Summed log-probs of a batch of unpaired examples; every tensor is `[batch]`.
#[derive(Debug, Clone)]
pub struct UnpairedInputs<B: Backend> {
    /// Policy log-prob of each completion, summed over its tokens.
    pub policy_logps: Tensor<B, 1>,
    /// Reference-model log-prob of each completion.
    pub reference_logps: Tensor<B, 1>,
    /// True for a desirable completion, false for an undesirable one; one per row.
    pub labels: Vec<bool>,
    /// Policy and reference log-probs of the mismatched completions that estimate the KL
    /// reference point (KTO only); the policy's are used without gradient.
    pub kl_logps: Option<(Tensor<B, 1>, Tensor<B, 1>)>,
}

impl<B: Backend> UnpairedInputs<B> {
    /// Inputs without the KL estimate (enough for `apo_zero_unpaired`).
    pub fn new(
        policy_logps: Tensor<B, 1>,
        reference_logps: Tensor<B, 1>,
        labels: Vec<bool>,
    ) -> Self {
        UnpairedInputs {
            policy_logps,
            reference_logps,
            labels,
            kl_logps: None,
        }
    }

    /// Adds the policy and reference log-probs of the mismatched (prompt, completion) pairs.
    pub fn with_kl(
        mut self,
        policy_kl_logps: Tensor<B, 1>,
        reference_kl_logps: Tensor<B, 1>,
    ) -> Self {
        self.kl_logps = Some((policy_kl_logps, reference_kl_logps));
        self
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.policy_logps.dims()[0]
    }

    /// Checks that the batch is non-empty and every input has one entry per row.
    fn check(&self, loss: &'static str) -> Result<usize, LossError> {
        let n = self.batch_size();
        if n == 0 {
            return Err(LossError::EmptyBatch { loss });
        }
        let mut lengths = vec![
            ("reference_logps", self.reference_logps.dims()[0]),
            ("labels", self.labels.len()),
        ];
        if let Some((policy, reference)) = &self.kl_logps {
            lengths.push(("policy_kl_logps", policy.dims()[0]));
            lengths.push(("reference_kl_logps", reference.dims()[0]));
        }
        for (input, found) in lengths {
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

    /// 1.0 for desirable rows, 0.0 for undesirable ones, `[batch]` on the inputs' device.
    fn desirable_mask(&self) -> Tensor<B, 1> {
        let values: Vec<f32> = self
            .labels
            .iter()
            .map(|&l| f32::from(u8::from(l)))
            .collect();
        let n = values.len();
        let options = (&self.policy_logps.device(), self.policy_logps.dtype());
        Tensor::from_data(TensorData::new(values, [n]), options)
    }
}

/// TRL's default `desirable_weight` / `undesirable_weight`.
fn default_weight() -> f64 {
    1.0
}

/// TRL's default `beta`.
fn default_beta() -> f64 {
    0.1
}

/// An unpaired-feedback loss and its parameters, chosen by `loss_type` in a `[loss]` table:
///
/// ```toml
/// [loss]
/// loss_type = "kto"
/// beta = 0.1
/// desirable_weight = 1.0
/// undesirable_weight = 1.33
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum UnpairedLoss {
    /// KTO with the KL reference point: [`kto`].
    Kto {
        /// Inverse temperature of the implicit reward; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// Weight of the desirable rows' losses; >= 0, default 1.
        #[serde(default = "default_weight")]
        desirable_weight: f64,
        /// Weight of the undesirable rows' losses; >= 0, default 1.
        #[serde(default = "default_weight")]
        undesirable_weight: f64,
    },
    /// TRL's `apo_zero_unpaired`, KTO without the reference point: [`apo_zero_unpaired`].
    ApoZeroUnpaired {
        /// Inverse temperature of the implicit reward; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// Weight of the desirable rows' losses; >= 0, default 1.
        #[serde(default = "default_weight")]
        desirable_weight: f64,
        /// Weight of the undesirable rows' losses; >= 0, default 1.
        #[serde(default = "default_weight")]
        undesirable_weight: f64,
    },
}

impl Default for UnpairedLoss {
    /// KTO with TRL's defaults (`beta = 0.1`, both weights 1).
    fn default() -> Self {
        UnpairedLoss::Kto {
            beta: default_beta(),
            desirable_weight: default_weight(),
            undesirable_weight: default_weight(),
        }
    }
}

impl UnpairedLoss {
    /// The `loss_type` name.
    pub fn name(&self) -> &'static str {
        match self {
            UnpairedLoss::Kto { .. } => "kto",
            UnpairedLoss::ApoZeroUnpaired { .. } => "apo_zero_unpaired",
        }
    }

    /// `(beta, desirable_weight, undesirable_weight)`.
    fn params(&self) -> (f64, f64, f64) {
        match *self {
            UnpairedLoss::Kto {
                beta,
                desirable_weight,
                undesirable_weight,
            }
            | UnpairedLoss::ApoZeroUnpaired {
                beta,
                desirable_weight,
                undesirable_weight,
            } => (beta, desirable_weight, undesirable_weight),
        }
    }

    /// Checks every parameter's range, with an error naming the loss and the key.
    pub fn validate(&self) -> Result<(), LossError> {
        let (beta, desirable, undesirable) = self.params();
        check_beta(self.name(), beta)?;
        check_non_negative(self.name(), "desirable_weight", desirable)?;
        check_non_negative(self.name(), "undesirable_weight", undesirable)
    }

    /// Whether the loss needs the KL estimate from mismatched pairs ([`UnpairedInputs::with_kl`]).
    pub fn needs_kl(&self) -> bool {
        matches!(self, UnpairedLoss::Kto { .. })
    }

    /// The loss on a batch.
    pub fn compute<B: Backend>(
        &self,
        inputs: &UnpairedInputs<B>,
    ) -> Result<LossOutput<B>, LossError> {
        let (beta, desirable, undesirable) = self.params();
        match self {
            UnpairedLoss::Kto { .. } => kto(inputs, beta, desirable, undesirable),
            UnpairedLoss::ApoZeroUnpaired { .. } => {
                apo_zero_unpaired(inputs, beta, desirable, undesirable)
            }
        }
    }
}

/// KTO: `mean[ d w_d (1 - sigma(beta (lr - z))) + (1 - d) w_u (1 - sigma(beta (z - lr))) ]`
/// with `lr = logp - ref_logp`, `d` 1 on desirable rows and the reference point
/// `z = max(0, mean(kl_policy - kl_reference))` without gradient. Needs
/// [`UnpairedInputs::with_kl`].
pub fn kto<B: Backend>(
    inputs: &UnpairedInputs<B>,
    beta: f64,
    desirable_weight: f64,
    undesirable_weight: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "kto";
    check_params(LOSS, beta, desirable_weight, undesirable_weight)?;
    inputs.check(LOSS)?;
    let (policy_kl, reference_kl) = inputs.kl_logps.clone().ok_or(LossError::MissingReference {
        loss: LOSS,
        input: "policy_kl_logps / reference_kl_logps",
    })?;
    let kl = (policy_kl.detach() - reference_kl.detach())
        .mean()
        .clamp_min(0.0)
        .detach();
    let log_ratios = inputs.policy_logps.clone() - inputs.reference_logps.clone();
    let n = inputs.batch_size();
    let z = kl.clone().expand([n]);
    let desirable_losses = activation::sigmoid((log_ratios.clone() - z.clone()).mul_scalar(beta))
        .neg()
        .add_scalar(1.0);
    let undesirable_losses = activation::sigmoid((z - log_ratios.clone()).mul_scalar(beta))
        .neg()
        .add_scalar(1.0);
    let output = weigh(
        inputs,
        desirable_losses,
        undesirable_losses,
        desirable_weight,
        undesirable_weight,
        log_ratios.mul_scalar(beta),
    );
    let mut metrics = output.metrics;
    metrics.push(KL, kl);
    Ok(LossOutput {
        loss: output.loss,
        metrics,
    })
}

/// TRL's `apo_zero_unpaired`: `mean[ d w_d (1 - sigma(beta lr)) + (1 - d) w_u sigma(beta lr) ]`;
/// raises desirable and lowers undesirable likelihoods relative to the reference, with no
/// reference point. The KL estimate is not used (its metric is 0, as TRL logs it).
pub fn apo_zero_unpaired<B: Backend>(
    inputs: &UnpairedInputs<B>,
    beta: f64,
    desirable_weight: f64,
    undesirable_weight: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "apo_zero_unpaired";
    check_params(LOSS, beta, desirable_weight, undesirable_weight)?;
    inputs.check(LOSS)?;
    let log_ratios = inputs.policy_logps.clone() - inputs.reference_logps.clone();
    let rewards = log_ratios.mul_scalar(beta);
    let desirable_losses = activation::sigmoid(rewards.clone()).neg().add_scalar(1.0);
    let undesirable_losses = activation::sigmoid(rewards.clone());
    let output = weigh(
        inputs,
        desirable_losses,
        undesirable_losses,
        desirable_weight,
        undesirable_weight,
        rewards,
    );
    let mut metrics = output.metrics;
    let options = (&inputs.policy_logps.device(), inputs.policy_logps.dtype());
    metrics.push(KL, Tensor::zeros([1], options));
    Ok(LossOutput {
        loss: output.loss,
        metrics,
    })
}

fn check_params(
    loss: &'static str,
    beta: f64,
    desirable_weight: f64,
    undesirable_weight: f64,
) -> Result<(), LossError> {
    check_beta(loss, beta)?;
    check_non_negative(loss, "desirable_weight", desirable_weight)?;
    check_non_negative(loss, "undesirable_weight", undesirable_weight)
}

/// The batch mean of each row's weighted loss for its label, with the reward and log-prob
/// metrics of each kind of row.
fn weigh<B: Backend>(
    inputs: &UnpairedInputs<B>,
    desirable_losses: Tensor<B, 1>,
    undesirable_losses: Tensor<B, 1>,
    desirable_weight: f64,
    undesirable_weight: f64,
    rewards: Tensor<B, 1>,
) -> LossOutput<B> {
    let mask = inputs.desirable_mask();
    let inverse = mask.clone().neg().add_scalar(1.0);
    let losses = desirable_losses
        .mul(mask.clone())
        .mul_scalar(desirable_weight)
        + undesirable_losses
            .mul(inverse.clone())
            .mul_scalar(undesirable_weight);
    let chosen = inputs.labels.iter().filter(|&&l| l).count();
    let rejected = inputs.labels.len() - chosen;
    let rewards = rewards.detach();
    let logps = inputs.policy_logps.clone().detach();
    let masked_mean = |values: Tensor<B, 1>, mask: &Tensor<B, 1>, count: usize| {
        values.mul(mask.clone()).sum().div_scalar(count as f64)
    };
    let options = (&inputs.policy_logps.device(), inputs.policy_logps.dtype());
    let count = |c: usize| Tensor::<B, 1>::full([1], c as f64, options);
    let mut metrics = Metrics::new();
    if chosen > 0 {
        metrics.push(
            names::REWARDS_CHOSEN,
            masked_mean(rewards.clone(), &mask, chosen),
        );
        metrics.push(
            names::LOGPS_CHOSEN,
            masked_mean(logps.clone(), &mask, chosen),
        );
    }
    if rejected > 0 {
        metrics.push(
            names::REWARDS_REJECTED,
            masked_mean(rewards.clone(), &inverse, rejected),
        );
        metrics.push(
            names::LOGPS_REJECTED,
            masked_mean(logps, &inverse, rejected),
        );
    }
    if chosen > 0 && rejected > 0 {
        metrics.push(
            names::REWARDS_MARGINS,
            masked_mean(rewards.clone(), &mask, chosen) - masked_mean(rewards, &inverse, rejected),
        );
    }
    metrics.push(COUNT_CHOSEN, count(chosen));
    metrics.push(COUNT_REJECTED, count(rejected));
    LossOutput {
        loss: losses.mean(),
        metrics,
    }
}
