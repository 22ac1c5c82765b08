//! `burnish train`, `precompute-ref`, `eval` and Parquet `logprobs` end to end on the tiny GPT-2
//! checkpoint: metrics and exports, cached reference columns, one-line config errors, and a run
//! killed with SIGKILL that resumes to the same weights as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use burnish::data::{
    PairSchema, PairWriter, PreferencePair, PromptCompletion, PromptCompletionWriter,
};

fn gpt2() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../burnish-model/tests/fixtures/hf/gpt2")
}

fn burnish(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_burnish"))
        .args(args)
        .output()
        .expect("burnish runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const SUBJECTS: [&str; 8] = [
    "The film",
    "This book",
    "The meal",
    "Our trip",
    "The show",
    "That game",
    "The song",
    "My day",
];
const GOOD: [&str; 4] = [
    " was great.",
    " felt lovely.",
    " is good fun.",
    " went well.",
];
const BAD: [&str; 4] = [" was awful.", " felt dull.", " is a mess.", " went badly."];

/// Short plain-text pairs: a positive completion chosen over a negative one.
fn pairs(n: usize) -> Vec<PreferencePair> {
    (0..n)
        .map(|i| {
            let mut pair = PreferencePair::new(
                format!("{} #{i}", SUBJECTS[i % 8]).as_str(),
                GOOD[i % 4],
                BAD[(i / 4) % 4],
            );
            pair.id = Some(format!("pair-{i}"));
            pair
        })
        .collect()
}

fn write_pairs(path: &Path, n: usize) {
    let rows = pairs(n);
    let mut w = PairWriter::create(path, PairSchema::of(&rows[0])).unwrap();
    for p in rows {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
}

fn write_config(dir: &Path, data: &Path, steps: u64, checkpoint_every: u64) -> PathBuf {
    let config = format!(
        r#"
[model]
path = {model:?}
[data]
train = {data:?}
max_length = 40
max_prompt_length = 20
eval_fraction = 0.2
[optimizer]
lr = 1e-3
[schedule]
warmup_steps = 1
[train]
max_steps = {steps}
batch_size = 4
eval_every = 2
checkpoint_every = {checkpoint_every}
keep_checkpoints = 2
seed = 7
output_dir = {out:?}
[loss]
loss_type = "sigmoid"
beta = 0.1
"#,
        model = gpt2().display().to_string(),
        data = data.display().to_string(),
        out = dir.join("run").display().to_string(),
    );
    let path = dir.join("run.toml");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, config).unwrap();
    path
}

fn logprobs(model: &Path) -> Vec<f64> {
    let o = burnish(&[
        "logprobs",
        "--model",
        model.to_str().unwrap(),
        "--prompt",
        "The film #3",
        "--completion",
        " was great.",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    vec![
        v["logp"].as_f64().unwrap(),
        v["mean_logp"].as_f64().unwrap(),
    ]
}

#[test]
fn train_dpo_writes_metrics_checkpoints_and_a_loadable_export() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 40);
    let config = write_config(dir.path(), &data, 4, 2);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("40 rows read") && t.contains("0 rejected"),
        "{t}"
    );

    let run = dir.path().join("run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("grad_norm").is_some())
        .collect();
    assert_eq!(steps.len(), 4, "{metrics}");
    for (i, s) in steps.iter().enumerate() {
        assert_eq!(s["step"].as_u64(), Some(i as u64 + 1), "{s}");
        for key in [
            "loss",
            "lr",
            "grad_norm",
            "tokens_per_sec",
            "rewards/margins",
            "rewards/accuracies",
            "rewards/chosen",
            "rewards/rejected",
        ] {
            assert!(s[key].as_f64().is_some_and(f64::is_finite), "{key}: {s}");
        }
    }
    assert!(run.join("checkpoint-4").is_dir(), "{t}");
    assert!(run.join("config.toml").is_file());
    let last = logprobs(&run.join("final"));
    let first = logprobs(&gpt2());
    assert!(last.iter().all(|v| v.is_finite()));
    assert_ne!(first, last, "training changed the weights");

    // The export scores a held-out file through `burnish eval`.
    let o = burnish(&[
        "eval",
        "--model",
        run.join("final").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--reference",
        gpt2().to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["loss_type"], "sigmoid", "{v}");
    assert_eq!(v["examples"].as_u64(), Some(40), "{v}");
    assert!(v["loss"].as_f64().is_some_and(f64::is_finite), "{v}");
    assert!(v["metrics"]["rewards/margins"].as_f64().is_some(), "{v}");
}

#[test]
fn precompute_ref_adds_the_two_columns_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 10);
    let out = dir.path().join("with_ref.parquet");
    let o = burnish(&[
        "precompute-ref",
        "--model",
        gpt2().to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "3",
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("10 rows read, 10 written, 10 scored"),
        "{}",
        text(&o)
    );
    let rows: Vec<PreferencePair> = burnish::data::ReaderBuilder::new()
        .path(&out)
        .pairs()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let before = pairs(10);
    assert_eq!(rows.len(), 10);
    for (r, b) in rows.iter().zip(&before) {
        assert_eq!(
            (&r.id, &r.prompt, &r.chosen, &r.rejected),
            (&b.id, &b.prompt, &b.chosen, &b.rejected)
        );
        let (c, j) = (r.ref_chosen_logp.unwrap(), r.ref_rejected_logp.unwrap());
        assert!(
            c.is_finite() && c < 0.0 && j.is_finite() && j < 0.0,
            "{c} {j}"
        );
    }
    // Batching does not change the values: row 0 scored alone agrees.
    let o = burnish(&[
        "logprobs",
        "--model",
        gpt2().to_str().unwrap(),
        "--prompt",
        "The film #0",
        "--completion",
        " was great.",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let alone = v["logp"].as_f64().unwrap();
    // logprobs scores the text without the EOS the trainer appends, so only compare signs and
    // rough size here; the trainer's own tests pin precompute == reference-alongside exactly.
    assert!(alone < 0.0 && (rows[0].ref_chosen_logp.unwrap() as f64) < alone + 1e-3);
}

#[test]
fn bad_config_key_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 8);
    let config = write_config(dir.path(), &data, 2, 0);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "optimizer.lrr=1e-4",
    ]);
    assert!(!o.status.success());
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("`optimizer.lrr`") && err.contains("run.toml"),
        "{err}"
    );
    assert!(!dir.path().join("run").exists(), "nothing was started");
}

#[test]
fn logprobs_reads_parquet_prompt_completions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sft.parquet");
    let mut w = PromptCompletionWriter::create(&path, false, false).unwrap();
    for (p, c) in [("The film", " was great."), ("This book", " felt dull.")] {
        w.write(PromptCompletion::new(p, c)).unwrap();
    }
    w.finish().unwrap();
    let o = burnish(&[
        "logprobs",
        "--model",
        gpt2().to_str().unwrap(),
        "--input",
        path.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    let single = burnish(&[
        "logprobs",
        "--model",
        gpt2().to_str().unwrap(),
        "--prompt",
        "This book",
        "--completion",
        " felt dull.",
    ]);
    let single: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();
    assert_eq!(lines[1]["row"], 1);
    let (a, b) = (
        lines[1]["logp"].as_f64().unwrap(),
        single["logp"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-4, "{a} vs {b}");
}

/// A row count that is a multiple of `--batch-size`, a bad row right after a full batch, and
/// an empty file: every row gets its line, and nothing panics.
#[test]
fn logprobs_batches_flush_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("rows.jsonl");
    let row =
        |i: usize| format!("{{\"prompt\": \"The film #{i}\", \"completion\": \" was great.\"}}");
    let mut lines: Vec<String> = (0..4).map(row).collect();
    lines.push("{\"prompt\": 3}".into());
    lines.extend((4..6).map(row));
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let model = gpt2();
    let run = |path: &Path, batch: &str| {
        burnish(&[
            "logprobs",
            "--model",
            model.to_str().unwrap(),
            "--input",
            path.to_str().unwrap(),
            "--batch-size",
            batch,
        ])
    };
    let o = run(&jsonl, "2");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.len(), 7, "{}", text(&o));
    assert!(out[4]["error"].is_string() && out[6]["logp"].is_f64());
    assert!(!text(&o).contains("panicked"));
    let even = dir.path().join("even.jsonl");
    std::fs::write(&even, (0..4).map(row).collect::<Vec<_>>().join("\n")).unwrap();
    let o = run(&even, "2");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 4);
    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "").unwrap();
    let o = run(&empty, "2");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(!text(&o).contains("panicked"), "{}", text(&o));
}

#[test]
fn killed_run_resumes_to_the_same_weights() {
    let steps = 60;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 64);

    // Uninterrupted.
    let straight = dir.path().join("straight");
    std::fs::create_dir_all(&straight).unwrap();
    let config = write_config(&straight, &data, steps, 1);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // Killed with SIGKILL after its first checkpoint, then resumed.
    let killed = dir.path().join("killed");
    std::fs::create_dir_all(&killed).unwrap();
    let config = write_config(&killed, &data, steps, 1);
    let run = killed.join("run");
    let mut child = Command::new(env!("CARGO_BIN_EXE_burnish"))
        .args([
            "train",
            "dpo",
            "--config",
            config.to_str().unwrap(),
            "--quiet",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !run.join("latest").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        !run.join("final").exists(),
        "the run was killed before it finished"
    );
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--resume",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let a = logprobs(&straight.join("run/final"));
    let b = logprobs(&run.join("final"));
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-5,
            "uninterrupted {a:?} vs resumed {b:?}"
        );
    }
    // The resumed metrics log has every step once.
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps_logged = metrics.lines().filter(|l| l.contains("grad_norm")).count();
    assert_eq!(steps_logged as u64, steps, "{metrics}");
}

#[test]
fn train_reward_then_eval_reports_held_out_accuracy() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 40);
    let config = write_config(dir.path(), &data, 6, 0);
    let o = burnish(&[
        "train",
        "reward",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "loss.loss_type=bradley_terry",
        "--set",
        "loss.beta=0.1",
    ]);
    assert!(!o.status.success(), "beta is not a reward-loss key");
    assert!(text(&o).contains("beta"), "{}", text(&o));
    let config = write_config(dir.path(), &data, 6, 0);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap().replace(
            "loss_type = \"sigmoid\"\nbeta = 0.1",
            "loss_type = \"bradley_terry\"",
        ),
    )
    .unwrap();
    let o = burnish(&[
        "train",
        "reward",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("accuracy"), "{}", text(&o));
    let o = burnish(&[
        "eval",
        "--model",
        dir.path().join("run/final").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["loss_type"], "bradley_terry", "{v}");
    let acc = v["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{v}");
}

#[test]
fn train_sft_on_prompt_completions() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("sft.parquet");
    let mut w = PromptCompletionWriter::create(&data, false, false).unwrap();
    for p in pairs(24) {
        w.write(PromptCompletion::new(p.prompt, p.chosen)).unwrap();
    }
    w.finish().unwrap();
    let config = write_config(dir.path(), &data, 4, 0);
    let o = burnish(&[
        "train",
        "sft",
        "--config",
        config.to_str().unwrap(),
        "--set",
        "loss={}",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let metrics = std::fs::read_to_string(dir.path().join("run/metrics.jsonl")).unwrap();
    assert!(
        metrics.lines().next().unwrap().contains("\"nll\""),
        "{metrics}"
    );
    assert!(dir.path().join("run/final/model.safetensors").is_file());
}

#[test]
fn rows_that_do_not_encode_are_counted_and_written_to_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    let mut rows = pairs(12);
    rows[5].chosen = "".into();
    let mut w = PairWriter::create(&data, PairSchema::of(&rows[0])).unwrap();
    for p in rows {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
    let config = write_config(dir.path(), &data, 1, 0);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("12 rows read, 11 used") && text(&o).contains("1 rejected"),
        "{}",
        text(&o)
    );
    let rejects = std::fs::read_to_string(dir.path().join("run/rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    let v: serde_json::Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(v["row"], 5, "{v}");
    assert!(v["error"].as_str().unwrap().contains("chosen"), "{v}");
}

#[test]
fn eval_writes_its_rejects_where_the_user_says_not_beside_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let shelf = dir.path().join("shelf");
    let work = dir.path().join("work");
    std::fs::create_dir(&shelf).unwrap();
    std::fs::create_dir(&work).unwrap();
    let data = shelf.join("pairs.parquet");
    let mut rows = pairs(6);
    rows[2].chosen = "".into();
    let mut w = PairWriter::create(&data, PairSchema::of(&rows[0])).unwrap();
    for p in rows {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
    let eval = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_burnish"))
            .current_dir(&work)
            .args(["eval", "--model", gpt2().to_str().unwrap()])
            .args(["--data", data.to_str().unwrap(), "--max-length", "40"])
            .args(["--max-prompt-length", "20"])
            .args(extra)
            .output()
            .unwrap()
    };
    // By default: DATA.eval-rejects.jsonl in the current directory.
    let o = eval(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["data"]["rejected"], 1, "{v}");
    let rejects = std::fs::read_to_string(work.join("pairs.eval-rejects.jsonl")).unwrap();
    assert_eq!(rejects.lines().count(), 1, "{rejects}");
    assert_eq!(
        std::fs::read_dir(&shelf).unwrap().count(),
        1,
        "nothing written beside the data"
    );
    // `--rejects PATH` puts them anywhere else, but not over the data.
    let elsewhere = dir.path().join("out/eval-rejects.jsonl");
    let o = eval(&["--rejects", elsewhere.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(elsewhere.is_file());
    let o = eval(&["--rejects", data.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("is also the data file"), "{}", text(&o));
}

fn append(config: &Path, text: &str) {
    let old = std::fs::read_to_string(config).unwrap();
    std::fs::write(config, old + text).unwrap();
}

/// A reward model, then PPO against it from the command line: metrics with TRL's names, an
/// export, plots and a held-out comparison; then each bad input is one clear line.
#[test]
fn train_ppo_against_a_reward_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 24);
    let rm_config = write_config(dir.path(), &data, 3, 0);
    std::fs::write(
        &rm_config,
        std::fs::read_to_string(&rm_config)
            .unwrap()
            .replace(
                "loss_type = \"sigmoid\"\nbeta = 0.1",
                "loss_type = \"bradley_terry\"",
            )
            .replace("/run\"", "/rm\""),
    )
    .unwrap();
    let o = burnish(&[
        "train",
        "reward",
        "--config",
        rm_config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rm = dir.path().join("rm/final");

    // The pairs file has a `prompt` column; the other columns are not read.
    let config = write_config(dir.path(), &data, 3, 1);
    append(
        &config,
        &format!(
            "[ppo]\nresponse_length = 4\nppo_epochs = 2\nnum_mini_batches = 2\nreward_model = {:?}\nnormalize_reward = true\nmissing_eos_penalty = 1.0\n",
            rm.display().to_string()
        ),
    );
    let c = config.to_str().unwrap();
    let o = burnish(&["train", "ppo", "--config", c, "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("held-out prompts"), "{out}");
    let run = dir.path().join("run");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3);
    for key in [
        "objective/kl",
        "objective/scores",
        "loss/value_avg",
        "val/ratio",
        "episode",
    ] {
        assert!(metrics.contains(key), "{key}");
    }
    assert!(run.join("final/model.safetensors").exists());
    assert!(run.join("reward.svg").exists() && run.join("kl.svg").exists());
    assert!(run.join("checkpoint-3/ppo_state.json").exists());

    // PPO with LoRA adapters: the reference is the base with them off, the value head trains
    // with them, and the adapter is exported beside the merged model.
    let lora = dir.path().join("ppo_lora.toml");
    let lora_text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("/run\"", "/run-lora\"")
        + "[lora]\nr = 4\ntarget_modules = \"all-linear\"\n";
    std::fs::write(&lora, lora_text).unwrap();
    let o = burnish(&["train", "ppo", "--config", lora.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("LoRA: training"), "{}", text(&o));
    let adapter = dir.path().join("run-lora/final/adapter");
    assert!(
        adapter.join("adapter_config.json").is_file(),
        "{}",
        text(&o)
    );

    // Bad inputs: one line each, naming the key or the file.
    let imdb = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/imdb/test.parquet");
    let cases: [(&[&str], &str); 5] = [
        (&["--set", "ppo.response_length=0"], "ppo.response_length"),
        (&["--set", "ppo.advantage=\"vtrace\""], "vtrace"),
        (&["--set", "ppo.kl_estimator=\"k9\""], "k9"),
        (
            &[
                "--set",
                &format!("ppo.reward_model={:?}", gpt2().display().to_string()),
            ],
            "no reward head",
        ),
        (
            &[
                "--set",
                &format!("data.train={:?}", imdb.display().to_string()),
            ],
            "prompt",
        ),
    ];
    for (extra, needle) in cases {
        // Each bad run goes into the folder of the good one, so it must say --overwrite.
        let mut args = vec!["train", "ppo", "--config", c, "--quiet", "--overwrite"];
        args.extend_from_slice(extra);
        let o = burnish(&args);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
    }
}

/// The run config with its `[loss]` table replaced by `loss` (the other sections kept).
fn with_loss(config: &Path, loss: &str) {
    let old = std::fs::read_to_string(config).unwrap();
    let new = old.replace("loss_type = \"sigmoid\"\nbeta = 0.1", loss);
    assert_ne!(old, new, "the config has the default [loss] table");
    std::fs::write(config, new).unwrap();
}

fn metric_names(run: &Path) -> Vec<String> {
    let log = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let mut names: Vec<String> = log
        .lines()
        .flat_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object().unwrap().keys().cloned().collect::<Vec<_>>()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Rankings of four responses (two tied), written with the library's listwise writer.
fn write_rankings(path: &Path, n: usize) {
    use burnish::data::{ListwiseRow, ListwiseSchema, ListwiseWriter, Ranking};
    let rows: Vec<ListwiseRow> = (0..n)
        .map(|i| ListwiseRow {
            id: Some(format!("ranking-{i}")),
            prompt: format!("{} #{i}", SUBJECTS[i % 8]).into(),
            responses: vec![
                BAD[i % 4].into(),
                GOOD[i % 4].into(),
                " happened.".into(),
                BAD[(i + 1) % 4].into(),
            ],
            ranking: Ranking::Ranks(vec![2, 0, 1, 2]),
            ref_logps: None,
        })
        .collect();
    let mut w = ListwiseWriter::create(path, ListwiseSchema::of(&rows[0])).unwrap();
    for row in rows {
        w.write(row).unwrap();
    }
    w.finish().unwrap();
}

/// Listwise data from the command line: `precompute-ref` caches one reference log-prob per
/// response, PRO and Plackett-Luce DPO train with per-rank metrics, a pairwise loss on rankings
/// is one clear line, and `train reward` on rankings is the K-wise reward model.
#[test]
fn listwise_dpo_and_kwise_reward_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("rankings.parquet");
    write_rankings(&data, 24);
    let cached = dir.path().join("rankings.ref.parquet");
    let o = burnish(&[
        "precompute-ref",
        "--model",
        gpt2().to_str().unwrap(),
        "--input",
        data.to_str().unwrap(),
        "--output",
        cached.to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("24 rows read, 24 written, 24 scored"),
        "{}",
        text(&o)
    );
    let rows: Vec<burnish::data::ListwiseRow> = burnish::data::ReaderBuilder::new()
        .path(&cached)
        .listwise()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        rows.iter()
            .all(|r| r.ref_logps.as_ref().map(Vec::len) == Some(4))
    );

    let config = write_config(dir.path(), &cached, 3, 0);
    with_loss(&config, "loss_type = \"plackett_luce\"\nbeta = 0.1");
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let names = metric_names(&dir.path().join("run"));
    for name in [
        "rewards/rank_0",
        "rewards/rank_1",
        "rewards/rank_2",
        "rewards/accuracies",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }

    let config = write_config(&dir.path().join("pro"), &data, 3, 0);
    with_loss(&config, "loss_type = \"pro\"");
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    let config = write_config(&dir.path().join("sigmoid"), &data, 3, 0);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim().lines().count(),
        1,
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("--pairing"), "{}", text(&o));

    let config = write_config(&dir.path().join("rm"), &data, 4, 0);
    with_loss(&config, "loss_type = \"bradley_terry\"");
    let o = burnish(&[
        "train",
        "reward",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("accuracy"), "{}", text(&o));
}

/// KTO end to end: pairs converted to unpaired rows (`convert --to unpaired`), then
/// `train kto` with TRL's KTO metric names; `apo_zero_unpaired` too.
#[test]
fn train_kto_on_converted_unpaired_rows() {
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("pairs.jsonl");
    let lines: Vec<String> = pairs(20)
        .iter()
        .map(|p| {
            serde_json::json!({
                "prompt": p.prompt.to_display_text(),
                "chosen": p.chosen.to_display_text(),
                "rejected": p.rejected.to_display_text(),
            })
            .to_string()
        })
        .collect();
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let data = dir.path().join("unpaired.parquet");
    let o = burnish(&[
        "convert",
        "--from",
        "trl",
        "--to",
        "unpaired",
        "--input",
        jsonl.to_str().unwrap(),
        "--output",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let config = write_config(dir.path(), &data, 4, 0);
    with_loss(
        &config,
        "loss_type = \"kto\"\nbeta = 0.1\ndesirable_weight = 1.0",
    );
    let o = burnish(&[
        "train",
        "kto",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("40 rows read"), "{}", text(&o));
    let names = metric_names(&dir.path().join("run"));
    for name in [
        "kl",
        "rewards/chosen",
        "rewards/rejected",
        "logps/chosen",
        "count/chosen",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
    assert!(dir.path().join("run/final/model.safetensors").exists());

    let config = write_config(&dir.path().join("apo"), &data, 2, 0);
    with_loss(&config, "loss_type = \"apo_zero_unpaired\"");
    let o = burnish(&[
        "train",
        "kto",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // A pairwise file is not unpaired data: one line naming the missing column.
    let config = write_config(
        &dir.path().join("bad"),
        &jsonl.with_extension("parquet"),
        2,
        0,
    );
    write_pairs(&jsonl.with_extension("parquet"), 8);
    with_loss(&config, "loss_type = \"kto\"");
    let o = burnish(&[
        "train",
        "kto",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("completion"), "{}", text(&o));
}

/// ORPO from `train dpo`: no reference model, TRL's ORPO metrics.
#[test]
fn train_orpo_without_a_reference() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 24);
    let config = write_config(dir.path(), &data, 3, 0);
    with_loss(&config, "loss_type = \"orpo\"\nbeta = 0.1");
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let names = metric_names(&dir.path().join("run"));
    for name in [
        "nll_loss",
        "log_odds_ratio",
        "log_odds_chosen",
        "rewards/accuracies",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} not in {names:?}");
    }
}

/// Users' data as they have it: a CSV file with its own column names (mapped in `[data]
/// columns`) and a Hugging Face Hub-style folder of Parquet shards with two splits.
#[test]
fn train_dpo_on_csv_with_mapped_columns_and_on_a_hub_folder() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pairs.csv");
    let mut text_csv = String::from("question,response_j,response_k\n");
    for p in pairs(20) {
        text_csv += &format!(
            "\"{}\",\"{}\",\"{}\"\n",
            p.prompt.to_display_text(),
            p.chosen.to_display_text(),
            p.rejected.to_display_text()
        );
    }
    std::fs::write(&csv, text_csv).unwrap();
    let config = write_config(dir.path(), &csv, 2, 0);
    append(
        &config,
        "[data.columns]\nprompt = \"question\"\nchosen = \"response_j\"\nrejected = \"response_k\"\n",
    );
    // `[data.columns]` after `[loss]` is still the data section's table.
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("20 rows read"), "{}", text(&o));

    // Without the mapping: one line naming the missing column.
    let config = write_config(&dir.path().join("unmapped"), &csv, 2, 0);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("prompt"), "{}", text(&o));

    let hub = dir.path().join("hub");
    std::fs::create_dir_all(hub.join("data")).unwrap();
    write_pairs(&hub.join("data/train-00000-of-00002.parquet"), 12);
    // The second shard's row 2 has chosen == rejected: rejected, named by shard and row.
    let mut shard = pairs(12);
    shard[2].rejected = shard[2].chosen.clone();
    let mut w = PairWriter::create(
        hub.join("data/train-00001-of-00002.parquet"),
        PairSchema::of(&shard[0]),
    )
    .unwrap();
    for p in shard {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
    write_pairs(&hub.join("data/test-00000-of-00001.parquet"), 6);
    let config = write_config(&dir.path().join("hubrun"), &hub, 2, 0);
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("24 rows read") && text(&o).contains("1 rejected"),
        "{}",
        text(&o)
    );
    let rejects = std::fs::read_to_string(dir.path().join("hubrun/run/rejects.jsonl")).unwrap();
    let reject: serde_json::Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(reject["row"], 2, "{rejects}");
    assert!(
        reject["file"]
            .as_str()
            .unwrap()
            .ends_with("train-00001-of-00002.parquet"),
        "{rejects}"
    );
    let test_run = dir.path().join("hubtest");
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
        "--set",
        "data.split=test",
        "--set",
        &format!("train.output_dir={}", test_run.display()),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 rows read"), "{}", text(&o));
}

/// Numbers from the data: a NaN or infinite cached reference or margin rejects that row with its
/// reason; a null reference cell costs that row's reference pass only.
#[test]
fn non_finite_numbers_are_rejected_and_null_references_computed_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("cached.parquet");
    let mut rows = pairs(24);
    for (i, p) in rows.iter_mut().enumerate() {
        p.ref_chosen_logp = Some(-10.0 - i as f32);
        p.ref_rejected_logp = Some(-12.0 - i as f32);
    }
    rows[3].ref_chosen_logp = Some(f32::NAN);
    rows[5].ref_rejected_logp = Some(f32::INFINITY);
    rows[7].ref_chosen_logp = None;
    let mut schema = PairSchema::of(&rows[0]);
    schema.ref_logps = true;
    let mut w = PairWriter::create(&data, schema).unwrap();
    for p in rows {
        w.write(p).unwrap();
    }
    w.finish().unwrap();
    let config = write_config(dir.path(), &data, 2, 0);
    let o = burnish(&["train", "dpo", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("24 rows read") && text(&o).contains("2 rejected"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("computed for 1 of 22 rows"),
        "{}",
        text(&o)
    );
    let rejects = std::fs::read_to_string(dir.path().join("run/rejects.jsonl")).unwrap();
    let reasons: Vec<serde_json::Value> = rejects
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(reasons.len(), 2, "{rejects}");
    assert_eq!(reasons[0]["row"], 3, "{rejects}");
    assert!(
        reasons[0]["error"]
            .as_str()
            .unwrap()
            .contains("ref_chosen_logp"),
        "{rejects}"
    );
    assert!(
        reasons[1]["error"].as_str().unwrap().contains("inf"),
        "{rejects}"
    );
}

/// Output folders: a second run into a folder with a run is refused unless `--overwrite`, and a
/// resume with a changed batch size is refused naming the key (config.toml kept).
#[test]
fn output_folders_are_not_mixed_and_resumes_stay_exact() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 24);
    let config = write_config(dir.path(), &data, 2, 1);
    let c = config.to_str().unwrap();
    let o = burnish(&["train", "dpo", "--config", c, "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = burnish(&["train", "dpo", "--config", c, "--quiet"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim().lines().count(),
        1,
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("already holds a run"), "{}", text(&o));
    let saved = std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap();
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        c,
        "--quiet",
        "--resume",
        "--set",
        "train.batch_size=2",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("train.batch_size"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("run/config.toml")).unwrap(),
        saved
    );
    // Training longer is a safe change.
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        c,
        "--quiet",
        "--resume",
        "--set",
        "train.max_steps=3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = burnish(&["train", "dpo", "--config", c, "--quiet", "--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !dir.path().join("run/checkpoint-3").exists(),
        "the old run's files are gone"
    );
    // The lock was released with its run: another run gets in.
    let o = burnish(&["train", "dpo", "--config", c, "--quiet", "--overwrite"]);
    assert!(o.status.success(), "{}", text(&o));
}

/// A copy of the tiny GPT-2 whose tokenizer has 200 more (special) tokens than the model has
/// embedding rows, so ids 512.. exist in the tokenizer only.
fn model_with_oversized_tokenizer(dir: &Path) -> PathBuf {
    let model = dir.join("mismatched");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(gpt2().join(f), model.join(f)).unwrap();
    }
    let mut tokenizer: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gpt2().join("tokenizer.json")).unwrap())
            .unwrap();
    let added = tokenizer["added_tokens"].as_array_mut().unwrap();
    for id in 512..712 {
        added.push(serde_json::json!({
            "id": id, "content": format!("<x{id}>"), "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    std::fs::write(model.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    model
}

/// Inputs that used to panic in model commands: each is now one line and exit status 1.
#[test]
fn model_commands_validate_their_inputs_at_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let model = model_with_oversized_tokenizer(dir.path());
    let m = model.to_str().unwrap();
    let g = gpt2();
    let g = g.to_str().unwrap();
    let long_prompt = "The film was great. ".repeat(40);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "logprobs",
                "--model",
                m,
                "--prompt",
                "The film <x600>",
                "--completion",
                " was great.",
            ],
            "vocabulary",
        ),
        (
            vec!["generate", "--model", m, "--prompt", "The film <x600>"],
            "vocabulary",
        ),
        (
            vec![
                "logprobs",
                "--model",
                g,
                "--prompt",
                "",
                "--completion",
                "a",
            ],
            "prompt has no tokens",
        ),
        (
            vec![
                "logprobs",
                "--model",
                g,
                "--prompt",
                &long_prompt,
                "--completion",
                " yes",
            ],
            "positions",
        ),
        (
            vec![
                "generate",
                "--model",
                g,
                "--prompt",
                "The film",
                "--max-new-tokens",
                "18446744073709551613",
            ],
            "positions",
        ),
    ];
    for (args, needle) in cases {
        let o = burnish(&args);
        assert_eq!(o.status.code(), Some(1), "{:?}: {}", &args[..2], text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{:?}: {err}", &args[..2]);
        assert!(err.contains(needle), "{:?}: {err}", &args[..2]);
    }
    // Training with the mismatched tokenizer, and with sequences too short to score.
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 16);
    let config = write_config(dir.path(), &data, 2, 0);
    let c = config.to_str().unwrap();
    for (set, needle) in [
        (format!("model.path={m}"), "vocabulary"),
        ("data.max_length=1".to_string(), "data.max_length"),
    ] {
        let o = burnish(&["train", "dpo", "--config", c, "--quiet", "--set", &set]);
        assert_eq!(o.status.code(), Some(1), "{set}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{set}: {err}");
        assert!(err.contains(needle), "{set}: {err}");
    }
}

/// Every folder a run leaves is complete or absent: each `checkpoint-N` has its state, weights
/// and optimizer moments, and `final` (when present) a loadable model with its tokenizer.
fn assert_complete(run: &Path, when: &str) {
    let Ok(entries) = std::fs::read_dir(run) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        // `.tmp` (being written), `.old` (being replaced) and `.pruned` (being deleted) are
        // not checkpoints; every other `checkpoint-N` must be whole.
        let transient = [".tmp", ".old", ".pruned"]
            .iter()
            .any(|s| name.ends_with(s));
        if name.starts_with("checkpoint-") && !transient && path.is_dir() {
            for file in ["state.json", "model.mpk", "optimizer.mpk"] {
                assert!(path.join(file).exists(), "{when}: {name} lacks {file}");
            }
        }
        if name == "final" {
            for file in ["config.json", "model.safetensors", "tokenizer.json"] {
                let f = path.join(file);
                assert!(
                    f.metadata().map(|m| m.len() > 0).unwrap_or(false),
                    "{when}: final/{file} missing or empty"
                );
            }
        }
    }
    if let Ok(latest) = std::fs::read_to_string(run.join("latest")) {
        assert!(
            run.join(latest.trim()).join("state.json").exists(),
            "{when}: latest names an incomplete checkpoint"
        );
    }
}

/// Faults, tested: SIGKILL at pseudo-random moments (start-up, steps, checkpoint writing and
/// pruning with `keep_checkpoints = 2`, the final export), a resume after each; no folder is
/// ever left incomplete, the stale lock never blocks the resume, and the final log-probs equal
/// the uninterrupted run's.
#[test]
fn random_kills_leave_complete_folders_and_resume_exactly() {
    let steps = 40;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 64);
    let straight = dir.path().join("straight");
    let config = write_config(&straight, &data, steps, 1);
    let clock = Instant::now();
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    // Kill moments spread over one uninterrupted run's duration, whatever the machine's speed.
    let run_ms = clock.elapsed().as_millis() as u64;

    let killed = dir.path().join("killed");
    let config = write_config(&killed, &data, steps, 1);
    let run = killed.join("run");
    // A fixed LCG, so a failure reproduces.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut delay_ms = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        run_ms / 20 + (state >> 33) % (run_ms / 3).max(1)
    };
    let mut kills = 0;
    let mut finished = false;
    for attempt in 0..12 {
        let mut args = vec![
            "train",
            "dpo",
            "--config",
            config.to_str().unwrap(),
            "--quiet",
        ];
        if attempt > 0 {
            args.push("--resume");
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_burnish"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The last attempts run to the end.
        let wait = (attempt < 8).then(|| Duration::from_millis(delay_ms()));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if wait.is_some_and(|w| started.elapsed() >= w) {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break None;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "the run hangs");
            std::thread::sleep(Duration::from_millis(1));
        };
        assert_complete(&run, &format!("after attempt {attempt}"));
        if let Some(status) = status {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            assert!(status.success(), "attempt {attempt}: {err}");
            finished = true;
            break;
        }
    }
    assert!(finished && kills > 0, "finished {finished}, {kills} kills");
    println!("{kills} kills over runs of {run_ms} ms");
    let a = logprobs(&straight.join("run/final"));
    let b = logprobs(&run.join("final"));
    for (x, y) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-5,
            "uninterrupted {a:?} vs killed {kills} times {b:?}"
        );
    }
}

/// `precompute-ref` reads what the trainers read (here CSV, no longer Parquet only), names a bad
/// row by its own row number, and writes its output whole.
#[test]
fn precompute_ref_reads_csv_and_accounts_for_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("pairs.csv");
    std::fs::write(
        &csv,
        "prompt,chosen,rejected\nThe film,\" was great.\",\" was awful.\"\n,\" felt lovely.\",\" felt dull.\"\nMy day,\" went well.\",\" went badly.\"\n",
    )
    .unwrap();
    let out = dir.path().join("cached.parquet");
    let o = burnish(&[
        "precompute-ref",
        "--model",
        gpt2().to_str().unwrap(),
        "--input",
        csv.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    println!("{}", text(&o));
    let rejects = std::fs::read_to_string(dir.path().join("cached.rejects.jsonl")).unwrap();
    let reject: serde_json::Value = serde_json::from_str(rejects.trim()).unwrap();
    assert_eq!(reject["row"], 1, "{rejects}");
    let rows: Vec<PreferencePair> = burnish::data::ReaderBuilder::new()
        .path(&out)
        .pairs()
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let scored = rows.iter().filter(|p| p.ref_chosen_logp.is_some()).count();
    assert_eq!(scored, 2, "{rows:?}");
    assert!(!dir.path().join("cached.parquet.partial").exists());
}

fn gguf_llama() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../burnish-model/tests/fixtures/gguf/llama/model.gguf")
}

#[test]
fn gguf_files_work_wherever_a_model_folder_does_and_runs_export_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let gguf = gguf_llama();
    let gguf_s = gguf.to_str().unwrap();

    // Scoring and generation straight from the GGUF file, tokenizer from its metadata.
    let from_gguf = logprobs(&gguf);
    assert!(from_gguf.iter().all(|v| v.is_finite()), "{from_gguf:?}");
    let o = burnish(&[
        "generate",
        "--model",
        gguf_s,
        "--prompt",
        "The film",
        "--max-new-tokens",
        "4",
        "--temperature",
        "0",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // `export` both ways: GGUF -> Hugging Face folder scores the same; HF -> GGUF (f32) too.
    let hf = dir.path().join("hf");
    let o = burnish(&["export", "--model", gguf_s, "--out", hf.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(logprobs(&hf), from_gguf);
    let back = dir.path().join("back.gguf");
    let o = burnish(&[
        "export",
        "--model",
        hf.to_str().unwrap(),
        "--out",
        back.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(logprobs(&back), from_gguf);

    // Training from the GGUF file, with the final model exported as GGUF too.
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 24);
    let config = write_config(dir.path(), &data, 2, 0);
    let toml = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("{:?}", gpt2().display().to_string()),
            &format!("{gguf_s:?}"),
        )
        .replace("[train]\n", "[train]\nexport_gguf = \"f32\"\n");
    std::fs::write(&config, toml).unwrap();
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let last = dir.path().join("run/final");
    assert!(last.join("tokenizer.json").is_file() && last.join("tokenizer_config.json").is_file());
    let trained = logprobs(&last);
    assert_ne!(trained, from_gguf, "training changed the weights");
    assert_eq!(logprobs(&last.join("model.gguf")), trained);

    // precompute-ref and eval take the GGUF file as the reference / model.
    let cached = dir.path().join("cached.parquet");
    let o = burnish(&[
        "precompute-ref",
        "--model",
        gguf_s,
        "--input",
        data.to_str().unwrap(),
        "--output",
        cached.to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = burnish(&[
        "eval",
        "--model",
        last.join("model.gguf").to_str().unwrap(),
        "--data",
        cached.to_str().unwrap(),
        "--max-length",
        "40",
        "--max-prompt-length",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));

    // A file that is not GGUF: one line naming it.
    let fake = dir.path().join("fake.gguf");
    std::fs::write(&fake, "not a model").unwrap();
    let o = burnish(&[
        "logprobs",
        "--model",
        fake.to_str().unwrap(),
        "--prompt",
        "a",
        "--completion",
        " b",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("fake.gguf") && err.contains("not a GGUF file"),
        "{err}"
    );
}

#[test]
fn lora_dpo_exports_a_peft_adapter_and_the_merged_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 24);
    let config = write_config(dir.path(), &data, 3, 0);
    append(
        &config,
        "[lora]\nr = 4\nalpha = 8\ntarget_modules = [\"c_attn\", \"c_fc\"]\n",
    );
    let o = burnish(&["train", "dpo", "--config", config.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("LoRA: training"), "{}", text(&o));
    let last = dir.path().join("run/final");
    let adapter = last.join("adapter");
    assert!(adapter.join("adapter_config.json").is_file());
    assert!(adapter.join("adapter_model.safetensors").is_file());

    // The base with the adapter scores as the merged export does, and differs from the base.
    let merged = logprobs(&last);
    let o = burnish(&[
        "logprobs",
        "--model",
        gpt2().to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--prompt",
        "The film #3",
        "--completion",
        " was great.",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        (v["logp"].as_f64().unwrap() - merged[0]).abs() < 1e-4,
        "{v} vs {merged:?}"
    );
    assert_ne!(logprobs(&gpt2()), merged, "training moved the adapters");

    // Continuing from the adapter: `model.adapter` instead of `[lora]`.
    let text_config = std::fs::read_to_string(&config).unwrap();
    let cut = text_config.find("[lora]").unwrap();
    let again = text_config[..cut]
        .replace(
            "[model]\n",
            &format!("[model]\nadapter = {:?}\n", adapter.display().to_string()),
        )
        .replace(
            &format!("{:?}", dir.path().join("run").display().to_string()),
            &format!("{:?}", dir.path().join("run2").display().to_string()),
        );
    std::fs::write(&config, again).unwrap();
    let o = burnish(&[
        "train",
        "dpo",
        "--config",
        config.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        dir.path()
            .join("run2/final/adapter/adapter_config.json")
            .is_file()
    );
}

/// A free port on the loopback interface (and the two after it, which the nodes serve on).
fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let next_free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if port < u16::MAX - 2 && next_free(port + 1) && next_free(port + 2) {
            return port;
        }
    }
}

/// Waits for `child` at most `limit`, killing it after that; returns its output.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn data_parallel_runs_match_one_device_in_process_and_on_two_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 40);
    let run = |name: &str, extra: &[&str]| {
        let config = write_config(&dir.path().join(name), &data, 3, 3);
        let mut args = vec![
            "train",
            "dpo",
            "--config",
            config.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    // One device accumulating 2 micro-batches of 4: the global batch of 2 peers x 4.
    let args = run("one", &["--set", "train.grad_accumulation=2"]);
    let o = burnish(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let one = logprobs(&dir.path().join("one/run/final"));

    let args = run("peers", &["--devices", "2"]);
    let o = burnish(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let peers = logprobs(&dir.path().join("peers/run/final"));

    let port = free_port().to_string();
    let coordinator = format!("127.0.0.1:{port}");
    let args = run("nodes", &["--nodes", "2", "--coordinator", &coordinator]);
    let spawn = |rank: &str| {
        Command::new(env!("CARGO_BIN_EXE_burnish"))
            .args(&args)
            .args(["--node-rank", rank, "--set", "distributed.timeout_secs=120"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (node0, node1) = (spawn("0"), spawn("1"));
    let (out0, out1) = (
        wait_bounded(node0, Duration::from_secs(240)),
        wait_bounded(node1, Duration::from_secs(30)),
    );
    assert!(out0.status.success(), "node 0: {}", text(&out0));
    assert!(out1.status.success(), "node 1: {}", text(&out1));
    let nodes = logprobs(&dir.path().join("nodes/run/final"));
    assert!(
        !dir.path().join("nodes/run/node-1/metrics.jsonl").exists(),
        "node 1 writes no run files"
    );

    let start = logprobs(&gpt2());
    assert!(
        (start[0] - one[0]).abs() > 1e-3,
        "training moved {start:?} to {one:?}"
    );
    for (what, got) in [("2 peers", &peers), ("2 nodes", &nodes)] {
        for (a, b) in one.iter().zip(got) {
            assert!(
                (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                "{what}: {got:?} vs one device {one:?}"
            );
        }
    }
    let metrics = std::fs::read_to_string(dir.path().join("nodes/run/metrics.jsonl")).unwrap();
    let steps = metrics.lines().filter(|l| l.contains("grad_norm")).count();
    assert_eq!(steps, 3, "one metrics line per step: {metrics}");
}

#[test]
fn a_dead_or_missing_node_stops_the_others_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("pairs.parquet");
    write_pairs(&data, 40);
    let config = write_config(dir.path(), &data, 500, 0);
    let node = |rank: &str, port: &str, timeout: &str| {
        Command::new(env!("CARGO_BIN_EXE_burnish"))
            .args([
                "train",
                "dpo",
                "--quiet",
                "--config",
                config.to_str().unwrap(),
            ])
            .args(["--nodes", "2", "--node-rank", rank])
            .args(["--coordinator", &format!("127.0.0.1:{port}")])
            .args(["--set", &format!("distributed.timeout_secs={timeout}")])
            .args(["--set", "train.eval_every=0", "--overwrite"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };

    // Node 1 never starts: node 0 gives up after the timeout instead of waiting forever.
    let alone = wait_bounded(
        node("0", &free_port().to_string(), "2"),
        Duration::from_secs(60),
    );
    assert_eq!(alone.status.code(), Some(2), "{}", text(&alone));
    assert!(
        text(&alone).contains("did not all register within 2 s"),
        "{}",
        text(&alone)
    );

    // Node 1 dies mid-run: node 0 stops with the lost node named.
    let port = free_port().to_string();
    let node0 = node("0", &port, "60");
    let mut node1 = node("1", &port, "60");
    let metrics = dir.path().join("run/metrics.jsonl");
    let started = Instant::now();
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.lines().count() < 2) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    node1.kill().unwrap();
    let _ = node1.wait();
    let out0 = wait_bounded(node0, Duration::from_secs(60));
    let t = text(&out0);
    assert!(!out0.status.success(), "{t}");
    assert!(t.contains("a node died"), "{t}");
}
