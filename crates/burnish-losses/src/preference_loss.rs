//! The policy-loss configuration: a loss chosen by its `loss_type` name with typed parameters,
//! so trainers and the CLI call one method and never match on strings.
//!
//! ```toml
//! [loss]
//! loss_type = "rdpo"
//! beta = 0.1
//! alpha = 0.05
//! ```

use serde::{Deserialize, Serialize};

use burn::tensor::{Tensor, backend::Backend};

use crate::error::{InputKind, LossError};
use crate::listwise::{self, ListwiseInputs};
use crate::output::{LossOutput, Metrics, names};
use crate::pairwise::{self, PairwiseInputs};
use crate::params::{check_beta, check_label_smoothing, check_non_negative};

/// TRL's default `beta`.
fn default_beta() -> f64 {
    0.1
}

/// SimPO's `beta` (the paper's range is 2.0 - 2.5).
fn default_simpo_beta() -> f64 {
    2.0
}

/// SimPO's target margin `gamma` (TRL's `simpo_gamma`).
fn default_simpo_gamma() -> f64 {
    0.5
}

/// Default `true` for switches such as `normalize_by_length`.
fn default_true() -> bool {
    true
}

/// Default unlikelihood weight `alpha`.
fn default_one() -> f64 {
    1.0
}

/// A policy preference loss and its parameters; `loss_type` picks the variant. Every field has a
/// default, so `loss_type = "sigmoid"` alone is a complete config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "loss_type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PreferenceLoss {
    /// DPO with cDPO label smoothing: [`pairwise::dpo_sigmoid`].
    Sigmoid {
        /// Inverse temperature of the implicit reward; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// cDPO label-flip probability eps in [0, 0.5); default 0.
        #[serde(default)]
        label_smoothing: f64,
        /// Take reference log-probs as 0 (no reference model); default false.
        #[serde(default)]
        reference_free: bool,
    },
    /// IPO: [`pairwise::ipo`].
    Ipo {
        /// Regularisation strength; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// Use per-token-averaged log-ratios (the IPO paper's choice); default true.
        #[serde(default = "default_true")]
        normalize_by_length: bool,
    },
    /// SLiC hinge: [`pairwise::hinge`].
    Hinge {
        /// Scale of the log-ratio margin; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
    },
    /// Robust DPO: [`pairwise::robust_dpo`].
    Robust {
        /// Inverse temperature; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// Assumed label-flip rate eps in [0, 0.5); default 0.
        #[serde(default)]
        label_smoothing: f64,
    },
    /// R-DPO, length-regularised DPO: [`pairwise::rdpo`].
    Rdpo {
        /// Inverse temperature; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
        /// Length-regularisation weight; >= 0, default 0 (plain DPO).
        #[serde(default)]
        alpha: f64,
    },
    /// SimPO: [`pairwise::simpo`].
    Simpo {
        /// Reward scale; > 0, default 2.0.
        #[serde(default = "default_simpo_beta")]
        beta: f64,
        /// Target reward margin; >= 0, default 0.5.
        #[serde(default = "default_simpo_gamma")]
        gamma: f64,
    },
    /// SFT / Preferred-FT, NLL of the chosen completion: [`pairwise::sft`].
    #[serde(alias = "preferred_ft", alias = "nll")]
    Sft {
        /// Per-token NLL (default true) rather than summed NLL.
        #[serde(default = "default_true")]
        normalize_by_length: bool,
    },
    /// Unlikelihood baseline: [`pairwise::unlikelihood`].
    Unlikelihood {
        /// Weight of the unlikelihood term on the rejected completion; >= 0, default 1.
        #[serde(default = "default_one")]
        alpha: f64,
        /// Score per-token-averaged log-probs (default true) rather than sequence log-probs.
        #[serde(default = "default_true")]
        normalize_by_length: bool,
    },
    /// ORPO, reference-free SFT + odds-ratio preference term: [`pairwise::orpo`].
    Orpo {
        /// Weight of the odds-ratio term (TRL's `beta`, the paper's lambda); > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
    },
    /// PRO, listwise: [`listwise::pro`].
    Pro {
        /// Weight of the SFT term on the best response; >= 0, default 0.
        #[serde(default)]
        sft_weight: f64,
    },
    /// Plackett-Luce DPO, listwise: [`listwise::plackett_luce_dpo`].
    PlackettLuce {
        /// Inverse temperature; > 0, default 0.1.
        #[serde(default = "default_beta")]
        beta: f64,
    },
}

impl Default for PreferenceLoss {
    /// DPO with TRL's defaults (`beta = 0.1`, no smoothing).
    fn default() -> Self {
        PreferenceLoss::Sigmoid {
            beta: default_beta(),
            label_smoothing: 0.0,
            reference_free: false,
        }
    }
}

impl PreferenceLoss {
    /// The `loss_type` name.
    pub fn name(&self) -> &'static str {
        match self {
            PreferenceLoss::Sigmoid { .. } => "sigmoid",
            PreferenceLoss::Ipo { .. } => "ipo",
            PreferenceLoss::Hinge { .. } => "hinge",
            PreferenceLoss::Robust { .. } => "robust",
            PreferenceLoss::Rdpo { .. } => "rdpo",
            PreferenceLoss::Simpo { .. } => "simpo",
            PreferenceLoss::Sft { .. } => "sft",
            PreferenceLoss::Unlikelihood { .. } => "unlikelihood",
            PreferenceLoss::Orpo { .. } => "orpo",
            PreferenceLoss::Pro { .. } => "pro",
            PreferenceLoss::PlackettLuce { .. } => "plackett_luce",
        }
    }

    /// Checks every parameter's range, with an error naming the loss and the key.
    pub fn validate(&self) -> Result<(), LossError> {
        let loss = self.name();
        match *self {
            PreferenceLoss::Sigmoid {
                beta,
                label_smoothing,
                ..
            }
            | PreferenceLoss::Robust {
                beta,
                label_smoothing,
            } => {
                check_beta(loss, beta)?;
                check_label_smoothing(loss, label_smoothing)
            }
            PreferenceLoss::Ipo { beta, .. }
            | PreferenceLoss::Hinge { beta }
            | PreferenceLoss::Orpo { beta }
            | PreferenceLoss::PlackettLuce { beta } => check_beta(loss, beta),
            PreferenceLoss::Rdpo { beta, alpha } => {
                check_beta(loss, beta)?;
                check_non_negative(loss, "alpha", alpha)
            }
            PreferenceLoss::Simpo { beta, gamma } => {
                check_beta(loss, beta)?;
                check_non_negative(loss, "gamma", gamma)
            }
            PreferenceLoss::Sft { .. } => Ok(()),
            PreferenceLoss::Unlikelihood { alpha, .. } => check_non_negative(loss, "alpha", alpha),
            PreferenceLoss::Pro { sft_weight } => {
                check_non_negative(loss, "sft_weight", sft_weight)
            }
        }
    }

    /// Whether the loss reads reference-model log-probs; when false a trainer can skip the
    /// reference model entirely.
    pub fn needs_reference(&self) -> bool {
        match self {
            PreferenceLoss::Sigmoid { reference_free, .. } => !reference_free,
            PreferenceLoss::Ipo { .. }
            | PreferenceLoss::Hinge { .. }
            | PreferenceLoss::Robust { .. }
            | PreferenceLoss::Rdpo { .. }
            | PreferenceLoss::PlackettLuce { .. } => true,
            PreferenceLoss::Simpo { .. }
            | PreferenceLoss::Sft { .. }
            | PreferenceLoss::Unlikelihood { .. }
            | PreferenceLoss::Orpo { .. }
            | PreferenceLoss::Pro { .. } => false,
        }
    }

    /// The data the loss is defined on. Listwise losses also accept pairwise inputs (a ranking
    /// of two); pairwise losses reject listwise inputs.
    pub fn input_kind(&self) -> InputKind {
        match self {
            PreferenceLoss::Pro { .. } | PreferenceLoss::PlackettLuce { .. } => InputKind::Listwise,
            _ => InputKind::Pairwise,
        }
    }

    /// The loss on a batch of pairs.
    ///
    /// A listwise loss treats each pair as a ranking of two (chosen = rank 0); its metrics then
    /// use the pairwise names (`rewards/chosen`, `logps/rejected`, ...).
    pub fn pairwise<B: Backend>(
        &self,
        inputs: &PairwiseInputs<B>,
    ) -> Result<LossOutput<B>, LossError> {
        match *self {
            PreferenceLoss::Sigmoid {
                beta,
                label_smoothing,
                reference_free,
            } => pairwise::dpo_sigmoid(inputs, beta, label_smoothing, reference_free),
            PreferenceLoss::Ipo {
                beta,
                normalize_by_length,
            } => pairwise::ipo(inputs, beta, normalize_by_length),
            PreferenceLoss::Hinge { beta } => pairwise::hinge(inputs, beta),
            PreferenceLoss::Robust {
                beta,
                label_smoothing,
            } => pairwise::robust_dpo(inputs, beta, label_smoothing),
            PreferenceLoss::Rdpo { beta, alpha } => pairwise::rdpo(inputs, beta, alpha),
            PreferenceLoss::Simpo { beta, gamma } => pairwise::simpo(inputs, beta, gamma),
            PreferenceLoss::Sft {
                normalize_by_length,
            } => pairwise::sft(inputs, normalize_by_length),
            PreferenceLoss::Unlikelihood {
                alpha,
                normalize_by_length,
            } => pairwise::unlikelihood(inputs, alpha, normalize_by_length),
            PreferenceLoss::Orpo { beta } => pairwise::orpo(inputs, beta),
            PreferenceLoss::Pro { .. } | PreferenceLoss::PlackettLuce { .. } => {
                let loss = self.name();
                inputs.check(loss)?;
                let listwise_inputs = pairs_as_rankings(inputs);
                let output = self.listwise(&listwise_inputs)?;
                Ok(LossOutput {
                    loss: output.loss,
                    metrics: rename_pair_metrics(output.metrics),
                })
            }
        }
    }

    /// The loss on a batch of rankings; pairwise losses give [`LossError::WrongInputKind`].
    pub fn listwise<B: Backend>(
        &self,
        inputs: &ListwiseInputs<B>,
    ) -> Result<LossOutput<B>, LossError> {
        match *self {
            PreferenceLoss::Pro { sft_weight } => listwise::pro(inputs, sft_weight),
            PreferenceLoss::PlackettLuce { beta } => listwise::plackett_luce_dpo(inputs, beta),
            _ => Err(LossError::WrongInputKind {
                loss: self.name(),
                expected: InputKind::Pairwise,
                found: InputKind::Listwise,
            }),
        }
    }
}

/// A batch of pairs as rankings of two: column 0 chosen (rank 0), column 1 rejected (rank 1).
fn pairs_as_rankings<B: Backend>(inputs: &PairwiseInputs<B>) -> ListwiseInputs<B> {
    let columns = |chosen: &Tensor<B, 1>, rejected: &Tensor<B, 1>| {
        Tensor::stack::<2>(vec![chosen.clone(), rejected.clone()], 1)
    };
    let reference = match (
        &inputs.reference_chosen_logps,
        &inputs.reference_rejected_logps,
    ) {
        (Some(chosen), Some(rejected)) => Some(columns(chosen, rejected)),
        _ => None,
    };
    ListwiseInputs {
        policy_logps: columns(&inputs.policy_chosen_logps, &inputs.policy_rejected_logps),
        reference_logps: reference,
        lengths: columns(&inputs.chosen_lengths, &inputs.rejected_lengths),
        ranks: vec![vec![0, 1]; inputs.batch_size()],
    }
}

/// Renames rank-0 / rank-1 metrics to TRL's chosen / rejected names.
fn rename_pair_metrics<B: Backend>(metrics: Metrics<B>) -> Metrics<B> {
    let renames = [
        (names::rewards_rank(0), names::REWARDS_CHOSEN),
        (names::rewards_rank(1), names::REWARDS_REJECTED),
        (names::logps_rank(0), names::LOGPS_CHOSEN),
        (names::logps_rank(1), names::LOGPS_REJECTED),
    ];
    let mut renamed = Metrics::new();
    for (name, value) in metrics.iter() {
        let name = renames
            .iter()
            .find(|(from, _)| from == name)
            .map_or(name, |(_, to)| *to);
        renamed.push(name, value.clone());
    }
    renamed
}
