//! Bad input gives one clear error naming what to fix.

mod common;

use std::fs;
use std::path::Path;

use burnish_model::{CausalLm, ModelError, TextTokenizer};
use common::*;

fn copy_fixture(name: &str, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn load(dir: &Path) -> Result<CausalLm<TestBackend>, ModelError> {
    CausalLm::<TestBackend>::from_pretrained(dir, &device())
}

#[test]
fn missing_folder_names_the_file() {
    let err = load(Path::new("/nonexistent/model")).unwrap_err();
    assert!(matches!(err, ModelError::Io { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/model/config.json"),
        "{err}"
    );
}

#[test]
fn unsupported_model_type() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama", dir.path());
    let config = fs::read_to_string(dir.path().join("config.json")).unwrap();
    fs::write(
        dir.path().join("config.json"),
        config.replace("\"llama\"", "\"mamba\""),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(
        matches!(err, ModelError::UnsupportedModelType { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mamba"), "{err}");
}

#[test]
fn shape_mismatch_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama", dir.path());
    let config = fs::read_to_string(dir.path().join("config.json")).unwrap();
    fs::write(
        dir.path().join("config.json"),
        config.replace("\"intermediate_size\": 64", "\"intermediate_size\": 48"),
    )
    .unwrap();
    let err = load(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, ModelError::Shape { .. }), "{text}");
    assert!(
        text.contains("mlp.gate_proj.weight") && text.contains("[64, 32]"),
        "{text}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    copy_fixture("llama-sharded", dir.path());
    // Drop the last shard: its tensors are missing now.
    let index = fs::read_to_string(dir.path().join("model.safetensors.index.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&index).unwrap();
    let mut map = json["weight_map"].as_object().unwrap().clone();
    map.retain(|_, v| v != "model-00004-of-00004.safetensors");
    fs::write(
        dir.path().join("model.safetensors.index.json"),
        serde_json::json!({"weight_map": map}).to_string(),
    )
    .unwrap();
    fs::remove_file(dir.path().join("model-00004-of-00004.safetensors")).unwrap();
    let err = load(dir.path()).unwrap_err();
    assert!(matches!(err, ModelError::MissingTensor { .. }), "{err}");
}

#[test]
fn tokenizer_that_does_not_parse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    fs::write(&path, "{\"model\": 42").unwrap();
    let err = TextTokenizer::from_file(&path).err().unwrap();
    assert!(matches!(err, ModelError::Tokenizer { .. }), "{err}");
    assert!(err.to_string().contains("tokenizer.json"));
}

/// A prompt that ends inside a word the tokenizer merges with the completion's first letters is
/// refused (the documented rule), while the same text split at a space scores.
#[test]
fn merge_across_the_boundary_is_an_error() {
    let tokenizer = TextTokenizer::from_model_dir(fixture("gpt2")).unwrap();
    let text = "The movie was wonderful and the acting was great.";
    let mut refused = 0;
    for (cut, _) in text.char_indices().skip(1) {
        let (prompt, completion) = text.split_at(cut);
        match tokenizer.prompt_completion(prompt, completion) {
            Ok(split) => assert_eq!(split.ids, tokenizer.encode(text).unwrap()),
            Err(ModelError::PromptBoundary { .. }) => refused += 1,
            Err(other) => panic!("unexpected error at {cut}: {other}"),
        }
    }
    assert!(refused > 0, "some split inside a word must cross a merge");
    assert!(
        tokenizer
            .prompt_completion("The movie was", " wonderful")
            .is_ok()
    );
    let err = tokenizer
        .prompt_completion("The movie was wonderf", "ul")
        .unwrap_err();
    assert!(matches!(err, ModelError::PromptBoundary { .. }), "{err}");
    assert!(matches!(
        tokenizer.prompt_completion("The movie", "").unwrap_err(),
        ModelError::EmptyCompletion { .. }
    ));
}

/// The llama3-rope fixture's config in transformers 4's form (top-level `rope_theta`,
/// `rope_scaling`) gives the same model; an unknown `rope_type` is one error naming it.
#[test]
fn rope_scaling_reads_both_config_formats_and_names_unknown_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("v4");
    copy_fixture("llama3-rope", &dir);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    let mut params = config
        .as_object_mut()
        .unwrap()
        .remove("rope_parameters")
        .unwrap();
    config["rope_theta"] = params["rope_theta"].take();
    params.as_object_mut().unwrap().remove("rope_theta");
    config["rope_scaling"] = params;
    fs::write(&path, config.to_string()).unwrap();
    let v4 = load(&dir).unwrap();
    let v5 = load(&fixture("llama3-rope")).unwrap();
    assert_eq!(v4.config.rope_scaling, v5.config.rope_scaling);
    assert_eq!(v4.config.rope_theta, 500_000.0);
    assert!(matches!(
        v4.config.rope_scaling,
        burnish_model::RopeScaling::Llama3 { factor, .. } if factor == 8.0
    ));

    config["rope_scaling"]["rope_type"] = "yarn".into();
    fs::write(&path, config.to_string()).unwrap();
    let err = load(&dir).err().unwrap().to_string();
    assert!(err.contains("yarn") && err.contains("llama3"), "{err}");
}
