//! Numerically stable building blocks: every loss goes through these, never through
//! `log(sigmoid(x))` or an unshifted `log(sum(exp(x)))`, so |x| = 1e4 stays finite.

use burn::tensor::{Bool, Tensor, activation, backend::Backend};

/// `log sigma(x)`, computed as `-softplus(-x)` by the backend's stable kernel (finite for any
/// finite x, with a finite gradient).
pub fn log_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::log_sigmoid(x)
}

/// `-log sigma(x) = softplus(-x)`, stable for any finite x.
pub fn neg_log_sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activation::log_sigmoid(x).neg()
}

/// Log-sum-exp over the last axis, leaving out the entries where `excluded` is true:
/// `log sum_{j not excluded} exp(x_j)`, shifted by the row maximum.
/// `[n, k, k]` scores and mask -> `[n, k]`. Every row must keep at least one entry.
pub fn masked_logsumexp<B: Backend>(x: Tensor<B, 3>, excluded: Tensor<B, 3, Bool>) -> Tensor<B, 2> {
    // Excluded entries become -inf, whose exp (after subtracting the finite row maximum of the
    // kept entries) is exactly 0 in any float type, with a zero gradient.
    let masked = x.mask_fill(excluded, f64::NEG_INFINITY);
    let row_max = masked.clone().detach().max_dim(2);
    let sum = (masked - row_max.clone()).exp().sum_dim(2);
    (sum.log() + row_max).squeeze_dim(2)
}

/// `log(1 - exp(x))` for `x <= 0`, stable: a series near 0, `log1p(-exp(x))` elsewhere.
/// Inputs above `-1e-6` are clamped there, so `x = 0` (probability 1) gives about -13.8, not -inf.
pub fn log1m_exp<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    const SWITCH: f64 = -1e-3;
    const CEILING: f64 = -1e-6;
    // Each branch only ever sees inputs inside its own valid range, so the branch that is not
    // selected has a finite value and gradient too (no NaN leaks through mask_where).
    let near = x.clone().clamp(SWITCH, CEILING);
    // 1 - exp(a) = -a (1 + a/2 + a^2/6 + a^3/24 + ...): relative error < 1e-13 for |a| <= 1e-3.
    let horner = near.clone().div_scalar(24.0).add_scalar(1.0 / 6.0);
    let horner = horner.mul(near.clone()).add_scalar(0.5);
    let horner = horner.mul(near.clone()).add_scalar(1.0);
    let series = near.neg().mul(horner).log();
    let far = x.clone().clamp_max(SWITCH).exp().neg().log1p();
    let use_near = x.greater_elem(SWITCH);
    far.mask_where(use_near, series)
}
