//! Checkpoints that a killed run can resume from exactly, published so that a crash never
//! leaves a half-written one behind.
//!
//! Layout inside a run's output directory:
//!
//! ```text
//! output_dir/
//!   checkpoint-200/
//!     model.mpk        policy weights (burn NamedMpk record, full precision)
//!     optimizer.mpk    AdamW moments
//!     state.json       TrainingState: step, schedule length, data position, seed
//!   checkpoint-400/
//!   latest             "checkpoint-400\n"
//! ```
//!
//! [`save_checkpoint`] fills `checkpoint-{step}.tmp/` (the caller writes the model and optimizer
//! through a closure, e.g. with [`save_module`] and [`save_optimizer`]), writes `state.json` last,
//! fsyncs, renames the directory to `checkpoint-{step}/` and then replaces `latest` atomically.
//! A directory without the `.tmp` suffix is therefore always complete, and `latest` only ever
//! names a complete one. [`find_latest`] trusts `latest` and falls back to scanning.
//!
//! What resuming needs and where it comes from: the weights and optimizer moments from the two
//! records; the learning rate from the step (the schedule is a pure function of it, see
//! [`crate::schedule`]); the data order from `(seed, epoch)` and the position in it from
//! `(epoch, index)` (see [`crate::data_order`]); any other randomness (dropout) from seeds derived
//! from `(seed, step)` with [`crate::data_order::derive_seed`]. No generator state is saved.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{AutodiffModule, Module};
use burn::optim::Optimizer;
use burn::record::{FileRecorder, FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use serde::{Deserialize, Serialize};

use crate::data_order::DataPosition;

/// The name of the pointer file that names the newest complete checkpoint.
pub const LATEST_FILE: &str = "latest";
/// The name of the training-state file inside a checkpoint.
pub const STATE_FILE: &str = "state.json";
/// The record name (without extension) of the policy weights inside a checkpoint.
pub const MODEL_RECORD: &str = "model";
/// The record name (without extension) of the optimizer state inside a checkpoint.
pub const OPTIMIZER_RECORD: &str = "optimizer";
/// The version of the `state.json` layout written by this crate.
pub const STATE_VERSION: u32 = 1;

/// The recorder used for checkpoint records: named MessagePack, full precision (`.mpk`).
pub type CheckpointRecorder = NamedMpkFileRecorder<FullPrecisionSettings>;

/// Errors from writing or reading checkpoints.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// A file or directory operation failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// burn could not write or read a record.
    #[error("{path}: {message}")]
    Record {
        /// The record file.
        path: PathBuf,
        /// burn's message.
        message: String,
    },
    /// `state.json` is missing fields or malformed.
    #[error("{path}: invalid training state: {message}")]
    State {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// Writing the contents of the checkpoint failed in the caller's closure.
    #[error("writing checkpoint {dir}: {message}")]
    Contents {
        /// The temporary checkpoint directory.
        dir: PathBuf,
        /// The caller's message.
        message: String,
    },
}

impl CheckpointError {
    /// Wraps an I/O error at `path` (for `map_err`).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CheckpointError {
        let path = path.into();
        move |cause| CheckpointError::Io { path, cause }
    }
}

/// Everything besides the weights and optimizer moments that a run needs to resume exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingState {
    /// Layout version of this file ([`STATE_VERSION`]).
    pub version: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// Steps of the whole run, i.e. the schedule's length (a resumed run checks it is unchanged).
    pub total_steps: u64,
    /// The learning rate of the last completed step (informative; it is recomputed from `step`).
    pub lr: f64,
    /// The next example to train on: epoch and index into that epoch's seeded order.
    pub data: DataPosition,
    /// The run's seed: data order and derived seeds come from it.
    pub seed: u64,
    /// Tokens trained on so far (for throughput and logging).
    pub tokens_seen: u64,
    /// The last evaluation loss, if any evaluation ran.
    pub last_eval_loss: Option<f64>,
}

impl TrainingState {
    /// A state at `step` with the current layout version.
    pub fn new(step: u64, total_steps: u64, lr: f64, data: DataPosition, seed: u64) -> Self {
        TrainingState {
            version: STATE_VERSION,
            step,
            total_steps,
            lr,
            data,
            seed,
            tokens_seen: 0,
            last_eval_loss: None,
        }
    }
}

/// A complete checkpoint on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// Its directory, `output_dir/checkpoint-{step}`.
    pub dir: PathBuf,
    /// The contents of its `state.json`.
    pub state: TrainingState,
}

impl Checkpoint {
    /// Reads the checkpoint in `dir` (its `state.json`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, CheckpointError> {
        let dir = dir.as_ref().to_path_buf();
        let state = read_state(&dir)?;
        Ok(Checkpoint { dir, state })
    }

    /// The path of a record in this checkpoint, without extension (as burn's recorders take it).
    pub fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The directory name of the checkpoint of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("checkpoint-{step}")
}

/// The step of a directory named `checkpoint-{step}`, or `None` for anything else (including `.tmp`).
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("checkpoint-")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsync, rename.
///
/// Readers see either the old contents or the new, never a torn file, even if the process dies
/// mid-write. The temporary file is in the same directory because rename is only atomic within
/// one file system.
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> std::io::Result<()> {
    let path = path.as_ref();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name")
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes a rename or creation inside `dir` durable; a no-op where directories cannot be opened.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// fsyncs every regular file directly inside `dir`, then `dir` itself.
fn sync_tree(dir: &Path) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(dir).map_err(CheckpointError::io(dir))? {
        let path = entry.map_err(CheckpointError::io(dir))?.path();
        if path.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(CheckpointError::io(&path))?;
        }
    }
    sync_dir(dir).map_err(CheckpointError::io(dir))
}

/// Publishes a checkpoint of `state.step` in `output_dir` and points `latest` at it.
///
/// `write_contents` receives the temporary directory and writes the records into it (e.g.
/// `|dir| { save_module(&model, dir, MODEL_RECORD)?; save_optimizer(&optim, dir, OPTIMIZER_RECORD)?; Ok(()) }`).
/// A checkpoint of the same step that already exists is replaced. Returns the published directory.
pub fn save_checkpoint<F>(
    output_dir: impl AsRef<Path>,
    state: &TrainingState,
    write_contents: F,
) -> Result<PathBuf, CheckpointError>
where
    F: FnOnce(&Path) -> Result<(), CheckpointError>,
{
    let output_dir = output_dir.as_ref();
    fs::create_dir_all(output_dir).map_err(CheckpointError::io(output_dir))?;
    let name = checkpoint_name(state.step);
    let final_dir = output_dir.join(&name);
    let tmp_dir = output_dir.join(format!("{name}.tmp"));
    if tmp_dir.exists() {
        // Left over from a run killed while saving: never complete, safe to discard.
        fs::remove_dir_all(&tmp_dir).map_err(CheckpointError::io(&tmp_dir))?;
    }
    fs::create_dir(&tmp_dir).map_err(CheckpointError::io(&tmp_dir))?;

    write_contents(&tmp_dir)?;
    // state.json last: its presence marks the contents as complete even inside the .tmp directory.
    let state_path = tmp_dir.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).map_err(|e| CheckpointError::State {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    fs::write(&state_path, json + "\n").map_err(CheckpointError::io(&state_path))?;
    sync_tree(&tmp_dir)?;

    if final_dir.exists() {
        // A directory cannot be renamed over a non-empty one; move the old one aside first so
        // that at every instant one complete checkpoint of this step exists.
        let old = output_dir.join(format!("{name}.old"));
        if old.exists() {
            fs::remove_dir_all(&old).map_err(CheckpointError::io(&old))?;
        }
        fs::rename(&final_dir, &old).map_err(CheckpointError::io(&final_dir))?;
        fs::rename(&tmp_dir, &final_dir).map_err(CheckpointError::io(&final_dir))?;
        fs::remove_dir_all(&old).map_err(CheckpointError::io(&old))?;
    } else {
        fs::rename(&tmp_dir, &final_dir).map_err(CheckpointError::io(&final_dir))?;
    }
    sync_dir(output_dir).map_err(CheckpointError::io(output_dir))?;

    let latest = output_dir.join(LATEST_FILE);
    write_atomic(&latest, format!("{name}\n").as_bytes()).map_err(CheckpointError::io(&latest))?;
    Ok(final_dir)
}

/// Reads `state.json` from a checkpoint directory.
pub fn read_state(dir: impl AsRef<Path>) -> Result<TrainingState, CheckpointError> {
    let path = dir.as_ref().join(STATE_FILE);
    let text = fs::read_to_string(&path).map_err(CheckpointError::io(&path))?;
    let state: TrainingState = serde_json::from_str(&text).map_err(|e| CheckpointError::State {
        path: path.clone(),
        message: e.to_string(),
    })?;
    if state.version != STATE_VERSION {
        return Err(CheckpointError::State {
            path,
            message: format!(
                "layout version {} is not supported (this build reads {STATE_VERSION})",
                state.version
            ),
        });
    }
    Ok(state)
}

/// All complete checkpoints in `output_dir` (those with a `state.json`), oldest step first.
pub fn list_checkpoints(
    output_dir: impl AsRef<Path>,
) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
    let output_dir = output_dir.as_ref();
    if !output_dir.exists() {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for entry in fs::read_dir(output_dir).map_err(CheckpointError::io(output_dir))? {
        let entry = entry.map_err(CheckpointError::io(output_dir))?;
        let Some(step) = entry.file_name().to_str().and_then(parse_checkpoint_name) else {
            continue;
        };
        let dir = entry.path();
        if dir.join(STATE_FILE).is_file() {
            found.push((step, dir));
        }
    }
    found.sort();
    Ok(found)
}

/// The newest complete checkpoint in `output_dir`, or `None` when there is none.
///
/// The `latest` pointer is trusted when it names a complete checkpoint; otherwise (missing,
/// stale, or hand-edited) the highest-numbered complete `checkpoint-{step}` directory wins.
pub fn find_latest(output_dir: impl AsRef<Path>) -> Result<Option<Checkpoint>, CheckpointError> {
    let output_dir = output_dir.as_ref();
    if let Ok(text) = fs::read_to_string(output_dir.join(LATEST_FILE)) {
        let name = text.trim();
        if parse_checkpoint_name(name).is_some() {
            let dir = output_dir.join(name);
            if dir.join(STATE_FILE).is_file() {
                return Checkpoint::open(dir).map(Some);
            }
        }
    }
    match list_checkpoints(output_dir)?.pop() {
        Some((_, dir)) => Checkpoint::open(dir).map(Some),
        None => Ok(None),
    }
}

/// Suffix of a checkpoint directory being deleted.
const PRUNED_SUFFIX: &str = ".pruned";

/// Removes `checkpoint-N.pruned` directories a killed prune left behind.
fn remove_pruned_leftovers(output_dir: &Path) -> Result<(), CheckpointError> {
    for entry in fs::read_dir(output_dir).map_err(CheckpointError::io(output_dir))? {
        let path = entry.map_err(CheckpointError::io(output_dir))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("checkpoint-") && n.ends_with(PRUNED_SUFFIX)) {
            fs::remove_dir_all(&path).map_err(CheckpointError::io(&path))?;
        }
    }
    Ok(())
}

/// Deletes the oldest checkpoints so that at most `keep` remain (`0` keeps all); the one
/// `latest` names is never deleted. Returns the deleted directories.
pub fn prune_checkpoints(
    output_dir: impl AsRef<Path>,
    keep: usize,
) -> Result<Vec<PathBuf>, CheckpointError> {
    let output_dir = output_dir.as_ref();
    if keep == 0 {
        return Ok(Vec::new());
    }
    let latest = find_latest(output_dir)?.map(|c| c.dir);
    let all = list_checkpoints(output_dir)?;
    let excess = all.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    remove_pruned_leftovers(output_dir)?;
    for (_, dir) in all.into_iter().take(excess) {
        if Some(&dir) == latest.as_ref() {
            continue;
        }
        // Renamed first, so a kill while deleting leaves `checkpoint-N.pruned` (not a
        // checkpoint, removed by the next prune), never a `checkpoint-N` missing files.
        let mut doomed = dir.clone().into_os_string();
        doomed.push(PRUNED_SUFFIX);
        let doomed = PathBuf::from(doomed);
        fs::rename(&dir, &doomed).map_err(CheckpointError::io(&dir))?;
        fs::remove_dir_all(&doomed).map_err(CheckpointError::io(&doomed))?;
        deleted.push(dir);
    }
    Ok(deleted)
}

/// Saves a module's weights as `dir/{name}.mpk` (full precision). Returns the file written.
pub fn save_module<B: Backend, M: Module<B>>(
    module: &M,
    dir: impl AsRef<Path>,
    name: &str,
) -> Result<PathBuf, CheckpointError> {
    let path = dir.as_ref().join(name);
    let file = with_extension::<B>(&path);
    module
        .clone()
        .save_file(path, &CheckpointRecorder::new())
        .map_err(|e| CheckpointError::Record {
            path: file.clone(),
            message: e.to_string(),
        })?;
    Ok(file)
}

/// Loads weights saved by [`save_module`] into `module` (which fixes the architecture).
pub fn load_module<B: Backend, M: Module<B>>(
    module: M,
    dir: impl AsRef<Path>,
    name: &str,
    device: &B::Device,
) -> Result<M, CheckpointError> {
    let path = dir.as_ref().join(name);
    let file = with_extension::<B>(&path);
    module
        .load_file(path, &CheckpointRecorder::new(), device)
        .map_err(|e| CheckpointError::Record {
            path: file,
            message: e.to_string(),
        })
}

/// Saves an optimizer's state (e.g. AdamW's moments) as `dir/{name}.mpk`. Returns the file written.
pub fn save_optimizer<B, M, O>(
    optimizer: &O,
    dir: impl AsRef<Path>,
    name: &str,
) -> Result<PathBuf, CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let path = dir.as_ref().join(name);
    let file = with_extension::<B>(&path);
    Recorder::<B>::record(&CheckpointRecorder::new(), optimizer.to_record(), path).map_err(
        |e| CheckpointError::Record {
            path: file.clone(),
            message: e.to_string(),
        },
    )?;
    Ok(file)
}

/// Resumes a run from the latest checkpoint in `output_dir`, if there is one: the module and
/// the optimizer come back from their records and the checkpoint says where the run stood.
/// Without a checkpoint both are returned as they were.
pub fn resume_latest<B, M, O>(
    output_dir: impl AsRef<Path>,
    module: M,
    optimizer: O,
    device: &B::Device,
) -> Result<(M, O, Option<Checkpoint>), CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    match find_latest(output_dir)? {
        Some(checkpoint) => {
            let module = load_module(module, &checkpoint.dir, MODEL_RECORD, device)?;
            let optimizer =
                load_optimizer::<B, M, O>(optimizer, &checkpoint.dir, OPTIMIZER_RECORD, device)?;
            Ok((module, optimizer, Some(checkpoint)))
        }
        None => Ok((module, optimizer, None)),
    }
}

/// A training run's checkpoint: the module as [`MODEL_RECORD`], the optimizer as
/// [`OPTIMIZER_RECORD`], whatever `extra` writes beside them, then `state`; older checkpoints
/// beyond `keep` are pruned. Returns the published directory.
pub fn save_run_checkpoint<B, M, O, F>(
    output_dir: impl AsRef<Path>,
    state: &TrainingState,
    module: &M,
    optimizer: &O,
    keep: usize,
    extra: F,
) -> Result<PathBuf, CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
    F: FnOnce(&Path) -> Result<(), CheckpointError>,
{
    let output_dir = output_dir.as_ref();
    let dir = save_checkpoint(output_dir, state, |dir| {
        save_module(module, dir, MODEL_RECORD)?;
        save_optimizer::<B, M, O>(optimizer, dir, OPTIMIZER_RECORD)?;
        extra(dir)
    })?;
    prune_checkpoints(output_dir, keep)?;
    Ok(dir)
}

/// Loads optimizer state saved by [`save_optimizer`] into `optimizer`.
///
/// The state is keyed by parameter id, which burn stores in the module record, so load the
/// module with [`load_module`] too (a freshly initialised module has new ids).
pub fn load_optimizer<B, M, O>(
    optimizer: O,
    dir: impl AsRef<Path>,
    name: &str,
    device: &B::Device,
) -> Result<O, CheckpointError>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let path = dir.as_ref().join(name);
    let file = with_extension::<B>(&path);
    let record = Recorder::<B>::load(&CheckpointRecorder::new(), path, device).map_err(|e| {
        CheckpointError::Record {
            path: file,
            message: e.to_string(),
        }
    })?;
    Ok(optimizer.load_record(record))
}

fn with_extension<B: Backend>(path: &Path) -> PathBuf {
    path.with_extension(<CheckpointRecorder as FileRecorder<B>>::file_extension())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{AdamWConfig, GradientsParams};
    use burn::tensor::{Tensor, TensorData, Tolerance};

    #[cfg(not(feature = "wgpu"))]
    type B = burn::backend::Autodiff<burn::backend::Flex>;
    #[cfg(feature = "wgpu")]
    type B = burn::backend::Autodiff<burn::backend::Wgpu>;

    fn state(step: u64) -> TrainingState {
        TrainingState::new(
            step,
            100,
            1e-6,
            DataPosition {
                epoch: 1,
                index: 24,
            },
            42,
        )
    }

    fn write_marker(dir: &Path) -> Result<(), CheckpointError> {
        fs::write(dir.join("model.mpk"), b"weights").map_err(CheckpointError::io(dir))
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latest");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("latest")]);
    }

    #[test]
    fn save_publishes_directory_state_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        let out = save_checkpoint(dir.path(), &state(10), write_marker).unwrap();
        assert_eq!(out, dir.path().join("checkpoint-10"));
        assert!(out.join("model.mpk").is_file());
        assert!(!dir.path().join("checkpoint-10.tmp").exists());
        assert_eq!(
            fs::read_to_string(dir.path().join(LATEST_FILE)).unwrap(),
            "checkpoint-10\n"
        );
        let found = find_latest(dir.path()).unwrap().unwrap();
        assert_eq!(found.dir, out);
        assert_eq!(found.state, state(10));

        save_checkpoint(dir.path(), &state(20), write_marker).unwrap();
        assert_eq!(find_latest(dir.path()).unwrap().unwrap().state.step, 20);
        // Saving the same step again replaces it.
        let mut again = state(20);
        again.tokens_seen = 5;
        save_checkpoint(dir.path(), &again, write_marker).unwrap();
        assert_eq!(
            find_latest(dir.path()).unwrap().unwrap().state.tokens_seen,
            5
        );
        assert_eq!(list_checkpoints(dir.path()).unwrap().len(), 2);
    }

    #[test]
    fn failed_contents_publish_nothing() {
        let dir = tempfile::tempdir().unwrap();
        save_checkpoint(dir.path(), &state(1), write_marker).unwrap();
        let err = save_checkpoint(dir.path(), &state(2), |d| {
            Err(CheckpointError::Contents {
                dir: d.to_path_buf(),
                message: "disk full".into(),
            })
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"));
        assert!(!dir.path().join("checkpoint-2").exists());
        assert_eq!(find_latest(dir.path()).unwrap().unwrap().state.step, 1);
        // The next save of that step clears the leftover .tmp directory.
        save_checkpoint(dir.path(), &state(2), write_marker).unwrap();
        assert!(!dir.path().join("checkpoint-2.tmp").exists());
    }

    #[test]
    fn find_latest_falls_back_when_pointer_is_stale_or_missing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_latest(dir.path()).unwrap().is_none());
        assert!(find_latest(dir.path().join("missing")).unwrap().is_none());
        for step in [5, 50, 9] {
            save_checkpoint(dir.path(), &state(step), write_marker).unwrap();
        }
        // `latest` names the last saved (9), not the highest number.
        assert_eq!(find_latest(dir.path()).unwrap().unwrap().state.step, 9);
        fs::write(dir.path().join(LATEST_FILE), "checkpoint-77\n").unwrap();
        assert_eq!(find_latest(dir.path()).unwrap().unwrap().state.step, 50);
        fs::remove_file(dir.path().join(LATEST_FILE)).unwrap();
        // An incomplete directory (no state.json) is ignored.
        fs::create_dir(dir.path().join("checkpoint-99")).unwrap();
        fs::create_dir(dir.path().join("checkpoint-98.tmp")).unwrap();
        assert_eq!(find_latest(dir.path()).unwrap().unwrap().state.step, 50);
    }

    #[test]
    fn prune_keeps_the_newest_and_latest() {
        let dir = tempfile::tempdir().unwrap();
        for step in [1, 2, 3, 4] {
            save_checkpoint(dir.path(), &state(step), write_marker).unwrap();
        }
        let deleted = prune_checkpoints(dir.path(), 2).unwrap();
        assert_eq!(
            deleted,
            vec![
                dir.path().join("checkpoint-1"),
                dir.path().join("checkpoint-2")
            ]
        );
        let left: Vec<u64> = list_checkpoints(dir.path())
            .unwrap()
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        assert_eq!(left, vec![3, 4]);
        assert!(prune_checkpoints(dir.path(), 0).unwrap().is_empty());
    }

    #[test]
    fn names_and_state_errors() {
        assert_eq!(parse_checkpoint_name("checkpoint-12"), Some(12));
        assert_eq!(parse_checkpoint_name("checkpoint-12.tmp"), None);
        assert_eq!(parse_checkpoint_name("checkpoint-"), None);
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(STATE_FILE), "{\"step\": 3}").unwrap();
        let err = read_state(dir.path()).unwrap_err();
        assert!(
            err.to_string().contains("state.json") && err.to_string().contains("version"),
            "{err}"
        );
    }

    /// Saving the model and AdamW mid-run and resuming gives exactly the next step of the
    /// uninterrupted run.
    #[test]
    fn model_and_optimizer_round_trip_resumes_exactly() {
        let device = Default::default();
        let x =
            Tensor::<B, 2>::from_floats([[1.0, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]], &device);
        let train_step =
            |model: Linear<B>, optim: &mut dyn FnMut(Linear<B>, GradientsParams) -> Linear<B>| {
                let loss = model.forward(x.clone()).powi_scalar(2).mean();
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                optim(model, grads)
            };
        let model = LinearConfig::new(4, 3).init::<B>(&device);
        let mut optim = AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, Linear<B>>();
        let model = train_step(model, &mut |m, g| optim.step(1e-2, m, g));

        let dir = tempfile::tempdir().unwrap();
        let ckpt = save_checkpoint(dir.path(), &state(1), |d| {
            save_module(&model, d, MODEL_RECORD)?;
            save_optimizer::<B, Linear<B>, _>(&optim, d, OPTIMIZER_RECORD)?;
            Ok(())
        })
        .unwrap();
        assert!(ckpt.join("model.mpk").is_file() && ckpt.join("optimizer.mpk").is_file());

        // Uninterrupted: one more step.
        let expected = train_step(model, &mut |m, g| optim.step(1e-2, m, g));

        // Resumed: fresh module and optimizer, loaded from disk, then the same step.
        let fresh = LinearConfig::new(4, 3).init::<B>(&device);
        let restored = load_module(fresh, &ckpt, MODEL_RECORD, &device).unwrap();
        let mut optim2 = load_optimizer::<B, Linear<B>, _>(
            AdamWConfig::new()
                .with_weight_decay(0.01)
                .init::<B, Linear<B>>(),
            &ckpt,
            OPTIMIZER_RECORD,
            &device,
        )
        .unwrap();
        let resumed = train_step(restored, &mut |m, g| optim2.step(1e-2, m, g));

        let want: TensorData = expected.weight.val().into_data();
        let got: TensorData = resumed.weight.val().into_data();
        got.assert_approx_eq::<f32>(&want, Tolerance::absolute(1e-7));

        // Without the optimizer state the step differs: the test would catch a lost record.
        let fresh = load_module(
            LinearConfig::new(4, 3).init::<B>(&device),
            &ckpt,
            MODEL_RECORD,
            &device,
        )
        .unwrap();
        let mut cold = AdamWConfig::new()
            .with_weight_decay(0.01)
            .init::<B, Linear<B>>();
        let naive = train_step(fresh, &mut |m, g| cold.step(1e-2, m, g));
        let diff = (naive.weight.val() - expected.weight.val())
            .abs()
            .max()
            .into_scalar();
        assert!(diff > 1e-6, "optimizer state made no difference ({diff})");

        let err = load_module(
            LinearConfig::new(4, 3).init::<B>(&device),
            dir.path(),
            "nope",
            &device,
        )
        .unwrap_err();
        assert!(err.to_string().contains("nope.mpk"), "{err}");
    }
}
