//! Preference losses for aligning causal language models, as pure, backend-generic functions of
//! log-probs: a loss never sees a model. Pairwise losses (DPO and cDPO, IPO, SLiC hinge, robust
//! DPO, R-DPO, SimPO, ORPO, and the SFT / Preferred-FT / unlikelihood baselines) take summed
//! policy and reference log-probs of chosen and rejected completions with their token counts;
//! unpaired losses (KTO, `apo_zero_unpaired`) take one labelled completion per row; listwise
//! losses (PRO, Plackett-Luce DPO) take a ranking of n responses per prompt; reward-model losses
//! (Bradley-Terry with margin and centring, K-wise Bradley-Terry) take rewards. Each returns a
//! [`LossOutput`]: the mean loss (shape `[1]`, attached to the autodiff graph) and detached
//! metrics named as TRL names them. Trainers pick a loss from a TOML-loadable config,
//! [`PreferenceLoss`], [`UnpairedLoss`] or [`RewardLoss`], and call one method.
//!
//! All log-sigmoids and log-sum-exps are computed stably, so logits of 1e4 give finite losses and
//! gradients.

#![warn(missing_docs)]

mod error;
pub mod listwise;
pub mod numerics;
mod output;
pub mod pairwise;
mod params;
mod preference_loss;
mod ranking;
pub mod reward;
pub mod unpaired;

pub use error::{InputKind, LossError};
pub use listwise::ListwiseInputs;
pub use output::{LossOutput, Metrics, names};
pub use pairwise::PairwiseInputs;
pub use preference_loss::PreferenceLoss;
pub use ranking::ranks_from_scores;
pub use reward::{RewardListInputs, RewardLoss, RewardPairInputs};
pub use unpaired::{UnpairedInputs, UnpairedLoss};
