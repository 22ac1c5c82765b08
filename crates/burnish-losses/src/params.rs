//! Range checks shared by the loss functions and the config's `validate()`.

use crate::error::LossError;

/// `beta` must be finite and > 0.
pub(crate) fn check_beta(loss: &'static str, beta: f64) -> Result<(), LossError> {
    if beta.is_finite() && beta > 0.0 {
        Ok(())
    } else {
        Err(LossError::InvalidParameter {
            loss,
            name: "beta",
            value: beta,
            expected: "a finite number > 0",
        })
    }
}

/// Label smoothing `eps` must lie in [0, 0.5).
pub(crate) fn check_label_smoothing(loss: &'static str, eps: f64) -> Result<(), LossError> {
    if (0.0..0.5).contains(&eps) {
        Ok(())
    } else {
        Err(LossError::InvalidParameter {
            loss,
            name: "label_smoothing",
            value: eps,
            expected: "0 <= label_smoothing < 0.5",
        })
    }
}

/// A weight or coefficient must be finite and >= 0.
pub(crate) fn check_non_negative(
    loss: &'static str,
    name: &'static str,
    value: f64,
) -> Result<(), LossError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(LossError::InvalidParameter {
            loss,
            name,
            value,
            expected: "a finite number >= 0",
        })
    }
}
