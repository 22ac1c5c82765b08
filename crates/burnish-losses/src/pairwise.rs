//! Pairwise preference losses: one chosen (y_w) and one rejected (y_l) completion per prompt.
//!
//! Every function takes summed completion log-probs (never a model) and returns the mean loss over
//! the batch with TRL's metrics. Notation, per example: `logp` is the policy log-prob of a
//! completion summed over its tokens, `ref_logp` the reference model's, `|y|` its token count,
//! `h = (logp_w - ref_logp_w) - (logp_l - ref_logp_l)` and `sigma` the logistic function.
//!
//! Metrics: `rewards/chosen` and `rewards/rejected` are the mean implicit rewards
//! `beta (logp - ref_logp)` (reference-free losses use the quantity they score instead, as each
//! function says), `rewards/margins` their mean difference, `rewards/accuracies` the fraction of
//! pairs whose chosen reward is strictly larger, `logps/chosen` and `logps/rejected` the mean
//! summed policy log-probs.
//!
//! Token counts enter as floats. A zero-length completion (summed log-prob 0) is counted as one
//! token wherever a loss divides by the length, so it gives a finite value, never NaN.

use burn::tensor::{Tensor, activation, backend::Backend};

use crate::error::LossError;
use crate::numerics::{log1m_exp, neg_log_sigmoid};
use crate::output::{LossOutput, Metrics, names};
use crate::params::{check_beta, check_label_smoothing, check_non_negative};

/// Summed log-probs and token counts of a batch of preference pairs; every tensor is `[batch]`.
#[derive(Debug, Clone)]
pub struct PairwiseInputs<B: Backend> {
    /// Policy log-prob of each chosen completion, summed over its tokens. `[batch]`
    pub policy_chosen_logps: Tensor<B, 1>,
    /// Policy log-prob of each rejected completion, summed over its tokens. `[batch]`
    pub policy_rejected_logps: Tensor<B, 1>,
    /// Reference-model log-prob of each chosen completion (None for reference-free losses). `[batch]`
    pub reference_chosen_logps: Option<Tensor<B, 1>>,
    /// Reference-model log-prob of each rejected completion (None for reference-free losses). `[batch]`
    pub reference_rejected_logps: Option<Tensor<B, 1>>,
    /// Token count of each chosen completion, as floats. `[batch]`
    pub chosen_lengths: Tensor<B, 1>,
    /// Token count of each rejected completion, as floats. `[batch]`
    pub rejected_lengths: Tensor<B, 1>,
}

impl<B: Backend> PairwiseInputs<B> {
    /// Inputs without reference log-probs (enough for reference-free losses).
    pub fn new(
        policy_chosen_logps: Tensor<B, 1>,
        policy_rejected_logps: Tensor<B, 1>,
        chosen_lengths: Tensor<B, 1>,
        rejected_lengths: Tensor<B, 1>,
    ) -> Self {
        Self {
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps: None,
            reference_rejected_logps: None,
            chosen_lengths,
            rejected_lengths,
        }
    }

    /// Adds the reference model's summed log-probs of the chosen and rejected completions.
    pub fn with_reference(
        mut self,
        reference_chosen_logps: Tensor<B, 1>,
        reference_rejected_logps: Tensor<B, 1>,
    ) -> Self {
        self.reference_chosen_logps = Some(reference_chosen_logps);
        self.reference_rejected_logps = Some(reference_rejected_logps);
        self
    }

    /// Number of pairs in the batch.
    pub fn batch_size(&self) -> usize {
        self.policy_chosen_logps.dims()[0]
    }

    /// Checks that every tensor present is `[batch]` with the same, non-zero batch.
    pub(crate) fn check(&self, loss: &'static str) -> Result<usize, LossError> {
        let n = self.batch_size();
        if n == 0 {
            return Err(LossError::EmptyBatch { loss });
        }
        let mut present = vec![
            ("policy_rejected_logps", &self.policy_rejected_logps),
            ("chosen_lengths", &self.chosen_lengths),
            ("rejected_lengths", &self.rejected_lengths),
        ];
        if let Some(t) = &self.reference_chosen_logps {
            present.push(("reference_chosen_logps", t));
        }
        if let Some(t) = &self.reference_rejected_logps {
            present.push(("reference_rejected_logps", t));
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

    /// `(logp_w - ref_logp_w, logp_l - ref_logp_l)`, or an error if the reference is missing.
    fn log_ratios(&self, loss: &'static str) -> Result<(Tensor<B, 1>, Tensor<B, 1>), LossError> {
        let reference_chosen =
            self.reference_chosen_logps
                .clone()
                .ok_or(LossError::MissingReference {
                    loss,
                    input: "reference_chosen_logps",
                })?;
        let reference_rejected =
            self.reference_rejected_logps
                .clone()
                .ok_or(LossError::MissingReference {
                    loss,
                    input: "reference_rejected_logps",
                })?;
        Ok((
            self.policy_chosen_logps.clone() - reference_chosen,
            self.policy_rejected_logps.clone() - reference_rejected,
        ))
    }

    /// Per-token averaged policy log-probs `(logp_w / |y_w|, logp_l / |y_l|)`.
    fn per_token_logps(&self) -> (Tensor<B, 1>, Tensor<B, 1>) {
        (
            per_token(
                self.policy_chosen_logps.clone(),
                self.chosen_lengths.clone(),
            ),
            per_token(
                self.policy_rejected_logps.clone(),
                self.rejected_lengths.clone(),
            ),
        )
    }
}

/// `logps / max(lengths, 1)`: a per-token average that stays finite for an empty completion.
pub(crate) fn per_token<B: Backend, const D: usize>(
    logps: Tensor<B, D>,
    lengths: Tensor<B, D>,
) -> Tensor<B, D> {
    logps / lengths.clamp_min(1.0)
}

/// The six TRL metrics from per-example chosen and rejected rewards (detached here).
fn pair_metrics<B: Backend>(
    chosen_rewards: Tensor<B, 1>,
    rejected_rewards: Tensor<B, 1>,
    inputs: &PairwiseInputs<B>,
) -> Metrics<B> {
    let chosen_rewards = chosen_rewards.detach();
    let rejected_rewards = rejected_rewards.detach();
    let margins = chosen_rewards.clone() - rejected_rewards.clone();
    let mut metrics = Metrics::new();
    metrics.push(names::REWARDS_CHOSEN, chosen_rewards.mean());
    metrics.push(names::REWARDS_REJECTED, rejected_rewards.mean());
    // sign(m) clamped at 0 is 1 exactly when m > 0: a strict comparison without a bool tensor.
    metrics.push(
        names::REWARDS_ACCURACIES,
        margins.clone().sign().clamp_min(0.0).mean(),
    );
    metrics.push(names::REWARDS_MARGINS, margins.mean());
    metrics.push(
        names::LOGPS_CHOSEN,
        inputs.policy_chosen_logps.clone().detach().mean(),
    );
    metrics.push(
        names::LOGPS_REJECTED,
        inputs.policy_rejected_logps.clone().detach().mean(),
    );
    metrics
}

/// Metrics for losses that use the implicit reward `beta (logp - ref_logp)`.
fn implicit_reward_metrics<B: Backend>(
    beta: f64,
    chosen_logratios: &Tensor<B, 1>,
    rejected_logratios: &Tensor<B, 1>,
    inputs: &PairwiseInputs<B>,
) -> Metrics<B> {
    pair_metrics(
        chosen_logratios.clone().detach().mul_scalar(beta),
        rejected_logratios.clone().detach().mul_scalar(beta),
        inputs,
    )
}

/// DPO (Rafailov et al. 2023) with conservative label smoothing (cDPO):
/// `mean[ -(1 - eps) log sigma(beta h) - eps log sigma(-beta h) ]`.
///
/// With `reference_free`, the reference log-probs are taken as 0 (and may be absent), so
/// `h = logp_w - logp_l` and the rewards are `beta logp`. `beta > 0`, `0 <= eps < 0.5`.
pub fn dpo_sigmoid<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
    label_smoothing: f64,
    reference_free: bool,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "sigmoid";
    check_beta(LOSS, beta)?;
    check_label_smoothing(LOSS, label_smoothing)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = if reference_free {
        (
            inputs.policy_chosen_logps.clone(),
            inputs.policy_rejected_logps.clone(),
        )
    } else {
        inputs.log_ratios(LOSS)?
    };
    let logits = (chosen.clone() - rejected.clone()).mul_scalar(beta);
    let mut losses = neg_log_sigmoid(logits.clone()).mul_scalar(1.0 - label_smoothing);
    if label_smoothing > 0.0 {
        losses = losses + neg_log_sigmoid(logits.neg()).mul_scalar(label_smoothing);
    }
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: implicit_reward_metrics(beta, &chosen, &rejected, inputs),
    })
}

/// Robust DPO (Chowdhury et al. 2024), unbiased under label-flip rate `eps`:
/// `mean[ (-(1 - eps) log sigma(beta h) + eps log sigma(-beta h)) / (1 - 2 eps) ]`.
///
/// Equals DPO at `eps = 0`; the value can be negative. `beta > 0`, `0 <= eps < 0.5`.
pub fn robust_dpo<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
    label_smoothing: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "robust";
    check_beta(LOSS, beta)?;
    check_label_smoothing(LOSS, label_smoothing)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.log_ratios(LOSS)?;
    let logits = (chosen.clone() - rejected.clone()).mul_scalar(beta);
    let mut losses = neg_log_sigmoid(logits.clone()).mul_scalar(1.0 - label_smoothing);
    if label_smoothing > 0.0 {
        losses = losses - neg_log_sigmoid(logits.neg()).mul_scalar(label_smoothing);
    }
    let losses = losses.div_scalar(1.0 - 2.0 * label_smoothing);
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: implicit_reward_metrics(beta, &chosen, &rejected, inputs),
    })
}

/// IPO (Azar et al. 2023): `mean[ (h' - 1 / (2 beta))^2 ]`.
///
/// With `normalize_by_length` (the default, as in the IPO paper and TRL),
/// `h' = (logp_w - ref_logp_w) / |y_w| - (logp_l - ref_logp_l) / |y_l|`; otherwise `h' = h`.
/// The reward metrics use the summed log-ratios, `beta (logp - ref_logp)`. `beta > 0`.
pub fn ipo<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
    normalize_by_length: bool,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "ipo";
    check_beta(LOSS, beta)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.log_ratios(LOSS)?;
    let logits = if normalize_by_length {
        per_token(chosen.clone(), inputs.chosen_lengths.clone())
            - per_token(rejected.clone(), inputs.rejected_lengths.clone())
    } else {
        chosen.clone() - rejected.clone()
    };
    let losses = logits.sub_scalar(1.0 / (2.0 * beta)).square();
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: implicit_reward_metrics(beta, &chosen, &rejected, inputs),
    })
}

/// Hinge loss of SLiC (Zhao et al. 2023): `mean[ max(0, 1 - beta h) ]`. `beta > 0`.
pub fn hinge<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "hinge";
    check_beta(LOSS, beta)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.log_ratios(LOSS)?;
    let logits = (chosen.clone() - rejected.clone()).mul_scalar(beta);
    let losses = activation::relu(logits.neg().add_scalar(1.0));
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: implicit_reward_metrics(beta, &chosen, &rejected, inputs),
    })
}

/// R-DPO, length-regularised DPO (Park et al. 2024):
/// `mean[ -log sigma(beta h + alpha (|y_w| - |y_l|)) ]`.
///
/// The sign follows from `pi* ∝ pi_ref exp((r - alpha |y|) / beta)`: the Bradley-Terry logit
/// gains `+alpha (|y_w| - |y_l|)`, so a longer chosen completion gets part of its margin for free
/// and the policy is not pushed towards "longer is better" (the opposite sign, printed in some
/// slides, rewards length). The reward metrics are `beta (logp - ref_logp)`, without the length
/// term. `beta > 0`, `alpha >= 0`.
pub fn rdpo<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
    alpha: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "rdpo";
    check_beta(LOSS, beta)?;
    check_non_negative(LOSS, "alpha", alpha)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.log_ratios(LOSS)?;
    let length_gap = inputs.chosen_lengths.clone() - inputs.rejected_lengths.clone();
    let logits =
        (chosen.clone() - rejected.clone()).mul_scalar(beta) + length_gap.mul_scalar(alpha);
    let losses = neg_log_sigmoid(logits);
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: implicit_reward_metrics(beta, &chosen, &rejected, inputs),
    })
}

/// SimPO (Meng et al. 2024), reference-free and length-normalised:
/// `mean[ -log sigma(beta (logp_w / |y_w| - logp_l / |y_l|) - gamma) ]`.
///
/// Reference log-probs are ignored. The reward metrics are `beta logp / |y|`, as in TRL's CPO
/// trainer. `beta > 0`, `gamma >= 0` (the target reward margin).
pub fn simpo<B: Backend>(
    inputs: &PairwiseInputs<B>,
    beta: f64,
    gamma: f64,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "simpo";
    check_beta(LOSS, beta)?;
    check_non_negative(LOSS, "gamma", gamma)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.per_token_logps();
    let logits = (chosen.clone() - rejected.clone())
        .mul_scalar(beta)
        .sub_scalar(gamma);
    let losses = neg_log_sigmoid(logits);
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: pair_metrics(
            chosen.detach().mul_scalar(beta),
            rejected.detach().mul_scalar(beta),
            inputs,
        ),
    })
}

/// SFT / Preferred-FT (the DPO paper's baseline): negative log-likelihood of the chosen
/// completion, `mean[ -logp_w / |y_w| ]` with `normalize_by_length` (per-token NLL, the default),
/// `mean[ -logp_w ]` without (the DPO reference code's `sft` loss).
///
/// The rejected completion and the reference are not used by the loss. The reward metrics are
/// the per-token policy log-probs `logp / |y|` of chosen and rejected, so `rewards/accuracies`
/// still tells whether the policy prefers the chosen completion.
pub fn sft<B: Backend>(
    inputs: &PairwiseInputs<B>,
    normalize_by_length: bool,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "sft";
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.per_token_logps();
    let nll = if normalize_by_length {
        chosen.clone().neg()
    } else {
        inputs.policy_chosen_logps.clone().neg()
    };
    Ok(LossOutput {
        loss: nll.mean(),
        metrics: pair_metrics(chosen, rejected, inputs),
    })
}

/// Unlikelihood (Welleck et al. 2019; the DPO paper's baseline): raise the likelihood of the
/// chosen completion and lower that of the rejected one,
/// `mean[ -s_w - alpha log(1 - exp(s_l)) ]`.
///
/// With `normalize_by_length` (the default) `s = logp / |y|`, the log of the per-token geometric
/// mean probability; without, `s = logp`, the sequence log-prob (whose unlikelihood term vanishes
/// for any realistic completion). `log(1 - exp(s))` is computed stably and `s` is capped at
/// `-1e-6`, so a certain completion gives a large finite loss, not infinity. The reward metrics
/// are the per-token policy log-probs, as for [`sft`]. `alpha >= 0`.
pub fn unlikelihood<B: Backend>(
    inputs: &PairwiseInputs<B>,
    alpha: f64,
    normalize_by_length: bool,
) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "unlikelihood";
    check_non_negative(LOSS, "alpha", alpha)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.per_token_logps();
    let (score_chosen, score_rejected) = if normalize_by_length {
        (chosen.clone(), rejected.clone())
    } else {
        (
            inputs.policy_chosen_logps.clone(),
            inputs.policy_rejected_logps.clone(),
        )
    };
    let losses = score_chosen.neg() - log1m_exp(score_rejected).mul_scalar(alpha);
    Ok(LossOutput {
        loss: losses.mean(),
        metrics: pair_metrics(chosen, rejected, inputs),
    })
}

/// Metric name of ORPO's NLL term (TRL's `nll_loss`).
pub const NLL_LOSS: &str = "nll_loss";
/// Metric name of ORPO's mean `log sigma(log odds ratio)` (TRL's `log_odds_ratio`).
pub const LOG_ODDS_RATIO: &str = "log_odds_ratio";
/// Metric name of ORPO's mean log odds ratio (TRL's `log_odds_chosen`).
pub const LOG_ODDS_CHOSEN: &str = "log_odds_chosen";

/// ORPO (Hong et al. 2024; TRL's `ORPOTrainer`), reference-free, SFT and alignment in one stage:
/// `NLL - beta mean[ log sigma(log_odds) ]`, where `NLL = -sum logp_w / sum |y_w|` is the
/// token-mean negative log-likelihood of every chosen token in the batch and, with the
/// per-token averages `s = logp / |y|`,
/// `log_odds = (s_w - s_l) - (log(1 - exp(s_w)) - log(1 - exp(s_l)))`.
///
/// Metrics as TRL logs them: `rewards/*` are `beta s` (per-token averages, not sums), `logps/*`
/// the per-token averages, plus `nll_loss`, `log_odds_ratio` (the mean log-sigmoid) and
/// `log_odds_chosen` (the mean log odds). `beta > 0`.
pub fn orpo<B: Backend>(inputs: &PairwiseInputs<B>, beta: f64) -> Result<LossOutput<B>, LossError> {
    const LOSS: &str = "orpo";
    check_beta(LOSS, beta)?;
    inputs.check(LOSS)?;
    let (chosen, rejected) = inputs.per_token_logps();
    let nll = inputs.policy_chosen_logps.clone().sum().neg()
        / inputs.chosen_lengths.clone().clamp_min(1.0).sum();
    let log_odds = (chosen.clone() - rejected.clone())
        - (log1m_exp(chosen.clone()) - log1m_exp(rejected.clone()));
    let ratio = activation::log_sigmoid(log_odds.clone());
    let loss = nll.clone() - ratio.clone().mean().mul_scalar(beta);
    let mut metrics = pair_metrics(
        chosen.clone().detach().mul_scalar(beta),
        rejected.clone().detach().mul_scalar(beta),
        inputs,
    );
    // TRL's ORPO logs the per-token averages under `logps/*`.
    let mut renamed = Metrics::new();
    for (name, value) in metrics.iter() {
        let value = match name {
            names::LOGPS_CHOSEN => chosen.clone().detach().mean(),
            names::LOGPS_REJECTED => rejected.clone().detach().mean(),
            _ => value.clone(),
        };
        renamed.push(name, value);
    }
    metrics = renamed;
    metrics.push(NLL_LOSS, nll.detach());
    metrics.push(LOG_ODDS_RATIO, ratio.detach().mean());
    metrics.push(LOG_ODDS_CHOSEN, log_odds.detach().mean());
    Ok(LossOutput { loss, metrics })
}
