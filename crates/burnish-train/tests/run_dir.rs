//! Output folders: the lock (a second run refused, a stale lock replaced), a fresh run refused
//! over an old one unless it overwrites, and a resume refused when the configuration or the
//! data changed in a way that breaks exactness.

use std::path::Path;

use burnish_data::{PairSchema, PairWriter, PreferencePair};
use burnish_train::config::TrainingConfig;
use burnish_train::run_dir::{LOCK_FILE, RunDirError, RunLock, prepare_run_dir};

fn write_pairs(path: &Path, n: usize) {
    let rows: Vec<PreferencePair> = (0..n)
        .map(|i| PreferencePair::new(format!("p{i}").as_str(), " good", " bad"))
        .collect();
    let mut w = PairWriter::create(path, PairSchema::of(&rows[0])).unwrap();
    for r in rows {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
}

fn config(dir: &Path, data: &Path, extra: &[&str]) -> TrainingConfig {
    let text = format!(
        "[data]\ntrain = {:?}\n[train]\nmax_steps = 4\nbatch_size = 2\noutput_dir = {:?}\n",
        data.display().to_string(),
        dir.join("run").display().to_string()
    );
    TrainingConfig::from_toml_str(&text, "test", extra).unwrap()
}

#[test]
fn a_second_run_is_locked_out_and_a_stale_lock_is_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = RunLock::acquire(tmp.path()).unwrap();
    let err = RunLock::acquire(tmp.path()).unwrap_err();
    assert!(
        matches!(err, RunDirError::Locked { pid, .. } if pid == std::process::id()),
        "{err}"
    );
    assert!(err.to_string().contains("in use by another run"), "{err}");
    drop(lock);
    // Released with its holder; the file stays and is taken again.
    let lock = RunLock::acquire(tmp.path()).unwrap();
    drop(lock);
    // A lock file left by a killed run (any content) holds no OS lock: it is simply taken.
    for stale in ["4194303999\n", ""] {
        std::fs::write(tmp.path().join(LOCK_FILE), stale).unwrap();
        let lock = RunLock::acquire(tmp.path()).unwrap();
        let text = std::fs::read_to_string(tmp.path().join(LOCK_FILE)).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        drop(lock);
    }
}

#[test]
fn a_fresh_run_over_an_old_one_needs_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.parquet");
    write_pairs(&data, 8);
    let cfg = config(tmp.path(), &data, &[]);
    let run = prepare_run_dir(&cfg, false, false).unwrap();
    let out = run.path.clone();
    assert!(out.join("config.toml").exists() && out.join("data_fingerprint.json").exists());
    // While it runs, nobody else gets in, not even with --overwrite.
    let err = prepare_run_dir(&cfg, false, true).unwrap_err();
    assert!(matches!(err, RunDirError::Locked { .. }), "{err}");
    drop(run);
    std::fs::create_dir_all(out.join("checkpoint-2")).unwrap();
    std::fs::write(out.join("metrics.jsonl"), "{}\n").unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let err = prepare_run_dir(&cfg, false, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, RunDirError::Occupied { .. }), "{msg}");
    assert!(
        msg.contains("checkpoint-2") && msg.contains("--overwrite"),
        "{msg}"
    );
    let run = prepare_run_dir(&cfg, false, true).unwrap();
    assert!(!out.join("checkpoint-2").exists() && !out.join("metrics.jsonl").exists());
    assert!(out.join("notes.txt").exists(), "a user's own file is kept");
    drop(run);
}

#[test]
fn a_resume_refuses_changes_that_break_exactness() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.parquet");
    write_pairs(&data, 8);
    drop(prepare_run_dir(&config(tmp.path(), &data, &[]), false, false).unwrap());
    // Safe: train longer, evaluate and checkpoint at other intervals.
    let longer = config(
        tmp.path(),
        &data,
        &["train.max_steps=8", "train.eval_every=3"],
    );
    drop(prepare_run_dir(&longer, true, false).unwrap());
    for (set, key) in [
        ("train.batch_size=4", "train.batch_size"),
        ("train.seed=1", "train.seed"),
        ("optimizer.lr=0.5", "optimizer.lr"),
        ("loss.beta=0.3", "loss.beta"),
        ("data.max_length=1024", "data.max_length"),
    ] {
        let changed = config(tmp.path(), &data, &["train.max_steps=8", set]);
        let err = prepare_run_dir(&changed, true, false).unwrap_err();
        match &err {
            // Only the unsafe key is named, not the changed max_steps.
            RunDirError::ConfigChanged { keys, .. } => assert_eq!(keys, key, "{set}"),
            other => panic!("{set}: {other}"),
        }
    }
    // The data file rewritten with one more row.
    write_pairs(&data, 9);
    let err = prepare_run_dir(&longer, true, false).unwrap_err();
    assert!(matches!(err, RunDirError::DataChanged { .. }), "{err}");
    assert!(err.to_string().contains("pairs.parquet"), "{err}");
}

#[test]
fn a_resume_may_change_peers_when_the_global_batch_stays() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.parquet");
    write_pairs(&data, 8);
    // More peers with less accumulation keep the global batch: safe.
    let resharded = config(
        tmp.path(),
        &data,
        &["distributed.devices=2", "train.grad_accumulation=1"],
    );
    let start = config(tmp.path(), &data, &["train.grad_accumulation=2"]);
    drop(prepare_run_dir(&start, false, true).unwrap());
    // More peers with the same accumulation double the global batch: refused, named.
    let doubled = config(
        tmp.path(),
        &data,
        &["distributed.devices=2", "train.grad_accumulation=2"],
    );
    match prepare_run_dir(&doubled, true, false).unwrap_err() {
        RunDirError::ConfigChanged { keys, .. } => {
            assert!(keys.contains("the global batch"), "{keys}")
        }
        other => panic!("{other}"),
    }
    drop(prepare_run_dir(&resharded, true, false).unwrap());
}

#[test]
fn a_resume_refuses_a_model_replaced_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pairs.parquet");
    write_pairs(&data, 8);
    let model = tmp.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("config.json"),
        r#"{"model_type": "gpt2", "n_layer": 2}"#,
    )
    .unwrap();
    let set = format!("model.path={:?}", model.display().to_string());
    let cfg = config(tmp.path(), &data, &[set.as_str()]);
    drop(prepare_run_dir(&cfg, false, false).unwrap());
    drop(prepare_run_dir(&cfg, true, false).unwrap());
    std::fs::write(
        model.join("config.json"),
        r#"{"model_type": "llama", "num_hidden_layers": 2}"#,
    )
    .unwrap();
    let err = prepare_run_dir(&cfg, true, false).unwrap_err();
    assert!(matches!(err, RunDirError::DataChanged { .. }), "{err}");
    assert!(err.to_string().contains("config.json"), "{err}");
}
