//! LayerNorm (GPT-2) and RMSNorm (Llama, Qwen2) over the last axis, fused: one pass per row
//! forward and one backward, instead of the chain of reductions and element-wise tensor ops
//! (each a pass over memory and a node of the autodiff graph) the plain version composes.
//!
//! With `r = 1 / sqrt(var + eps)` (LayerNorm, `x` centred by its mean) or `1 / sqrt(mean(x^2) +
//! eps)` (RMSNorm), `xhat = x r` and `y = xhat w (+ b)`, the backward is
//! `dx = r (g w - mean(g w) - xhat mean(g w xhat))` (RMSNorm: no `mean(g w)` term),
//! `dw = sum_rows(g xhat)`, `db = sum_rows(g)`. Nothing is saved but the input and weight.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// Which normalisation, and its epsilon.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormKind {
    /// RMSNorm when true (no centring), LayerNorm otherwise.
    pub rms: bool,
    /// Added to the variance (or mean square) before the square root.
    pub eps: f64,
}

/// The fused norm as a backend extension. The defaults are the generic bodies.
pub trait NormOps: Backend {
    /// `x [rows, d]`, `weight [d]` -> `[rows, d]`, without the bias (added by the caller).
    fn norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, kind: NormKind) -> FloatTensor<Self> {
        generic_forward::<Self>(x, weight, kind)
    }

    /// (`dx [rows, d]`, `dweight [d]`) from the incoming gradient `[rows, d]`.
    fn norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        kind: NormKind,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic_backward::<Self>(x, weight, kind, grad)
    }
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `(x - mean)` (LayerNorm) or `x` (RMSNorm), and `r`, `[rows, 1]`.
fn centred_and_scale<B: Backend>(x: Tensor<B, 2>, kind: NormKind) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let x = if kind.rms {
        x
    } else {
        x.clone() - x.mean_dim(1)
    };
    let r = (x.clone().square().mean_dim(1) + kind.eps).sqrt().recip();
    (x, r)
}

/// The generic forward body, in tensor ops.
fn generic_forward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    kind: NormKind,
) -> FloatTensor<B> {
    let (x, r) = centred_and_scale(float::<B, 2>(x), kind);
    (x * r * float::<B, 1>(weight).unsqueeze::<2>())
        .into_primitive()
        .tensor()
}

/// The generic backward body, in tensor ops.
fn generic_backward<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    kind: NormKind,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (x, r) = centred_and_scale(float::<B, 2>(x), kind);
    let grad = float::<B, 2>(grad);
    let xhat = x * r.clone();
    let gw = grad.clone() * float::<B, 1>(weight).unsqueeze::<2>();
    let mut inner = gw.clone() - xhat.clone() * (gw * xhat.clone()).mean_dim(1);
    if !kind.rms {
        inner = inner.clone() - inner.mean_dim(1);
    }
    let dweight = (grad * xhat).sum_dim(0).squeeze_dim::<1>(0);
    (
        (inner * r).into_primitive().tensor(),
        dweight.into_primitive().tensor(),
    )
}

/// The norm of `x [..., d]` through the fused op (differentiable on `Autodiff<B>`): the affine
/// scale by `weight [d]` included, the bias not.
pub fn norm<B: NormOps, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    kind: NormKind,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d = dims[D - 1];
    let rows = x.shape().num_elements() / d.max(1);
    let y = B::norm(
        x.reshape([rows, d]).into_primitive().tensor(),
        weight.into_primitive().tensor(),
        kind,
    );
    float::<B, 2>(y).reshape(dims)
}

#[derive(Debug)]
struct NormBackward;

impl<B: NormOps> Backward<B, 2> for NormBackward {
    /// Input's node, weight's node, the kind.
    type State = (NodeId, NodeId, NormKind);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, weight_id, kind) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_id);
        let (dx, dweight) = B::norm_backward(x, weight, kind, grad);
        if let Some(node) = node_x {
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, dweight);
        }
    }
}

impl<B: NormOps, C: CheckpointStrategy> NormOps for Autodiff<B, C> {
    fn norm(x: FloatTensor<Self>, weight: FloatTensor<Self>, kind: NormKind) -> FloatTensor<Self> {
        match NormBackward
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), kind);
                prep.finish(state, B::norm(x.primitive, weight.primitive, kind))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::norm(x.primitive, weight.primitive, kind)),
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! One rayon task per group of rows; the weight gradient is summed per task, then across
    //! tasks.

    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;
    use burn::tensor::ops::FloatTensor;
    use rayon::prelude::*;

    use super::{NormKind, NormOps};
    use crate::ops::simd::contiguous_f32;

    /// Rows per rayon task.
    const ROWS_PER_TASK: usize = 32;

    /// A row's mean (0 for RMSNorm) and `r`.
    #[inline(always)]
    fn row_stats(row: &[f32], kind: NormKind) -> (f32, f32) {
        let d = row.len() as f32;
        let mean = if kind.rms {
            0.0
        } else {
            row.iter().sum::<f32>() / d
        };
        let var = row.iter().map(|&x| (x - mean) * (x - mean)).sum::<f32>() / d;
        (mean, 1.0 / (var + kind.eps as f32).sqrt())
    }

    /// `x`'s rows of `d = weight.len()` elements, when `x`'s last axis is `d`.
    fn rows_match(x: &FlexTensor, weight: &[f32]) -> bool {
        let shape = x.layout().shape();
        shape.num_dims() == 2 && shape[1] == weight.len() && !weight.is_empty()
    }

    impl NormOps for Flex {
        fn norm(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            kind: NormKind,
        ) -> FloatTensor<Self> {
            let (Some(xc), Some(wc)) = (contiguous_f32(&x), contiguous_f32(&weight)) else {
                return super::generic_forward::<Self>(x, weight, kind);
            };
            let (Some(xs), Some(w)) = (xc.as_slice::<f32>(), wc.as_slice::<f32>()) else {
                return super::generic_forward::<Self>(x, weight, kind);
            };
            if !rows_match(&xc, w) {
                return super::generic_forward::<Self>(x, weight, kind);
            }
            let (shape, d) = (xc.layout().shape().clone(), w.len());
            let mut out = vec![0.0f32; xs.len()];
            out.par_chunks_mut(ROWS_PER_TASK * d)
                .zip(xs.par_chunks(ROWS_PER_TASK * d))
                .for_each(|(dst, src)| {
                    for (y, x) in dst.chunks_mut(d).zip(src.chunks(d)) {
                        let (mean, r) = row_stats(x, kind);
                        for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                            *y = (x - mean) * r * w;
                        }
                    }
                });
            FlexTensor::from_data(TensorData::new(out, shape))
        }

        fn norm_backward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            kind: NormKind,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let (Some(xc), Some(wc), Some(gc)) = (
                contiguous_f32(&x),
                contiguous_f32(&weight),
                contiguous_f32(&grad),
            ) else {
                return super::generic_backward::<Self>(x, weight, kind, grad);
            };
            let (Some(xs), Some(w), Some(gs)) = (
                xc.as_slice::<f32>(),
                wc.as_slice::<f32>(),
                gc.as_slice::<f32>(),
            ) else {
                return super::generic_backward::<Self>(x, weight, kind, grad);
            };
            if !rows_match(&xc, w) || gs.len() != xs.len() {
                return super::generic_backward::<Self>(x, weight, kind, grad);
            }
            let (shape, d) = (xc.layout().shape().clone(), w.len());
            let mut dx = vec![0.0f32; xs.len()];
            let dweight = dx
                .par_chunks_mut(ROWS_PER_TASK * d)
                .zip(
                    xs.par_chunks(ROWS_PER_TASK * d)
                        .zip(gs.par_chunks(ROWS_PER_TASK * d)),
                )
                .map(|(dst, (src, grad))| {
                    let mut dweight = vec![0.0f32; d];
                    for ((dx, x), g) in dst.chunks_mut(d).zip(src.chunks(d)).zip(grad.chunks(d)) {
                        let (mean, r) = row_stats(x, kind);
                        let (mut sum_gw, mut sum_gw_xhat) = (0.0f32, 0.0f32);
                        for (((&x, &g), &w), dw) in x.iter().zip(g).zip(w).zip(dweight.iter_mut()) {
                            let xhat = (x - mean) * r;
                            sum_gw += g * w;
                            sum_gw_xhat += g * w * xhat;
                            *dw += g * xhat;
                        }
                        let n = d as f32;
                        let mean_gw = if kind.rms { 0.0 } else { sum_gw / n };
                        let mean_gw_xhat = sum_gw_xhat / n;
                        for (((dx, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                            let xhat = (x - mean) * r;
                            *dx = r * (g * w - mean_gw - xhat * mean_gw_xhat);
                        }
                    }
                    dweight
                })
                // Collected in task order and summed in that order: rayon's `reduce` groups
                // the partial sums by how work was stolen, so the weight gradient would round
                // differently from run to run and break bit-exact resumes.
                .collect::<Vec<_>>()
                .into_iter()
                .fold(vec![0.0f32; d], |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                });
            (
                FlexTensor::from_data(TensorData::new(dx, shape)),
                FlexTensor::from_data(TensorData::new(dweight, [d])),
            )
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    use super::{NormKind, NormOps, generic_backward, norm};
    use crate::ops::test_support::{host, max_diff};

    /// The fused norm equals the plain formulas (LayerNorm through `var_mean_bias`, RMSNorm
    /// through the mean square) in value and in the gradients of the input and the weight, on
    /// a 3-D input; the flex backward equals the generic one.
    #[test]
    fn fused_norm_equals_the_plain_formulas() {
        type Ad = Autodiff<Flex>;
        let dev = Default::default();
        let x = Tensor::<Ad, 3>::random([3, 37, 48], Distribution::Normal(0.5, 2.0), &dev);
        let w = Tensor::<Ad, 1>::random([48], Distribution::Normal(1.0, 0.3), &dev);
        let coeff = Tensor::<Ad, 3>::random([3, 37, 48], Distribution::Normal(0.0, 1.0), &dev);
        for rms in [false, true] {
            let kind = NormKind { rms, eps: 1e-5 };
            let run = |fused: bool| {
                let (x, w) = (
                    x.clone().detach().require_grad(),
                    w.clone().detach().require_grad(),
                );
                let y = if fused {
                    norm(x.clone(), w.clone(), kind)
                } else if rms {
                    let rms = (x.clone().square().mean_dim(2) + kind.eps).sqrt();
                    x.clone() / rms * w.clone().unsqueeze::<3>()
                } else {
                    let (var, mean) = x.clone().var_mean_bias(2);
                    (x.clone() - mean) / (var + kind.eps).sqrt() * w.clone().unsqueeze::<3>()
                };
                let grads = (y.clone() * coeff.clone()).sum().backward();
                (
                    host(y.inner()),
                    host(x.grad(&grads).unwrap()),
                    host(w.grad(&grads).unwrap()),
                )
            };
            let ((y, dx, dw), (want_y, want_dx, want_dw)) = (run(true), run(false));
            assert!(max_diff(&y, &want_y) < 1e-5, "rms={rms}: values");
            assert!(
                max_diff(&dx, &want_dx) < 1e-4,
                "rms={rms}: d x {}",
                max_diff(&dx, &want_dx)
            );
            assert!(
                max_diff(&dw, &want_dw) < 1e-3,
                "rms={rms}: d w {}",
                max_diff(&dw, &want_dw)
            );

            let p2 = |t: Tensor<Ad, 3>| t.inner().reshape([3 * 37, 48]).into_primitive().tensor();
            let (x2, w1, g2) = (
                p2(x.clone()),
                w.clone().inner().into_primitive().tensor(),
                p2(coeff.clone()),
            );
            let (dx, dw) = Flex::norm_backward(x2.clone(), w1.clone(), kind, g2.clone());
            let (want_dx, want_dw) = generic_backward::<Flex>(x2, w1, kind, g2);
            let f = |t| {
                host(
                    Tensor::<Flex, 1>::from_primitive(burn::tensor::TensorPrimitive::Float(t))
                        .reshape([-1]),
                )
            };
            let f2 = |t| {
                host(Tensor::<Flex, 2>::from_primitive(
                    burn::tensor::TensorPrimitive::Float(t),
                ))
            };
            assert!(
                max_diff(&f2(dx), &f2(want_dx)) < 1e-4,
                "rms={rms}: generic d x"
            );
            assert!(
                max_diff(&f(dw), &f(want_dw)) < 1e-3,
                "rms={rms}: generic d w"
            );
        }
    }
}
