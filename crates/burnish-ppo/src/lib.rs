//! burnish-ppo: the on-policy fallback of the InstructGPT pipeline: the policy writes its own
//! completions and learns from a reward, held near a frozen reference by a per-token KL penalty.
//!
//! The pieces read like the algorithm: [`rollout`] samples responses with the KV cache and
//! scores their tokens (policy, reference, value head) from temperature-scaled logits;
//! [`reward`] turns a response into a score through one trait (a reward model, a rule such as
//! the VADER port in [`sentiment`], or a closure); [`kl`] holds the k1/k2/k3 estimators and the
//! fixed or adaptive KL coefficient; [`advantage`] computes GAE with whitening, or the
//! critic-free RLOO and GRPO baselines; [`loss`] is PPO-clip and the clipped value loss;
//! [`trainer`] runs updates with the checkpoints, metrics, progress and NaN guard of
//! burnish-train, and [`pipeline`] is what `burnish train ppo` calls.

pub mod advantage;
pub mod config;
pub mod error;
pub mod kl;
pub mod loss;
pub mod pipeline;
pub mod reward;
pub mod rollout;
pub mod sentiment;
pub mod trainer;

pub use config::{AdvantageEstimator, PpoConfig, RewardSource, ValueInit};
pub use error::PpoError;
pub use kl::{KlController, KlEstimator};
pub use reward::{ClosureReward, RewardFunction, RewardModelScorer, ScoreInput, TextReward};
pub use trainer::{PpoOutcome, PpoRun, UpdateSummary, train_ppo};
