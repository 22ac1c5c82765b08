//! Rotary position embedding (transformers' rotate-half layout) fused with the head split and a
//! scale: `x [batch, seq, heads, head_dim]` (a projection's output, as it lies in memory) ->
//! `[batch, heads, seq, head_dim]`, contiguous, each head's pairs `(x_i, x_{i + d/2})` rotated by
//! `position * inv_freq_i`, times `scale` (the attention's `1/sqrt(head_dim)` rides along on the
//! queries). One pass instead of the swap, two narrows, a negation, a concatenation, two
//! broadcast products and a sum over a strided view, each a full pass and an autodiff node.
//!
//! The rotation is linear, so the backward needs only the angles: the inverse rotation of the
//! gradient, times `scale`, laid back out as `[batch, seq, heads, head_dim]`. The generic bodies
//! are the plain tensor-op formulas (what the GPU backends run); flex runs one multithreaded
//! pass each way; `Autodiff<B>` keeps the angles and records the backward.

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// The fused RoPE as a backend extension. The defaults are the generic bodies.
pub trait RopeOps: Backend {
    /// `x [b, s, h, d]`, `cos`/`sin [b, s, d/2]` -> `[b, h, s, d]`, rotated and scaled.
    fn rope_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        generic_forward::<Self>(x, cos, sin, scale)
    }

    /// `grad [b, h, s, d]` -> `d x [b, s, h, d]`.
    fn rope_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        generic_backward::<Self>(grad, cos, sin, scale)
    }
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `[b, s, d/2]` angles as `[b, 1, s, d]`, both halves alike.
fn full_width<B: Backend>(half: FloatTensor<B>) -> Tensor<B, 4> {
    let half = float::<B, 3>(half);
    Tensor::cat(vec![half.clone(), half], 2).unsqueeze_dim::<4>(1)
}

/// `(-x2, x1)` for `x = (x1, x2)` split in halves of the last axis; `sign = -1` gives
/// `(x2, -x1)`.
fn rotate_half<B: Backend>(x: Tensor<B, 4>, sign: f32) -> Tensor<B, 4> {
    let half = x.dims()[3] / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.narrow(3, half, half);
    Tensor::cat(vec![x2 * (-sign), x1 * sign], 3)
}

/// The generic forward body: transformers' `apply_rotary_pos_emb` after the head split.
fn generic_forward<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let x = float::<B, 4>(x).swap_dims(1, 2);
    let (cos, sin) = (full_width::<B>(cos), full_width::<B>(sin));
    ((x.clone() * cos + rotate_half(x, 1.0) * sin) * scale)
        .into_primitive()
        .tensor()
}

/// The generic backward body: the inverse rotation, scaled, back to `[b, s, h, d]`.
fn generic_backward<B: Backend>(
    grad: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
    scale: f32,
) -> FloatTensor<B> {
    let g = float::<B, 4>(grad);
    let (cos, sin) = (full_width::<B>(cos), full_width::<B>(sin));
    ((g.clone() * cos + rotate_half(g, -1.0) * sin) * scale)
        .swap_dims(1, 2)
        .into_primitive()
        .tensor()
}

/// `x [b, s, h, d]` -> `[b, h, s, d]` rotated by the angles whose cosines and sines are `cos`
/// and `sin` (`[b, s, d/2]`), times `scale`, through the fused op (differentiable in `x` on
/// `Autodiff<B>`; the angles are constants).
pub fn rope<B: RopeOps>(
    x: Tensor<B, 4>,
    cos: Tensor<B, 3>,
    sin: Tensor<B, 3>,
    scale: f32,
) -> Tensor<B, 4> {
    float(B::rope_forward(
        x.into_primitive().tensor(),
        cos.into_primitive().tensor(),
        sin.into_primitive().tensor(),
        scale,
    ))
}

#[derive(Debug)]
struct RopeBackward;

impl<B: RopeOps> Backward<B, 1> for RopeBackward {
    /// (cos, sin, scale).
    type State = (FloatTensor<B>, FloatTensor<B>, f32);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (cos, sin, scale) = ops.state;
        if let Some(node) = node {
            grads.register::<B>(node.id, B::rope_backward(grad, cos, sin, scale));
        }
    }
}

impl<B: RopeOps, C: CheckpointStrategy> RopeOps for Autodiff<B, C> {
    fn rope_forward(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        match RopeBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::rope_forward(
                    x.primitive,
                    cos.primitive.clone(),
                    sin.primitive.clone(),
                    scale,
                );
                prep.finish((cos.primitive, sin.primitive, scale), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rope_forward(
                x.primitive,
                cos.primitive,
                sin.primitive,
                scale,
            )),
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;
    use burn::tensor::ops::FloatTensor;
    use rayon::prelude::*;

    use super::RopeOps;
    use crate::ops::simd::contiguous_f32;

    /// The kernel's inputs: `[b, s, h, d]` of an `x`-like tensor (laid out `[b, h, s, d]` when
    /// `heads_first`) and contiguous f32 copies of it and of the angles `[b, s, d/2]`; `None`
    /// sends the call to the generic body.
    fn kernel_inputs(
        x: &FlexTensor,
        cos: &FlexTensor,
        sin: &FlexTensor,
        heads_first: bool,
    ) -> Option<([usize; 4], [FlexTensor; 3])> {
        let (xs, cs) = (x.layout().shape(), cos.layout().shape());
        if xs.num_dims() != 4 || cs.num_dims() != 3 || sin.layout().shape() != cs {
            return None;
        }
        let [b, s, h, d] = if heads_first {
            [xs[0], xs[2], xs[1], xs[3]]
        } else {
            [xs[0], xs[1], xs[2], xs[3]]
        };
        if d % 2 != 0 || (cs[0], cs[1], cs[2]) != (b, s, d / 2) {
            return None;
        }
        let copies = [
            contiguous_f32(x)?,
            contiguous_f32(cos)?,
            contiguous_f32(sin)?,
        ];
        // `as_slice` is `Some` for these contiguous f32 copies; checked once here.
        copies
            .iter()
            .all(|t| t.as_slice::<f32>().is_some())
            .then_some(([b, s, h, d], copies))
    }

    /// The elements of a contiguous f32 copy from [`kernel_inputs`].
    fn slice(t: &FlexTensor) -> &[f32] {
        t.as_slice::<f32>().expect("checked by kernel_inputs")
    }

    /// `(dst_1, dst_2) = scale * (x1 c - x2 s, x2 c + x1 s)` (`sign = 1`, the rotation) or
    /// `scale * (x1 c + x2 s, x2 c - x1 s)` (`sign = -1`, its inverse), per half.
    #[inline(always)]
    fn rotate(src: &[f32], dst: &mut [f32], cos: &[f32], sin: &[f32], scale: f32, sign: f32) {
        let half = cos.len();
        let (x1, x2) = src.split_at(half);
        let (d1, d2) = dst.split_at_mut(half);
        for i in 0..half {
            let (c, s) = (cos[i] * scale, sin[i] * scale * sign);
            d1[i] = x1[i] * c - x2[i] * s;
            d2[i] = x2[i] * c + x1[i] * s;
        }
    }

    impl RopeOps for Flex {
        fn rope_forward(
            x: FloatTensor<Self>,
            cos: FloatTensor<Self>,
            sin: FloatTensor<Self>,
            scale: f32,
        ) -> FloatTensor<Self> {
            let Some(([b, s, h, d], [xc, cc, sc])) = kernel_inputs(&x, &cos, &sin, false) else {
                return super::generic_forward::<Self>(x, cos, sin, scale);
            };
            let (src, cv, sv) = (slice(&xc), slice(&cc), slice(&sc));
            let half = d / 2;
            let mut out = vec![0.0f32; b * h * s * d];
            // One task per (batch, head): its `[s, d]` block of the output is contiguous.
            out.par_chunks_mut((s * d).max(1))
                .enumerate()
                .for_each(|(bh, block)| {
                    let (bi, hi) = (bh / h, bh % h);
                    for si in 0..s {
                        let row = bi * s + si;
                        rotate(
                            &src[(row * h + hi) * d..][..d],
                            &mut block[si * d..][..d],
                            &cv[row * half..][..half],
                            &sv[row * half..][..half],
                            scale,
                            1.0,
                        );
                    }
                });
            FlexTensor::from_data(TensorData::new(out, [b, h, s, d]))
        }

        fn rope_backward(
            grad: FloatTensor<Self>,
            cos: FloatTensor<Self>,
            sin: FloatTensor<Self>,
            scale: f32,
        ) -> FloatTensor<Self> {
            let Some(([b, s, h, d], [gc, cc, sc])) = kernel_inputs(&grad, &cos, &sin, true) else {
                return super::generic_backward::<Self>(grad, cos, sin, scale);
            };
            let (src, cv, sv) = (slice(&gc), slice(&cc), slice(&sc));
            let half = d / 2;
            let mut out = vec![0.0f32; b * s * h * d];
            // One task per batch row: its `[s, h, d]` block of the output is contiguous.
            out.par_chunks_mut((s * h * d).max(1))
                .enumerate()
                .for_each(|(bi, block)| {
                    for si in 0..s {
                        let row = bi * s + si;
                        for hi in 0..h {
                            rotate(
                                &src[((bi * h + hi) * s + si) * d..][..d],
                                &mut block[(si * h + hi) * d..][..d],
                                &cv[row * half..][..half],
                                &sv[row * half..][..half],
                                scale,
                                -1.0,
                            );
                        }
                    }
                });
            FlexTensor::from_data(TensorData::new(out, [b, s, h, d]))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor};

    use super::rope;
    use crate::ops::test_support::{host, max_diff};

    /// The fused op equals transformers' formula after the head split (the plain tensor ops the
    /// model ran before), in value and gradient, on the flex kernel and on the generic bodies.
    #[test]
    fn fused_rope_equals_rotate_half_formula() {
        type Ad = Autodiff<Flex>;
        let dev = Default::default();
        let [b, s, h, d] = [3, 7, 4, 16];
        let x = Tensor::<Ad, 4>::random([b, s, h, d], Distribution::Normal(0.0, 1.0), &dev);
        let angles = Tensor::<Ad, 3>::random([b, s, d / 2], Distribution::Uniform(-4.0, 4.0), &dev);
        let (cos, sin) = (angles.clone().cos(), angles.sin());
        let coeff = Tensor::<Ad, 4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &dev);
        let scale = 0.25;
        let plain = |x: Tensor<Ad, 4>| {
            let x = x.swap_dims(1, 2);
            let full = |t: &Tensor<Ad, 3>| {
                Tensor::cat(vec![t.clone(), t.clone()], 2).unsqueeze_dim::<4>(1)
            };
            let x1 = x.clone().narrow(3, 0, d / 2);
            let x2 = x.clone().narrow(3, d / 2, d / 2);
            let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
            (x * full(&cos) + rotated * full(&sin)) * scale
        };
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                rope(x.clone(), cos.clone(), sin.clone(), scale)
            } else {
                plain(x.clone())
            };
            let grads = (y.clone() * coeff.clone()).sum().backward();
            (host(y.inner()), host(x.grad(&grads).unwrap()))
        };
        let ((y, dx), (want_y, want_dx)) = (run(true), run(false));
        assert!(
            max_diff(&y, &want_y) < 1e-5,
            "values differ by {}",
            max_diff(&y, &want_y)
        );
        assert!(
            max_diff(&dx, &want_dx) < 1e-5,
            "gradients differ by {}",
            max_diff(&dx, &want_dx)
        );

        let p = |t: Tensor<Flex, 3>| t.into_primitive().tensor();
        let (ci, si) = (cos.inner(), sin.inner());
        let generic = super::generic_forward::<Flex>(
            x.inner().into_primitive().tensor(),
            p(ci.clone()),
            p(si.clone()),
            scale,
        );
        let generic =
            Tensor::<Flex, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(generic));
        assert!(max_diff(&host(generic), &want_y) < 1e-5);
        let back = super::generic_backward::<Flex>(
            coeff.inner().into_primitive().tensor(),
            p(ci),
            p(si),
            scale,
        );
        let back = Tensor::<Flex, 4>::from_primitive(burn::tensor::TensorPrimitive::Float(back));
        assert!(max_diff(&host(back), &want_dx) < 1e-5);
    }
}
