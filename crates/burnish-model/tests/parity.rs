//! Parity with Hugging Face transformers: logits and completion log-probs of the tiny GPT-2,
//! Llama (single and sharded), Llama with Llama 3.1 RoPE scaling, Mistral, Qwen2 and Qwen3 checkpoints
//! must match within 1e-4.

mod common;

use burnish_model::{CausalLm, TextTokenizer};
use common::*;

const TOLERANCE: f32 = 1e-4;

#[test]
fn logits_match_transformers_on_padded_batches() {
    for name in FAMILIES {
        let model = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let e = expected(name);
        let logits = to_vec(model.forward(
            ints(e.input_ids.clone(), [e.batch, e.seq]),
            ints(e.attention_mask.clone(), [e.batch, e.seq]),
        ));
        let mut worst = 0.0f32;
        for b in 0..e.batch {
            for t in 0..e.seq {
                if e.attention_mask[b * e.seq + t] == 0 {
                    continue;
                }
                let at = (b * e.seq + t) * e.vocab;
                worst = worst.max(max_abs_diff(
                    &logits[at..at + e.vocab],
                    &e.logits[at..at + e.vocab],
                ));
            }
        }
        println!("{name}: max abs logit difference {worst:.3e}");
        assert!(
            worst <= TOLERANCE,
            "{name}: max abs logit difference {worst} > {TOLERANCE}"
        );
    }
}

#[test]
fn completion_logps_match_transformers() {
    for name in FAMILIES {
        let dir = fixture(name);
        let model = CausalLm::<TestBackend>::from_pretrained(&dir, &device()).unwrap();
        let tokenizer = TextTokenizer::from_model_dir(&dir).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        for case in json["cases"].as_array().unwrap() {
            let prompt = case["prompt"].as_str().unwrap();
            let completion = case["completion"].as_str().unwrap();
            let split = tokenizer.prompt_completion(prompt, completion).unwrap();
            let want_ids: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            let want_prompt = case["prompt_ids"].as_array().unwrap().len();
            assert_eq!(
                split.ids, want_ids,
                "{name}: token ids of {prompt:?} + {completion:?}"
            );
            assert_eq!(split.prompt_len, want_prompt);
            let n = split.ids.len();
            let completion_mask: Vec<i64> =
                (0..n).map(|i| i64::from(i >= split.prompt_len)).collect();
            let scored = model.completion_logps(
                ints(split.ids.iter().map(|&t| t as i64).collect(), [1, n]),
                ints(vec![1; n], [1, n]),
                ints(completion_mask, [1, n]),
            );
            let logp = to_vec(scored.logps)[0];
            let tokens = to_vec(scored.tokens)[0];
            let want = case["logp"].as_f64().unwrap() as f32;
            assert_eq!(tokens as u64, case["tokens"].as_u64().unwrap());
            assert!(
                (logp - want).abs() <= TOLERANCE * 10.0,
                "{name}: logp {logp} vs transformers {want}"
            );
        }
    }
}
