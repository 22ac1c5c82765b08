//! LoRA adapters: a fresh adapter leaves the model's logits exactly as they were (B = 0); only
//! the adapters (and a reward head) get gradients; merging gives the adapted model's logits; a
//! PEFT folder written by burnish loads back to the same logits.

mod common;

use burn::backend::Autodiff;
use burn::module::Param;
use burn::tensor::{Distribution, Tensor};
use burnish_model::{CausalLm, LoraConfig, TargetModules};
use common::*;

fn logits(model: &CausalLm<TestBackend>, e: &Expected) -> Vec<f32> {
    to_vec(model.forward(
        ints(e.input_ids.clone(), [e.batch, e.seq]),
        ints(e.attention_mask.clone(), [e.batch, e.seq]),
    ))
}

fn config(modules: &[&str]) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout: 0.0,
        target_modules: TargetModules::Many(modules.iter().map(|s| s.to_string()).collect()),
    }
}

/// Gives every adapter a random `B`, as training would.
fn perturb(mut model: CausalLm<TestBackend>) -> CausalLm<TestBackend> {
    for block in &mut model.blocks {
        let attn = block.attn.lora.as_mut().unwrap();
        let mlp = block.mlp.lora.as_mut().unwrap();
        for lora in [
            &mut attn.q,
            &mut attn.k,
            &mut attn.v,
            &mut attn.qkv,
            &mut attn.o,
            &mut mlp.gate,
            &mut mlp.up,
            &mut mlp.down,
        ]
        .into_iter()
        .flatten()
        {
            let dims = lora.b.dims();
            lora.b = Param::from_tensor(Tensor::random(
                dims,
                Distribution::Normal(0.0, 0.5),
                &device(),
            ));
        }
    }
    model
}

const CASES: [(&str, &[&str]); 4] = [
    ("llama", &["q_proj", "v_proj"]),
    ("llama", &["all-linear"]),
    ("gpt2", &["c_attn", "c_proj", "c_fc"]),
    ("qwen3", &["all-linear"]),
];

#[test]
fn a_fresh_adapter_changes_nothing_and_merging_keeps_the_adapted_logits() {
    for (name, modules) in CASES {
        let base = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let e = expected(name);
        let before = logits(&base, &e);
        let adapted = base.with_lora(&config(modules), &device()).unwrap();
        assert!(adapted.has_lora());
        let fresh = max_abs_diff(&logits(&adapted, &e), &before);
        assert!(
            fresh <= SAME_WEIGHTS_LOGIT_TOLERANCE,
            "{name} {modules:?}: B = 0 must be the base model, moved {fresh}"
        );

        let trained = perturb(adapted);
        let with_adapters = logits(&trained, &e);
        let moved = max_abs_diff(&with_adapters, &before);
        assert!(
            moved > 1e-2,
            "{name} {modules:?}: the adapters did nothing ({moved})"
        );
        let merged = trained.merge_lora();
        assert!(!merged.has_lora());
        let diff = max_abs_diff(&logits(&merged, &e), &with_adapters);
        println!(
            "{name} {modules:?}: merged vs adapters {diff:.2e} (adapters moved logits {moved:.2})"
        );
        assert!(diff <= 1e-4, "{name} {modules:?}: merged differs by {diff}");
    }
}

#[test]
fn a_peft_folder_loads_back_to_the_same_logits() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (name, modules)) in CASES.into_iter().enumerate() {
        let dir = tmp.path().join(format!("adapter-{i}"));
        let base = CausalLm::<TestBackend>::from_pretrained(fixture(name), &device()).unwrap();
        let trained = perturb(base.clone().with_lora(&config(modules), &device()).unwrap());
        trained
            .save_peft_adapter(&dir, &config(modules), "fixture")
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("adapter_config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(json["peft_type"], "LORA");
        assert_eq!(json["r"], 4);
        let (loaded, loaded_config) = base.load_peft_adapter(&dir, &device()).unwrap();
        assert_eq!(loaded_config.r, 4);
        let e = expected(name);
        let diff = max_abs_diff(&logits(&loaded, &e), &logits(&trained, &e));
        assert!(
            diff <= SAME_WEIGHTS_LOGIT_TOLERANCE,
            "{name} {modules:?}: {diff}"
        );
    }
}

#[test]
fn only_the_adapters_get_gradients() {
    type Ad = Autodiff<TestBackend>;
    let base = CausalLm::<Ad>::from_pretrained(fixture("llama"), &device()).unwrap();
    let model = base
        .with_reward_head(&device())
        .with_lora(&config(&["q_proj", "down_proj"]), &device())
        .unwrap();
    let e = expected("llama");
    let ids = Tensor::from_data(
        burn::tensor::TensorData::new(e.input_ids.clone(), [e.batch, e.seq]),
        &device(),
    );
    let mask = Tensor::from_data(
        burn::tensor::TensorData::new(e.attention_mask.clone(), [e.batch, e.seq]),
        &device(),
    );
    let loss = model.forward(ids.clone(), mask.clone()).sum() + model.reward(ids, mask).sum();
    let grads = loss.backward();
    let block = &model.blocks[0];
    let lora = block.attn.lora.as_ref().unwrap().q.as_ref().unwrap();
    assert!(lora.b.grad(&grads).is_some(), "adapter B has a gradient");
    assert!(lora.a.grad(&grads).is_some(), "adapter A has a gradient");
    assert!(block.mlp.lora.as_ref().unwrap().down.is_some());
    assert!(
        block.attn.q.weight.grad(&grads).is_none(),
        "base q is frozen"
    );
    assert!(
        block.mlp.up.weight.grad(&grads).is_none(),
        "base up is frozen"
    );
    assert!(
        model.embed.weight.grad(&grads).is_none(),
        "the embedding is frozen"
    );
    assert!(
        model
            .reward_head
            .as_ref()
            .unwrap()
            .weight
            .grad(&grads)
            .is_some(),
        "a reward head trains with the adapters"
    );
}

#[test]
fn bad_lora_configs_are_one_clear_error() {
    let base = CausalLm::<TestBackend>::from_pretrained(fixture("llama"), &device()).unwrap();
    let err = base
        .clone()
        .with_lora(&config(&["c_attn"]), &device())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("\"c_attn\" is not a projection of a llama model") && err.contains("q_proj"),
        "{err}"
    );
    let zero_rank = LoraConfig {
        r: 0,
        ..LoraConfig::default()
    };
    assert!(base.with_lora(&zero_rank, &device()).is_err());
}
