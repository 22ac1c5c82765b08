//! PPO's losses over the flat response tokens of a mini-batch: the clipped surrogate of the
//! policy and the clipped value loss, with the statistics TRL logged for them.

use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor};

/// The clipped policy loss and what it measured.
pub struct PolicyLoss<B: Backend> {
    /// `mean(max(-A * ratio, -A * clip(ratio, 1 - eps, 1 + eps)))`.
    pub loss: Tensor<B, 1>,
    /// Fraction of tokens where the clipped term was the larger one.
    pub clipfrac: f64,
    /// `mean((new - old)^2) / 2`.
    pub approxkl: f64,
    /// Mean of the ratio.
    pub ratio_mean: f64,
    /// Largest `|ratio - 1|` (0 on the first mini-batch of an update).
    pub ratio_max_deviation: f64,
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    t.into_scalar().elem::<f64>()
}

/// PPO-clip (Schulman et al. 2017) on per-token log-probs and advantages.
pub fn policy_loss<B: Backend>(
    new_logps: Tensor<B, 1>,
    old_logps: Tensor<B, 1>,
    advantages: Tensor<B, 1>,
    cliprange: f64,
) -> PolicyLoss<B> {
    let log_ratio = new_logps - old_logps;
    let ratio = log_ratio.clone().exp();
    let unclipped = advantages.clone().neg() * ratio.clone();
    let clipped = advantages.neg() * ratio.clone().clamp(1.0 - cliprange, 1.0 + cliprange);
    let clipfrac = scalar(clipped.clone().greater(unclipped.clone()).float().mean());
    let loss = unclipped.max_pair(clipped).mean();
    let approxkl = scalar(log_ratio.detach().powi_scalar(2).mean()) / 2.0;
    let ratio = ratio.detach();
    PolicyLoss {
        loss,
        clipfrac,
        approxkl,
        ratio_mean: scalar(ratio.clone().mean()),
        ratio_max_deviation: scalar((ratio - 1.0).abs().max()),
    }
}

/// The clipped value loss: `0.5 * mean(max((v - R)^2, (v_clipped - R)^2))` with `v_clipped`
/// within `cliprange_value` of the rollout's values; returns it and the clip fraction.
pub fn value_loss<B: Backend>(
    values: Tensor<B, 1>,
    old_values: Tensor<B, 1>,
    returns: Tensor<B, 1>,
    cliprange_value: f64,
) -> (Tensor<B, 1>, f64) {
    let clipped =
        old_values.clone() + (values.clone() - old_values).clamp(-cliprange_value, cliprange_value);
    let unclipped_error = (values - returns.clone()).powi_scalar(2);
    let clipped_error = (clipped - returns).powi_scalar(2);
    let clipfrac = scalar(
        clipped_error
            .clone()
            .greater(unclipped_error.clone())
            .float()
            .mean(),
    );
    (
        unclipped_error.max_pair(clipped_error).mean() * 0.5,
        clipfrac,
    )
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    fn t(v: &[f32]) -> Tensor<Flex, 1> {
        Tensor::from_data(TensorData::new(v.to_vec(), [v.len()]), &Default::default())
    }

    #[test]
    fn clipping_takes_the_pessimistic_term() {
        // Token 0: ratio e^0.5 > 1.2 with A = 1 -> clipped (-1.2 > -1.65); token 1: ratio 1.
        let out = policy_loss(t(&[0.5, 0.0]), t(&[0.0, 0.0]), t(&[1.0, -2.0]), 0.2);
        let loss = out.loss.into_scalar();
        assert!((loss - (-1.2 + 2.0) / 2.0).abs() < 1e-6, "{loss}");
        assert!((out.clipfrac - 0.5).abs() < 1e-9);
        assert!((out.approxkl - 0.0625).abs() < 1e-6);
        let (v, frac) = value_loss(t(&[1.0, 0.0]), t(&[0.0, 0.0]), t(&[0.0, 1.0]), 0.2);
        // Row 0: (1 - 0)^2 = 1 vs (0.2 - 0)^2 -> 1; row 1: 1 vs 1 -> 1. 0.5 * mean = 0.5.
        assert!((v.into_scalar() - 0.5).abs() < 1e-6);
        assert_eq!(frac, 0.0);
    }
}
