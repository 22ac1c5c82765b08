//! GELU with the tanh approximation (GPT-2's `gelu_new`), fused: one pass forward, one pass
//! backward, instead of the eight element-wise tensor ops (each a full pass over the MLP's
//! widest activation, each a node of the autodiff graph) that `gelu_approximate` composes.
//!
//! `gelu(x) = x/2 (1 + tanh(u))`, `u = sqrt(2/pi) (x + 0.044715 x^3)`, and
//! `gelu'(x) = (1 + tanh(u))/2 + x/2 (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)`.
//! The generic bodies are burn's `gelu_approximate` and that derivative in tensor ops; flex runs
//! one multithreaded, vectorised pass; `Autodiff<B>` keeps the input and records the backward.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::activation::gelu_approximate;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorPrimitive};

/// sqrt(2 / pi).
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic coefficient of the approximation.
const CUBIC: f32 = 0.044_715;

/// The fused tanh-GELU as a backend extension. The defaults are the generic bodies.
pub trait GeluOps: Backend {
    /// `gelu_tanh(x)`, element-wise, any shape.
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        generic_forward::<Self>(x)
    }

    /// `grad * gelu_tanh'(x)`, element-wise.
    fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        generic_backward::<Self>(x, grad)
    }
}

fn float<B: Backend>(t: FloatTensor<B>) -> Tensor<B, 1> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// The generic forward body: burn's composition of tensor ops.
fn generic_forward<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    gelu_approximate(float::<B>(x)).into_primitive().tensor()
}

/// The generic backward body, in tensor ops.
fn generic_backward<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let x = float::<B>(x);
    let square = x.clone().square();
    let u = (x.clone() + x.clone() * square.clone() * CUBIC) * SQRT_2_OVER_PI;
    let t = u.tanh();
    let du = (square * (3.0 * CUBIC) + 1.0) * SQRT_2_OVER_PI;
    let derivative = (t.clone() + 1.0) * 0.5 + x * 0.5 * (t.clone().square().neg() + 1.0) * du;
    (derivative * float::<B>(grad)).into_primitive().tensor()
}

/// `gelu_tanh(x)` through the fused op (differentiable on `Autodiff<B>`).
pub fn gelu_tanh<B: GeluOps, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(B::gelu_tanh(
        x.into_primitive().tensor(),
    )))
}

/// One element of the forward, for the CPU kernel.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[inline(always)]
pub(crate) fn gelu_tanh_scalar(x: f32) -> f32 {
    let u = SQRT_2_OVER_PI * (x + CUBIC * x * x * x);
    0.5 * x * (1.0 + crate::ops::simd::tanh(u))
}

/// One element of the backward, for the CPU kernel.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
#[inline(always)]
pub(crate) fn gelu_tanh_grad_scalar(x: f32, grad: f32) -> f32 {
    let x2 = x * x;
    let t = crate::ops::simd::tanh(SQRT_2_OVER_PI * (x + CUBIC * x2 * x));
    let du = SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x2);
    grad * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)
}

#[derive(Debug)]
struct GeluBackward;

impl<B: GeluOps> Backward<B, 1> for GeluBackward {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let x: FloatTensor<B> = checkpointer.retrieve_node_output(ops.state);
        if let Some(node) = node {
            grads.register::<B>(node.id, B::gelu_tanh_backward(x, grad));
        }
    }
}

impl<B: GeluOps, C: CheckpointStrategy> GeluOps for Autodiff<B, C> {
    fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
        match GeluBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(mut prep) => {
                let state = prep.checkpoint(&x);
                prep.finish(state, B::gelu_tanh(x.primitive))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_tanh(x.primitive)),
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::Flex;
    use burn::tensor::ops::FloatTensor;

    use super::{GeluOps, gelu_tanh_grad_scalar, gelu_tanh_scalar};
    use crate::ops::simd;

    impl GeluOps for Flex {
        fn gelu_tanh(x: FloatTensor<Self>) -> FloatTensor<Self> {
            match simd::map_f32(&x, gelu_tanh_scalar) {
                Some(y) => y,
                None => super::generic_forward::<Self>(x),
            }
        }

        fn gelu_tanh_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
            match simd::zip_map_f32(&x, &grad, gelu_tanh_grad_scalar) {
                Some(dx) => dx,
                None => super::generic_backward::<Self>(x, grad),
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::activation::gelu_approximate;
    use burn::tensor::{Distribution, Tensor};

    use super::gelu_tanh;

    use crate::ops::test_support::{host, max_diff};

    /// The fused op and burn's composition agree in value and gradient, on the flex kernel and
    /// on the generic bodies (what the GPU backends run), including a non-contiguous input.
    #[test]
    fn fused_gelu_equals_gelu_approximate() {
        type Ad = Autodiff<Flex>;
        let x = Tensor::<Ad, 2>::random(
            [67, 129],
            Distribution::Normal(0.0, 3.0),
            &Default::default(),
        );
        let coeff = Tensor::<Ad, 2>::random(
            [129, 67],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        );
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let xt = x.clone().transpose();
            let y = if fused {
                gelu_tanh(xt)
            } else {
                gelu_approximate(xt)
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
            max_diff(&dx, &want_dx) < 1e-4,
            "gradients differ by {}",
            max_diff(&dx, &want_dx)
        );

        let inner = x.inner();
        let generic = super::generic_forward::<Flex>(inner.clone().into_primitive().tensor());
        let generic =
            Tensor::<Flex, 2>::from_primitive(burn::tensor::TensorPrimitive::Float(generic));
        assert!(max_diff(&host(generic), &host(gelu_approximate(inner))) < 1e-6);
    }
}
