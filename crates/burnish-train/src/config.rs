//! Training configuration: a TOML file whose every key can be overridden on the command line.
//!
//! A run is described by one [`TrainingConfig`] with the sections `[model]`, `[data]`,
//! `[optimizer]`, `[schedule]`, `[train]` and `[loss]`. Every field has a default, so a file only
//! names what differs. `--set a.b=value` overrides are applied to the TOML document *before* it is
//! deserialised ([`apply_overrides`]), so an override and a line in the file behave identically,
//! including the check for unknown keys. The `[loss]` table is kept opaque here: burnish-losses
//! owns its schema (a serde enum tagged by `loss_type`) and the trainer deserialises it.

use std::path::{Path, PathBuf};

use burnish_model::{LoraConfig, Precision};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Errors from reading, overriding or validating a training configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read config {path}: {cause}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error (in the message, not in `source()`: printed once).
        cause: std::io::Error,
    },
    /// The text is not valid TOML.
    #[error("{origin}: invalid TOML: {message}")]
    Syntax {
        /// Where the text came from (a path, or `<string>`).
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A `--set` argument is not of the form `a.b.c=value`.
    #[error("--set {arg}: expected `section.key=value`")]
    BadOverride {
        /// The argument as given.
        arg: String,
    },
    /// A `--set` path runs through a key that holds a value, not a table.
    #[error("--set {arg}: `{key}` is not a table")]
    OverrideThroughValue {
        /// The argument as given.
        arg: String,
        /// The dotted prefix that holds a plain value.
        key: String,
    },
    /// A key that no section knows.
    #[error("{origin}: unknown key `{key}`{}", expected_list(.expected))]
    UnknownKey {
        /// Where the document came from.
        origin: String,
        /// The full dotted key, e.g. `optimizer.lrr`.
        key: String,
        /// The keys that are allowed at that place.
        expected: Vec<String>,
    },
    /// A key holds a value of the wrong type or shape.
    #[error("{origin}: in [{section}]: {message}")]
    BadValue {
        /// Where the document came from.
        origin: String,
        /// The section, e.g. `optimizer`.
        section: String,
        /// The deserialiser's message.
        message: String,
    },
    /// A value parses but is out of range.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The full dotted key.
        key: String,
        /// Why it is rejected.
        reason: String,
    },
    /// The configuration could not be written back as TOML.
    #[error("cannot write config as TOML")]
    Serialize(#[from] toml::ser::Error),
}

fn expected_list(expected: &[String]) -> String {
    if expected.is_empty() {
        String::new()
    } else {
        format!(" (expected one of: {})", expected.join(", "))
    }
}

/// The whole description of a training run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingConfig {
    /// Which model to start from.
    pub model: ModelSection,
    /// Which data to train and evaluate on, and how to cut it.
    pub data: DataSection,
    /// AdamW hyper-parameters and gradient clipping.
    pub optimizer: OptimizerConfig,
    /// Learning-rate warm-up and decay.
    pub schedule: ScheduleConfig,
    /// Loop lengths, batch sizes, cadences, seed and output directory.
    pub train: LoopConfig,
    /// The loss and its hyper-parameters, as an opaque table (schema owned by burnish-losses).
    pub loss: toml::Table,
    /// On-policy training (PPO, RLOO, GRPO), as an opaque table (schema owned by burnish-ppo).
    pub ppo: toml::Table,
    /// Train LoRA adapters on a frozen base instead of every weight; `None` trains them all.
    pub lora: Option<LoraConfig>,
    /// Data-parallel peers: devices in this process, and machines.
    pub distributed: DistributedConfig,
}

/// The `[distributed]` section: data-parallel training on burn's collective.
///
/// Every peer holds a replica of the model and takes whole micro-batches of each step, so one
/// optimizer step consumes `train.batch_size × train.grad_accumulation × peers` examples (the
/// global batch), where peers = `devices × nodes`; `train.batch_size` is per peer and
/// micro-batch, as TRL's `per_device_train_batch_size`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistributedConfig {
    /// Peers in this process: one per GPU, or peers sharing the CPU.
    pub devices: usize,
    /// Device indices of the peers (`cuda:0,cuda:1` gives `[0, 1]`); empty means `0..devices`.
    pub device_ids: Vec<u16>,
    /// Machines (processes) taking part; each runs `devices` peers.
    pub nodes: u32,
    /// This machine's rank in `0..nodes`; rank 0 hosts the coordinator, logs and checkpoints.
    pub node_rank: u32,
    /// `host:port` of the coordinator (burn's orchestrator, run by node 0); needed when
    /// `nodes > 1`.
    pub coordinator: Option<String>,
    /// The host name or address other nodes reach this one at; `None` takes the address this
    /// machine uses toward the coordinator.
    pub node_host: Option<String>,
    /// The port this node serves gradients on; `None` is the coordinator's port + 1 + node_rank.
    pub data_port: Option<u16>,
    /// Seconds a peer may wait inside one collective call (registration included) before the
    /// run is stopped as if a peer had died; it must cover rank 0's evaluations and checkpoints.
    pub timeout_secs: u64,
}

impl Default for DistributedConfig {
    /// One device, one node: no collective at all.
    fn default() -> Self {
        DistributedConfig {
            devices: 1,
            device_ids: Vec::new(),
            nodes: 1,
            node_rank: 0,
            coordinator: None,
            node_host: None,
            data_port: None,
            timeout_secs: 1800,
        }
    }
}

impl DistributedConfig {
    /// Peers over all nodes.
    pub fn world_size(&self) -> usize {
        self.devices * self.nodes as usize
    }

    /// True when more than one peer takes part, so the collective is used.
    pub fn is_parallel(&self) -> bool {
        self.world_size() > 1
    }

    /// The global rank of this node's first peer (peers are numbered node-major).
    pub fn first_rank(&self) -> usize {
        self.node_rank as usize * self.devices
    }

    /// True on the node whose first peer is global rank 0 (it writes the run's files).
    pub fn is_main_node(&self) -> bool {
        self.node_rank == 0
    }

    /// The devices of this node's peers: `device` itself for one peer; else device index
    /// `device_ids[i]` (default `i`) of `device`'s kind, which on a CPU is the CPU every time.
    pub fn peer_devices<B: burn::tensor::backend::Backend>(
        &self,
        device: &B::Device,
    ) -> Vec<B::Device> {
        use burn::tensor::backend::{Device as _, DeviceId, DeviceOps};
        if self.devices == 1 && self.device_ids.is_empty() {
            return vec![device.clone()];
        }
        let kind = device.id().type_id;
        let ids: Vec<u16> = if self.device_ids.is_empty() {
            (0..self.devices as u16).collect()
        } else {
            self.device_ids.clone()
        };
        ids.into_iter()
            .map(|index| B::Device::from_id(DeviceId::new(kind, index)))
            .collect()
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.devices == 0 {
            return Err(("distributed.devices", "must be at least 1".into()));
        }
        if !self.device_ids.is_empty() && self.device_ids.len() != self.devices {
            return Err((
                "distributed.device_ids",
                format!(
                    "names {} devices but distributed.devices is {}",
                    self.device_ids.len(),
                    self.devices
                ),
            ));
        }
        let mut ids = self.device_ids.clone();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return Err((
                "distributed.device_ids",
                "names a device twice; give each peer its own device".into(),
            ));
        }
        if self.nodes == 0 {
            return Err(("distributed.nodes", "must be at least 1".into()));
        }
        if self.node_rank >= self.nodes {
            return Err((
                "distributed.node_rank",
                format!(
                    "must be below distributed.nodes ({}), got {}",
                    self.nodes, self.node_rank
                ),
            ));
        }
        if self.nodes > 1 && self.coordinator.is_none() {
            return Err((
                "distributed.coordinator",
                "is needed with more than one node: the host:port where node 0 runs the coordinator".into(),
            ));
        }
        if self.timeout_secs == 0 {
            return Err(("distributed.timeout_secs", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// The `[model]` section: where the policy (and the reference) come from.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// The starting policy: a Hugging Face folder (`config.json` + safetensors), a burnish save,
    /// or a GGUF file (llama.cpp / Ollama; its tokenizer and chat template come with it).
    pub path: Option<PathBuf>,
    /// The frozen reference model (folder or GGUF file); `None` means a copy of the starting
    /// policy.
    pub reference: Option<PathBuf>,
    /// `tokenizer.json` to use; `None` means the one in `path`.
    pub tokenizer: Option<PathBuf>,
    /// A PEFT LoRA folder (`adapter_config.json` + `adapter_model.safetensors`) to put on the
    /// model of `path` and go on training; its config replaces `[lora]`.
    pub adapter: Option<PathBuf>,
}

/// The `[data]` section: Parquet files and sequence lengths.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataSection {
    /// Training Parquet file.
    pub train: Option<PathBuf>,
    /// Held-out Parquet file for evaluation; `None` holds out `eval_fraction` of `train` by hash.
    pub eval: Option<PathBuf>,
    /// Fraction of the training file held out (by a stable hash of each row) when `eval` is not
    /// given; `0` disables evaluation.
    pub eval_fraction: f64,
    /// Maximum prompt + completion tokens.
    pub max_length: usize,
    /// Maximum prompt tokens (the prompt is cut first).
    pub max_prompt_length: usize,
    /// The split of a Hugging Face `datasets` folder with several (`train`, `test`, ...);
    /// `None` takes `train`.
    pub split: Option<String>,
    /// Column mapping for files whose columns differ from TRL's names: TRL name -> the file's
    /// column, e.g. `columns = { prompt = "question", chosen = "response_j" }`.
    pub columns: std::collections::BTreeMap<String, String>,
}

impl Default for DataSection {
    /// No files, 5% held out, 512 tokens in all, 256 of prompt (TRL's DPO defaults were 512 / 128; the
    /// quickstart's reviews have long prompts).
    fn default() -> Self {
        DataSection {
            train: None,
            eval: None,
            eval_fraction: 0.05,
            max_length: 512,
            max_prompt_length: 256,
            split: None,
            columns: Default::default(),
        }
    }
}

/// The `[optimizer]` section: AdamW (decoupled weight decay) and global-norm clipping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// Peak learning rate, reached at the end of warm-up.
    pub lr: f64,
    /// Adam's exponential decay rates of the first and second moments.
    pub betas: [f64; 2],
    /// Decoupled weight decay (AdamW).
    pub weight_decay: f64,
    /// Adam's epsilon, added to the denominator for stability.
    pub eps: f64,
    /// Clip gradients to this global L2 norm; `0` disables clipping.
    pub max_grad_norm: f64,
}

impl Default for OptimizerConfig {
    /// The DPO paper's settings: lr 1e-6, betas (0.9, 0.999), no weight decay, eps 1e-8,
    /// and TRL's clipping at global norm 1.0.
    fn default() -> Self {
        OptimizerConfig {
            lr: 1e-6,
            betas: [0.9, 0.999],
            weight_decay: 0.0,
            eps: 1e-8,
            max_grad_norm: 1.0,
        }
    }
}

impl OptimizerConfig {
    /// AdamW with these betas, epsilon and weight decay (the learning rate comes per step).
    pub fn adamw(&self) -> burn::optim::AdamWConfig {
        let [beta_1, beta_2] = self.betas;
        burn::optim::AdamWConfig::new()
            .with_beta_1(beta_1 as f32)
            .with_beta_2(beta_2 as f32)
            .with_epsilon(self.eps as f32)
            .with_weight_decay(self.weight_decay as f32)
    }

    /// The clipping norm, or `None` when clipping is disabled.
    pub fn clip_norm(&self) -> Option<f64> {
        (self.max_grad_norm > 0.0).then_some(self.max_grad_norm)
    }
}

/// How the learning rate falls after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    /// Half a cosine from the peak down to `min_lr`.
    Cosine,
    /// A straight line from the peak down to `min_lr`.
    #[default]
    Linear,
    /// Stay at the peak.
    Constant,
}

/// The `[schedule]` section: linear warm-up, then a decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Optimizer steps of linear warm-up from 0 to the peak learning rate.
    pub warmup_steps: u64,
    /// The shape of the decay after warm-up.
    pub decay: Decay,
    /// The final learning rate as a fraction of the peak, in [0, 1].
    pub min_lr_ratio: f64,
}

impl Default for ScheduleConfig {
    /// No warm-up, linear decay to zero (the Hugging Face Trainer's default).
    fn default() -> Self {
        ScheduleConfig {
            warmup_steps: 0,
            decay: Decay::Linear,
            min_lr_ratio: 0.0,
        }
    }
}

/// The `[train]` section: how long, how big, how often, and where to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// Stop after this many optimizer steps; when set it wins over `epochs`.
    pub max_steps: Option<u64>,
    /// Passes over the training data (used when `max_steps` is not set).
    pub epochs: u64,
    /// Examples (pairs, for DPO) per micro-batch.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one optimizer step.
    pub grad_accumulation: usize,
    /// Evaluate every this many optimizer steps; `0` only at the end.
    pub eval_every: u64,
    /// Write a checkpoint every this many optimizer steps; `0` only at the end.
    pub checkpoint_every: u64,
    /// Checkpoints to keep (oldest are deleted); `0` keeps all.
    pub keep_checkpoints: usize,
    /// Seed of the data order, dropout and initialisation.
    pub seed: u64,
    /// Directory for checkpoints, `metrics.jsonl` and plots.
    pub output_dir: PathBuf,
    /// Also export the final model as `final/model.gguf` (llama.cpp / Ollama), with matrices in
    /// this float type: `"f16"` or `"f32"`. `None` (the default) writes the Hugging Face folder
    /// only.
    pub export_gguf: Option<String>,
    /// Precision of the matrix products, `"bf16"` (mixed precision: bf16 products with f32
    /// accumulation, f32 weights, optimizer, norms, softmax and losses) or `"fp32"`. Unset, the
    /// CLI picks bf16 on a CPU with AMX or AVX512-BF16 (as TRL's default `bf16=True`) and fp32
    /// elsewhere, and says which; library callers get fp32.
    pub precision: Option<Precision>,
}

impl Default for LoopConfig {
    /// One epoch, micro-batches of 8, no accumulation, evaluation every 100 steps, checkpoints
    /// every 500 (the last 3 kept), seed 42, output in `runs/burnish`.
    fn default() -> Self {
        LoopConfig {
            max_steps: None,
            epochs: 1,
            batch_size: 8,
            grad_accumulation: 1,
            eval_every: 100,
            checkpoint_every: 500,
            keep_checkpoints: 3,
            seed: 42,
            output_dir: PathBuf::from("runs/burnish"),
            export_gguf: None,
            precision: None,
        }
    }
}

impl LoopConfig {
    /// Examples consumed by one optimizer step of one peer.
    pub fn examples_per_step(&self) -> usize {
        self.batch_size * self.grad_accumulation
    }

    /// Optimizer steps in one epoch of `examples` examples for `peers` data-parallel peers; a
    /// last, partial step counts.
    pub fn steps_per_epoch(&self, examples: usize, peers: usize) -> u64 {
        examples.div_ceil((self.examples_per_step() * peers).max(1)) as u64
    }

    /// The precision models of this run compute in: `precision`, fp32 when unset.
    pub fn precision(&self) -> Precision {
        self.precision.unwrap_or_default()
    }

    /// Optimizer steps of the whole run: `max_steps` if set, else `epochs` full epochs.
    pub fn total_steps(&self, examples: usize, peers: usize) -> u64 {
        self.max_steps
            .unwrap_or(self.epochs * self.steps_per_epoch(examples, peers))
    }
}

impl TrainingConfig {
    /// Examples one optimizer step consumes over all peers (the global batch).
    pub fn global_batch(&self) -> usize {
        self.train.examples_per_step() * self.distributed.world_size()
    }
}

const SECTIONS: [&str; 9] = [
    "distributed",
    "lora",
    "model",
    "data",
    "optimizer",
    "schedule",
    "train",
    "loss",
    "ppo",
];

impl TrainingConfig {
    /// Reads a TOML file, applies `--set` overrides (`a.b.c=value`), deserialises and validates.
    pub fn from_file<S: AsRef<str>>(
        path: impl AsRef<Path>,
        overrides: &[S],
    ) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_path_buf(),
            cause,
        })?;
        Self::from_toml_str(&text, &path.display().to_string(), overrides)
    }

    /// Parses TOML text (`origin` names it in errors), applies overrides, deserialises and validates.
    pub fn from_toml_str<S: AsRef<str>>(
        text: &str,
        origin: &str,
        overrides: &[S],
    ) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        apply_overrides(&mut doc, overrides)?;
        let origin = if overrides.is_empty() {
            origin.to_string()
        } else {
            format!("{origin} with --set")
        };
        Self::from_table(&doc, &origin)
    }

    /// Deserialises and validates an already-parsed document; `origin` names it in errors.
    ///
    /// Sections are deserialised one at a time so that an error names its section, and an
    /// unknown field becomes [`ConfigError::UnknownKey`] with its full dotted key.
    pub fn from_table(doc: &toml::Table, origin: &str) -> Result<Self, ConfigError> {
        for key in doc.keys() {
            if !SECTIONS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownKey {
                    origin: origin.to_string(),
                    key: key.clone(),
                    expected: SECTIONS.iter().map(|s| s.to_string()).collect(),
                });
            }
        }
        let config = TrainingConfig {
            model: section(doc, "model", origin)?,
            data: section(doc, "data", origin)?,
            optimizer: section(doc, "optimizer", origin)?,
            schedule: section(doc, "schedule", origin)?,
            train: section(doc, "train", origin)?,
            loss: section(doc, "loss", origin)?,
            ppo: section(doc, "ppo", origin)?,
            lora: section(doc, "lora", origin)?,
            distributed: section(doc, "distributed", origin)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Renders the resolved configuration as TOML (written next to a run for reproducibility).
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        Ok(toml::to_string(self)?)
    }

    /// Rejects values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                reason,
            })
        };
        if let Some(lora) = &self.lora
            && let Err(reason) = lora.validate()
        {
            return invalid("lora", reason);
        }
        if self.lora.is_some() && self.model.adapter.is_some() {
            return invalid(
                "lora",
                "give either [lora] (fresh adapters) or model.adapter (a trained one), not both"
                    .into(),
            );
        }
        if let Err((key, reason)) = self.distributed.validate() {
            return invalid(key, reason);
        }
        if let Some(dtype) = &self.train.export_gguf
            && let Err(reason) = dtype.parse::<burnish_model::gguf::GgufDtype>()
        {
            return invalid("train.export_gguf", reason);
        }
        let o = &self.optimizer;
        // Training computes in f32: a value that is fine as f64 but rounds to 0 or overflows
        // in f32 (eps = 1e-300 becomes 0 and gives NaN at step 2) is refused here.
        let as_f32 = |x: f64| x as f32;
        if !(o.lr.is_finite() && o.lr > 0.0 && as_f32(o.lr) > 0.0 && as_f32(o.lr).is_finite()) {
            return invalid(
                "optimizer.lr",
                format!(
                    "must be a positive number representable in f32 (about 1.2e-38 to 3.4e38), got {}",
                    o.lr
                ),
            );
        }
        for (i, b) in o.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return invalid(
                    "optimizer.betas",
                    format!("beta{} must be in [0, 1), got {b}", i + 1),
                );
            }
        }
        if !(o.weight_decay.is_finite() && o.weight_decay >= 0.0) {
            return invalid(
                "optimizer.weight_decay",
                format!("must be >= 0, got {}", o.weight_decay),
            );
        }
        if !(o.eps.is_finite() && as_f32(o.eps) > 0.0 && as_f32(o.eps).is_finite()) {
            return invalid(
                "optimizer.eps",
                format!(
                    "must be > 0 and representable in f32 (at least about 1.2e-38), got {}",
                    o.eps
                ),
            );
        }
        if !as_f32(o.weight_decay).is_finite() || !as_f32(o.max_grad_norm).is_finite() {
            return invalid(
                "optimizer",
                "weight_decay and max_grad_norm must be representable in f32".to_string(),
            );
        }
        if !(o.max_grad_norm.is_finite() && o.max_grad_norm >= 0.0) {
            return invalid(
                "optimizer.max_grad_norm",
                format!("must be >= 0 (0 disables), got {}", o.max_grad_norm),
            );
        }
        if !(0.0..=1.0).contains(&self.schedule.min_lr_ratio) {
            return invalid(
                "schedule.min_lr_ratio",
                format!("must be in [0, 1], got {}", self.schedule.min_lr_ratio),
            );
        }
        let t = &self.train;
        if t.output_dir.as_os_str().is_empty() {
            return invalid(
                "train.output_dir",
                "must name a folder (an empty path would write into the current folder)"
                    .to_string(),
            );
        }
        if t.batch_size == 0 {
            return invalid("train.batch_size", "must be at least 1".to_string());
        }
        if t.grad_accumulation == 0 {
            return invalid("train.grad_accumulation", "must be at least 1".to_string());
        }
        if t.max_steps == Some(0) || (t.max_steps.is_none() && t.epochs == 0) {
            return invalid(
                "train.max_steps",
                "the run has no steps (max_steps = 0, or epochs = 0)".to_string(),
            );
        }
        if !(0.0..1.0).contains(&self.data.eval_fraction) {
            return invalid(
                "data.eval_fraction",
                format!("must be in [0, 1), got {}", self.data.eval_fraction),
            );
        }
        if self.data.max_length < 2 {
            return invalid(
                "data.max_length",
                format!(
                    "must be at least 2 (one prompt token to predict from, one completion token), got {}",
                    self.data.max_length
                ),
            );
        }
        if self.data.max_prompt_length == 0 {
            return invalid(
                "data.max_prompt_length",
                "must be at least 1: the first completion token is predicted from the prompt"
                    .to_string(),
            );
        }
        if self.data.max_prompt_length >= self.data.max_length {
            return invalid(
                "data.max_prompt_length",
                format!(
                    "must be below data.max_length ({}), got {}: nothing would be left of the completion",
                    self.data.max_length, self.data.max_prompt_length
                ),
            );
        }
        Ok(())
    }
}

/// Deserialises one top-level section (its default when absent), naming it in errors.
fn section<T: DeserializeOwned + Default>(
    doc: &toml::Table,
    name: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    let Some(value) = doc.get(name) else {
        return Ok(T::default());
    };
    if !value.is_table() {
        return Err(ConfigError::BadValue {
            origin: origin.to_string(),
            section: name.to_string(),
            message: format!("`{name}` must be a table, got {}", value.type_str()),
        });
    }
    value.clone().try_into::<T>().map_err(|e| {
        let message = e.message().trim().to_string();
        match unknown_field(&message) {
            Some((field, expected)) => ConfigError::UnknownKey {
                origin: origin.to_string(),
                key: format!("{name}.{field}"),
                expected,
            },
            None => ConfigError::BadValue {
                origin: origin.to_string(),
                section: name.to_string(),
                message,
            },
        }
    })
}

/// Picks the field name and the expected names out of serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let expected = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// Applies `a.b.c=value` overrides to a TOML document, in order (a later one wins).
///
/// The value is parsed as a TOML value when it is one (`3`, `1e-5`, `true`, `"text"`, `[0.9, 0.95]`),
/// otherwise it is taken as a bare string, so `--set model.path=runs/sft` needs no quotes. Missing
/// intermediate tables are created; whether a key is known is checked at deserialisation.
pub fn apply_overrides<S: AsRef<str>>(
    doc: &mut toml::Table,
    overrides: &[S],
) -> Result<(), ConfigError> {
    for arg in overrides {
        let arg = arg.as_ref();
        let bad = || ConfigError::BadOverride {
            arg: arg.to_string(),
        };
        let (key, raw) = arg.split_once('=').ok_or_else(bad)?;
        let path: Vec<&str> = key.trim().split('.').map(str::trim).collect();
        if path.iter().any(|k| k.is_empty()) {
            return Err(bad());
        }
        let value = parse_override_value(raw.trim());
        let (last, parents) = path.split_last().ok_or_else(bad)?;
        let mut table = &mut *doc;
        for (depth, k) in parents.iter().enumerate() {
            let entry = table
                .entry(k.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::OverrideThroughValue {
                    arg: arg.to_string(),
                    key: path[..=depth].join("."),
                })?;
        }
        table.insert(last.to_string(), value);
    }
    Ok(())
}

/// A TOML value when the text is one, else the text itself as a string.
fn parse_override_value(raw: &str) -> toml::Value {
    let probe = format!("v = {raw}");
    match toml::from_str::<toml::Table>(&probe) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &[&str] = &[];

    #[test]
    fn empty_document_gives_defaults() {
        let c = TrainingConfig::from_toml_str("", "<string>", NONE).unwrap();
        assert_eq!(c, TrainingConfig::default());
    }

    #[test]
    fn full_document_round_trips() {
        let text = r#"
            [model]
            path = "models/sft"
            [data]
            train = "datasets/imdb/train.parquet"
            max_length = 128
            max_prompt_length = 64
            [optimizer]
            lr = 5e-6
            betas = [0.9, 0.95]
            weight_decay = 0.01
            max_grad_norm = 10.0
            [schedule]
            warmup_steps = 150
            decay = "cosine"
            min_lr_ratio = 0.1
            [train]
            max_steps = 200
            batch_size = 4
            grad_accumulation = 2
            seed = 7
            output_dir = "runs/quickstart"
            [loss]
            loss_type = "sigmoid"
            beta = 0.1
        "#;
        let c = TrainingConfig::from_toml_str(text, "q.toml", NONE).unwrap();
        assert_eq!(c.model.path.as_deref(), Some(Path::new("models/sft")));
        assert_eq!(c.optimizer.betas, [0.9, 0.95]);
        assert_eq!(c.schedule.decay, Decay::Cosine);
        assert_eq!(c.train.max_steps, Some(200));
        assert_eq!(c.train.examples_per_step(), 8);
        assert_eq!(
            c.train.eval_every, 100,
            "unspecified keys keep their defaults"
        );
        assert_eq!(
            c.loss.get("loss_type").and_then(|v| v.as_str()),
            Some("sigmoid")
        );
        let again =
            TrainingConfig::from_toml_str(&c.to_toml_string().unwrap(), "again", NONE).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn overrides_parse_values_as_toml_else_string() {
        let sets = [
            "optimizer.lr=2e-5",
            "train.max_steps = 10",
            "schedule.decay=constant",
            "model.path=runs/sft model",
            "optimizer.betas=[0.8, 0.9]",
            "loss.beta=0.5",
            "loss.loss_type=\"ipo\"",
            "data.eval=held out.parquet",
        ];
        let c =
            TrainingConfig::from_toml_str("[optimizer]\nlr = 1.0e-3\n", "c.toml", &sets).unwrap();
        assert_eq!(c.optimizer.lr, 2e-5);
        assert_eq!(c.train.max_steps, Some(10));
        assert_eq!(c.schedule.decay, Decay::Constant);
        assert_eq!(c.model.path.as_deref(), Some(Path::new("runs/sft model")));
        assert_eq!(c.optimizer.betas, [0.8, 0.9]);
        assert_eq!(c.loss["beta"].as_float(), Some(0.5));
        assert_eq!(c.loss["loss_type"].as_str(), Some("ipo"));
        assert_eq!(c.data.eval.as_deref(), Some(Path::new("held out.parquet")));
    }

    #[test]
    fn later_override_wins() {
        let c = TrainingConfig::from_toml_str("", "c", &["train.seed=1", "train.seed=2"]).unwrap();
        assert_eq!(c.train.seed, 2);
    }

    #[test]
    fn unknown_key_in_file_names_the_key() {
        let err =
            TrainingConfig::from_toml_str("[optimizer]\nlrr = 0.1\n", "c.toml", NONE).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ConfigError::UnknownKey { ref key, .. } if key == "optimizer.lrr"),
            "{msg}"
        );
        assert!(
            msg.contains("c.toml") && msg.contains("`optimizer.lrr`") && msg.contains("lr"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_in_override_names_the_key() {
        let err = TrainingConfig::from_toml_str("", "c.toml", &["train.bacth_size=3"]).unwrap_err();
        assert!(err.to_string().contains("`train.bacth_size`"), "{err}");
        let err = TrainingConfig::from_toml_str("", "c.toml", &["optimiser.lr=3"]).unwrap_err();
        assert!(err.to_string().contains("`optimiser`"), "{err}");
        assert!(
            err.to_string().contains("optimizer"),
            "lists the known sections: {err}"
        );
    }

    #[test]
    fn wrong_type_names_the_section() {
        let err =
            TrainingConfig::from_toml_str("", "c.toml", &["train.batch_size=big"]).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConfigError::BadValue { .. }), "{msg}");
        assert!(msg.contains("[train]"), "{msg}");
        let err = TrainingConfig::from_toml_str("optimizer = 3\n", "c.toml", NONE).unwrap_err();
        assert!(err.to_string().contains("must be a table"), "{err}");
    }

    #[test]
    fn malformed_overrides_are_rejected() {
        let mut doc = toml::Table::new();
        assert!(matches!(
            apply_overrides(&mut doc, &["lr"]),
            Err(ConfigError::BadOverride { .. })
        ));
        assert!(matches!(
            apply_overrides(&mut doc, &["a..b=1"]),
            Err(ConfigError::BadOverride { .. })
        ));
        apply_overrides(&mut doc, &["a=1"]).unwrap();
        let err = apply_overrides(&mut doc, &["a.b=1"]).unwrap_err();
        assert!(
            matches!(err, ConfigError::OverrideThroughValue { ref key, .. } if key == "a"),
            "{err}"
        );
    }

    #[test]
    fn syntax_errors_name_the_origin() {
        let err = TrainingConfig::from_toml_str("[optimizer\n", "broken.toml", NONE).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }));
        assert!(err.to_string().starts_with("broken.toml:"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for (set, key) in [
            ("optimizer.lr=0", "optimizer.lr"),
            ("optimizer.betas=[0.9, 1.0]", "optimizer.betas"),
            ("schedule.min_lr_ratio=1.5", "schedule.min_lr_ratio"),
            ("train.grad_accumulation=0", "train.grad_accumulation"),
            ("data.max_prompt_length=600", "data.max_prompt_length"),
            // Valid as f64, 0 (or infinite) in the f32 the optimizer computes in.
            ("optimizer.eps=1e-300", "optimizer.eps"),
            ("optimizer.lr=1e-60", "optimizer.lr"),
            ("optimizer.lr=1e39", "optimizer.lr"),
            ("train.output_dir=\"\"", "train.output_dir"),
            ("distributed.devices=0", "distributed.devices"),
            ("distributed.device_ids=[0, 0]", "distributed.device_ids"),
            ("distributed.nodes=2", "distributed.coordinator"),
            ("distributed.node_rank=1", "distributed.node_rank"),
        ] {
            let err = TrainingConfig::from_toml_str("", "c", &[set]).unwrap_err();
            assert!(
                matches!(err, ConfigError::Invalid { key: ref k, .. } if k == key),
                "{set}: {err}"
            );
        }
    }

    #[test]
    fn step_counts() {
        let t = LoopConfig {
            batch_size: 4,
            grad_accumulation: 2,
            epochs: 3,
            ..LoopConfig::default()
        };
        assert_eq!(t.steps_per_epoch(16, 1), 2);
        assert_eq!(t.steps_per_epoch(16, 2), 1);
        assert_eq!(t.steps_per_epoch(17, 1), 3);
        assert_eq!(t.total_steps(16, 1), 6);
        let t = LoopConfig {
            max_steps: Some(5),
            ..t
        };
        assert_eq!(t.total_steps(16, 1), 5);
        assert_eq!(
            OptimizerConfig {
                max_grad_norm: 0.0,
                ..Default::default()
            }
            .clip_norm(),
            None
        );
    }

    #[test]
    fn reads_files_and_names_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.toml");
        std::fs::write(&path, "[train]\nseed = 3\n").unwrap();
        assert_eq!(
            TrainingConfig::from_file(&path, NONE).unwrap().train.seed,
            3
        );
        let err = TrainingConfig::from_file(dir.path().join("nope.toml"), NONE).unwrap_err();
        assert!(err.to_string().contains("nope.toml"), "{err}");
    }
}
