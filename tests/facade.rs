//! The `burnish` facade end to end, used the way the examples use it: load a checkpoint, write
//! and read Parquet, precompute the reference, train pairwise (DPO, ORPO), listwise (PRO,
//! Plackett-Luce, K-wise reward model) and unpaired (KTO) runs for a few steps on the tiny GPT-2
//! fixture, export, reload and score. A change that breaks the public API breaks this file.

use std::path::{Path, PathBuf};

use burnish::burn::backend::{Autodiff, Flex};
use burnish::burn::module::AutodiffModule;
use burnish::data::{
    ListwiseRow, ListwiseSchema, ListwiseWriter, PairSchema, PairWriter, PreferencePair, Ranking,
    ReaderBuilder, UnpairedRow, UnpairedSchema, UnpairedWriter,
};
use burnish::model::CausalLm;
use burnish::train::config::TrainingConfig;
use burnish::train::pipeline::{
    PrecomputeOptions, RunSummary, precompute_reference_file, run_dpo, run_encoder, run_kto,
    run_reward,
};
use burnish::train::trainer::RunOptions;

type B = Autodiff<Flex>;

fn device() -> <B as burnish::burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

fn gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/burnish-model/tests/fixtures/hf/gpt2")
}

const SUBJECTS: [&str; 6] = [
    "The film",
    "This book",
    "The meal",
    "Our trip",
    "The show",
    "That song",
];
const GOOD: [&str; 3] = [" was great.", " felt lovely.", " went well."];
const BAD: [&str; 3] = [" was awful.", " felt dull.", " went badly."];

fn prompt(i: usize) -> String {
    format!("{} #{i}", SUBJECTS[i % SUBJECTS.len()])
}

fn write_pairs(path: &Path, n: usize) {
    let pairs: Vec<PreferencePair> = (0..n)
        .map(|i| PreferencePair::new(prompt(i).as_str(), GOOD[i % 3], BAD[(i / 3) % 3]))
        .collect();
    let mut writer = PairWriter::create(path, PairSchema::of(&pairs[0])).expect("writer");
    for pair in pairs {
        writer.write(pair).expect("write");
    }
    writer.finish().expect("finish");
}

/// Rankings of four responses, two of them tied: good > neutral > bad = bad.
fn write_rankings(path: &Path, n: usize) {
    let rows: Vec<ListwiseRow> = (0..n)
        .map(|i| ListwiseRow {
            id: None,
            prompt: prompt(i).into(),
            responses: vec![
                BAD[i % 3].into(),
                GOOD[i % 3].into(),
                " happened.".into(),
                BAD[(i + 1) % 3].into(),
            ],
            ranking: Ranking::Ranks(vec![2, 0, 1, 2]),
            ref_logps: None,
        })
        .collect();
    let mut writer = ListwiseWriter::create(path, ListwiseSchema::of(&rows[0])).expect("writer");
    for row in rows {
        writer.write(row).expect("write");
    }
    writer.finish().expect("finish");
}

fn write_unpaired(path: &Path, n: usize) {
    let rows: Vec<UnpairedRow> = (0..n)
        .map(|i| UnpairedRow {
            id: None,
            prompt: prompt(i / 2).into(),
            completion: if i % 2 == 0 { GOOD[i % 3] } else { BAD[i % 3] }.into(),
            label: i % 2 == 0,
            ref_logp: None,
            ref_kl_logp: None,
        })
        .collect();
    let mut writer = UnpairedWriter::create(path, UnpairedSchema::of(&rows[0])).expect("writer");
    for row in rows {
        writer.write(row).expect("write");
    }
    writer.finish().expect("finish");
}

/// A `datasets.save_to_disk` folder (Arrow IPC stream shards listed in `state.json`) of pairs
/// with a user's own column names.
fn write_save_to_disk(dir: &Path, n: usize) {
    use arrow::array::{ArrayRef, RecordBatch, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    std::fs::create_dir_all(dir).expect("folder");
    let column = |f: &dyn Fn(usize) -> String| -> ArrayRef {
        Arc::new(StringArray::from((0..n).map(f).collect::<Vec<_>>()))
    };
    let schema = Arc::new(Schema::new(
        ["question", "good", "bad"]
            .map(|name| Field::new(name, DataType::Utf8, false))
            .to_vec(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            column(&|i| prompt(i)),
            column(&|i| GOOD[i % 3].to_string()),
            column(&|i| BAD[(i / 3) % 3].to_string()),
        ],
    )
    .expect("batch");
    let name = "data-00000-of-00001.arrow";
    let file = std::fs::File::create(dir.join(name)).expect("shard");
    let mut writer = arrow::ipc::writer::StreamWriter::try_new(file, &schema).expect("writer");
    writer.write(&batch).expect("write");
    writer.finish().expect("finish");
    let state = format!(r#"{{"_data_files": [{{"filename": "{name}"}}], "_split": "train"}}"#);
    std::fs::write(dir.join("state.json"), state).expect("state.json");
    std::fs::write(dir.join("dataset_info.json"), "{}").expect("dataset_info.json");
}

fn config(dir: &Path, data: &Path, loss: &str, steps: u64) -> TrainingConfig {
    let text = format!(
        r#"
[model]
path = {model:?}
[data]
train = {data:?}
max_length = 32
max_prompt_length = 16
eval_fraction = 0.25
[optimizer]
lr = 2e-3
[train]
max_steps = {steps}
batch_size = 4
eval_every = 0
checkpoint_every = 0
seed = 5
output_dir = {out:?}
[loss]
{loss}
"#,
        model = gpt2().display().to_string(),
        data = data.display().to_string(),
        out = dir.join("run").display().to_string(),
    );
    TrainingConfig::from_toml_str(&text, "facade test", &[] as &[&str]).expect("config")
}

fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..RunOptions::default()
    }
}

/// Summed completion log-prob of `completion` after `prompt` under `model`.
fn score(model: &CausalLm<Flex>, config: &TrainingConfig, prompt: &str, completion: &str) -> f32 {
    let encoder = run_encoder(config).expect("encoder");
    let pair = encoder
        .encode_pair(&PreferencePair::new(prompt, completion, " x"))
        .expect("encodes");
    let collator = burnish::train::pipeline::collator_for(&encoder);
    let tokens = burnish::train::batch::TokenTensors::<Flex>::from_pairs(
        &collator.collate_pairs(&[pair]),
        &Default::default(),
    );
    let scored = model.completion_logps(
        tokens.input_ids,
        tokens.attention_mask,
        tokens.completion_mask,
    );
    scored.logps.into_data().to_vec::<f32>().expect("f32")[0]
}

/// The held-out loss fell, the export reloads to the trained weights' scores.
fn check_run(summary: &RunSummary<B>, config: &TrainingConfig, what: &str) {
    let before = summary.initial_eval.as_ref().expect("held-out rows before");
    let after = summary
        .outcome
        .last_eval
        .as_ref()
        .expect("held-out rows after");
    println!(
        "{what}: held-out loss {:.4} -> {:.4}, metrics {:?}",
        before.loss, after.loss, after.metrics
    );
    assert!(
        after.loss < before.loss,
        "{what}: held-out loss {} -> {}",
        before.loss,
        after.loss
    );
    let exported = summary.final_dir.as_ref().expect("exported");
    let reloaded = CausalLm::<Flex>::from_pretrained(exported, &device()).expect("reloads");
    let trained = summary.outcome.model.valid();
    let (a, b) = (
        score(&trained, config, "The film #0", GOOD[0]),
        score(&reloaded, config, "The film #0", GOOD[0]),
    );
    assert!(
        (a - b).abs() < 1e-5,
        "{what}: export scores {b}, the trained model {a}"
    );
}

#[test]
fn pairwise_dpo_on_precomputed_reference_and_orpo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 48);
    let cached = dir.path().join("pairs.ref.parquet");
    let options = PrecomputeOptions {
        max_length: 32,
        max_prompt_length: 16,
        progress: false,
        ..PrecomputeOptions::default()
    };
    let report = precompute_reference_file::<Flex>(&gpt2(), &data, &cached, &options, &device())
        .expect("precompute");
    assert_eq!((report.read, report.written, report.scored), (48, 48, 48));
    let rows: Vec<PreferencePair> = ReaderBuilder::new()
        .path(&cached)
        .pairs()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("rows");
    let reference = CausalLm::<Flex>::from_pretrained(gpt2(), &device()).expect("loads");
    let cfg = config(dir.path(), &cached, "loss_type = \"sigmoid\"", 12);
    let expected = score(&reference, &cfg, &prompt(0), GOOD[0]);
    let cached_logp = rows[0].ref_chosen_logp.expect("cached");
    assert!(
        (cached_logp - expected).abs() < 1e-4,
        "{cached_logp} vs {expected}"
    );

    let summary = run_dpo::<B>(&cfg, &quiet(), &device()).expect("dpo");
    check_run(&summary, &cfg, "dpo");

    let orpo = config(&dir.path().join("orpo"), &data, "loss_type = \"orpo\"", 12);
    let summary = run_dpo::<B>(&orpo, &quiet(), &device()).expect("orpo");
    check_run(&summary, &orpo, "orpo");
    assert!(
        summary
            .outcome
            .last_eval
            .as_ref()
            .expect("eval")
            .metrics
            .get("nll_loss")
            .is_some()
    );
}

#[test]
fn listwise_pro_plackett_luce_and_kwise_reward() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("rankings.parquet");
    write_rankings(&data, 32);

    let pro = config(&dir.path().join("pro"), &data, "loss_type = \"pro\"", 10);
    let summary = run_dpo::<B>(&pro, &quiet(), &device()).expect("pro");
    check_run(&summary, &pro, "pro");
    let metrics = &summary.outcome.last_eval.as_ref().expect("eval").metrics;
    assert!(metrics.get("rewards/rank_0").is_some(), "{metrics:?}");

    // Plackett-Luce on cached `ref_logps`, one per response.
    let cached = dir.path().join("rankings.ref.parquet");
    let options = PrecomputeOptions {
        max_length: 32,
        max_prompt_length: 16,
        progress: false,
        ..PrecomputeOptions::default()
    };
    precompute_reference_file::<Flex>(&gpt2(), &data, &cached, &options, &device())
        .expect("precompute");
    let rows: Vec<ListwiseRow> = ReaderBuilder::new()
        .path(&cached)
        .listwise()
        .expect("reader")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows[0].ref_logps.as_ref().map(Vec::len), Some(4));
    let pl = config(
        &dir.path().join("pl"),
        &cached,
        "loss_type = \"plackett_luce\"",
        10,
    );
    let summary = run_dpo::<B>(&pl, &quiet(), &device()).expect("plackett_luce");
    check_run(&summary, &pl, "plackett_luce");

    // A pairwise loss on rankings says how to pair them.
    let sigmoid = config(
        &dir.path().join("sigmoid"),
        &data,
        "loss_type = \"sigmoid\"",
        2,
    );
    let error = run_dpo::<B>(&sigmoid, &quiet(), &device())
        .err()
        .expect("pairwise loss on listwise data");
    assert!(error.to_string().contains("--pairing"), "{error}");

    let reward = config(
        &dir.path().join("rm"),
        &data,
        "loss_type = \"bradley_terry\"",
        10,
    );
    let summary = run_reward::<B>(&reward, &quiet(), &device()).expect("k-wise reward");
    let after = summary.outcome.last_eval.as_ref().expect("eval");
    assert!(
        after.metrics.get("accuracy").is_some(),
        "{:?}",
        after.metrics
    );
    assert!(
        after.loss < summary.initial_eval.as_ref().expect("eval").loss,
        "K-wise held-out loss falls"
    );
}

#[test]
fn kto_on_unpaired_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("unpaired.parquet");
    write_unpaired(&data, 48);
    let cfg = config(dir.path(), &data, "loss_type = \"kto\"", 12);
    let summary = run_kto::<B>(&cfg, &quiet(), &device()).expect("kto");
    check_run(&summary, &cfg, "kto");
    let metrics = &summary.outcome.last_eval.as_ref().expect("eval").metrics;
    for name in ["kl", "rewards/chosen", "rewards/rejected"] {
        assert!(
            metrics.get(name).is_some(),
            "{name} missing from {metrics:?}"
        );
    }
    let apo = config(
        &dir.path().join("apo"),
        &data,
        "loss_type = \"apo_zero_unpaired\"",
        12,
    );
    let summary = run_kto::<B>(&apo, &quiet(), &device()).expect("apo_zero_unpaired");
    check_run(&summary, &apo, "apo_zero_unpaired");
}

#[test]
fn dpo_on_a_datasets_folder_with_mapped_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("saved");
    write_save_to_disk(&data, 40);
    let mut cfg = config(dir.path(), &data, "loss_type = \"sigmoid\"", 8);
    cfg.data.columns = [
        ("prompt", "question"),
        ("chosen", "good"),
        ("rejected", "bad"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    let summary = run_dpo::<B>(&cfg, &quiet(), &device()).expect("dpo on save_to_disk");
    assert_eq!(summary.data.read, 40);
    check_run(&summary, &cfg, "dpo (save_to_disk)");
}
