//! A run's output folder: one run at a time, no fresh run silently mixed into an old one, and a
//! resume that refuses a configuration under which it could not continue exactly.
//!
//! - **Lock.** A run holds an OS lock on `output_dir/.burnish.lock` (which records its process
//!   id) until it ends; a second run into the folder is refused with one line. The kernel
//!   releases the lock when the process dies, so a `kill -9` leaves nothing stale.
//! - **Fresh runs.** A folder that already holds a run (its `metrics.jsonl`, `final/` or a
//!   `checkpoint-N`) is refused unless the run resumes (`--resume`) or overwrites it
//!   (`--overwrite`, which deletes burnish's files there and nothing else).
//! - **Resumes.** `config.toml` and `data_fingerprint.json` (size and a hash of the head and tail
//!   of each data file) written by the first run are compared with the resuming run's; any
//!   change except in [`RESUME_SAFE_KEYS`] is refused, naming the keys. The `[distributed]`
//!   keys may change (a run may resume on more or fewer peers), and so may
//!   `train.grad_accumulation` as long as the global batch stays the same.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use burnish_data::ReaderBuilder;
use burnish_data::split::StableHasher;
use serde::{Deserialize, Serialize};

use crate::config::TrainingConfig;

/// The lock file's name inside the output folder.
pub const LOCK_FILE: &str = ".burnish.lock";
/// The resolved configuration of the run, written when it starts.
pub const CONFIG_FILE: &str = "config.toml";
/// Size and content hash of each data file, written when the run starts.
pub const FINGERPRINT_FILE: &str = "data_fingerprint.json";

/// Config keys a resume may change: when to evaluate and checkpoint, how many checkpoints to
/// keep, where the folder is, and how long to train (the schedule's remaining steps then follow
/// the new total).
pub const RESUME_SAFE_KEYS: &[&str] = &[
    "train.max_steps",
    "train.epochs",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.output_dir",
    "train.export_gguf",
];

/// Why a run cannot use its output folder; each message is one line naming the folder.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// Another live process holds the lock.
    #[error(
        "{dir}: in use by another run (process {pid}, lock file {lock}); wait for it to finish, or delete the lock if that process is not a burnish run"
    )]
    Locked {
        /// The output folder.
        dir: PathBuf,
        /// The process holding the lock.
        pid: u32,
        /// The lock file.
        lock: PathBuf,
    },
    /// A fresh run into a folder that holds a run.
    #[error(
        "{dir}: already holds a run ({found}); continue it with --resume, replace it with --overwrite, or choose another train.output_dir"
    )]
    Occupied {
        /// The output folder.
        dir: PathBuf,
        /// What was found there.
        found: String,
    },
    /// The resuming configuration differs from the checkpointed run's in keys that matter.
    #[error(
        "{dir}: cannot resume: the configuration differs from the run's in {keys} (only {safe} may change on a resume); start a fresh run with --overwrite or another train.output_dir"
    )]
    ConfigChanged {
        /// The output folder.
        dir: PathBuf,
        /// The differing keys, comma-separated.
        keys: String,
        /// The keys that may change.
        safe: String,
    },
    /// A data file changed since the run started.
    #[error(
        "{dir}: cannot resume: {what} changed since the run started; the resumed run would not see the same data or model"
    )]
    DataChanged {
        /// The output folder.
        dir: PathBuf,
        /// Which file changed, and how.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// Anything else, with its message.
    #[error("{0}")]
    Other(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        cause: source,
    }
}

/// The held lock of an output folder: an OS advisory lock (`flock`) on `.burnish.lock`, which
/// the kernel releases when the process ends however it ends (a `kill -9` included), so there
/// is no stale lock to guess about and no window in which two runs both hold it. The file itself
/// stays, holding the last holder's process id for the message.
#[derive(Debug)]
pub struct RunLock {
    _file: std::fs::File,
}

impl RunLock {
    /// Takes the lock of `dir` (which must exist), or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<Self, RunDirError> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(RunDirError::Locked {
                    dir: dir.to_path_buf(),
                    pid: text.trim().parse().unwrap_or(0),
                    lock: path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&path)(e)),
        }
        file.set_len(0).map_err(io(&path))?;
        writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
        Ok(RunLock { _file: file })
    }
}

/// The files of a previous run in `dir` that took at least one step, for messages (empty when
/// there is none: a run that stopped at a bad input left only its config, which is replaced).
fn previous_run(dir: &Path) -> Result<Vec<String>, RunDirError> {
    let mut found = Vec::new();
    for name in ["metrics.jsonl", "final"] {
        if dir.join(name).exists() {
            found.push(name.to_string());
        }
    }
    found.extend(checkpoint_dirs(dir)?);
    Ok(found)
}

fn checkpoint_dirs(dir: &Path) -> Result<Vec<String>, RunDirError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let name = entry
            .map_err(io(dir))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("checkpoint-") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Deletes what a run writes into its folder (and nothing else a user may keep there).
fn remove_previous_run(dir: &Path) -> Result<(), RunDirError> {
    let remove = |path: PathBuf| -> Result<(), RunDirError> {
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(io(&path))
        } else if path.exists() {
            std::fs::remove_file(&path).map_err(io(&path))
        } else {
            Ok(())
        }
    };
    for name in checkpoint_dirs(dir)? {
        remove(dir.join(name))?;
    }
    for name in [
        CONFIG_FILE,
        FINGERPRINT_FILE,
        crate::checkpoint::LATEST_FILE,
        "metrics.jsonl",
        "final",
        "final.partial",
        "rejects.jsonl",
    ] {
        remove(dir.join(name))?;
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        if path.extension().is_some_and(|e| e == "svg") {
            remove(path)?;
        }
    }
    Ok(())
}

/// Every `section.key` of a config with its value as TOML text, sorted.
fn flatten(config: &TrainingConfig) -> Result<Vec<(String, String)>, RunDirError> {
    let text = config
        .to_toml_string()
        .map_err(|e| RunDirError::Other(e.to_string()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| RunDirError::Other(e.to_string()))?;
    let mut out = Vec::new();
    fn walk(prefix: &str, table: &toml::Table, out: &mut Vec<(String, String)>) {
        for (key, value) in table {
            let name = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                // The loss and PPO tables are compared key by key too.
                toml::Value::Table(inner) => walk(&name, inner, out),
                other => out.push((name, other.to_string())),
            }
        }
    }
    walk("", &table, &mut out);
    out.sort();
    Ok(out)
}

/// Keys whose values differ between two configs (present in one only counts), except the safe ones.
pub fn changed_keys(
    saved: &TrainingConfig,
    now: &TrainingConfig,
) -> Result<Vec<String>, RunDirError> {
    let (a, b) = (flatten(saved)?, flatten(now)?);
    let mut keys: Vec<String> = a
        .iter()
        .filter(|entry| !b.contains(entry))
        .chain(b.iter().filter(|entry| !a.contains(entry)))
        .map(|(k, _)| k.clone())
        .filter(|k| !RESUME_SAFE_KEYS.contains(&k.as_str()) && !k.starts_with("distributed."))
        // Peers may come or go on resume; only the global batch (which sets the steps and the
        // schedule) must stay, so accumulation may change to keep it.
        .filter(|k| k != "train.grad_accumulation" || saved.global_batch() != now.global_batch())
        .collect();
    if saved.global_batch() != now.global_batch() && !keys.iter().any(|k| k.starts_with("train.")) {
        keys.push(format!(
            "the global batch (train.batch_size × train.grad_accumulation × peers: {} before, {} now)",
            saved.global_batch(),
            now.global_batch()
        ));
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

/// Size and head/tail hash of one data file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileFingerprint {
    /// The file, as the run named it.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// FNV-1a of its first and last MiB, in hex.
    pub hash: String,
}

/// The fingerprint of one file: cheap for any size (two MiB read), and any rewrite of a Parquet
/// file changes its footer, which is in the tail.
pub fn fingerprint_file(path: &Path) -> Result<FileFingerprint, RunDirError> {
    const SPAN: u64 = 1 << 20;
    let mut file = std::fs::File::open(path).map_err(io(path))?;
    let bytes = file.metadata().map_err(io(path))?.len();
    let mut hasher = StableHasher::default();
    let mut buffer = Vec::new();
    (&mut file)
        .take(SPAN)
        .read_to_end(&mut buffer)
        .map_err(io(path))?;
    hasher.write(&buffer);
    if bytes > SPAN {
        buffer.clear();
        file.seek(SeekFrom::Start(bytes.saturating_sub(SPAN).max(SPAN)))
            .map_err(io(path))?;
        file.read_to_end(&mut buffer).map_err(io(path))?;
        hasher.write(&buffer);
    }
    Ok(FileFingerprint {
        path: path.to_path_buf(),
        bytes,
        hash: format!("{:016x}", hasher.finish()),
    })
}

/// Fingerprints of every data file the config reads (training and held-out, folders expanded)
/// and of the starting model's and reference's `config.json` and tokenizer: a model or tokenizer
/// replaced in place (another architecture, other token ids) cannot be resumed into.
pub fn data_fingerprint(config: &TrainingConfig) -> Result<Vec<FileFingerprint>, RunDirError> {
    let mut reader = ReaderBuilder::new();
    if let Some(split) = &config.data.split {
        reader = reader.split(split.clone());
    }
    let mut files = Vec::new();
    for path in config.data.train.iter().chain(config.data.eval.iter()) {
        let expanded = reader
            .clone()
            .path(path)
            .files()
            .map_err(|e| RunDirError::Other(e.to_string()))?;
        files.extend(expanded);
    }
    for model in config
        .model
        .path
        .iter()
        .chain(config.model.reference.iter())
    {
        // A GGUF file is its own config; a folder's architecture is its config.json.
        let model_config = if model.is_file() {
            model.clone()
        } else {
            model.join("config.json")
        };
        if model_config.exists() {
            files.push(model_config);
        }
    }
    files.iter().map(|f| fingerprint_file(f)).collect()
}

/// The output folder of a run, locked for as long as this value lives.
#[derive(Debug)]
pub struct RunDir {
    /// The folder.
    pub path: PathBuf,
    _lock: RunLock,
}

/// Creates and locks `train.output_dir`. A fresh run refuses a folder holding a run unless
/// `overwrite`, which clears burnish's files there first; a resume checks the configuration and
/// the data against the ones saved by the run and refuses a change that breaks exactness.
/// Then writes `config.toml` and `data_fingerprint.json`.
pub fn prepare_run_dir(
    config: &TrainingConfig,
    resume: bool,
    overwrite: bool,
) -> Result<RunDir, RunDirError> {
    let dir = config.train.output_dir.clone();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lock = RunLock::acquire(&dir)?;
    let config_path = dir.join(CONFIG_FILE);
    let fingerprint_path = dir.join(FINGERPRINT_FILE);
    let fingerprint = data_fingerprint(config)?;
    if resume {
        if config_path.exists() {
            let saved = TrainingConfig::from_file(&config_path, &[] as &[&str])
                .map_err(|e| RunDirError::Other(e.to_string()))?;
            let keys = changed_keys(&saved, config)?;
            if !keys.is_empty() {
                return Err(RunDirError::ConfigChanged {
                    dir,
                    keys: keys.join(", "),
                    safe: RESUME_SAFE_KEYS.join(", "),
                });
            }
        }
        if fingerprint_path.exists() {
            let text = std::fs::read_to_string(&fingerprint_path).map_err(io(&fingerprint_path))?;
            let saved: Vec<FileFingerprint> = serde_json::from_str(&text)
                .map_err(|e| RunDirError::Other(format!("{}: {e}", fingerprint_path.display())))?;
            if saved != fingerprint {
                let what = describe_change(&saved, &fingerprint);
                return Err(RunDirError::DataChanged { dir, what });
            }
        }
    } else {
        let found = previous_run(&dir)?;
        if !found.is_empty() {
            if !overwrite {
                return Err(RunDirError::Occupied {
                    dir,
                    found: found.join(", "),
                });
            }
            remove_previous_run(&dir)?;
        }
    }
    let text = config
        .to_toml_string()
        .map_err(|e| RunDirError::Other(e.to_string()))?;
    crate::checkpoint::write_atomic(&config_path, text.as_bytes()).map_err(io(&config_path))?;
    let json = serde_json::to_string_pretty(&fingerprint)
        .map_err(|e| RunDirError::Other(e.to_string()))?;
    crate::checkpoint::write_atomic(&fingerprint_path, json.as_bytes())
        .map_err(io(&fingerprint_path))?;
    Ok(RunDir {
        path: dir,
        _lock: lock,
    })
}

fn describe_change(saved: &[FileFingerprint], now: &[FileFingerprint]) -> String {
    for (a, b) in saved.iter().zip(now) {
        if a.path != b.path {
            return format!(
                "the data file {} (now {})",
                a.path.display(),
                b.path.display()
            );
        }
        if a != b {
            return format!(
                "the file {} ({} bytes then, {} now{})",
                a.path.display(),
                a.bytes,
                b.bytes,
                if a.bytes == b.bytes {
                    ", different content"
                } else {
                    ""
                }
            );
        }
    }
    format!(
        "the number of data files ({} then, {} now)",
        saved.len(),
        now.len()
    )
}
