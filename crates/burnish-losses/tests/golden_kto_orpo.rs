//! Golden tests of KTO (with `apo_zero_unpaired`) and ORPO against float64 PyTorch values
//! following TRL 1.16's formulas (tests/fixtures/golden_kto_orpo.json, copied from the shared
//! fixtures): the loss, every metric the case lists (a `null` metric must be absent: TRL logs
//! nothing for a kind of row the batch lacks), and the gradient with respect to the policy
//! log-probs, within 1e-5 relative, in f64 and in f32.

mod common;

use burn::tensor::DType;
use burnish_losses::{PairwiseInputs, PreferenceLoss, UnpairedInputs, UnpairedLoss};
use common::*;
use serde_json::{Value, json};

fn cases() -> Vec<Value> {
    let text = include_str!("fixtures/golden_kto_orpo.json");
    let golden: Value = serde_json::from_str(text).expect("golden_kto_orpo.json parses");
    golden["cases"].as_array().expect("cases").clone()
}

fn config<T: serde::de::DeserializeOwned>(case: &Value) -> T {
    let mut table = case["params"].as_object().cloned().unwrap_or_default();
    table.insert("loss_type".into(), case["loss_type"].clone());
    serde_json::from_value(Value::Object(table)).expect("golden params deserialise")
}

fn check_metrics(label: &str, case: &Value, metrics: &burnish_losses::Metrics<B>) {
    for (name, expected) in case["metrics"].as_object().expect("metrics") {
        match expected.as_f64() {
            Some(expected) => {
                let actual = metrics
                    .get(name)
                    .unwrap_or_else(|| panic!("{label}: metric {name} missing"));
                assert_close(
                    &format!("{label} metric {name}"),
                    &values_ad(actual),
                    &[expected],
                );
            }
            None => assert!(
                metrics.get(name).is_none(),
                "{label}: metric {name} should be absent (no row of that kind)"
            ),
        }
    }
}

/// Runs every case of `loss_types`; returns how many were checked.
fn run(loss_types: &[&str]) -> usize {
    let mut checked = 0;
    for (index, case) in cases().iter().enumerate() {
        let loss_type = case["loss_type"].as_str().expect("loss_type");
        if !loss_types.contains(&loss_type) {
            continue;
        }
        let label = format!("case {index} ({loss_type}, {:?})", dtype());
        if loss_type == "orpo" {
            orpo_case(&label, case);
        } else {
            unpaired_case(&label, case);
        }
        checked += 1;
    }
    checked
}

fn unpaired_case(label: &str, case: &Value) {
    let loss: UnpairedLoss = config(case);
    loss.validate().expect("valid params");
    let policy = t1(&floats(&case["policy_logps"])).require_grad();
    let labels: Vec<bool> = case["labels"]
        .as_array()
        .expect("labels")
        .iter()
        .map(|l| l.as_bool().expect("bool label"))
        .collect();
    let inputs = UnpairedInputs::new(
        policy.clone(),
        t1(&floats(&case["reference_logps"])),
        labels,
    )
    .with_kl(
        t1(&floats(&case["policy_kl_logps"])),
        t1(&floats(&case["reference_kl_logps"])),
    );
    let output = loss.compute(&inputs).expect("loss evaluates");
    assert_close(
        &format!("{label} loss"),
        &values_ad(&output.loss),
        &[case["loss"].as_f64().expect("loss")],
    );
    assert_close(
        &format!("{label} kl"),
        &values_ad(output.metrics.get("kl").expect("kl metric")),
        &[case["kl"].as_f64().expect("kl")],
    );
    check_metrics(label, case, &output.metrics);
    let grads = gradients(&output.loss, &[&policy]);
    assert_close(
        &format!("{label} d/d policy_logps"),
        &grads[0],
        &floats(&case["grad_policy_logps"]),
    );
}

fn orpo_case(label: &str, case: &Value) {
    let loss: PreferenceLoss = config(case);
    assert!(!loss.needs_reference(), "ORPO is reference-free");
    let chosen = t1(&floats(&case["policy_chosen_logps"])).require_grad();
    let rejected = t1(&floats(&case["policy_rejected_logps"])).require_grad();
    let inputs = PairwiseInputs::new(
        chosen.clone(),
        rejected.clone(),
        t1(&floats(&case["chosen_lengths"])),
        t1(&floats(&case["rejected_lengths"])),
    );
    let output = loss.pairwise(&inputs).expect("loss evaluates");
    assert_close(
        &format!("{label} loss"),
        &values_ad(&output.loss),
        &[case["loss"].as_f64().expect("loss")],
    );
    check_metrics(label, case, &output.metrics);
    let grads = gradients(&output.loss, &[&chosen, &rejected]);
    assert_close(
        &format!("{label} d/d policy_chosen_logps"),
        &grads[0],
        &floats(&case["grad_policy_chosen_logps"]),
    );
    assert_close(
        &format!("{label} d/d policy_rejected_logps"),
        &grads[1],
        &floats(&case["grad_policy_rejected_logps"]),
    );
}

#[test]
fn kto_matches_golden() {
    assert_eq!(run(&["kto"]), 4);
}

#[test]
fn apo_zero_unpaired_matches_golden() {
    assert_eq!(run(&["apo_zero_unpaired"]), 1);
}

#[test]
fn orpo_matches_golden() {
    assert_eq!(run(&["orpo"]), 2);
}

/// The same cases with f32 tensors, the float type training uses.
#[test]
fn kto_orpo_match_golden_in_f32() {
    force_dtype(DType::F32);
    assert_eq!(run(&["kto", "apo_zero_unpaired", "orpo"]), 7);
}

#[test]
fn kto_without_the_kl_estimate_is_an_error() {
    let loss = UnpairedLoss::default();
    assert!(loss.needs_kl());
    let inputs = UnpairedInputs::new(t1(&[-1.0, -2.0]), t1(&[-1.5, -2.5]), vec![true, false]);
    let error = loss.compute(&inputs).expect_err("no KL estimate");
    assert!(error.to_string().contains("kto"), "{error}");
    // apo_zero_unpaired needs none.
    let apo: UnpairedLoss = config(&json!({"loss_type": "apo_zero_unpaired", "params": {}}));
    assert!(!apo.needs_kl());
    apo.compute(&inputs)
        .expect("apo_zero_unpaired needs no KL estimate");
}

#[test]
fn unpaired_inputs_are_checked() {
    let loss = UnpairedLoss::default();
    let short_labels = UnpairedInputs::new(t1(&[-1.0, -2.0]), t1(&[-1.5, -2.5]), vec![true])
        .with_kl(t1(&[-1.0, -2.0]), t1(&[-1.0, -2.0]));
    let error = loss.compute(&short_labels).expect_err("labels too short");
    assert!(error.to_string().contains("labels"), "{error}");
    let bad: Result<UnpairedLoss, _> =
        toml::from_str("loss_type = \"kto\"\ndesirable_weight = -1.0");
    let error = bad
        .expect("parses")
        .validate()
        .expect_err("negative weight");
    assert!(error.to_string().contains("desirable_weight"), "{error}");
}
