//! Behaviour that must hold for every family: padding invariance, KV-cache equivalence,
//! reward-head reads, and lossless save/load in burn's and Hugging Face's formats.

mod common;

use burnish_model::{CausalLm, ModelConfig, SamplingConfig};
use common::*;

/// Per-sequence completion log-probs of padded rows equal those of each row alone.
#[test]
fn padding_side_does_not_change_logps() {
    for name in FAMILIES {
        let model = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let seq_a: Vec<i64> = vec![5, 17, 42, 99, 7, 63, 12, 200, 31];
        let seq_b: Vec<i64> = vec![8, 300, 4, 77, 150];
        // Completion = everything after the first two tokens.
        let alone = |ids: &[i64]| {
            let n = ids.len();
            let comp: Vec<i64> = (0..n).map(|i| i64::from(i >= 2)).collect();
            to_vec(
                model
                    .completion_logps(
                        ints(ids.to_vec(), [1, n]),
                        ints(vec![1; n], [1, n]),
                        ints(comp, [1, n]),
                    )
                    .logps,
            )[0]
        };
        let (want_a, want_b) = (alone(&seq_a), alone(&seq_b));
        let width = seq_a.len();
        let pad = width - seq_b.len();
        for left in [true, false] {
            let padded_b: Vec<i64> = if left {
                [vec![0; pad], seq_b.clone()].concat()
            } else {
                [seq_b.clone(), vec![0; pad]].concat()
            };
            let mask_b: Vec<i64> = padded_b
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let real = if left { i >= pad } else { i < seq_b.len() };
                    i64::from(real)
                })
                .collect();
            let comp_b: Vec<i64> = (0..width)
                .map(|i| {
                    let k = if left {
                        i as i64 - pad as i64
                    } else {
                        i as i64
                    };
                    i64::from(mask_b[i] == 1 && k >= 2)
                })
                .collect();
            let comp_a: Vec<i64> = (0..width).map(|i| i64::from(i >= 2)).collect();
            let ids = [seq_a.clone(), padded_b].concat();
            let mask = [vec![1; width], mask_b].concat();
            let comp = [comp_a, comp_b].concat();
            let got = to_vec(
                model
                    .completion_logps(
                        ints(ids, [2, width]),
                        ints(mask, [2, width]),
                        ints(comp, [2, width]),
                    )
                    .logps,
            );
            assert!(
                (got[0] - want_a).abs() < 1e-4,
                "{name}: row a {} vs {want_a}",
                got[0]
            );
            assert!(
                (got[1] - want_b).abs() < 1e-4,
                "{name} (left={left}): padded {} vs alone {want_b}",
                got[1]
            );
        }
    }
}

/// Greedy decoding gives the same tokens with and without the KV cache, on a batch whose
/// prompts have different lengths (so left padding is exercised too).
#[test]
fn kv_cache_gives_the_same_greedy_tokens() {
    for name in FAMILIES {
        let model = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let prompts = vec![vec![5u32, 17, 42, 99, 7], vec![8u32, 300]];
        let mut config = SamplingConfig {
            max_new_tokens: 12,
            temperature: 0.0,
            ..Default::default()
        };
        let cached = model.generate(&prompts, &config, &device()).unwrap();
        config.use_cache = false;
        let uncached = model.generate(&prompts, &config, &device()).unwrap();
        assert_eq!(cached, uncached, "{name}");
        assert_eq!(cached[0].len(), 12);
        // A row generated in a batch equals the row generated alone.
        let alone = model.generate(&prompts[1..], &config, &device()).unwrap();
        assert_eq!(alone[0], cached[1], "{name}: batched vs alone");
    }
}

#[test]
fn seeded_sampling_is_reproducible() {
    let model = CausalLm::<TestBackend>::from_pretrained(fixture("llama"), &device()).unwrap();
    let config = SamplingConfig {
        max_new_tokens: 10,
        temperature: 0.8,
        top_k: Some(50),
        top_p: Some(0.9),
        seed: 7,
        ..Default::default()
    };
    let a = model
        .generate(&[vec![1, 2, 3]], &config, &device())
        .unwrap();
    let b = model
        .generate(&[vec![1, 2, 3]], &config, &device())
        .unwrap();
    assert_eq!(a, b);
    let bad = SamplingConfig {
        temperature: -1.0,
        ..config
    };
    assert!(model.generate(&[vec![1]], &bad, &device()).is_err());
}

#[test]
fn reward_is_read_at_the_last_real_token() {
    let model = CausalLm::<TestBackend>::from_pretrained(fixture("qwen2"), &device())
        .unwrap()
        .with_reward_head(&device());
    let seq: Vec<i64> = vec![4, 9, 16, 25, 36];
    let alone = to_vec(model.reward(ints(seq.clone(), [1, 5]), ints(vec![1; 5], [1, 5])))[0];
    let ids = [vec![0, 0], seq.clone(), seq.clone(), vec![0, 0]].concat();
    let mask = [vec![0, 0, 1, 1, 1, 1, 1], vec![1, 1, 1, 1, 1, 0, 0]].concat();
    let rewards = to_vec(model.reward(ints(ids, [2, 7]), ints(mask, [2, 7])));
    for r in rewards {
        assert!((r - alone).abs() < 1e-4, "{r} vs {alone}");
    }
}

fn logits_of(model: &CausalLm<TestBackend>) -> Vec<f32> {
    let ids: Vec<i64> = vec![3, 14, 15, 92, 65, 35, 89, 79];
    to_vec(model.forward(ints(ids, [1, 8]), ints(vec![1; 8], [1, 8])))
}

#[test]
fn burn_record_round_trip_keeps_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["gpt2", "qwen2"] {
        let model = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device())
            .unwrap()
            .with_value_head(&device());
        let out = dir.path().join(name);
        model.save(&out).unwrap();
        let loaded = CausalLm::<TestBackend>::load(&out, &device()).unwrap();
        assert!(parameters(&model) == parameters(&loaded), "{name}");
        let diff = max_abs_diff(&logits_of(&model), &logits_of(&loaded));
        assert!(diff <= SAME_WEIGHTS_LOGIT_TOLERANCE, "{name}: {diff}");
        assert!(loaded.value_head.is_some());
    }
}

#[test]
fn hf_export_round_trip_keeps_logits() {
    let dir = tempfile::tempdir().unwrap();
    for name in FAMILIES {
        let model = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let out = dir.path().join(name);
        model.save_pretrained(&out).unwrap();
        burnish_model::copy_tokenizer_files(&fixture(name), &out).unwrap();
        let back = CausalLm::<TestBackend>::from_pretrained(&out, &device()).unwrap();
        assert!(parameters(&model) == parameters(&back), "{name}");
        let diff = max_abs_diff(&logits_of(&model), &logits_of(&back));
        assert!(diff <= SAME_WEIGHTS_LOGIT_TOLERANCE, "{name}: {diff}");
    }
    // A model trained from scratch exports too, and its head comes back.
    let fresh = CausalLm::<TestBackend>::init(&ModelConfig::gpt2(64, 16, 1, 2, 32), &device())
        .with_reward_head(&device());
    let out = dir.path().join("fresh");
    fresh.save_pretrained(&out).unwrap();
    let back = CausalLm::<TestBackend>::from_pretrained(&out, &device()).unwrap();
    assert!(back.reward_head.is_some());
    let ids = ints(vec![1, 2, 3], [1, 3]);
    let r1 = to_vec(fresh.reward(ids.clone(), ints(vec![1; 3], [1, 3])));
    let r2 = to_vec(back.reward(ids, ints(vec![1; 3], [1, 3])));
    assert!(max_abs_diff(&r1, &r2) <= SAME_WEIGHTS_LOGIT_TOLERANCE);
}
