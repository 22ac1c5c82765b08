//! Which data files an input path stands for: plain files, plain folders, and Hugging Face
//! `datasets` folders as users have them.
//!
//! Four folder layouts are recognised, in this order:
//!
//! 1. a `DatasetDict.save_to_disk` folder: `dataset_dict.json` (`{"splits": [...]}`) and one
//!    sub-folder per split, each a `save_to_disk` folder;
//! 2. a `Dataset.save_to_disk` folder: `state.json` and/or `dataset_info.json` beside
//!    `data-00000-of-0000N.arrow` files (Arrow IPC streams), read in the order `state.json`'s
//!    `_data_files` lists them;
//! 3. a Hub-style folder: shards named `<split>-00000-of-0000N.<ext>` (or `<split>.<ext>`,
//!    `<split>-*.<ext>`, `<split>_*.<ext>`) in a `data/` sub-folder or at the top level, or
//!    `data/<split>/*.<ext>`; the split of a shard comes from its name (or its folder);
//! 4. any other folder: every data file at its top level, in name order, as one data set.
//!
//! Folders of layouts 1 and 3 may hold several splits: the one asked for is read, by default
//! `train`, and a folder without `train` is an error that lists the splits it has. Plain files
//! and plain folders have no split and ignore the selector; a `save_to_disk` folder whose
//! `state.json` names its split refuses any other name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{DataError, Result};

/// The kind of a data file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// Arrow IPC, file or stream format (`.arrow`, `.ipc`, `.feather`).
    Arrow,
    /// Comma-separated values with a header row (`.csv`, `.csv.gz`).
    Csv,
    /// JSON array or JSON Lines (`.json`, `.jsonl`, `.ndjson`, each optionally `.gz`).
    Json,
}

impl FileKind {
    /// The kind that a file's name says, if it says one.
    pub fn from_name(path: &Path) -> Option<FileKind> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let name = name.strip_suffix(".gz").unwrap_or(&name);
        let ext = name.rsplit_once('.').map(|(_, e)| e)?;
        match ext {
            "parquet" | "pq" => Some(FileKind::Parquet),
            "arrow" | "ipc" | "feather" => Some(FileKind::Arrow),
            "csv" => Some(FileKind::Csv),
            "json" | "jsonl" | "ndjson" => Some(FileKind::Json),
            _ => None,
        }
    }

    /// The kind from the name, else from the first bytes (the Parquet and Arrow magic numbers);
    /// `None` when neither tells.
    pub fn detect(path: &Path) -> Result<Option<FileKind>> {
        if let Some(kind) = FileKind::from_name(path) {
            return Ok(Some(kind));
        }
        let mut head = [0u8; 6];
        let n = read_head(path, &mut head)?;
        Ok(match &head[..n] {
            [b'P', b'A', b'R', b'1', ..] => Some(FileKind::Parquet),
            b"ARROW1" | [0xff, 0xff, 0xff, 0xff, ..] => Some(FileKind::Arrow),
            _ => None,
        })
    }
}

/// Reads up to `buf.len()` bytes from the start of `path`; returns how many were read.
pub(crate) fn read_head(path: &Path, buf: &mut [u8]) -> Result<usize> {
    let mut file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    Ok(n)
}

/// Files of `datasets` and the Hub that describe a data set rather than hold rows.
const METADATA_FILES: [&str; 4] = [
    "dataset_info.json",
    "dataset_infos.json",
    "state.json",
    "dataset_dict.json",
];

/// Which kinds of file a caller can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readable {
    /// JSON and JSON Lines files count as data (`convert` reads them, the trainers do not).
    pub json: bool,
}

impl Readable {
    fn accepts(self, path: &Path) -> bool {
        match FileKind::from_name(path) {
            Some(FileKind::Json) => {
                self.json
                    && !path
                        .file_name()
                        .is_some_and(|n| METADATA_FILES.iter().any(|m| n == *m))
            }
            Some(_) => true,
            None => false,
        }
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("invalid JSON: {e}")))
}

/// Files directly in `dir` (not in sub-folders) that `readable` accepts, in name order.
fn files_in(dir: &Path, readable: Readable) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_file() && readable.accepts(f))
        .collect();
    found.sort();
    Ok(found)
}

fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.is_dir())
        .collect();
    found.sort();
    Ok(found)
}

/// The split a Hub shard's name gives: `train-00000-of-00003.parquet`, `train.parquet`,
/// `train_0.parquet` and `train-part.jsonl` are all `train`.
fn split_of_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let stem = name.split('.').next().unwrap_or(&name);
    let split = stem.split(['-', '_']).next().unwrap_or(stem);
    (!split.is_empty()).then(|| split.to_owned())
}

/// True for `<anything>-<digits>-of-<digits>`, the shard names of `datasets` and the Hub.
fn is_shard_name(path: &Path) -> bool {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return false;
    };
    let stem = name.split('.').next().unwrap_or(&name);
    let parts: Vec<&str> = stem.rsplitn(4, '-').collect();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    parts.len() == 4 && digits(parts[0]) && parts[1] == "of" && digits(parts[2])
}

/// Picks `wanted` (default `train`) among `splits`, or says which splits there are.
fn choose<'a>(path: &Path, splits: &'a [String], wanted: Option<&str>) -> Result<&'a str> {
    let name = wanted.unwrap_or("train");
    if let Some(s) = splits.iter().find(|s| *s == name) {
        return Ok(s);
    }
    let found = splits.join(", ");
    Err(match wanted {
        Some(w) => invalid(path, format!("no split `{w}` here (splits: {found})")),
        None => invalid(
            path,
            format!("no split `train` here (splits: {found}): choose one"),
        ),
    })
}

/// The `data-*.arrow` files of a `Dataset.save_to_disk` folder, in `state.json`'s order.
fn save_to_disk_files(dir: &Path, wanted: Option<&str>) -> Result<Vec<PathBuf>> {
    let state_path = dir.join("state.json");
    if !state_path.is_file() {
        let files: Vec<PathBuf> = files_in(dir, Readable { json: false })?
            .into_iter()
            .filter(|f| FileKind::from_name(f) == Some(FileKind::Arrow))
            .collect();
        if files.is_empty() {
            return Err(invalid(dir, "a `datasets` folder without any .arrow file"));
        }
        return Ok(files);
    }
    let state = read_json(&state_path)?;
    if let (Some(w), Some(split)) = (wanted, state.get("_split").and_then(Value::as_str))
        && w != split
    {
        return Err(invalid(
            dir,
            format!("this folder holds split `{split}` only, not `{w}`"),
        ));
    }
    let Some(listed) = state.get("_data_files").and_then(Value::as_array) else {
        return Err(invalid(&state_path, "no `_data_files` list"));
    };
    let mut files = Vec::with_capacity(listed.len());
    for (i, entry) in listed.iter().enumerate() {
        let name = entry
            .get("filename")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(&state_path, format!("`_data_files[{i}]` has no `filename`")))?;
        let file = dir.join(name);
        if !file.is_file() {
            return Err(invalid(
                &state_path,
                format!("`_data_files[{i}]` names `{name}`, which is not in the folder"),
            ));
        }
        files.push(file);
    }
    if files.is_empty() {
        return Err(invalid(&state_path, "`_data_files` is empty"));
    }
    Ok(files)
}

/// The split names of a `DatasetDict.save_to_disk` folder.
fn dataset_dict_splits(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("dataset_dict.json");
    let dict = read_json(&path)?;
    let splits = dict
        .get("splits")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(&path, "no `splits` list"))?;
    splits
        .iter()
        .map(|s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(&path, "`splits` holds a value that is not a string"))
        })
        .collect()
}

/// The shards of a Hub-style folder by split, or `None` when `dir` is not one.
fn hub_splits(dir: &Path, readable: Readable) -> Result<Option<BTreeMap<String, Vec<PathBuf>>>> {
    let data = dir.join("data");
    let (root, hub) = if data.is_dir() {
        (data, true)
    } else {
        let top = files_in(dir, readable)?;
        let hub = top.iter().any(|f| is_shard_name(f));
        (dir.to_owned(), hub)
    };
    if !hub {
        return Ok(None);
    }
    let mut splits: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for f in files_in(&root, readable)? {
        if let Some(split) = split_of_name(&f) {
            splits.entry(split).or_default().push(f);
        }
    }
    if root != dir {
        for sub in subdirs(&root)? {
            let files = files_in(&sub, readable)?;
            if let (false, Some(name)) = (files.is_empty(), sub.file_name()) {
                splits
                    .entry(name.to_string_lossy().into_owned())
                    .or_default()
                    .extend(files);
            }
        }
    }
    Ok(Some(splits))
}

/// The split names a folder holds (empty for plain files and folders without splits).
pub fn splits(path: &Path) -> Result<Vec<String>> {
    if !path.is_dir() {
        return Ok(Vec::new());
    }
    if path.join("dataset_dict.json").is_file() {
        return dataset_dict_splits(path);
    }
    if path.join("state.json").is_file() {
        let state = read_json(&path.join("state.json"))?;
        return Ok(state
            .get("_split")
            .and_then(Value::as_str)
            .map(|s| vec![s.to_owned()])
            .unwrap_or_default());
    }
    Ok(hub_splits(path, Readable { json: true })?
        .map(|s| s.into_keys().collect())
        .unwrap_or_default())
}

/// The data files `path` stands for, in reading order: the file itself, or the files of the
/// chosen `split` of a folder (see the module documentation for the layouts).
pub fn data_files(path: &Path, split: Option<&str>, readable: Readable) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            return Err(DataError::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or folder"),
            ));
        }
        return Ok(vec![path.to_owned()]);
    }
    if path.join("dataset_dict.json").is_file() {
        let names = dataset_dict_splits(path)?;
        let chosen = choose(path, &names, split)?;
        let sub = path.join(chosen);
        if !sub.is_dir() {
            return Err(invalid(
                path,
                format!("split `{chosen}` is listed in dataset_dict.json but has no folder"),
            ));
        }
        return save_to_disk_files(&sub, None);
    }
    let has_arrow = || -> Result<bool> {
        Ok(files_in(path, Readable { json: false })?
            .iter()
            .any(|f| FileKind::from_name(f) == Some(FileKind::Arrow)))
    };
    if path.join("state.json").is_file()
        || (path.join("dataset_info.json").is_file() && has_arrow()?)
    {
        return save_to_disk_files(path, split);
    }
    if let Some(mut by_split) = hub_splits(path, readable)? {
        let names: Vec<String> = by_split.keys().cloned().collect();
        if names.is_empty() {
            return Err(DataError::NoFiles(path.to_owned()));
        }
        let chosen = choose(path, &names, split)?.to_owned();
        return Ok(by_split.remove(&chosen).unwrap_or_default());
    }
    let files = files_in(path, readable)?;
    if files.is_empty() {
        return Err(DataError::NoFiles(path.to_owned()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_names_and_their_splits() {
        let p = Path::new;
        assert!(is_shard_name(p("train-00000-of-00003.parquet")));
        assert!(is_shard_name(p("data-00001-of-00002.arrow")));
        assert!(!is_shard_name(p("train.parquet")));
        assert!(!is_shard_name(p("part-0.parquet")));
        assert_eq!(
            split_of_name(p("validation-00000-of-00001.parquet")).as_deref(),
            Some("validation")
        );
        assert_eq!(split_of_name(p("test.jsonl.gz")).as_deref(), Some("test"));
        assert_eq!(split_of_name(p("train_0.csv")).as_deref(), Some("train"));
    }

    #[test]
    fn kinds_from_names() {
        let k = |n: &str| FileKind::from_name(Path::new(n));
        assert_eq!(k("a.parquet"), Some(FileKind::Parquet));
        assert_eq!(k("a.ARROW"), Some(FileKind::Arrow));
        assert_eq!(k("a.csv.gz"), Some(FileKind::Csv));
        assert_eq!(k("a.jsonl.gz"), Some(FileKind::Json));
        assert_eq!(k("a.txt"), None);
        assert_eq!(k("a.gz"), None);
    }
}
