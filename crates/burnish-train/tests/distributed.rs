//! Data-parallel training on burn's collective, with peers sharing the CPU: two peers reach
//! the weights (and log the losses) of one peer with the same global batch, their shards are
//! disjoint and cover the data, a one-peer checkpoint resumes on two peers, and a NaN, an
//! error, a panic or a hang on one peer stops all of them instead of hanging.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::module::AutodiffModule;
use burnish_model::CausalLm;
use burnish_train::config::TrainingConfig;
use burnish_train::metrics_log::{LogRecord, read_metrics};
use burnish_train::objectives::PreferenceObjective;
use burnish_train::trainer::{BatchLoss, Objective, RunOptions, TrainError, TrainOutcome, train};

mod common;
use common::*;

/// A run of `steps` steps with `peers` peers of micro-batches `batch` and accumulation `g`.
fn dp_config(dir: &Path, steps: u64, peers: usize, batch: usize, g: usize) -> TrainingConfig {
    let mut c = config(dir, steps);
    c.distributed.devices = peers;
    c.train.batch_size = batch;
    c.train.grad_accumulation = g;
    c
}

fn reference_objective() -> PreferenceObjective<B> {
    objective(pairs(40, 0), Some(policy().valid()))
}

fn run<O: Objective<B> + Sync>(
    objective: &O,
    config: &TrainingConfig,
    options: &RunOptions,
) -> Result<TrainOutcome<B>, TrainError> {
    train(policy(), objective, config, options, &device())
}

/// Log-softmax of the model's logits on a fixed sequence: what "the final log-probs" means.
fn logprobs(model: &CausalLm<B>) -> Vec<f32> {
    let logits = weights(model);
    let vocab = 64;
    logits
        .chunks(vocab)
        .flat_map(|row| {
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let log_sum = row.iter().map(|x| (x - max).exp()).sum::<f32>().ln() + max;
            row.iter().map(move |x| x - log_sum).collect::<Vec<_>>()
        })
        .collect()
}

fn relative_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().map(|x| x.abs()).fold(0.0, f32::max);
    max_diff(a, b) / scale
}

/// `(step, loss, rewards/margins, tokens_per_sec)` of each step record of `metrics.jsonl`.
fn step_lines(outcome: &TrainOutcome<B>) -> Vec<(u64, f64, f64, f64)> {
    read_metrics(&outcome.metrics_path)
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            LogRecord::Train(s) => Some((
                s.step,
                s.loss,
                s.metrics.get("rewards/margins").unwrap(),
                s.tokens_per_sec,
            )),
            LogRecord::Eval(_) => None,
        })
        .collect()
}

#[test]
fn two_peers_reach_the_weights_of_one_peer_with_the_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let objective = reference_objective();
    let steps = 5;
    let one = run(
        &objective,
        &dp_config(&tmp.path().join("one"), steps, 1, 8, 1),
        &quiet(),
    )
    .unwrap();
    let accumulated = run(
        &objective,
        &dp_config(&tmp.path().join("acc"), steps, 1, 4, 2),
        &quiet(),
    )
    .unwrap();
    let two = run(
        &objective,
        &dp_config(&tmp.path().join("two"), steps, 2, 4, 1),
        &quiet(),
    )
    .unwrap();
    let start = logprobs(&policy());
    let moved = max_diff(&start, &logprobs(&two.model));
    assert!(moved > 1e-2, "training moved the log-probs by only {moved}");
    let vs_batch = relative_diff(&logprobs(&one.model), &logprobs(&two.model));
    assert!(vs_batch <= 1e-5, "2 peers x 4 vs 1 peer x 8: {vs_batch}");
    let vs_accumulation = relative_diff(&logprobs(&accumulated.model), &logprobs(&two.model));
    println!(
        "relative log-prob difference of 2 peers x 4 against 1 x 8: {vs_batch:.2e}, against 1 x 4 x 2 accumulated: {vs_accumulation:.2e} (training moved them by {moved:.3})"
    );
    assert!(
        vs_accumulation <= 1e-5,
        "2 peers x 4 vs 1 peer x 4 x 2 accumulated: {vs_accumulation}"
    );

    // One metrics line per step, with the loss and metrics of the whole global batch.
    let (a, b) = (step_lines(&one), step_lines(&two));
    assert_eq!(a.len(), steps as usize);
    assert_eq!(b.len(), steps as usize);
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.0, y.0);
        assert!(
            (x.1 - y.1).abs() <= 1e-5,
            "loss at step {}: {} vs {}",
            x.0,
            x.1,
            y.1
        );
        assert!(
            (x.2 - y.2).abs() <= 1e-5,
            "margin at step {}: {} vs {}",
            x.0,
            x.2,
            y.2
        );
        assert!(y.3 > 0.0);
    }
    // Rank 0 evaluated at the end, as one peer does.
    let (e1, e2) = (one.last_eval.unwrap(), two.last_eval.unwrap());
    assert!((e1.loss - e2.loss).abs() <= 1e-5);
}

#[test]
fn peer_shards_are_disjoint_and_cover_the_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    // 10 examples, 2 peers x 3: two steps, the second with a short last micro-batch.
    let seen: Mutex<HashMap<std::thread::ThreadId, Vec<usize>>> = Mutex::default();
    let recording = Hooked {
        inner: objective(pairs(10, 0), Some(policy().valid())),
        hook: |indices: &[usize], batch| {
            let mut seen = seen.lock().unwrap();
            let mine = seen.entry(std::thread::current().id()).or_default();
            mine.extend_from_slice(indices);
            Ok(batch)
        },
    };
    let mut config = dp_config(tmp.path(), 1, 2, 3, 1);
    config.train.max_steps = None;
    config.train.epochs = 1;
    let outcome = run(&recording, &config, &quiet()).unwrap();
    assert_eq!(outcome.steps, 2, "10 examples in global batches of 6");
    drop(recording);
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen.len(), 2, "both peers computed a loss: {seen:?}");
    let mut all: Vec<usize> = seen.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..10).collect::<Vec<_>>(),
        "each example exactly once"
    );
}

#[test]
fn two_peers_resume_a_one_peer_checkpoint_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let objective = reference_objective();
    let full = run(
        &objective,
        &dp_config(&tmp.path().join("full"), 6, 1, 4, 2),
        &quiet(),
    )
    .unwrap();
    let dir = tmp.path().join("resumed");
    let stopped = RunOptions {
        stop_after: Some(2),
        ..quiet()
    };
    run(&objective, &dp_config(&dir, 6, 1, 4, 2), &stopped).unwrap();
    let resume = RunOptions {
        resume: true,
        ..quiet()
    };
    let resumed = run(&objective, &dp_config(&dir, 6, 2, 4, 1), &resume).unwrap();
    let diff = relative_diff(&logprobs(&full.model), &logprobs(&resumed.model));
    println!("resumed on 2 peers against 1 peer throughout: {diff:.2e}");
    assert!(
        diff <= 1e-5,
        "resumed on 2 peers vs 1 peer throughout: {diff}"
    );
    assert_eq!(
        step_lines(&resumed).len(),
        6,
        "steps 1-2 kept, 3-6 appended"
    );
}

/// What goes wrong, on the first call that sees example 0 (so on one peer only).
#[derive(Clone, Copy)]
enum Fault {
    NaN,
    Error,
    Panic,
    Hang,
}

fn faulty_run(fault: Fault) -> Result<TrainOutcome<B>, TrainError> {
    let tmp = tempfile::tempdir().unwrap();
    let fired = AtomicUsize::new(0);
    let objective = Hooked {
        inner: objective(pairs(16, 0), Some(policy().valid())),
        hook: |indices: &[usize], mut batch: BatchLoss<B>| {
            if indices.contains(&0) && fired.fetch_add(1, Ordering::SeqCst) == 0 {
                match fault {
                    Fault::NaN => batch.loss = batch.loss * f32::NAN,
                    Fault::Error => return Err(TrainError::Other("the objective broke".into())),
                    Fault::Panic => panic!("the objective panicked"),
                    Fault::Hang => std::thread::sleep(std::time::Duration::from_secs(4)),
                }
            }
            Ok(batch)
        },
    };
    let mut config = dp_config(tmp.path(), 4, 2, 2, 1);
    // Short only where the test waits for it: a slow backend (wgpu's first steps compile
    // kernels) must not time the other faults out first.
    config.distributed.timeout_secs = if matches!(fault, Fault::Hang) { 1 } else { 120 };
    run(&objective, &config, &quiet())
}

#[test]
fn a_nan_on_one_peer_stops_every_peer_at_that_step() {
    match faulty_run(Fault::NaN) {
        Err(TrainError::NonFinite { step, value, .. }) => {
            assert!((1..=4).contains(&step));
            assert!(value.is_nan());
        }
        other => panic!("expected the NaN guard, got {:?}", other.err()),
    }
}

#[test]
fn an_error_or_a_panic_on_one_peer_stops_the_others() {
    let message = |r: Result<TrainOutcome<B>, TrainError>| r.err().map(|e| e.to_string());
    let error = message(faulty_run(Fault::Error)).expect("the run must fail");
    assert_eq!(error, "the objective broke");
    let panic = message(faulty_run(Fault::Panic)).expect("the run must fail");
    assert!(
        panic.contains("panicked: the objective panicked"),
        "{panic}"
    );
}

#[test]
fn a_peer_that_hangs_times_the_others_out() {
    let error = faulty_run(Fault::Hang)
        .err()
        .expect("the run must fail")
        .to_string();
    assert!(error.contains("waited more than 1 s"), "{error}");
}
