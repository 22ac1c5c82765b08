//! Gradient clipping by the global norm over every parameter, as torch's `clip_grad_norm_`.
//!
//! burn's own `GradientClipping::Norm` clips each parameter separately, which changes the
//! update's direction; TRL and the papers clip the whole gradient vector once.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            // Row sums first: a whole-tensor sum of millions of elements runs in parallel on
            // flex with a grouping that depends on work stealing, and the norm (so the clipped
            // update) would differ in its last bits between two runs of the same step.
            let squared = if D >= 2 {
                grad.square().flatten::<2>(0, D - 2).sum_dim(1).sum()
            } else {
                grad.square().sum()
            };
            self.total = Some(match self.total.take() {
                Some(total) => total + squared,
                None => squared,
            });
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad * self.factor);
        }
    }
}

/// The global L2 norm of the gradients of `module`'s parameters.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &GradientsParams,
) -> f64 {
    let mut visitor = SquaredNorm::<B> { grads, total: None };
    module.visit(&mut visitor);
    visitor
        .total
        .map_or(0.0, |t| t.into_scalar().elem::<f64>().sqrt())
}

/// Scales the gradients so their global norm is at most `max_norm`; returns the norm before
/// clipping (what TRL logs as `grad_norm`).
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: Option<f64>,
) -> f64 {
    let norm = global_grad_norm::<B, M>(module, grads);
    if let Some(max_norm) = max_norm
        && norm.is_finite()
        && norm > max_norm
    {
        let mut visitor = Scale {
            grads,
            factor: max_norm / (norm + 1e-6),
        };
        module.visit(&mut visitor);
    }
    norm
}
