//! Metrics as JSON lines: one object per optimizer step, and one per evaluation, in `metrics.jsonl`.
//!
//! Each line is a flat JSON object, so `pandas.read_json(path, lines=True)` or `jq` read it as is.
//! Training lines look like
//! `{"split":"train","step":40,"epoch":0.2,"loss":0.6812,"lr":1e-6,"grad_norm":3.1,"tokens_per_sec":5120.0,"rewards/chosen":0.01,...}`
//! and evaluation lines like `{"split":"eval","step":40,"epoch":0.2,"loss":0.68,"examples":500,...}`.
//! Named metrics use TRL's names (`rewards/margins`, ...) and keep the order they were added in.
//! Every line is flushed as it is written, so a killed run loses at most the step in flight.
//! JSON has no NaN or infinity: a non-finite value is written as `null` and read back as NaN.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The file name of the metrics log inside a run's output directory.
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Errors from writing or reading a metrics log.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The file could not be created, written or read.
    #[error("{path}: {cause}")]
    Io {
        /// The metrics file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// A line is not a metrics record.
    #[error("{path}:{line}: not a metrics record: {message}")]
    Parse {
        /// The metrics file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// Named scalar metrics in insertion order (a name set twice keeps its first position).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics(Vec<(String, f64)>);

impl Metrics {
    /// An empty set of metrics.
    pub fn new() -> Self {
        Metrics(Vec::new())
    }

    /// Sets `name` to `value`, replacing an earlier value in place.
    pub fn insert(&mut self, name: impl Into<String>, value: f64) {
        let name = name.into();
        match self.0.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => self.0.push((name, value)),
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The metrics in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, f64)> {
        self.0.iter().map(|(n, v)| (n.as_str(), *v))
    }

    /// How many metrics are set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no metric is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>> FromIterator<(N, f64)> for Metrics {
    fn from_iter<I: IntoIterator<Item = (N, f64)>>(iter: I) -> Self {
        let mut m = Metrics::new();
        for (n, v) in iter {
            m.insert(n, v);
        }
        m
    }
}

/// What happened in one optimizer step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// The optimizer step, 1-based.
    pub step: u64,
    /// Fractional epochs completed (e.g. 0.25 a quarter through the first pass).
    pub epoch: f64,
    /// The loss of this step, averaged over its micro-batches.
    pub loss: f64,
    /// The learning rate used by this step.
    pub lr: f64,
    /// Global L2 norm of the gradient before clipping.
    pub grad_norm: f64,
    /// Tokens (prompt + completion, chosen + rejected) processed per second in this step.
    pub tokens_per_sec: f64,
    /// The loss's own metrics (`rewards/chosen`, `rewards/margins`, ...).
    pub metrics: Metrics,
}

/// The result of one evaluation on held-out data.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRecord {
    /// The optimizer step after which the evaluation ran.
    pub step: u64,
    /// Fractional epochs completed at that point.
    pub epoch: f64,
    /// Mean loss over the held-out examples.
    pub loss: f64,
    /// Held-out examples evaluated.
    pub examples: u64,
    /// Mean metrics over the held-out examples.
    pub metrics: Metrics,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogRecord {
    /// A training step (`"split": "train"`).
    Train(StepRecord),
    /// An evaluation (`"split": "eval"`).
    Eval(EvalRecord),
}

impl LogRecord {
    /// The optimizer step of the record.
    pub fn step(&self) -> u64 {
        match self {
            LogRecord::Train(r) => r.step,
            LogRecord::Eval(r) => r.step,
        }
    }

    /// `"train"` or `"eval"`.
    pub fn split(&self) -> &'static str {
        match self {
            LogRecord::Train(_) => "train",
            LogRecord::Eval(_) => "eval",
        }
    }

    /// A value by its JSON key: the fixed fields (`loss`, `lr`, `epoch`, ...) or a named metric.
    pub fn get(&self, key: &str) -> Option<f64> {
        match self {
            LogRecord::Train(r) => match key {
                "step" => Some(r.step as f64),
                "epoch" => Some(r.epoch),
                "loss" => Some(r.loss),
                "lr" => Some(r.lr),
                "grad_norm" => Some(r.grad_norm),
                "tokens_per_sec" => Some(r.tokens_per_sec),
                _ => r.metrics.get(key),
            },
            LogRecord::Eval(r) => match key {
                "step" => Some(r.step as f64),
                "epoch" => Some(r.epoch),
                "loss" => Some(r.loss),
                "examples" => Some(r.examples as f64),
                _ => r.metrics.get(key),
            },
        }
    }
}

/// Writes a float, or `null` when it is not finite.
struct JsonF64(f64);

impl Serialize for JsonF64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_finite() {
            s.serialize_f64(self.0)
        } else {
            s.serialize_none()
        }
    }
}

impl Serialize for LogRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("split", self.split())?;
        let metrics = match self {
            LogRecord::Train(r) => {
                map.serialize_entry("step", &r.step)?;
                map.serialize_entry("epoch", &JsonF64(r.epoch))?;
                map.serialize_entry("loss", &JsonF64(r.loss))?;
                map.serialize_entry("lr", &JsonF64(r.lr))?;
                map.serialize_entry("grad_norm", &JsonF64(r.grad_norm))?;
                map.serialize_entry("tokens_per_sec", &JsonF64(r.tokens_per_sec))?;
                &r.metrics
            }
            LogRecord::Eval(r) => {
                map.serialize_entry("step", &r.step)?;
                map.serialize_entry("epoch", &JsonF64(r.epoch))?;
                map.serialize_entry("loss", &JsonF64(r.loss))?;
                map.serialize_entry("examples", &r.examples)?;
                &r.metrics
            }
        };
        for (name, value) in metrics.iter() {
            map.serialize_entry(name, &JsonF64(value))?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LogRecord {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = LogRecord;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with \"split\", \"step\" and numeric fields")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LogRecord, A::Error> {
        // Fields are kept in file order so that named metrics keep their order.
        let mut split: Option<String> = None;
        let mut fields: Vec<(String, f64)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == "split" {
                split = Some(map.next_value()?);
            } else {
                let value: Option<f64> = map.next_value()?;
                fields.push((key, value.unwrap_or(f64::NAN)));
            }
        }
        let mut take = |name: &'static str| -> Result<f64, A::Error> {
            let i = fields
                .iter()
                .position(|(k, _)| k == name)
                .ok_or_else(|| de::Error::missing_field(name))?;
            Ok(fields.remove(i).1)
        };
        let split = split.ok_or_else(|| de::Error::missing_field("split"))?;
        match split.as_str() {
            "train" => {
                let step = take("step")? as u64;
                let epoch = take("epoch")?;
                let loss = take("loss")?;
                let lr = take("lr")?;
                let grad_norm = take("grad_norm")?;
                let tokens_per_sec = take("tokens_per_sec")?;
                let metrics = fields.into_iter().collect();
                Ok(LogRecord::Train(StepRecord {
                    step,
                    epoch,
                    loss,
                    lr,
                    grad_norm,
                    tokens_per_sec,
                    metrics,
                }))
            }
            "eval" => {
                let step = take("step")? as u64;
                let epoch = take("epoch")?;
                let loss = take("loss")?;
                let examples = take("examples")? as u64;
                let metrics = fields.into_iter().collect();
                Ok(LogRecord::Eval(EvalRecord {
                    step,
                    epoch,
                    loss,
                    examples,
                    metrics,
                }))
            }
            other => Err(de::Error::unknown_variant(other, &["train", "eval"])),
        }
    }
}

/// An append-only `metrics.jsonl` writer that flushes every line.
pub struct MetricsLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl MetricsLog {
    /// Creates (or truncates) the log at `path` for a fresh run, creating parent directories.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, MetricsError> {
        let path = path.as_ref().to_path_buf();
        let io = |source| MetricsError::Io {
            path: path.clone(),
            cause: source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let file = File::create(&path).map_err(io)?;
        Ok(MetricsLog {
            path,
            out: BufWriter::new(file),
        })
    }

    /// A fresh log at step 0, else the log of a run resumed after `step` (see [`Self::resume`]).
    pub fn open_at(path: impl AsRef<Path>, step: u64) -> Result<Self, MetricsError> {
        if step > 0 {
            Self::resume(path, step)
        } else {
            Self::create(path)
        }
    }

    /// Reopens the log of a run resumed after optimizer step `step`: records of later steps
    /// (written after the checkpoint by the run that was killed) are dropped, so that the log
    /// reads as one uninterrupted run. A missing file is created.
    pub fn resume(path: impl AsRef<Path>, step: u64) -> Result<Self, MetricsError> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            return Self::create(&path);
        }
        let kept: Vec<LogRecord> = read_metrics(&path)?
            .into_iter()
            .filter(|r| r.step() <= step)
            .collect();
        let mut text = String::new();
        for record in &kept {
            text.push_str(&to_line(record));
            text.push('\n');
        }
        crate::checkpoint::write_atomic(&path, text.as_bytes()).map_err(|source| {
            MetricsError::Io {
                path: path.clone(),
                cause: source,
            }
        })?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|source| MetricsError::Io {
                path: path.clone(),
                cause: source,
            })?;
        Ok(MetricsLog {
            path,
            out: BufWriter::new(file),
        })
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as a line and flushes it.
    pub fn write(&mut self, record: &LogRecord) -> Result<(), MetricsError> {
        let line = to_line(record);
        let io = |source| MetricsError::Io {
            path: self.path.clone(),
            cause: source,
        };
        writeln!(self.out, "{line}").map_err(io)?;
        self.out.flush().map_err(io)
    }

    /// Appends a training step.
    pub fn write_step(&mut self, record: StepRecord) -> Result<(), MetricsError> {
        self.write(&LogRecord::Train(record))
    }

    /// Appends an evaluation.
    pub fn write_eval(&mut self, record: EvalRecord) -> Result<(), MetricsError> {
        self.write(&LogRecord::Eval(record))
    }
}

fn to_line(record: &LogRecord) -> String {
    // Serialising plain numbers and strings into a String cannot fail.
    serde_json::to_string(record).expect("metrics records serialise to JSON")
}

/// Reads every record of a `metrics.jsonl` file, in order; blank lines are skipped.
pub fn read_metrics(path: impl AsRef<Path>) -> Result<Vec<LogRecord>, MetricsError> {
    let path = path.as_ref();
    let io = |source| MetricsError::Io {
        path: path.to_path_buf(),
        cause: source,
    };
    let reader = BufReader::new(File::open(path).map_err(io)?);
    let mut records = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| MetricsError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

/// The `(step, value)` points of `key` in the records of one split (`"train"` or `"eval"`),
/// skipping records without that key.
pub fn series(records: &[LogRecord], split: &str, key: &str) -> Vec<(f64, f64)> {
    records
        .iter()
        .filter(|r| r.split() == split)
        .filter_map(|r| r.get(key).map(|v| (r.step() as f64, v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: f64) -> StepRecord {
        StepRecord {
            step,
            epoch: step as f64 / 10.0,
            loss,
            lr: 1e-6,
            grad_norm: 2.5,
            tokens_per_sec: 1000.0,
            metrics: [
                ("rewards/chosen", 0.5),
                ("rewards/rejected", -0.25),
                ("rewards/margins", 0.75),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn line_format_keeps_field_and_metric_order() {
        let line = to_line(&LogRecord::Train(step(3, 0.5)));
        assert_eq!(
            line,
            r#"{"split":"train","step":3,"epoch":0.3,"loss":0.5,"lr":1e-6,"grad_norm":2.5,"tokens_per_sec":1000.0,"rewards/chosen":0.5,"rewards/rejected":-0.25,"rewards/margins":0.75}"#
        );
    }

    #[test]
    fn write_then_read_round_trips_and_flushes_each_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run").join(METRICS_FILE);
        let mut log = MetricsLog::create(&path).unwrap();
        log.write_step(step(1, 0.69)).unwrap();
        // Flushed: visible to a reader while the writer is still open.
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        let eval = EvalRecord {
            step: 1,
            epoch: 0.1,
            loss: 0.7,
            examples: 500,
            metrics: [("rewards/accuracies", 0.5)].into_iter().collect(),
        };
        log.write_eval(eval.clone()).unwrap();
        log.write_step(step(2, f64::NAN)).unwrap();
        drop(log);

        let records = read_metrics(&path).unwrap();
        assert_eq!(records.len(), 3);
        assert_eq!(records[0], LogRecord::Train(step(1, 0.69)));
        assert_eq!(records[1], LogRecord::Eval(eval));
        let LogRecord::Train(last) = &records[2] else {
            panic!("expected a train record")
        };
        assert!(
            last.loss.is_nan(),
            "NaN is written as null and read back as NaN"
        );
        let names: Vec<&str> = last.metrics.iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["rewards/chosen", "rewards/rejected", "rewards/margins"]
        );

        assert_eq!(
            series(&records, "train", "rewards/margins"),
            vec![(1.0, 0.75), (2.0, 0.75)]
        );
        assert_eq!(
            series(&records, "eval", "rewards/accuracies"),
            vec![(1.0, 0.5)]
        );
        assert_eq!(series(&records, "eval", "lr"), vec![]);
    }

    #[test]
    fn resume_drops_records_after_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        let mut log = MetricsLog::create(&path).unwrap();
        for s in 1..=5 {
            log.write_step(step(s, 0.1 * s as f64)).unwrap();
        }
        drop(log);
        let mut log = MetricsLog::resume(&path, 3).unwrap();
        log.write_step(step(4, 9.0)).unwrap();
        drop(log);
        let steps: Vec<(u64, f64)> = read_metrics(&path)
            .unwrap()
            .iter()
            .map(|r| (r.step(), r.get("loss").unwrap()))
            .collect();
        assert_eq!(
            steps,
            vec![(1, 0.1), (2, 0.2), (3, 0.30000000000000004), (4, 9.0)]
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(METRICS_FILE);
        std::fs::write(
            &path,
            format!(
                "{}\n\n{{\"split\":\"train\",\"step\":2}}\n",
                to_line(&LogRecord::Train(step(1, 0.5)))
            ),
        )
        .unwrap();
        let err = read_metrics(&path).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("metrics.jsonl:3:") && msg.contains("epoch"),
            "{msg}"
        );
    }

    #[test]
    fn metrics_insert_replaces_in_place() {
        let mut m = Metrics::new();
        m.insert("b", 1.0);
        m.insert("a", 2.0);
        m.insert("b", 3.0);
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![("b", 3.0), ("a", 2.0)]);
        assert_eq!(m.get("a"), Some(2.0));
        assert_eq!(m.len(), 2);
    }
}
