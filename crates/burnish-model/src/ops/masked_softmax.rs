//! The attention softmax with its mask, fused: `softmax(where(allowed, scores, -1e9))` over the
//! keys, in one pass forward and one backward, instead of a mask expansion, a `mask_fill` and a
//! softmax whose `exp` takes libm's slow underflow path for every masked score.
//!
//! Masked scores are replaced by a large negative finite value, not -inf, so a row whose keys
//! are all masked (a padding query) softmaxes to a uniform row instead of NaN, exactly as the
//! unfused path does. Backward: `d scores = y * (g - sum(g * y))` per row, from the saved
//! output `y`, and 0 at masked scores (they were replaced by a constant).

use burn::backend::autodiff::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::ops::{BoolTensor, FloatTensor};
use burn::tensor::{Bool, Tensor, TensorPrimitive};

/// Written at masked scores before the softmax.
pub const MASKED_SCORE: f32 = -1e9;

/// The fused masked softmax as a backend extension. The defaults are the generic bodies.
pub trait MaskedSoftmaxOps: Backend {
    /// `scores [batch, heads, queries, keys]`, `allowed [batch, 1, rows, keys]` -> the
    /// softmax over keys of the scores where allowed and [`MASKED_SCORE`] elsewhere. `rows`
    /// divides `queries`; query `q` reads mask row `q % rows` (grouped-query attention stacks
    /// each key/value head's query heads along the query axis, all under one mask).
    fn masked_softmax(scores: FloatTensor<Self>, allowed: BoolTensor<Self>) -> FloatTensor<Self> {
        generic_forward::<Self>(scores, allowed)
    }

    /// `y * (grad - sum_keys(grad * y))` where allowed, 0 elsewhere: the gradient of the scores
    /// from the output `y`.
    fn masked_softmax_backward(
        y: FloatTensor<Self>,
        allowed: BoolTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        generic_backward::<Self>(y, allowed, grad)
    }
}

fn float<B: Backend>(t: FloatTensor<B>) -> Tensor<B, 4> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// Where the scores are masked, `[batch, heads, queries, keys]`: the mask's rows repeated up to
/// the queries, then expanded over heads.
fn masked_where<B: Backend>(allowed: BoolTensor<B>, dims: [usize; 4]) -> Tensor<B, 4, Bool> {
    let allowed = Tensor::<B, 4, Bool>::from_primitive(allowed);
    let rows = allowed.dims()[2];
    let allowed = if rows == dims[2] {
        allowed
    } else {
        allowed.repeat_dim(2, dims[2] / rows.max(1))
    };
    allowed.bool_not().expand(dims)
}

/// The generic forward body: expand the mask over heads, fill, softmax.
fn generic_forward<B: Backend>(scores: FloatTensor<B>, allowed: BoolTensor<B>) -> FloatTensor<B> {
    let scores = float::<B>(scores);
    let masked = masked_where::<B>(allowed, scores.dims());
    softmax(scores.mask_fill(masked, MASKED_SCORE), 3)
        .into_primitive()
        .tensor()
}

/// The generic backward body, in tensor ops.
fn generic_backward<B: Backend>(
    y: FloatTensor<B>,
    allowed: BoolTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let (y, grad) = (float::<B>(y), float::<B>(grad));
    let masked = masked_where::<B>(allowed, y.dims());
    let dot = (grad.clone() * y.clone()).sum_dim(3);
    (y * (grad - dot))
        .mask_fill(masked, 0.0)
        .into_primitive()
        .tensor()
}

/// The masked softmax through the fused op (differentiable on `Autodiff<B>`):
/// `scores [batch, heads, queries, keys]`, `allowed [batch, 1, rows, keys]`, `rows` dividing
/// `queries` (query `q` reads mask row `q % rows`).
pub fn masked_softmax<B: MaskedSoftmaxOps>(
    scores: Tensor<B, 4>,
    allowed: Tensor<B, 4, Bool>,
) -> Tensor<B, 4> {
    float(B::masked_softmax(
        scores.into_primitive().tensor(),
        allowed.into_primitive(),
    ))
}

#[derive(Debug)]
struct MaskedSoftmaxBackward;

impl<B: MaskedSoftmaxOps> Backward<B, 1> for MaskedSoftmaxBackward {
    /// The forward's output and the mask.
    type State = (FloatTensor<B>, BoolTensor<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [node] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = node {
            let (y, allowed) = ops.state;
            grads.register::<B>(node.id, B::masked_softmax_backward(y, allowed, grad));
        }
    }
}

impl<B: MaskedSoftmaxOps, C: CheckpointStrategy> MaskedSoftmaxOps for Autodiff<B, C> {
    fn masked_softmax(scores: FloatTensor<Self>, allowed: BoolTensor<Self>) -> FloatTensor<Self> {
        match MaskedSoftmaxBackward
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::masked_softmax(scores.primitive, allowed.clone());
                prep.finish((y.clone(), allowed), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::masked_softmax(scores.primitive, allowed)),
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! One rayon task per group of rows; the mask row of each query is shared by its heads.

    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::ops::{BoolTensor, FloatTensor};
    use burn::tensor::{BoolStore, DType, TensorData};
    use rayon::prelude::*;

    use super::{MASKED_SCORE, MaskedSoftmaxOps};
    use crate::ops::simd::{self, contiguous_f32};

    /// Rows per rayon task.
    const ROWS_PER_TASK: usize = 64;

    /// The mask as contiguous bytes (one per element), or `None` for a bool store that is not
    /// byte-sized (the generic body handles it).
    fn mask_bytes(t: &FlexTensor) -> Option<FlexTensor> {
        matches!(t.dtype(), DType::Bool(BoolStore::Native | BoolStore::U8))
            .then(|| t.to_contiguous())
    }

    /// The mask's rows when `allowed` is `[batch, 1, rows, keys]` with `rows` dividing the
    /// queries of `scores [batch, heads, queries, keys]`.
    fn mask_fits(scores: &FlexTensor, allowed: &FlexTensor) -> Option<usize> {
        let (s, m) = (scores.layout().shape(), allowed.layout().shape());
        let fits = s.num_dims() == 4
            && m.num_dims() == 4
            && (m[0], m[1], m[3]) == (s[0], 1, s[3])
            && m[2] > 0
            && s[2] % m[2] == 0;
        fits.then_some(m[2])
    }

    /// Where the rows of `[batch, heads, queries]` scores find their mask (`rows` per batch).
    struct MaskRows<'a> {
        mask: &'a [u8],
        heads: usize,
        queries: usize,
        rows: usize,
        keys: usize,
    }

    impl MaskRows<'_> {
        /// The mask row of score row `r`: that of (batch, query mod rows).
        fn of(&self, r: usize) -> &[u8] {
            let (b, q) = (r / (self.heads * self.queries), r % self.queries);
            &self.mask[(b * self.rows + q % self.rows) * self.keys..][..self.keys]
        }
    }

    impl MaskedSoftmaxOps for Flex {
        fn masked_softmax(
            scores: FloatTensor<Self>,
            allowed: BoolTensor<Self>,
        ) -> FloatTensor<Self> {
            let shape = scores.layout().shape().clone();
            let (Some(x), Some(mask), Some(rows)) = (
                contiguous_f32(&scores),
                mask_bytes(&allowed),
                mask_fits(&scores, &allowed),
            ) else {
                return super::generic_forward::<Self>(scores, allowed);
            };
            let (Some(src), mask) = (x.as_slice::<f32>(), mask.storage::<u8>()) else {
                return super::generic_forward::<Self>(scores, allowed);
            };
            let (heads, queries, keys) = (shape[1], shape[2], shape[3]);
            let mask = MaskRows {
                mask,
                heads,
                queries,
                rows,
                keys,
            };
            let mut out = vec![0.0f32; src.len()];
            out.par_chunks_mut(ROWS_PER_TASK * keys)
                .zip(src.par_chunks(ROWS_PER_TASK * keys))
                .enumerate()
                .for_each(|(task, (dst, src))| {
                    for (i, (row_out, row)) in
                        dst.chunks_mut(keys).zip(src.chunks(keys)).enumerate()
                    {
                        let allowed = mask.of(task * ROWS_PER_TASK + i);
                        for ((o, &x), &a) in row_out.iter_mut().zip(row).zip(allowed) {
                            *o = if a != 0 { x } else { MASKED_SCORE };
                        }
                        simd::softmax_in_place(row_out);
                    }
                });
            FlexTensor::from_data(TensorData::new(out, shape))
        }

        fn masked_softmax_backward(
            y: FloatTensor<Self>,
            allowed: BoolTensor<Self>,
            grad: FloatTensor<Self>,
        ) -> FloatTensor<Self> {
            let shape = y.layout().shape().clone();
            let (Some(yc), Some(gc), Some(mask), Some(rows)) = (
                contiguous_f32(&y),
                contiguous_f32(&grad),
                mask_bytes(&allowed),
                mask_fits(&y, &allowed),
            ) else {
                return super::generic_backward::<Self>(y, allowed, grad);
            };
            let (Some(ys), Some(gs), mask) = (
                yc.as_slice::<f32>(),
                gc.as_slice::<f32>(),
                mask.storage::<u8>(),
            ) else {
                return super::generic_backward::<Self>(y, allowed, grad);
            };
            let (heads, queries, keys) = (shape[1], shape[2], shape[3]);
            let mask = MaskRows {
                mask,
                heads,
                queries,
                rows,
                keys,
            };
            let mut out = vec![0.0f32; ys.len()];
            out.par_chunks_mut(ROWS_PER_TASK * keys)
                .zip(
                    ys.par_chunks(ROWS_PER_TASK * keys)
                        .zip(gs.par_chunks(ROWS_PER_TASK * keys)),
                )
                .enumerate()
                .for_each(|(task, (dst, (y, g)))| {
                    let rows = dst.chunks_mut(keys).zip(y.chunks(keys)).zip(g.chunks(keys));
                    for (i, ((d, y), g)) in rows.enumerate() {
                        let allowed = mask.of(task * ROWS_PER_TASK + i);
                        let dot: f32 = y.iter().zip(g).map(|(a, b)| a * b).sum();
                        for (((d, &y), &g), &a) in d.iter_mut().zip(y).zip(g).zip(allowed) {
                            *d = if a != 0 { y * (g - dot) } else { 0.0 };
                        }
                    }
                });
            FlexTensor::from_data(TensorData::new(out, shape))
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::{Bool, Distribution, Tensor, TensorData};

    use super::{generic_forward, masked_softmax};

    use crate::ops::test_support::{host, max_diff};

    /// The flex kernel equals the generic body (mask expand + fill + softmax) in value and
    /// gradient, including a fully masked row, which stays uniform.
    #[test]
    fn fused_masked_softmax_equals_fill_then_softmax() {
        type Ad = Autodiff<Flex>;
        let dev = Default::default();
        let (b, h, q, k) = (2, 3, 5, 7);
        let scores = Tensor::<Ad, 4>::random([b, h, q, k], Distribution::Normal(0.0, 2.0), &dev);
        let mut allowed: Vec<bool> = (0..b * q * k).map(|i| (i * 7 + i / 3) % 4 != 0).collect();
        allowed[..k].iter_mut().for_each(|a| *a = false);
        let allowed =
            Tensor::<Ad, 4, Bool>::from_data(TensorData::new(allowed, [b, 1, q, k]), &dev);
        let coeff = Tensor::<Ad, 4>::random([b, h, q, k], Distribution::Normal(0.0, 1.0), &dev);
        let run = |fused: bool| {
            let s = scores.clone().detach().require_grad();
            let y = if fused {
                masked_softmax(s.clone(), allowed.clone())
            } else {
                let generic = generic_forward::<Ad>(
                    s.clone().into_primitive().tensor(),
                    allowed.clone().into_primitive(),
                );
                Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(generic))
            };
            let grads = (y.clone() * coeff.clone()).sum().backward();
            (host(y.inner()), host(s.grad(&grads).unwrap()))
        };
        let ((y, ds), (want_y, want_ds)) = (run(true), run(false));
        assert!(
            max_diff(&y, &want_y) < 1e-6,
            "values differ by {}",
            max_diff(&y, &want_y)
        );
        assert!(
            max_diff(&ds, &want_ds) < 1e-5,
            "gradients differ by {}",
            max_diff(&ds, &want_ds)
        );
        assert!(
            (y[0] - 1.0 / k as f32).abs() < 1e-6,
            "a fully masked row is uniform"
        );
    }

    /// A mask of fewer rows (grouped-query attention's stacked query heads) gives what the mask
    /// repeated to every query row gives, on the flex kernel and on the generic body.
    #[test]
    fn short_mask_equals_the_repeated_mask() {
        type Ad = Autodiff<Flex>;
        let dev = Default::default();
        let (b, h, rows, k) = (2, 3, 5, 7);
        let scores =
            Tensor::<Ad, 4>::random([b, h, 2 * rows, k], Distribution::Normal(0.0, 2.0), &dev);
        let allowed: Vec<bool> = (0..b * rows * k)
            .map(|i| (i * 5 + i / 4) % 3 != 0)
            .collect();
        let short =
            Tensor::<Ad, 4, Bool>::from_data(TensorData::new(allowed, [b, 1, rows, k]), &dev);
        let full = short.clone().repeat_dim(2, 2);
        let coeff =
            Tensor::<Ad, 4>::random([b, h, 2 * rows, k], Distribution::Normal(0.0, 1.0), &dev);
        let run = |mask: &Tensor<Ad, 4, Bool>, fused: bool| {
            let s = scores.clone().detach().require_grad();
            let y = if fused {
                masked_softmax(s.clone(), mask.clone())
            } else {
                let generic = generic_forward::<Ad>(
                    s.clone().into_primitive().tensor(),
                    mask.clone().into_primitive(),
                );
                Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(generic))
            };
            let grads = (y.clone() * coeff.clone()).sum().backward();
            [host(y.inner()), host(s.grad(&grads).unwrap())]
        };
        let want = run(&full, true);
        for got in [run(&short, true), run(&short, false)] {
            for (g, w) in got.iter().zip(&want) {
                assert!(max_diff(g, w) < 1e-5, "differs by {}", max_diff(g, w));
            }
        }
    }
}
