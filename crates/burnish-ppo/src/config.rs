//! The `[ppo]` section of a run's TOML config: sampling, the reward, the KL penalty, the
//! advantage estimator and the PPO update. Defaults follow TRL's PPOConfig where it had one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::PpoError;
use crate::kl::{KlController, KlEstimator};

/// Which advantage estimator turns rewards into a learning signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvantageEstimator {
    /// Generalised advantage estimation with the policy's value head (PPO proper).
    #[default]
    Gae,
    /// REINFORCE leave-one-out over `samples_per_prompt` samples of each prompt.
    Rloo,
    /// Group-normalised rewards over `samples_per_prompt` samples of each prompt.
    Grpo,
}

/// Where the score of a response comes from, for `burnish train ppo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RewardSource {
    /// A reward model folder (`ppo.reward_model`) with a reward head.
    #[default]
    Model,
    /// VADER's compound sentiment of the response text, in [-1, 1].
    Vader,
}

/// How the value head starts when the policy has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueInit {
    /// From the reward model's head (InstructGPT), when there is a reward model of the same width.
    #[default]
    Reward,
    /// A fresh, seeded head.
    Fresh,
}

/// Everything of an on-policy run that the other trainers do not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PpoConfig {
    /// Most new tokens per response.
    pub response_length: usize,
    /// Sampling temperature (> 0); the PPO log-probs use the same temperature-scaled logits.
    pub temperature: f64,
    /// Sample from the k most likely tokens only (0 = all).
    pub top_k: usize,
    /// Nucleus sampling mass (1 = all).
    pub top_p: f64,
    /// Subtracted from the score of a response that reached `response_length` without EOS.
    pub missing_eos_penalty: Option<f64>,
    /// Responses per prompt (>= 2 for rloo and grpo).
    pub samples_per_prompt: usize,
    /// gae, rloo or grpo.
    pub advantage: AdvantageEstimator,
    /// k1, k2 or k3.
    pub kl_estimator: KlEstimator,
    /// The KL penalty's coefficient (its start value when adaptive).
    pub kl_coef: f64,
    /// Target KL per sequence for the adaptive controller; unset keeps `kl_coef` fixed.
    pub kl_target: Option<f64>,
    /// Horizon of the adaptive controller, in samples.
    pub kl_horizon: f64,
    /// GAE discount.
    pub gamma: f64,
    /// GAE trace decay.
    pub lam: f64,
    /// Whiten the per-token rewards (scale only) before GAE.
    pub whiten_rewards: bool,
    /// Whiten the advantages over the batch's real tokens.
    pub whiten_advantages: bool,
    /// PPO's ratio clip.
    pub cliprange: f64,
    /// The value loss's clip around the rollout's values.
    pub cliprange_value: f64,
    /// Weight of the value loss.
    pub vf_coef: f64,
    /// Passes over each rollout batch.
    pub ppo_epochs: usize,
    /// Mini-batches per rollout batch (one optimizer step each).
    pub num_mini_batches: usize,
    /// model (a reward model folder) or vader.
    pub reward: RewardSource,
    /// The reward model folder when `reward = "model"`.
    pub reward_model: Option<PathBuf>,
    /// Rescale reward-model scores to mean 0, std 1 on samples of the starting policy.
    pub normalize_reward: bool,
    /// Clip scores to [-score_clip, score_clip].
    pub score_clip: Option<f64>,
    /// How the value head starts when the policy has none.
    pub value_init: ValueInit,
    /// PPO-ptx: weight of a language-modelling loss on `ptx_data`, mixed into every step.
    pub ptx_coef: f64,
    /// PPO-ptx's prompt/completion Parquet file.
    pub ptx_data: Option<PathBuf>,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            response_length: 53,
            temperature: 0.7,
            top_k: 0,
            top_p: 1.0,
            missing_eos_penalty: None,
            samples_per_prompt: 1,
            advantage: AdvantageEstimator::Gae,
            kl_estimator: KlEstimator::K1,
            kl_coef: 0.05,
            kl_target: None,
            kl_horizon: 10_000.0,
            gamma: 1.0,
            lam: 0.95,
            whiten_rewards: false,
            whiten_advantages: true,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            ppo_epochs: 4,
            num_mini_batches: 1,
            reward: RewardSource::Model,
            reward_model: None,
            normalize_reward: false,
            score_clip: None,
            value_init: ValueInit::Reward,
            ptx_coef: 0.0,
            ptx_data: None,
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> PpoError {
    PpoError::Config {
        key: key.to_string(),
        message: message.into(),
    }
}

impl PpoConfig {
    /// Reads the opaque `[ppo]` table of a training config and validates it.
    pub fn from_table(table: &toml::Table) -> Result<Self, PpoError> {
        let config: PpoConfig = toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| PpoError::Table(e.message().to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), PpoError> {
        if self.response_length == 0 {
            return Err(invalid("response_length", "must be at least 1"));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(invalid(
                "temperature",
                format!(
                    "must be > 0 (PPO needs the sampler's distribution), got {}",
                    self.temperature
                ),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(invalid(
                "top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        if self.samples_per_prompt == 0 {
            return Err(invalid("samples_per_prompt", "must be at least 1"));
        }
        if self.advantage != AdvantageEstimator::Gae && self.samples_per_prompt < 2 {
            return Err(invalid(
                "samples_per_prompt",
                format!(
                    "must be at least 2 for advantage = {:?} (its baseline is the other samples of the prompt)",
                    self.advantage
                ),
            ));
        }
        let non_negative = [
            ("kl_coef", self.kl_coef),
            ("vf_coef", self.vf_coef),
            ("ptx_coef", self.ptx_coef),
        ];
        for (key, value) in non_negative {
            if !(value.is_finite() && value >= 0.0) {
                return Err(invalid(key, format!("must be >= 0, got {value}")));
            }
        }
        for (key, value) in [("gamma", self.gamma), ("lam", self.lam)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(key, format!("must be in [0, 1], got {value}")));
            }
        }
        for (key, value) in [
            ("cliprange", self.cliprange),
            ("cliprange_value", self.cliprange_value),
            ("kl_horizon", self.kl_horizon),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(key, format!("must be > 0, got {value}")));
            }
        }
        if let Some(target) = self.kl_target
            && !(target.is_finite() && target > 0.0)
        {
            return Err(invalid("kl_target", format!("must be > 0, got {target}")));
        }
        if let Some(clip) = self.score_clip
            && !(clip.is_finite() && clip > 0.0)
        {
            return Err(invalid("score_clip", format!("must be > 0, got {clip}")));
        }
        if self.ppo_epochs == 0 {
            return Err(invalid("ppo_epochs", "must be at least 1"));
        }
        if self.num_mini_batches == 0 {
            return Err(invalid("num_mini_batches", "must be at least 1"));
        }
        if self.ptx_coef > 0.0 && self.ptx_data.is_none() {
            return Err(invalid(
                "ptx_data",
                "is required when ptx_coef > 0: a prompt/completion Parquet file",
            ));
        }
        Ok(())
    }

    /// The KL controller this config starts with.
    pub fn kl_controller(&self) -> KlController {
        match self.kl_target {
            Some(target) => KlController::adaptive(self.kl_coef, target, self.kl_horizon),
            None => KlController::fixed(self.kl_coef),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PpoConfig, PpoError> {
        PpoConfig::from_table(&toml::from_str(text).unwrap())
    }

    #[test]
    fn bad_values_name_their_key() {
        let err = parse("response_length = 0").unwrap_err().to_string();
        assert!(err.contains("ppo.response_length"), "{err}");
        let err = parse("advantage = \"vtrace\"").unwrap_err().to_string();
        assert!(err.contains("[ppo]") && err.contains("vtrace"), "{err}");
        let err = parse("kl_estimator = \"k4\"").unwrap_err().to_string();
        assert!(err.contains("k4"), "{err}");
        let err = parse("advantage = \"rloo\"").unwrap_err().to_string();
        assert!(err.contains("ppo.samples_per_prompt"), "{err}");
        let err = parse("cliprange_vaule = 0.1").unwrap_err().to_string();
        assert!(err.contains("cliprange_vaule"), "{err}");
        assert!(parse("advantage = \"grpo\"\nsamples_per_prompt = 4").is_ok());
    }
}
