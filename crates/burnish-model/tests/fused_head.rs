//! The fused, chunked output head equals the straightforward path it replaces: the op alone
//! against full logits + log-softmax + gather, and the model's `completion_logps` against
//! `completion_logps_unfused`, in value and in every gradient that flows from them.

mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use burnish_model::ops::logprob_head::{logprob_head, reference_logprobs};
use burnish_model::{CausalLm, Precision};
use common::*;

type Ad = Autodiff<TestBackend>;

fn host<const D: usize>(t: Tensor<TestBackend, D>) -> Vec<f32> {
    to_vec(t)
}

/// `max |a - b| <= tol * max |b|`, with a message naming what differs.
fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = max_abs_diff(got, want);
    assert!(
        diff <= tol * scale,
        "{what}: max |diff| {diff} > {tol} x max |want| {scale}"
    );
}

/// Random hidden states, weight and targets; more rows than the flex kernel's chunk, so that
/// chunk boundaries are crossed.
fn random_problem(n: usize, d: usize, vocab: usize) -> (Tensor<Ad, 2>, Tensor<Ad, 2>, Vec<i64>) {
    let dev = device();
    let hidden = Tensor::<Ad, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
    let weight = Tensor::<Ad, 2>::random([vocab, d], Distribution::Normal(0.0, 0.5), &dev);
    let targets = (0..n).map(|i| ((i * 7919 + 13) % vocab) as i64).collect();
    (hidden, weight, targets)
}

#[test]
fn fused_op_equals_log_softmax_gather_in_value_and_gradients() {
    let (n, d, vocab) = (300, 24, 777);
    let (hidden, weight, targets) = random_problem(n, d, vocab);
    let dev = device();
    let targets = Tensor::<Ad, 1, Int>::from_data(TensorData::new(targets, [n]), &dev);
    // A weighted sum, so every position's gradient has its own scale and sign.
    let coeff: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 0.3 + 0.1).collect();
    let coeff = Tensor::<Ad, 1>::from_data(TensorData::new(coeff, [n]), &dev);

    let run = |fused: bool| {
        let h = hidden.clone().detach().require_grad();
        let w = weight.clone().detach().require_grad();
        let logp = if fused {
            logprob_head(h.clone(), w.clone(), targets.clone(), Precision::Fp32)
        } else {
            reference_logprobs(h.clone(), w.clone(), targets.clone())
        };
        let grads = (logp.clone() * coeff.clone()).sum().backward();
        (
            host(logp.inner()),
            host(h.grad(&grads).unwrap()),
            host(w.grad(&grads).unwrap()),
        )
    };
    let (logp, gh, gw) = run(true);
    let (want_logp, want_gh, want_gw) = run(false);
    assert_close("log-probs", &logp, &want_logp, 1e-5);
    assert_close("d hidden", &gh, &want_gh, 1e-4);
    assert_close("d weight", &gw, &want_gw, 1e-4);
}

#[test]
fn fused_op_without_gradients_matches_too() {
    let (n, d, vocab) = (5, 8, 50);
    let dev = device();
    let hidden = Tensor::<TestBackend, 2>::random([n, d], Distribution::Normal(0.0, 1.0), &dev);
    let weight = Tensor::<TestBackend, 2>::random([vocab, d], Distribution::Normal(0.0, 1.0), &dev);
    let targets = Tensor::<TestBackend, 1, Int>::from_data(
        TensorData::new(vec![0i64, 49, 7, 7, 23], [n]),
        &dev,
    );
    let got = host(logprob_head(
        hidden.clone(),
        weight.clone(),
        targets.clone(),
        Precision::Fp32,
    ));
    let want = host(reference_logprobs(hidden, weight, targets));
    assert_close("log-probs", &got, &want, 1e-5);
}

fn grad_of(
    p: &Param<Tensor<Ad, 2>>,
    grads: &<Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    host(p.val().grad(grads).expect("the parameter has a gradient"))
}

/// Tied (GPT-2) and untied (Llama, Qwen2) heads: the model's fused completion log-probs and
/// their gradients equal the unfused path's, on a right- and left-padded batch.
#[test]
fn completion_logps_fused_equals_unfused_for_every_family() {
    for name in ["gpt2", "llama", "qwen2"] {
        let model = CausalLm::<Ad>::from_pretrained(fixture(name), &device()).unwrap();
        let dev = device();
        let ids: Vec<i64> = vec![
            5, 17, 42, 99, 7, 63, 12, 200, 31, 0, 0, // right-padded
            0, 0, 0, 8, 300, 4, 77, 150, 9, 10, 11, // left-padded
            1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, // full
        ];
        let mask: Vec<i64> = vec![
            1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, //
            0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, //
            1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
        ];
        let completion: Vec<i64> = vec![
            0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, //
            0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, //
            0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1,
        ];
        let t = |v: &Vec<i64>| {
            Tensor::<Ad, 2, Int>::from_data(TensorData::new(v.clone(), [3, 11]), &dev)
        };
        let weights =
            Tensor::<Ad, 1>::from_data(TensorData::new(vec![1.0f32, -0.5, 2.0], [3]), &dev);
        let run = |fused: bool| {
            let scored = if fused {
                model.completion_logps(t(&ids), t(&mask), t(&completion))
            } else {
                model.completion_logps_unfused(t(&ids), t(&mask), t(&completion))
            };
            let grads = (scored.logps.clone() * weights.clone()).sum().backward();
            let mut out = vec![
                ("logps", host(scored.logps.inner())),
                ("tokens", host(scored.tokens.inner())),
                ("embed", grad_of(&model.embed.weight, &grads)),
                ("block 0 q", grad_of(&model.blocks[0].attn.q.weight, &grads)),
                (
                    "last block down",
                    grad_of(&model.blocks.last().unwrap().mlp.down.weight, &grads),
                ),
                (
                    "final norm",
                    host(model.final_norm.weight.val().grad(&grads).unwrap()),
                ),
            ];
            if let Some(head) = &model.lm_head {
                out.push(("lm_head", grad_of(&head.weight, &grads)));
            }
            out
        };
        for ((what, got), (_, want)) in run(true).iter().zip(run(false).iter()) {
            assert_close(&format!("{name} {what}"), got, want, 1e-4);
        }
    }
}

/// A batch with no completion token scores 0 with 0 tokens, as the unfused path does.
#[test]
fn no_completion_tokens_gives_zero() {
    let model = CausalLm::<TestBackend>::from_pretrained(fixture("gpt2"), &device()).unwrap();
    let scored = model.completion_logps(
        ints(vec![5, 6, 7], [1, 3]),
        ints(vec![1, 1, 1], [1, 3]),
        ints(vec![0, 0, 0], [1, 3]),
    );
    assert_eq!(to_vec(scored.logps), vec![0.0]);
    assert_eq!(to_vec(scored.tokens), vec![0.0]);
}
