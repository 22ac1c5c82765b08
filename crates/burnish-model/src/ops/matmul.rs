//! The model's matrix products in its [`Precision`], with their own backward: the linear layers'
//! `x [n, d_in] @ weight [d_in, d_out]` and attention's batched `[b, h, m, k] @ [b, h, k, n]`
//! (rank 2 or 4). The backward computes `d lhs = grad @ rhs^T` and `d rhs = lhs^T @ grad` only
//! for the inputs that need a gradient (a frozen base weight under LoRA costs no product), in
//! the forward's precision.
//!
//! The generic body is burn's `matmul` (fp32) or the same on bf16 casts of the inputs (bf16,
//! what the GPU backends run: burn's bf16 element type, output rounded to bf16 as autocast's
//! is); flex runs `cpu_matmul::matmul_into` (the `gemm` crate in fp32, the AMX / AVX512-BF16
//! kernels in bf16, f32 output; a bf16 product of fewer than 16 rows, a decoding step, runs in
//! f32 since converting its weight would cost as much as the product); `Autodiff<B>` records
//! the backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{FloatDType, Tensor, TensorMetadata, TensorPrimitive};

use crate::precision::Precision;

/// The linear layers' matrix product as a backend extension. The defaults are the generic
/// bodies.
pub trait MatmulOps: Backend {
    /// `x [.., n, k] @ weight [.., k, m] -> [.., n, m]` in `precision`, the same leading
    /// dimensions on both sides (the flex kernel takes rank 2 and 4, other ranks the generic
    /// body).
    fn matmul_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        generic_matmul::<Self>(x, weight, precision)
    }

    /// `(grad @ weight^T, x^T @ grad)` for `grad [.., n, m]` (transposes of the last two
    /// axes), each only when asked for.
    fn matmul_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        precision: Precision,
        want: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2] {
        [
            want[0].then(|| generic_product::<Self>(&grad, &weight, [false, true], precision)),
            want[1].then(|| generic_product::<Self>(&x, &grad, [true, false], precision)),
        ]
    }
}

/// `lhs @ rhs`, each transposed (last two axes) when asked, through the generic body: the
/// backward's products.
fn generic_product<B: Backend>(
    lhs: &FloatTensor<B>,
    rhs: &FloatTensor<B>,
    transpose: [bool; 2],
    precision: Precision,
) -> FloatTensor<B> {
    let maybe_t = |t: &FloatTensor<B>, yes: bool| {
        let rank = t.shape().num_dims();
        if yes {
            B::float_swap_dims(t.clone(), rank - 2, rank - 1)
        } else {
            t.clone()
        }
    };
    generic_matmul::<B>(
        maybe_t(lhs, transpose[0]),
        maybe_t(rhs, transpose[1]),
        precision,
    )
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The generic body: burn's matmul, on bf16 casts of the inputs in bf16. Any rank from 2 up:
/// the leading dimensions (equal on both sides) are folded into one batch axis and restored.
fn generic_matmul<B: Backend>(
    lhs: FloatTensor<B>,
    rhs: FloatTensor<B>,
    precision: Precision,
) -> FloatTensor<B> {
    let (ls, rs) = (lhs.shape(), rhs.shape());
    let rank = ls.num_dims();
    let batch: usize = (0..rank.saturating_sub(2)).map(|i| ls[i]).product();
    let as_batch = |t: FloatTensor<B>, s: &burn::tensor::Shape| {
        let (rows, cols) = (s[rank - 2], s[rank - 1]);
        float::<B, 3>(B::float_reshape(t, [batch, rows, cols].into()))
    };
    let out = plain_product(as_batch(lhs, &ls), as_batch(rhs, &rs), precision);
    let mut dims: Vec<usize> = (0..rank - 2).map(|i| ls[i]).collect();
    dims.extend([ls[rank - 2], rs[rank - 1]]);
    B::float_reshape(out.into_primitive().tensor(), dims.into())
}

/// `lhs @ rhs` in plain tensor ops, in `precision` (bf16: on bf16 casts, the output cast back):
/// the generic bodies of the ops that multiply matrices.
pub(crate) fn plain_product<B: Backend, const D: usize>(
    lhs: Tensor<B, D>,
    rhs: Tensor<B, D>,
    precision: Precision,
) -> Tensor<B, D> {
    match precision {
        Precision::Fp32 => lhs.matmul(rhs),
        Precision::Bf16 => {
            let dtype = lhs.dtype();
            lhs.cast(FloatDType::BF16)
                .matmul(rhs.cast(FloatDType::BF16))
                .cast(dtype)
        }
    }
}

/// `x [.., n, k] @ weight [.., k, m]` in `precision` (equal leading dimensions), through the op
/// (differentiable on `Autodiff<B>`). `D` is at least 2, as for burn's `matmul`.
pub fn matmul<B: MatmulOps, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, D>,
    precision: Precision,
) -> Tensor<B, D> {
    float(B::matmul_forward(
        x.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        precision,
    ))
}

/// A linear layer applied to the last axis of `x` (`[..., d_in] -> [..., d_out]`), its product
/// through [`matmul`] in `precision`, its bias (if any) added in f32.
pub fn linear<B: MatmulOps, const D: usize>(
    layer: &Linear<B>,
    x: Tensor<B, D>,
    precision: Precision,
) -> Tensor<B, D> {
    let dims = x.dims();
    let d_in = dims[D - 1];
    let rows = dims[..D - 1].iter().product();
    let weight = layer.weight.val();
    let d_out = weight.dims()[1];
    let mut out_dims = dims;
    out_dims[D - 1] = d_out;
    let y = matmul(x.reshape([rows, d_in]), weight, precision).reshape(out_dims);
    match &layer.bias {
        Some(bias) => y + bias.val().unsqueeze::<D>(),
        None => y,
    }
}

#[derive(Debug)]
struct MatmulBackward;

impl<B: MatmulOps> Backward<B, 2> for MatmulBackward {
    /// (x's node, weight's node, precision).
    type State = (NodeId, NodeId, Precision);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_id, weight_id, precision) = ops.state;
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(x_id);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_id);
        let want = [node_x.is_some(), node_weight.is_some()];
        let [dx, dweight] = B::matmul_backward(x, weight, grad, precision, want);
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<B>(node.id, dx);
        }
        if let (Some(node), Some(dweight)) = (node_weight, dweight) {
            grads.register::<B>(node.id, dweight);
        }
    }
}

impl<B: MatmulOps, C: CheckpointStrategy> MatmulOps for Autodiff<B, C> {
    fn matmul_forward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        precision: Precision,
    ) -> FloatTensor<Self> {
        match MatmulBackward
            .prepare::<C>([x.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let weight_state = prep.checkpoint(&weight);
                let out = B::matmul_forward(x.primitive, weight.primitive, precision);
                prep.finish((x_state, weight_state, precision), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::matmul_forward(x.primitive, weight.primitive, precision))
            }
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::TensorData;
    use burn::tensor::ops::FloatTensor;

    use burn::tensor::DType;
    use rayon::prelude::*;

    use super::MatmulOps;
    use crate::ops::cpu_matmul::{Matrix, matmul_into};
    use crate::precision::Precision;

    /// The matrices of a rank-2 or rank-4 f32 tensor (one per leading index), last two axes
    /// transposed when asked, with the leading dimensions; `None` for anything else.
    fn matrices(t: &FlexTensor, transpose: bool) -> Option<(Vec<Matrix<'_>>, Vec<usize>)> {
        let layout = t.layout();
        let (shape, strides) = (layout.shape(), layout.strides());
        let rank = shape.num_dims();
        if t.dtype() != DType::F32 || !(rank == 2 || rank == 4) || strides.iter().any(|&s| s < 0) {
            return None;
        }
        let storage = t.storage::<f32>();
        let leading: Vec<usize> = (0..rank - 2).map(|i| shape[i]).collect();
        let mut out = Vec::new();
        let (outer, inner) = if rank == 4 {
            (shape[0], shape[1])
        } else {
            (1, 1)
        };
        for i in 0..outer {
            for j in 0..inner {
                let offset = if rank == 4 {
                    i * strides[0] as usize + j * strides[1] as usize
                } else {
                    0
                };
                let mut m = Matrix {
                    data: storage.get(layout.start_offset() + offset..)?,
                    rows: shape[rank - 2],
                    cols: shape[rank - 1],
                    row_stride: strides[rank - 2] as usize,
                    col_stride: strides[rank - 1] as usize,
                };
                if !m.in_bounds() {
                    return None;
                }
                if transpose {
                    m = m.t();
                }
                out.push(m);
            }
        }
        Some((out, leading))
    }

    /// `lhs @ rhs` (each optionally transposed) with the CPU kernel, one product per leading
    /// index (in parallel when there are several), or `None` when a view is not one it takes.
    fn product(
        lhs: &FlexTensor,
        rhs: &FlexTensor,
        transpose: [bool; 2],
        precision: Precision,
    ) -> Option<FlexTensor> {
        let (a, leading) = matrices(lhs, transpose[0])?;
        let (b, rhs_leading) = matrices(rhs, transpose[1])?;
        let (m, k, n) = (a[0].rows, a[0].cols, b[0].cols);
        if leading != rhs_leading || b[0].rows != k {
            return None;
        }
        let mut out = vec![0.0f32; a.len() * m * n];
        if a.len() == 1 {
            matmul_into(&mut out, a[0], b[0], false, precision);
        } else {
            out.par_chunks_mut((m * n).max(1))
                .zip(a.par_iter().zip(b.par_iter()))
                .for_each(|(dst, (&a, &b))| matmul_into(dst, a, b, false, precision));
        }
        let mut shape = leading;
        shape.extend([m, n]);
        Some(FlexTensor::from_data(TensorData::new(out, shape)))
    }

    impl MatmulOps for Flex {
        fn matmul_forward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            precision: Precision,
        ) -> FloatTensor<Self> {
            match product(&x, &weight, [false, false], precision) {
                Some(y) => y,
                None => super::generic_matmul::<Self>(x, weight, precision),
            }
        }

        fn matmul_backward(
            x: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            precision: Precision,
            want: [bool; 2],
        ) -> [Option<FloatTensor<Self>>; 2] {
            let either = |lhs: &FlexTensor, rhs: &FlexTensor, transpose: [bool; 2]| {
                product(lhs, rhs, transpose, precision).unwrap_or_else(|| {
                    super::generic_product::<Self>(lhs, rhs, transpose, precision)
                })
            };
            [
                want[0].then(|| either(&grad, &weight, [false, true])),
                want[1].then(|| either(&x, &grad, [true, false])),
            ]
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Distribution, Tensor, TensorData};

    use super::matmul;
    use crate::ops::bf16_matmul::round_bf16;
    use crate::ops::test_support::{host, max_diff};
    use crate::precision::Precision;

    type Ad = Autodiff<Flex>;

    /// Value and gradients of `sum(coeff * matmul(x, w))` through the op in `precision`, or
    /// through burn's plain matmul when `precision` is `None`.
    fn run(
        x: &Tensor<Ad, 2>,
        w: &Tensor<Ad, 2>,
        coeff: &Tensor<Ad, 2>,
        precision: Option<Precision>,
    ) -> [Vec<f32>; 3] {
        let (x, w) = (
            x.clone().detach().require_grad(),
            w.clone().detach().require_grad(),
        );
        let y = match precision {
            Some(p) => matmul(x.clone(), w.clone(), p),
            None => x.clone().matmul(w.clone()),
        };
        let grads = (y.clone() * coeff.clone()).sum().backward();
        [
            host(y.inner()),
            host(x.grad(&grads).unwrap()),
            host(w.grad(&grads).unwrap()),
        ]
    }

    fn random(shape: [usize; 2]) -> Tensor<Ad, 2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    /// fp32: the op equals burn's matmul in value and both gradients (1e-4 relative), also on
    /// a transposed (strided) input.
    #[test]
    fn fp32_matmul_equals_burn_matmul() {
        let (x, w, coeff) = (
            random([37, 70]),
            random([45, 70]).transpose(),
            random([37, 45]),
        );
        let got = run(&x, &w, &coeff, Some(Precision::Fp32));
        let want = run(&x, &w, &coeff, None);
        for (g, w) in got.iter().zip(&want) {
            let scale = w.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            assert!(
                max_diff(g, w) <= 1e-4 * scale,
                "{} (scale {scale})",
                max_diff(g, w)
            );
        }
    }

    /// Batched (rank 4, as attention runs it, with a transposed right operand): the op equals
    /// burn's matmul in fp32, values and gradients.
    #[test]
    fn batched_fp32_matmul_equals_burn_matmul() {
        let dev = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let q = Tensor::<Ad, 4>::random([2, 3, 17, 8], normal, &dev);
        let k = Tensor::<Ad, 4>::random([2, 3, 13, 8], normal, &dev);
        let coeff = Tensor::<Ad, 4>::random([2, 3, 17, 13], normal, &dev);
        let run = |fused: bool| {
            let (q, k) = (
                q.clone().detach().require_grad(),
                k.clone().detach().require_grad(),
            );
            let kt = k.clone().swap_dims(2, 3);
            let y = if fused {
                matmul(q.clone(), kt, Precision::Fp32)
            } else {
                q.clone().matmul(kt)
            };
            let grads = (y.clone() * coeff.clone()).sum().backward();
            [
                host(y.inner()),
                host(q.grad(&grads).unwrap()),
                host(k.grad(&grads).unwrap()),
            ]
        };
        for (g, w) in run(true).iter().zip(&run(false)) {
            assert!(max_diff(g, w) < 1e-4, "{}", max_diff(g, w));
        }
    }

    /// The generic body (what the GPU backends run) equals burn's matmul at rank 3, which it
    /// folds to one batch axis and back.
    #[test]
    fn generic_body_takes_any_rank() {
        let dev = Default::default();
        let normal = Distribution::Normal(0.0, 1.0);
        let a = Tensor::<Flex, 3>::random([3, 5, 4], normal, &dev);
        let b = Tensor::<Flex, 3>::random([3, 4, 6], normal, &dev);
        let got = super::generic_matmul::<Flex>(
            a.clone().into_primitive().tensor(),
            b.clone().into_primitive().tensor(),
            Precision::Fp32,
        );
        let got = Tensor::<Flex, 3>::from_primitive(burn::tensor::TensorPrimitive::Float(got));
        assert_eq!(got.dims(), [3, 5, 6]);
        assert!(max_diff(&host(got), &host(a.matmul(b))) < 1e-5);
    }

    /// bf16: the op equals burn's f32 matmul on bf16-rounded inputs (forward, and each
    /// backward product on its rounded inputs), within f32 accumulation error.
    #[test]
    fn bf16_matmul_equals_f32_on_rounded_inputs() {
        let (x, w, coeff) = (random([37, 70]), random([70, 45]), random([37, 45]));
        let [y, dx, dw] = run(&x, &w, &coeff, Some(Precision::Bf16));
        let round = |t: &Tensor<Ad, 2>| {
            let values: Vec<f32> = host(t.clone().inner())
                .into_iter()
                .map(round_bf16)
                .collect();
            Tensor::<Flex, 2>::from_data(TensorData::new(values, t.dims()), &Default::default())
        };
        let (xr, wr, cr) = (round(&x), round(&w), round(&coeff));
        let want_y = host(xr.clone().matmul(wr.clone()));
        let want_dx = host(cr.clone().matmul(wr.transpose()));
        let want_dw = host(xr.transpose().matmul(cr));
        for (got, want) in [(y, want_y), (dx, want_dx), (dw, want_dw)] {
            assert!(max_diff(&got, &want) < 1e-4, "{}", max_diff(&got, &want));
        }
    }
}
