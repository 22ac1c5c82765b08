//! The fused, chunked "lm_head + log-softmax + gather": the log-prob of one target token at each
//! of `n` positions, without ever holding the `[n, vocab]` logits (let alone `[batch, seq,
//! vocab]` log-probs) in memory.
//!
//! Forward, chunk by chunk of positions: `logits = hidden_c @ weight^T`, keep each position's
//! log-sum-exp and its target's logit; `logp = logit[target] - lse`. Backward recomputes each
//! chunk's logits and turns them into `dlogits = g * (onehot(target) - softmax)`, then
//! accumulates `d hidden_c = dlogits @ weight` and `d weight += dlogits^T @ hidden_c`: the idea of
//! Apple's Cut Cross-Entropy and Liger-Kernel's fused linear losses. The memory held between
//! forward and backward is the hidden states and one float per position.
//!
//! Three bodies: the generic one (plain tensor ops, chunked; what the GPU backends run), the flex
//! CPU kernel (gemm plus multithreaded, vectorised row passes), and `Autodiff<B>`, which records
//! the op's own backward. `reference_logprobs` is the straightforward version they must equal.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::{FloatTensor, IntTensor};
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorPrimitive};

use crate::ops::matmul::plain_product;
use crate::precision::Precision;

/// Logits held at once by the generic body: rows per chunk = this / vocab (32 MiB of f32).
const CHUNK_ELEMENTS: usize = 8 << 20;

fn rows_per_chunk(vocab: usize) -> usize {
    (CHUNK_ELEMENTS / vocab.max(1)).max(1)
}

/// The fused head as a backend extension. The defaults are the generic bodies.
pub trait LogprobHeadOps: Backend {
    /// `hidden [n, d]`, `weight [vocab, d]`, `targets [n]` -> (`logp [n]`, `lse [n]`): the
    /// log-prob of each target and each position's log-sum-exp over the vocabulary, the logits'
    /// product in `precision` and everything after it in f32.
    fn logprob_head_forward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic_forward::<Self>(hidden, weight, targets, precision)
    }

    /// Gradients of `sum(grad * logp)` with respect to `hidden [n, d]` and `weight [vocab, d]`,
    /// given the forward's `lse [n]`; each chunk's logits are recomputed, the three products in
    /// `precision`.
    fn logprob_head_backward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        generic_backward::<Self>(hidden, weight, targets, lse, grad, precision)
    }
}

/// The generic forward body (plain tensor ops, chunked).
fn generic_forward<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    precision: Precision,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let hidden = float::<B, 2>(hidden);
    let weight = float::<B, 2>(weight);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let [n, _] = hidden.dims();
    let [vocab, _] = weight.dims();
    let (mut logps, mut lses) = (Vec::new(), Vec::new());
    let chunk = rows_per_chunk(vocab);
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let logits = plain_product(
            hidden.clone().narrow(0, start, len),
            weight.clone().transpose(),
            precision,
        );
        let max = logits.clone().max_dim(1);
        let lse = (logits.clone() - max.clone()).exp().sum_dim(1).log() + max;
        let target = targets.clone().narrow(0, start, len).unsqueeze_dim::<2>(1);
        logps.push((logits.gather(1, target) - lse.clone()).reshape([len]));
        lses.push(lse.reshape([len]));
    }
    (
        Tensor::cat(logps, 0).into_primitive().tensor(),
        Tensor::cat(lses, 0).into_primitive().tensor(),
    )
}

/// The generic backward body (plain tensor ops, chunked, recomputing each chunk).
fn generic_backward<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    precision: Precision,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let hidden = float::<B, 2>(hidden);
    let weight = float::<B, 2>(weight);
    let targets = Tensor::<B, 1, Int>::from_primitive(targets);
    let lse = float::<B, 1>(lse);
    let grad = float::<B, 1>(grad);
    let [n, _] = hidden.dims();
    let [vocab, _] = weight.dims();
    let mut grad_hidden = Vec::new();
    let mut grad_weight = weight.zeros_like();
    let chunk = rows_per_chunk(vocab);
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let h = hidden.clone().narrow(0, start, len);
        let logits = plain_product(h.clone(), weight.clone().transpose(), precision);
        let g = grad.clone().narrow(0, start, len).unsqueeze_dim::<2>(1);
        let softmax = (logits - lse.clone().narrow(0, start, len).unsqueeze_dim::<2>(1)).exp();
        let target = targets.clone().narrow(0, start, len).unsqueeze_dim::<2>(1);
        let dlogits = (softmax * g.clone())
            .neg()
            .scatter(1, target, g, IndexingUpdateOp::Add);
        grad_hidden.push(plain_product(dlogits.clone(), weight.clone(), precision));
        grad_weight = grad_weight + plain_product(dlogits.transpose(), h, precision);
    }
    (
        Tensor::cat(grad_hidden, 0).into_primitive().tensor(),
        grad_weight.into_primitive().tensor(),
    )
}

fn float<B: Backend, const D: usize>(t: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(t))
}

/// `hidden [n, d]`, `weight [vocab, d]` (the output embedding), `targets [n]` -> `[n]`: the
/// log-prob of each target token, through the fused op (differentiable on `Autodiff<B>`), the
/// logits' product in `precision`.
pub fn logprob_head<B: LogprobHeadOps>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
    precision: Precision,
) -> Tensor<B, 1> {
    let (logp, _) = B::logprob_head_forward(
        hidden.into_primitive().tensor(),
        weight.into_primitive().tensor(),
        targets.into_primitive(),
        precision,
    );
    float(logp)
}

/// The straightforward version the fused op replaces: full logits, full log-softmax, gather.
pub fn reference_logprobs<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: Tensor<B, 2>,
    targets: Tensor<B, 1, Int>,
) -> Tensor<B, 1> {
    let [n, _] = hidden.dims();
    let logits = hidden.matmul(weight.transpose());
    log_softmax(logits, 1)
        .gather(1, targets.unsqueeze_dim::<2>(1))
        .reshape([n])
}

/// The op's backward: recompute each chunk from the saved hidden states, weight and `lse`.
#[derive(Debug)]
struct LogprobHeadBackward;

impl<B: LogprobHeadOps> Backward<B, 2> for LogprobHeadBackward {
    /// (hidden's node, weight's node, targets, lse, precision).
    type State = (NodeId, NodeId, IntTensor<B>, FloatTensor<B>, Precision);

    fn backward(
        self,
        ops: Ops<Self::State, 2>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let [node_hidden, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (hidden_id, weight_id, targets, lse, precision) = ops.state;
        let hidden: FloatTensor<B> = checkpointer.retrieve_node_output(hidden_id);
        let weight: FloatTensor<B> = checkpointer.retrieve_node_output(weight_id);
        let (grad_hidden, grad_weight) =
            B::logprob_head_backward(hidden, weight, targets, lse, grad, precision);
        if let Some(node) = node_hidden {
            grads.register::<B>(node.id, grad_hidden);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, grad_weight);
        }
    }
}

impl<B: LogprobHeadOps, C: CheckpointStrategy> LogprobHeadOps for Autodiff<B, C> {
    fn logprob_head_forward(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        precision: Precision,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        let prep = LogprobHeadBackward
            .prepare::<C>([hidden.node.clone(), weight.node.clone()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let hidden_state = prep.checkpoint(&hidden);
                let weight_state = prep.checkpoint(&weight);
                let (logp, lse) = B::logprob_head_forward(
                    hidden.primitive,
                    weight.primitive,
                    targets.clone(),
                    precision,
                );
                let state = (hidden_state, weight_state, targets, lse.clone(), precision);
                (prep.finish(state, logp), Self::from_inner(lse))
            }
            OpsKind::UnTracked(prep) => {
                let (logp, lse) =
                    B::logprob_head_forward(hidden.primitive, weight.primitive, targets, precision);
                (prep.finish(logp), Self::from_inner(lse))
            }
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    //! The CPU kernel: logits chunk by chunk with gemm (multithreaded), then one rayon task per
    //! row for the max / sum-exp pass (forward) and the softmax-minus-one-hot pass (backward),
    //! with an exp that the compiler vectorises.

    use burn::backend::Flex;
    use burn::backend::flex::FlexTensor;
    use burn::tensor::ops::{FloatTensor, IntTensor};
    use burn::tensor::{DType, TensorData};
    use rayon::prelude::*;

    use super::LogprobHeadOps;
    use crate::ops::cpu_matmul::{Matrix, PreparedRhs, matmul_into};
    use crate::ops::simd;
    use crate::precision::Precision;

    /// Rows per chunk: enough to keep gemm efficient, few enough that the logits stay in memory
    /// bounds (`rows * vocab` floats).
    const CHUNK_ROWS: usize = 256;

    /// Calls `f(start, rows, logits)` for each chunk of [`CHUNK_ROWS`] positions, `logits`
    /// holding that chunk's `hidden_c @ weight^T` (`[rows, vocab]`, one buffer reused; the
    /// weight prepared for `precision` once).
    fn for_each_chunk(
        h: Matrix,
        w: Matrix,
        precision: Precision,
        mut f: impl FnMut(usize, usize, &mut [f32]),
    ) {
        let (n, vocab) = (h.rows, w.rows);
        let weight_t = PreparedRhs::new(w.t(), precision);
        let mut buffer = vec![0.0f32; CHUNK_ROWS.min(n.max(1)) * vocab];
        for start in (0..n).step_by(CHUNK_ROWS) {
            let rows = CHUNK_ROWS.min(n - start);
            let logits = &mut buffer[..rows * vocab];
            weight_t.multiply(logits, h.rows(start, rows), false);
            f(start, rows, logits);
        }
    }

    /// The targets as indices when the kernel can take the problem: f32 `hidden [n, d]` and
    /// `weight [vocab, d]` with non-negative strides, and `n` targets in `0..vocab`. `None`
    /// sends it to the generic body (which reports bad shapes or ids as burn does).
    fn kernel_targets(
        hidden: &FlexTensor,
        weight: &FlexTensor,
        targets: &IntTensor<Flex>,
    ) -> Option<Vec<usize>> {
        let matrix = |t: &FlexTensor| {
            t.dtype() == DType::F32
                && t.layout().shape().num_dims() == 2
                && t.layout().strides().iter().all(|&s| s >= 0)
        };
        let (h, w) = (hidden.layout().shape(), weight.layout().shape());
        if !matrix(hidden) || !matrix(weight) || h[1] != w[1] {
            return None;
        }
        let vocab = w[0];
        let targets: Vec<usize> = targets
            .clone()
            .into_data()
            .iter::<i64>()
            .map(|t| usize::try_from(t).ok().filter(|&t| t < vocab))
            .collect::<Option<_>>()?;
        (targets.len() == h[0]).then_some(targets)
    }

    fn vector(values: Vec<f32>) -> FlexTensor {
        let n = values.len();
        FlexTensor::from_data(TensorData::new(values, [n]))
    }

    impl LogprobHeadOps for Flex {
        fn logprob_head_forward(
            hidden: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            targets: IntTensor<Self>,
            precision: Precision,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let (Some(target_ids), Some(h), Some(w)) = (
                kernel_targets(&hidden, &weight, &targets),
                Matrix::of(&hidden),
                Matrix::of(&weight),
            ) else {
                return super::generic_forward::<Self>(hidden, weight, targets, precision);
            };
            let targets = target_ids;
            let (n, vocab) = (h.rows, w.rows);
            let (mut logp, mut lse) = (vec![0.0f32; n], vec![0.0f32; n]);
            for_each_chunk(h, w, precision, |start, rows, logits| {
                logits
                    .par_chunks(vocab)
                    .zip(logp[start..start + rows].par_iter_mut())
                    .zip(lse[start..start + rows].par_iter_mut())
                    .zip(targets[start..start + rows].par_iter())
                    .for_each(|(((row, logp), lse), &target)| {
                        *lse = simd::log_sum_exp(row);
                        *logp = row[target] - *lse;
                    });
            });
            (vector(logp), vector(lse))
        }

        fn logprob_head_backward(
            hidden: FloatTensor<Self>,
            weight: FloatTensor<Self>,
            targets: IntTensor<Self>,
            lse: FloatTensor<Self>,
            grad: FloatTensor<Self>,
            precision: Precision,
        ) -> (FloatTensor<Self>, FloatTensor<Self>) {
            let (Some(target_ids), Some(lse_c), Some(grad_c)) = (
                kernel_targets(&hidden, &weight, &targets),
                simd::contiguous_f32(&lse),
                simd::contiguous_f32(&grad),
            ) else {
                return super::generic_backward::<Self>(
                    hidden, weight, targets, lse, grad, precision,
                );
            };
            let (Some(lse_values), Some(grad_values)) =
                (lse_c.as_slice::<f32>(), grad_c.as_slice::<f32>())
            else {
                return super::generic_backward::<Self>(
                    hidden, weight, targets, lse, grad, precision,
                );
            };
            if lse_values.len() != target_ids.len() || grad_values.len() != target_ids.len() {
                return super::generic_backward::<Self>(
                    hidden, weight, targets, lse, grad, precision,
                );
            }
            let (Some(h), Some(w)) = (Matrix::of(&hidden), Matrix::of(&weight)) else {
                return super::generic_backward::<Self>(
                    hidden, weight, targets, lse, grad, precision,
                );
            };
            let (targets, lse, grad) = (target_ids, lse_values, grad_values);
            let (n, vocab, d) = (h.rows, w.rows, h.cols);
            let mut grad_hidden = vec![0.0f32; n * d];
            let mut grad_weight = vec![0.0f32; vocab * d];
            let weight = PreparedRhs::new(w, precision);
            for_each_chunk(h, w, precision, |start, rows, dlogits| {
                dlogits
                    .par_chunks_mut(vocab)
                    .zip(lse[start..start + rows].par_iter())
                    .zip(grad[start..start + rows].par_iter())
                    .zip(targets[start..start + rows].par_iter())
                    .for_each(|(((row, &lse), &g), &target)| {
                        simd::scaled_neg_softmax(row, lse, g);
                        row[target] += g;
                    });
                let dlogits = Matrix::row_major(dlogits, rows, vocab);
                // d hidden_c [rows, d] = dlogits [rows, vocab] @ weight [vocab, d]
                weight.multiply(&mut grad_hidden[start * d..], dlogits, false);
                // d weight [vocab, d] += dlogits^T [vocab, rows] @ hidden_c [rows, d]
                matmul_into(
                    &mut grad_weight,
                    dlogits.t(),
                    h.rows(start, rows),
                    start > 0,
                    precision,
                );
            });
            (
                FlexTensor::from_data(TensorData::new(grad_hidden, [n, d])),
                FlexTensor::from_data(TensorData::new(grad_weight, [vocab, d])),
            )
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    //! The flex kernel against the generic body it overrides (which the GPU backends run).

    use burn::backend::Flex;
    use burn::tensor::{Distribution, Int, Tensor, TensorData};

    use burn::tensor::ops::FloatTensor;

    use super::{LogprobHeadOps, float, generic_backward, generic_forward};
    use crate::ops::bf16_matmul::round_bf16;
    use crate::ops::test_support::{host, max_diff};
    use crate::precision::Precision;

    /// `got` and `want` (`D`-dimensional primitives) agree to `tol` relative to `want`'s largest.
    fn assert_close<const D: usize>(
        what: &str,
        got: FloatTensor<Flex>,
        want: FloatTensor<Flex>,
        tol: f32,
    ) {
        let (got, want) = (host(float::<Flex, D>(got)), host(float::<Flex, D>(want)));
        let rel = max_diff(&got, &want) / want.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
        assert!(rel < tol, "{what}: relative difference {rel}");
    }

    #[test]
    fn flex_kernel_equals_generic_body() {
        let (n, d, vocab) = (300, 16, 517);
        let dev = Default::default();
        let hidden = Tensor::<Flex, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
        // A transposed view, as an untied `Linear` head hands it over.
        let weight =
            Tensor::<Flex, 2>::random([d, vocab], Distribution::Normal(0.0, 0.7), &dev).transpose();
        let targets: Vec<i64> = (0..n).map(|i| ((i * 31) % vocab) as i64).collect();
        let targets = Tensor::<Flex, 1, Int>::from_data(TensorData::new(targets, [n]), &dev);
        let grad = Tensor::<Flex, 1>::random([n], Distribution::Normal(0.0, 1.0), &dev);
        let p = |t: &Tensor<Flex, 2>| t.clone().into_primitive().tensor();
        let fp32 = Precision::Fp32;
        let (logp, lse) = Flex::logprob_head_forward(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            fp32,
        );
        let (want_logp, want_lse) = generic_forward::<Flex>(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            fp32,
        );
        assert_close::<1>("log-probs", logp, want_logp, 1e-5);
        assert_close::<1>("log-sum-exp", lse.clone(), want_lse, 1e-5);
        let g = grad.clone().into_primitive().tensor();
        let (gh, gw) = Flex::logprob_head_backward(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            lse.clone(),
            g.clone(),
            fp32,
        );
        let (want_gh, want_gw) = generic_backward::<Flex>(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            lse,
            g,
            fp32,
        );
        assert_close::<2>("d hidden", gh, want_gh, 1e-4);
        assert_close::<2>("d weight", gw, want_gw, 1e-4);

        // bf16: the forward equals fp32 on bf16-rounded inputs; the backward also rounds
        // `dlogits` to bf16, so it agrees to bf16's precision.
        let round = |t: &Tensor<Flex, 2>| {
            let values: Vec<f32> = host(t.clone()).into_iter().map(round_bf16).collect();
            Tensor::<Flex, 2>::from_data(TensorData::new(values, t.dims()), &dev)
        };
        let (hr, wr) = (round(&hidden), round(&weight));
        let bf16 = Precision::Bf16;
        let (logp, lse) = Flex::logprob_head_forward(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            bf16,
        );
        let (want_logp, want_lse) =
            Flex::logprob_head_forward(p(&hr), p(&wr), targets.clone().into_primitive(), fp32);
        assert_close::<1>("bf16 log-probs", logp, want_logp, 1e-5);
        assert_close::<1>("bf16 log-sum-exp", lse.clone(), want_lse, 1e-5);
        let g = grad.into_primitive().tensor();
        let (gh, gw) = Flex::logprob_head_backward(
            p(&hidden),
            p(&weight),
            targets.clone().into_primitive(),
            lse.clone(),
            g.clone(),
            bf16,
        );
        let (want_gh, want_gw) =
            Flex::logprob_head_backward(p(&hr), p(&wr), targets.into_primitive(), lse, g, fp32);
        assert_close::<2>("bf16 d hidden", gh, want_gh, 1e-2);
        assert_close::<2>("bf16 d weight", gw, want_gw, 1e-2);
    }
}
