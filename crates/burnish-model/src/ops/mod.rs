//! Fused operations with their own backward, entered into burn as backend extensions.
//!
//! Each op is a trait with a default, backend-generic body written in plain tensor operations
//! (the straightforward version the fused one must equal), a CPU kernel for flex where it pays,
//! and an implementation for `Autodiff<B>` that registers the op's own backward. Model code is
//! generic over [`ModelBackend`], which gathers every op, so adding an op does not touch the
//! bounds of every caller again.

#[cfg(feature = "flex")]
mod bf16_blocks;
#[cfg(feature = "flex")]
pub mod bf16_matmul;
#[cfg(feature = "flex")]
pub(crate) mod cpu_matmul;
pub mod gelu;
pub mod logprob_head;
pub mod masked_softmax;
pub mod matmul;
pub mod norm;
pub mod rope;
pub mod swiglu;
// Only the flex kernels use it; a build without flex (a GPU-only one) leaves it unused.
#[cfg_attr(not(feature = "flex"), allow(dead_code))]
pub(crate) mod simd;

use burn::tensor::backend::{AutodiffBackend, Backend};

pub use gelu::{GeluOps, gelu_tanh};
pub use logprob_head::{LogprobHeadOps, logprob_head};
pub use masked_softmax::{MaskedSoftmaxOps, masked_softmax};
pub use matmul::{MatmulOps, linear, matmul};
pub use norm::{NormKind, NormOps, norm};
pub use rope::{RopeOps, rope};
pub use swiglu::{SwigluOps, swiglu};

/// A backend burnish's models run on: burn's `Backend` plus burnish's fused operations.
pub trait ModelBackend:
    Backend + LogprobHeadOps + GeluOps + MaskedSoftmaxOps + NormOps + MatmulOps + SwigluOps + RopeOps
{
}

impl<B> ModelBackend for B where
    B: Backend
        + LogprobHeadOps
        + GeluOps
        + MaskedSoftmaxOps
        + NormOps
        + MatmulOps
        + SwigluOps
        + RopeOps
{
}

/// A backend burnish trains on: autodiff over a [`ModelBackend`], itself one too.
pub trait ModelAutodiffBackend: AutodiffBackend<InnerBackend: ModelBackend> + ModelBackend {}

impl<B> ModelAutodiffBackend for B
where
    B: AutodiffBackend + ModelBackend,
    B::InnerBackend: ModelBackend,
{
}

/// The cubecl GPU backends (wgpu, CUDA) and their fusion decorator run the generic bodies.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube {
    use burn_cubecl::cubecl::server::ComputeServer;
    use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
    use burn_fusion::{Fusion, FusionBackend};

    use super::{
        GeluOps, LogprobHeadOps, MaskedSoftmaxOps, MatmulOps, NormOps, RopeOps, SwigluOps,
    };

    macro_rules! generic_bodies {
        ($($op:ident),*) => {$(
            impl<R, F, I, BT> $op for CubeBackend<R, F, I, BT>
            where
                R: CubeRuntime,
                R::Server: ComputeServer,
                R::Device: burn::tensor::backend::DeviceOps,
                F: FloatElement,
                I: IntElement,
                BT: BoolElement,
            {
            }

            impl<B: FusionBackend + $op> $op for Fusion<B> {}
        )*};
    }

    generic_bodies!(
        LogprobHeadOps,
        GeluOps,
        MaskedSoftmaxOps,
        NormOps,
        MatmulOps,
        SwigluOps,
        RopeOps
    );
}

/// What the ops' unit tests share.
#[cfg(test)]
pub(crate) mod test_support {
    use burn::tensor::Tensor;
    use burn::tensor::backend::Backend;

    /// A tensor's elements on the host.
    pub fn host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    /// The largest absolute element-wise difference.
    pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }
}
