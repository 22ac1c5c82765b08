//! Prefix sharing and packing are exact: the packed layout's per-sequence log-probs and the
//! gradients of a DPO loss through them equal the padded, unshared batch's, for GPT-2 (learned
//! positions, tied head) and Llama (RoPE, grouped-query heads, untied head).

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use burnish_data::{Collator, TokenizedPair};
use burnish_model::{CausalLm, ModelConfig};
use burnish_train::batch::TokenTensors;
use burnish_train::objectives::{packed_pair_logps, pair_logps};
use serde_json::json;

type B = burn::backend::Autodiff<burn::backend::Flex>;

fn device() -> <B as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

/// Uneven pairs: long and short prompts and completions, a one-token completion and an empty
/// prompt, so rows pack several pairs and the padded batch holds much padding.
fn pairs() -> Vec<TokenizedPair> {
    let seq = |start: u32, len: u32| {
        (0..len)
            .map(|i| 3 + (start + i * 7) % 90)
            .collect::<Vec<_>>()
    };
    let pair = |p: Vec<u32>, c: Vec<u32>, r: Vec<u32>| TokenizedPair {
        prompt_ids: p,
        chosen_ids: c,
        rejected_ids: r,
        margin: None,
        ref_chosen_logp: None,
        ref_rejected_logp: None,
    };
    vec![
        pair(seq(1, 12), seq(5, 9), seq(8, 4)),
        pair(seq(2, 3), seq(6, 2), seq(9, 5)),
        pair(seq(3, 5), seq(7, 1), seq(10, 1)),
        pair(Vec::new(), seq(11, 4), seq(12, 3)),
        pair(seq(4, 2), seq(13, 6), seq(14, 6)),
    ]
}

fn models() -> Vec<(&'static str, CausalLm<B>)> {
    let llama = ModelConfig::from_json(
        json!({
            "model_type": "llama", "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6, "tie_word_embeddings": false
        }),
        std::path::Path::new("(test llama)"),
    )
    .unwrap();
    vec![
        (
            "gpt2",
            CausalLm::init(&ModelConfig::gpt2(96, 32, 2, 4, 64), &device()),
        ),
        ("llama", CausalLm::init(&llama, &device())),
    ]
}

fn host<X: burn::tensor::backend::Backend>(t: Tensor<X, 1>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec().unwrap()
}

fn grad2(
    p: &Param<Tensor<B, 2>>,
    grads: &<B as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    p.val().grad(grads).unwrap().into_data().into_vec().unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(
        diff <= 1e-4 * scale,
        "{what}: max |diff| {diff} vs max |want| {scale}"
    );
}

#[test]
fn packed_pairs_score_and_differentiate_like_padded_pairs() {
    let pairs = pairs();
    let collator = Collator::new(0);
    let packed = collator.pack_pairs(&pairs);
    let padded = collator.collate_pairs(&pairs);
    // The layout really shares and packs: fewer positions than the padded batch, and the
    // tokens/s count is the unshared one.
    assert!(
        packed.rows < pairs.len(),
        "{} rows for {} pairs",
        packed.rows,
        pairs.len()
    );
    assert!(packed.rows * packed.seq_len < 2 * pairs.len() * padded.seq_len);
    let unshared_real = padded.attention_mask.iter().filter(|&&m| m).count();
    assert_eq!(packed.real_tokens, unshared_real);
    assert_eq!(packed.completion_lengths, padded.completion_lengths);

    for (name, model) in models() {
        let run = |shared: bool| {
            let (chosen, rejected) = if shared {
                packed_pair_logps(&model, &packed, &device())
            } else {
                pair_logps(&model, &TokenTensors::<B>::from_pairs(&padded, &device()))
            };
            // A DPO-like scalar mixing both sides, so gradients flow through every sequence.
            let w = Tensor::<B, 1>::from_data(
                TensorData::new(vec![0.7f32, -1.1, 0.4, 1.3, -0.2], [5]),
                &device(),
            );
            let loss = ((chosen.clone() - rejected.clone()) * w).sum();
            let grads = loss.backward();
            let block = &model.blocks[0];
            vec![
                ("chosen", host(chosen.inner())),
                ("rejected", host(rejected.inner())),
                ("embed", grad2(&model.embed.weight, &grads)),
                ("block 0 q", grad2(&block.attn.q.weight, &grads)),
                ("block 0 up", grad2(&block.mlp.up.weight, &grads)),
            ]
        };
        for ((what, got), (_, want)) in run(true).into_iter().zip(run(false)) {
            assert_close(&format!("{name} {what}"), &got, &want);
        }
    }
}
