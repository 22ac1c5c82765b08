//! GGUF in and out: the tiny llama and qwen2 GGUF files (mixed Q8_0 / Q4_0 / Q4_1 / F16 / F32
//! tensors in llama.cpp's layout) must give the logits and completion log-probs transformers
//! computes when it loads the same files, within 1e-4; an exported GGUF file must load back to
//! the same logits; a malformed file must be one error naming it and what is wrong.

mod common;

use std::path::{Path, PathBuf};

use burnish_model::gguf::{
    GgufDtype, GgufFile, tokenizer_metadata_from_gguf, tokenizer_metadata_from_hf,
};
use burnish_model::{CausalLm, ModelError, TextTokenizer};
use common::*;

const TOLERANCE: f32 = 1e-4;

fn gguf_fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gguf")
        .join(name)
}

fn logits_of(model: &CausalLm<TestBackend>, e: &Expected) -> Vec<f32> {
    to_vec(model.forward(
        ints(e.input_ids.clone(), [e.batch, e.seq]),
        ints(e.attention_mask.clone(), [e.batch, e.seq]),
    ))
}

#[test]
fn gguf_logits_and_logps_match_transformers() {
    for name in ["llama", "qwen2"] {
        let dir = gguf_fixture(name);
        let path = dir.join("model.gguf");
        let model = CausalLm::<TestBackend>::from_pretrained(&path, &device()).unwrap();
        let e = expected_at(&dir.join("expected.safetensors"));
        let worst = max_abs_diff(&logits_of(&model, &e), &e.logits);
        println!("{name}.gguf: max abs logit difference {worst:.3e}");
        assert!(worst <= TOLERANCE, "{name}: {worst} > {TOLERANCE}");

        let tokenizer = TextTokenizer::from_model_dir(&path).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        for case in json["cases"].as_array().unwrap() {
            let (prompt, completion) = (
                case["prompt"].as_str().unwrap(),
                case["completion"].as_str().unwrap(),
            );
            let split = tokenizer.prompt_completion(prompt, completion).unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(
                split.ids, want,
                "{name}: ids of {prompt:?} + {completion:?}"
            );
            let n = split.ids.len();
            let scored = model.completion_logps(
                ints(split.ids.iter().map(|&t| i64::from(t)).collect(), [1, n]),
                ints(vec![1; n], [1, n]),
                ints(
                    (0..n).map(|i| i64::from(i >= split.prompt_len)).collect(),
                    [1, n],
                ),
            );
            let logp = to_vec(scored.logps)[0];
            let want = case["logp"].as_f64().unwrap() as f32;
            assert!(
                (logp - want).abs() <= TOLERANCE * 10.0,
                "{name}: logp {logp} vs transformers' {want}"
            );
        }
    }
}

#[test]
fn the_gguf_tokenizer_matches_the_hugging_face_one() {
    // The GGUF fixtures were made from the Hugging Face fixtures of the same name.
    let texts = [
        "Explain the moon landing to a six year old.",
        "  two  spaces, digits 12345 and <|endoftext|> inside\nnew line",
        "",
    ];
    for name in ["llama", "qwen2"] {
        let gguf = TextTokenizer::from_model_dir(gguf_fixture(name).join("model.gguf")).unwrap();
        let hf = TextTokenizer::from_model_dir(fixture(name)).unwrap();
        for text in texts {
            assert_eq!(
                gguf.encode(text).unwrap(),
                hf.encode(text).unwrap(),
                "{name}: {text:?}"
            );
        }
    }
}

fn round_trip(
    model: &CausalLm<TestBackend>,
    tokenizer: Vec<(String, burnish_model::gguf::MetaValue)>,
    dtype: GgufDtype,
) -> f32 {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("out.gguf");
    model.save_gguf(&path, dtype, tokenizer).unwrap();
    let back = CausalLm::<TestBackend>::from_pretrained(&path, &device()).unwrap();
    let e = expected(match model.config.family {
        burnish_model::Family::Gpt2 => "gpt2",
        burnish_model::Family::Qwen3 => "qwen3",
        _ => "llama",
    });
    max_abs_diff(&logits_of(model, &e), &logits_of(&back, &e))
}

#[test]
fn exported_gguf_loads_back_with_the_same_logits() {
    // From GGUF: the tokenizer metadata is carried over.
    let path = gguf_fixture("llama").join("model.gguf");
    let model = CausalLm::<TestBackend>::from_pretrained(&path, &device()).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let f32_diff = round_trip(&model, tokenizer_metadata_from_gguf(&file), GgufDtype::F32);
    assert!(f32_diff <= 1e-5, "llama.gguf F32 round trip: {f32_diff}");
    let f16_diff = round_trip(&model, tokenizer_metadata_from_gguf(&file), GgufDtype::F16);
    println!("llama.gguf: F32 round trip {f32_diff:.2e}, F16 {f16_diff:.2e}");
    // F16 keeps about 3 significant digits of each weight; a layout error moves logits by ~1.
    assert!(f16_diff <= 5e-2, "llama.gguf F16 round trip: {f16_diff}");

    // From Hugging Face folders: Llama's Q/K permutation, GPT-2's transposed Conv1D weights
    // and Qwen3's q/k norms all go out and come back.
    for name in ["llama", "gpt2", "qwen3"] {
        let dir = fixture(name);
        let model = CausalLm::<TestBackend>::from_pretrained(&dir, &device()).unwrap();
        let meta = tokenizer_metadata_from_hf(&dir, model.config.vocab_size).unwrap();
        let diff = round_trip(&model, meta, GgufDtype::F32);
        println!("{name}: HF -> GGUF F32 -> burnish: max abs logit difference {diff:.2e}");
        assert!(diff <= 1e-5, "{name}: {diff}");
    }
}

#[test]
fn exported_tokenizer_metadata_rebuilds_the_same_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("gpt2");
    let model = CausalLm::<TestBackend>::from_pretrained(&dir, &device()).unwrap();
    let path = tmp.path().join("gpt2.gguf");
    model
        .save_gguf(
            &path,
            GgufDtype::F16,
            tokenizer_metadata_from_hf(&dir, model.config.vocab_size).unwrap(),
        )
        .unwrap();
    let back = TextTokenizer::from_model_dir(&path).unwrap();
    let hf = TextTokenizer::from_model_dir(&dir).unwrap();
    let text = "The movie was great, 10/10! <|endoftext|>";
    assert_eq!(back.encode(text).unwrap(), hf.encode(text).unwrap());
}

fn error_for(bytes: Vec<u8>, tmp: &Path, file: &str) -> String {
    let path = tmp.join(file);
    std::fs::write(&path, bytes).unwrap();
    let err = match CausalLm::<TestBackend>::from_pretrained(&path, &device()) {
        Err(e) => e,
        Ok(_) => panic!("{file} loaded"),
    };
    assert!(matches!(err, ModelError::Gguf { .. }), "{file}: {err:?}");
    let message = err.to_string();
    assert!(message.contains(file), "{message} does not name {file}");
    message
}

fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(from.len())
        .position(|w| w == from)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

#[test]
fn malformed_gguf_files_are_one_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let good = std::fs::read(gguf_fixture("llama").join("model.gguf")).unwrap();

    let message = error_for(b"{\"not\": \"gguf\"}".to_vec(), tmp.path(), "text.gguf");
    assert!(message.contains("not a GGUF file"), "{message}");

    let mut v2 = good.clone();
    v2[4..8].copy_from_slice(&2u32.to_le_bytes());
    let message = error_for(v2, tmp.path(), "v2.gguf");
    assert!(message.contains("GGUF version 2"), "{message}");

    let other = replace(
        &good,
        b"\x05\x00\x00\x00\x00\x00\x00\x00llama",
        b"\x05\x00\x00\x00\x00\x00\x00\x00mamba",
    );
    let message = error_for(other, tmp.path(), "arch.gguf");
    assert!(message.contains("\"mamba\" is not supported"), "{message}");

    // The first tensor's type id (F32 = 0) becomes IQ2_XXS (16).
    let file = GgufFile::open(gguf_fixture("llama").join("model.gguf")).unwrap();
    let first = &file.tensors()[0];
    let mut entry = (first.name.len() as u64).to_le_bytes().to_vec();
    entry.extend_from_slice(first.name.as_bytes());
    entry.extend_from_slice(&(first.dims.len() as u32).to_le_bytes());
    for &d in &first.dims {
        entry.extend_from_slice(&(d as u64).to_le_bytes());
    }
    let mut patched = entry.clone();
    patched.extend_from_slice(&16u32.to_le_bytes());
    entry.extend_from_slice(&first.ty.id().to_le_bytes());
    let message = error_for(replace(&good, &entry, &patched), tmp.path(), "type.gguf");
    assert!(
        message.contains(&first.name) && message.contains("IQ2_XXS"),
        "{message}"
    );

    let message = error_for(good[..good.len() / 2].to_vec(), tmp.path(), "cut.gguf");
    assert!(message.contains("truncated"), "{message}");
    let message = error_for(good[..100].to_vec(), tmp.path(), "head.gguf");
    assert!(message.contains("truncated"), "{message}");
}
