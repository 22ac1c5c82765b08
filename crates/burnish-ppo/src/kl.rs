//! The KL penalty to the frozen reference: per-token estimators of KL(policy || reference) from
//! the log-probs of the sampled tokens, and the coefficient that weighs it, fixed or adapted
//! towards a target as in Ziegler et al. 2019.

use serde::{Deserialize, Serialize};

/// How one sampled token estimates KL(policy || reference) (Schulman, "Approximating KL
/// divergence", 2020), with `r = log p_ref(x) - log p(x)` and `x` drawn from the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    /// `-r`: unbiased, can be negative per token (TRL's default).
    #[default]
    K1,
    /// `r^2 / 2`: biased, always >= 0, low variance.
    K2,
    /// `(e^r - 1) - r`: unbiased and always >= 0.
    K3,
}

impl KlEstimator {
    /// The estimate of one token from its policy and reference log-probs.
    pub fn estimate(self, logp: f32, ref_logp: f32) -> f32 {
        let r = ref_logp - logp;
        match self {
            KlEstimator::K1 => -r,
            KlEstimator::K2 => 0.5 * r * r,
            KlEstimator::K3 => r.exp_m1() - r,
        }
    }
}

/// The KL coefficient: fixed, or adapted after every update towards a target KL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    /// The current coefficient beta.
    pub coef: f64,
    /// The target KL per sequence (nats) of the adaptive controller; `None` keeps `coef` fixed.
    pub target: Option<f64>,
    /// The adaptive controller's horizon, in samples.
    pub horizon: f64,
}

impl KlController {
    /// A fixed coefficient.
    pub fn fixed(coef: f64) -> Self {
        KlController {
            coef,
            target: None,
            horizon: 10_000.0,
        }
    }

    /// The adaptive controller of Ziegler et al. 2019, starting at `coef`.
    pub fn adaptive(coef: f64, target: f64, horizon: f64) -> Self {
        KlController {
            coef,
            target: Some(target),
            horizon,
        }
    }

    /// After an update of `samples` sequences whose mean KL was `current`:
    /// `e = clip(current / target - 1, -0.2, 0.2)`, `coef *= 1 + e * samples / horizon`.
    pub fn update(&mut self, current: f64, samples: usize) {
        if let Some(target) = self.target {
            let error = (current / target - 1.0).clamp(-0.2, 0.2);
            self.coef *= 1.0 + error * samples as f64 / self.horizon;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimators_on_one_token() {
        // log p = -1, log p_ref = -2: r = -1.
        assert_eq!(KlEstimator::K1.estimate(-1.0, -2.0), 1.0);
        assert_eq!(KlEstimator::K2.estimate(-1.0, -2.0), 0.5);
        let k3 = KlEstimator::K3.estimate(-1.0, -2.0);
        assert!((k3 - ((-1.0f32).exp() - 1.0 + 1.0)).abs() < 1e-6);
        for k in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            assert_eq!(k.estimate(-0.5, -0.5), 0.0);
        }
    }

    /// Ziegler et al.'s controller: the error is clipped to +-0.2 and scaled by n / horizon.
    #[test]
    fn adaptive_controller_follows_its_formula() {
        let mut c = KlController::adaptive(0.1, 6.0, 10_000.0);
        c.update(9.0, 512); // error 0.5 -> clipped to 0.2
        assert!((c.coef - 0.1 * (1.0 + 0.2 * 512.0 / 10_000.0)).abs() < 1e-12);
        let before = c.coef;
        c.update(5.4, 256); // error -0.1
        assert!((c.coef - before * (1.0 - 0.1 * 256.0 / 10_000.0)).abs() < 1e-12);
        let mut fixed = KlController::fixed(0.05);
        fixed.update(100.0, 1000);
        assert_eq!(fixed.coef, 0.05);
    }
}
