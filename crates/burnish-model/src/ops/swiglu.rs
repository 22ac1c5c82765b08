//! SwiGLU's gate, `silu(gate) * up`, fused: one pass forward and one backward over the MLP's
//! widest activations, instead of burn's `silu` (a sigmoid and a product) and a second product,
//! each a full pass and a node of the autodiff graph.
//!
//! With `s = sigmoid(g)`: `silu(g) = g s` and `silu'(g) = s (1 + g (1 - s))`, so for
//! `y = silu(g) u`: `dg = dy u silu'(g)` and `du = dy silu(g)`. The generic bodies are those
//! formulas in tensor ops; flex runs one multithreaded, vectorised pass; `Autodiff<B>` keeps both
//! inputs and records the backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::activation::{sigmoid, silu};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// The fused SwiGLU gate as a backend extension. The defaults are the generic bodies.
pub trait SwigluOps: Backend {
    /// `silu(gate) * up`, element-wise, same shapes.
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        generic_forward::<Self>(gate, up)
    }

    /// `(d gate, d up)` for the upstream gradient `grad`.
    fn swiglu_backward(
        gate: FloatTensor<Self>,
        up: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic_backward::<Self>(gate, up, grad)
    }
}

fn float<B: Backend>(t: FloatTensor<B>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The generic forward body: burn's `silu` times `up`.
fn generic_forward<B: Backend>(gate: FloatTensor<B>, up: FloatTensor<B>) -> FloatTensor<B> {
    (silu(float::<B>(gate)) * float::<B>(up))
        .into_primitive()
        .tensor()
}

/// The generic backward body, in tensor ops.
fn generic_backward<B: Backend>(
    gate: FloatTensor<B>,
    up: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let (g, u, dy) = (float::<B>(gate), float::<B>(up), float::<B>(grad));
    let s = sigmoid(g.clone());
    let silu = g.clone() * s.clone();
    let dsilu = s.clone() * ((s.neg() + 1.0) * g + 1.0);
    let dgate = dy.clone() * u * dsilu;
    let dup = dy * silu;
    (
        dgate.into_primitive().tensor(),
        dup.into_primitive().tensor(),
    )
}

/// `silu(gate) * up` through the fused op (differentiable on `Autodiff<B>`).
pub fn swiglu<B: SwigluOps, const D: usize>(gate: Tensor<B, D>, up: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::swiglu(
        gate.into_primitive().tensor(),
        up.into_primitive().tensor(),
    )))
}

/// `sigmoid(g)` through the kernels' `exp`.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[inline(always)]
fn sigmoid_scalar(g: f32) -> f32 {
    1.0 / (1.0 + crate::ops::simd::exp(-g))
}

/// One element of the forward, for the CPU kernel.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[inline(always)]
pub(crate) fn swiglu_scalar(g: f32, u: f32) -> f32 {
    g * sigmoid_scalar(g) * u
}

/// One element of the backward, `(d gate, d up)`, for the CPU kernel.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[inline(always)]
pub(crate) fn swiglu_grad_scalar(g: f32, u: f32, dy: f32) -> (f32, f32) {
    let s = sigmoid_scalar(g);
    (dy * u * s * (1.0 + g * (1.0 - s)), dy * g * s)
}

#[derive(Debug)]
struct SwigluBackward;

impl<B: SwigluOps> Backward<B, 2> for SwigluBackward {
    /// (gate's node, up's node).
    type State = (NodeId, NodeId);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_gate, node_up] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (gate_id, up_id) = ops.state;
        let gate: FloatTensor<B> = checkpointer.retrieve_node_output(gate_id);
        let up: FloatTensor<B> = checkpointer.retrieve_node_output(up_id);
        let (dgate, dup) = B::swiglu_backward(gate, up, grad);
        if let Some(node) = node_gate {
            grads.register::<B>(node.id, dgate);
        }
        if let Some(node) = node_up {
            grads.register::<B>(node.id, dup);
        }
    }
}

impl<B: SwigluOps, C: CheckpointStrategy> SwigluOps for Autodiff<B, C> {
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        match SwigluBackward
            .prepare::<C>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&gate), prep.checkpoint(&up));
                prep.finish(state, B::swiglu(gate.primitive, up.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::swiglu(gate.primitive, up.primitive)),
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

    use super::{SwigluOps, swiglu_grad_scalar, swiglu_scalar};
    use crate::ops::simd::{self, contiguous_f32};

    /// Elements per rayon task.
    const CHUNK: usize = 1 << 14;

    #[inline(always)]
    fn backward_body(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        for i in 0..g
            .len()
            .min(u.len())
            .min(dy.len())
            .min(dg.len())
            .min(du.len())
        {
            let (a, b) = swiglu_grad_scalar(g[i], u[i], dy[i]);
            dg[i] = a;
            du[i] = b;
        }
    }

    /// [`backward_body`], vectorised with AVX-512 where the CPU has it.
    fn backward_slice(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512vl,avx512dq,avx2,fma")]
            unsafe fn avx512(g: &[f32], u: &[f32], dy: &[f32], dg: &mut [f32], du: &mut [f32]) {
                backward_body(g, u, dy, dg, du)
            }
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512dq")
            {
                // SAFETY: the CPU has the features the variant was compiled for.
                return unsafe { avx512(g, u, dy, dg, du) };
            }
        }
        backward_body(g, u, dy, dg, du)
    }

    impl SwigluOps for Flex {
        fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
            if gate.layout().shape() != up.layout().shape() {
                return super::generic_forward::<Self>(gate, up);
            }
            match simd::zip_map_f32(&gate, &up, swiglu_scalar) {
                Some(y) => y,
                None => super::generic_forward::<Self>(gate, up),
            }
        }

        fn swiglu_backward(
            gate: FloatTensor<Self>,
            up: FloatTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let shape = gate.layout().shape().clone();
            let same = up.layout().shape() == &shape && grad.layout().shape() == &shape;
            let (true, Some(g), Some(u), Some(dy)) = (
                same,
                contiguous_f32(&gate),
                contiguous_f32(&up),
                contiguous_f32(&grad),
            ) else {
                return super::generic_backward::<Self>(gate, up, grad);
            };
            let (Some(g), Some(u), Some(dy)) = (
                g.as_slice::<f32>(),
                u.as_slice::<f32>(),
                dy.as_slice::<f32>(),
            ) else {
                return super::generic_backward::<Self>(gate, up, grad);
            };
            let (mut dg, mut du) = (vec![0.0f32; g.len()], vec![0.0f32; g.len()]);
            dg.par_chunks_mut(CHUNK)
                .zip(du.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK)))
                .zip(dy.par_chunks(CHUNK))
                .for_each(|(((dg, du), (g, u)), dy)| backward_slice(g, u, dy, dg, du));
            (
                FlexTensor::from_data(TensorData::new(dg, shape.clone())),
                FlexTensor::from_data(TensorData::new(du, shape)),
            )
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::activation::silu;
    use burn::tensor::{Distribution, Tensor};

    use super::swiglu;
    use crate::ops::test_support::{host, max_diff};

    /// The fused op and `silu(gate) * up` agree in value and both gradients, on the flex kernel
    /// and on the generic bodies (what the GPU backends run), with a non-contiguous input.
    #[test]
    fn fused_swiglu_equals_silu_times_up() {
        type Ad = Autodiff<Flex>;
        let dev = Default::default();
        let gate = Tensor::<Ad, 2>::random([67, 129], Distribution::Normal(0.0, 3.0), &dev);
        let up = Tensor::<Ad, 2>::random([129, 67], Distribution::Normal(0.0, 1.0), &dev);
        let coeff = Tensor::<Ad, 2>::random([67, 129], Distribution::Normal(0.0, 1.0), &dev);
        let run = |fused: bool| {
            let (g, u) = (
                gate.clone().detach().require_grad(),
                up.clone().detach().require_grad(),
            );
            let ut = u.clone().transpose();
            let y = if fused {
                swiglu(g.clone(), ut)
            } else {
                silu(g.clone()) * ut
            };
            let grads = (y.clone() * coeff.clone()).sum().backward();
            [
                host(y.inner()),
                host(g.grad(&grads).unwrap()),
                host(u.grad(&grads).unwrap()),
            ]
        };
        let (got, want) = (run(true), run(false));
        for (what, (g, w)) in ["value", "d gate", "d up"]
            .iter()
            .zip(got.iter().zip(&want))
        {
            assert!(
                max_diff(g, w) < 1e-4,
                "{what} differs by {}",
                max_diff(g, w)
            );
        }
        let (g, u, dy) = (
            gate.inner().into_primitive().tensor(),
            up.inner().transpose().into_primitive().tensor(),
            coeff.inner().into_primitive().tensor(),
        );
        let (dg, du) = super::generic_backward::<Flex>(g, u, dy);
        let as_tensor =
            |t| Tensor::<Flex, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(t));
        assert!(max_diff(&host(as_tensor(dg)), &want[1]) < 1e-4);
        assert!(max_diff(&host(as_tensor(du).transpose()), &want[2]) < 1e-4);
    }
}
