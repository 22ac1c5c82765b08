//! LoRA adapters: a trainable low-rank update `x·A·B·(alpha/r)` beside a frozen projection, the
//! way Hugging Face PEFT does it, so that a model too big to fine-tune in full can be aligned with
//! a few million parameters.
//!
//! Modules are named as transformers names them (`q_proj`, `v_proj`, `c_attn`, ... or
//! `"all-linear"`). `B` starts at zero, so the first step sees exactly the base model. Adapters
//! are written as a PEFT folder (`adapter_config.json` + `adapter_model.safetensors`, PEFT's
//! tensor names) that PEFT loads onto the base model, read back from one, or merged into the base
//! weights for a plain Hugging Face (or GGUF) export.
//!
//! GPT-2's `c_attn` is one projection in transformers and three (q, k, v) here: its adapter is one
//! `A` and one `B` whose output is split the same way, as PEFT's adapter on the fused module is.

use std::path::Path;

use burn::module::{Module, Param};
use burn::nn::Dropout;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::config::Family;
use crate::error::{ModelError, Result};
use crate::model::CausalLm;
use crate::ops::{ModelBackend, matmul};
use crate::precision::Precision;
use crate::safetensors_io::{Checkpoint, HostTensor, write_safetensors};

/// `[lora]`: which projections get an adapter, and its rank, scale and dropout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the update.
    pub r: usize,
    /// The update is scaled by `alpha / r` (PEFT's `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapter's input while training (PEFT's `lora_dropout`).
    pub dropout: f64,
    /// transformers' module names (`q_proj`, `c_attn`, ...), or `["all-linear"]`; empty means
    /// PEFT's default for the family (`q_proj` + `v_proj`, GPT-2's `c_attn`).
    pub target_modules: TargetModules,
}

impl Default for LoraConfig {
    /// Rank 8, alpha 16, no dropout, PEFT's default modules: the usual starting point.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 16.0,
            dropout: 0.0,
            target_modules: TargetModules::default(),
        }
    }
}

/// `target_modules`: one name (`"all-linear"`) or a list of names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(untagged)]
pub enum TargetModules {
    /// PEFT's default for the family.
    #[default]
    Default,
    /// One name, e.g. `"all-linear"`.
    One(String),
    /// Several names.
    Many(Vec<String>),
}

/// A projection of a block that can carry an adapter, by where it sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    Q,
    K,
    V,
    Qkv,
    O,
    Gate,
    Up,
    Down,
}

/// GPT-2's adaptable projections: (transformers' short name, site, path inside `transformer.h.N`).
/// transformers names both the attention output and the MLP down projection `c_proj`.
const GPT2_SITES: [(&str, Site, &str); 4] = [
    ("c_attn", Site::Qkv, "attn.c_attn"),
    ("c_proj", Site::O, "attn.c_proj"),
    ("c_proj", Site::Down, "mlp.c_proj"),
    ("c_fc", Site::Up, "mlp.c_fc"),
];

/// The Llama layout's adaptable projections, as [`GPT2_SITES`] inside `model.layers.N`.
const LLAMA_SITES: [(&str, Site, &str); 7] = [
    ("q_proj", Site::Q, "self_attn.q_proj"),
    ("k_proj", Site::K, "self_attn.k_proj"),
    ("v_proj", Site::V, "self_attn.v_proj"),
    ("o_proj", Site::O, "self_attn.o_proj"),
    ("gate_proj", Site::Gate, "mlp.gate_proj"),
    ("up_proj", Site::Up, "mlp.up_proj"),
    ("down_proj", Site::Down, "mlp.down_proj"),
];

/// A family's adaptable projections and the prefix of its layers' module paths.
type SiteTable = &'static [(&'static str, Site, &'static str)];

fn family_sites(family: Family) -> (SiteTable, &'static str) {
    if family == Family::Gpt2 {
        (&GPT2_SITES, "transformer.h")
    } else {
        (&LLAMA_SITES, "model.layers")
    }
}

/// transformers' module path of a site in layer `i`, or an error for a site the family lacks
/// (an adapter only ever sits on one of its family's sites, so this names a bug, not bad input).
fn module_path(family: Family, i: usize, site: Site) -> Result<String> {
    let (sites, prefix) = family_sites(family);
    let (_, _, path) = sites.iter().find(|(_, s, _)| *s == site).ok_or_else(|| {
        ModelError::InvalidArgument(format!(
            "a {} model has no {site:?} projection to adapt",
            family.model_type()
        ))
    })?;
    Ok(format!("{prefix}.{i}.{path}"))
}

impl LoraConfig {
    /// Checks the numbers: a rank of at least 1, a finite positive alpha, a dropout in [0, 1).
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.r == 0 {
            return Err("lora.r must be at least 1".into());
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(format!("lora.alpha must be positive, got {}", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "lora.dropout must be in [0, 1), got {}",
                self.dropout
            ));
        }
        Ok(())
    }

    /// The module names this config adapts on a family, resolved (`"all-linear"` expanded, the
    /// default filled in), or an error naming an unknown one and listing the family's.
    pub fn resolved_modules(&self, family: Family) -> std::result::Result<Vec<String>, String> {
        let mut known: Vec<&str> = family_sites(family).0.iter().map(|(n, _, _)| *n).collect();
        known.dedup();
        let names: Vec<String> = match &self.target_modules {
            TargetModules::Default => {
                let default: &[&str] = if family == Family::Gpt2 {
                    &["c_attn"]
                } else {
                    &["q_proj", "v_proj"]
                };
                default.iter().map(|s| s.to_string()).collect()
            }
            TargetModules::One(name) => vec![name.clone()],
            TargetModules::Many(names) => names.clone(),
        };
        if names.is_empty() {
            return Err("lora.target_modules is empty".into());
        }
        if names.iter().any(|n| n == "all-linear") {
            return Ok(known.iter().map(|s| s.to_string()).collect());
        }
        for name in &names {
            if !known.contains(&name.as_str()) {
                return Err(format!(
                    "lora.target_modules: {name:?} is not a projection of a {} model (its modules: {}, or \"all-linear\")",
                    family.model_type(),
                    known.join(", ")
                ));
            }
        }
        Ok(names)
    }

    /// Reads a PEFT folder's `adapter_config.json` (LoRA without DoRA, rsLoRA or biases).
    pub fn from_peft_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(ADAPTER_CONFIG);
        let fail = |reason: String| ModelError::Config {
            path: path.clone(),
            key: "(adapter)".into(),
            reason,
        };
        let text = std::fs::read_to_string(&path).map_err(|cause| ModelError::Io {
            path: path.clone(),
            cause,
        })?;
        let json: Value = serde_json::from_str(&text).map_err(|cause| ModelError::Json {
            path: path.clone(),
            cause,
        })?;
        if json["peft_type"].as_str() != Some("LORA") {
            return Err(fail(format!(
                "peft_type {} is not \"LORA\"",
                json["peft_type"]
            )));
        }
        for flag in ["use_dora", "use_rslora"] {
            if json[flag].as_bool() == Some(true) {
                return Err(fail(format!("{flag} = true is not supported")));
            }
        }
        if json["bias"].as_str().is_some_and(|b| b != "none") {
            return Err(fail(format!(
                "bias {} is not supported (only \"none\")",
                json["bias"]
            )));
        }
        let r = json["r"]
            .as_u64()
            .ok_or_else(|| fail("no integer `r`".into()))? as usize;
        let alpha = json["lora_alpha"]
            .as_f64()
            .ok_or_else(|| fail("no number `lora_alpha`".into()))?;
        let target_modules = match &json["target_modules"] {
            Value::String(s) => TargetModules::One(s.clone()),
            Value::Array(items) => TargetModules::Many(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            ),
            other => {
                return Err(fail(format!(
                    "target_modules {other} is not a name or a list"
                )));
            }
        };
        Ok(LoraConfig {
            r,
            alpha,
            dropout: json["lora_dropout"].as_f64().unwrap_or(0.0),
            target_modules,
        })
    }

    fn scale(&self) -> f64 {
        self.alpha / self.r as f64
    }
}

/// One adapter: `A [in, r]`, `B [r, out]`, output `dropout(x)·A·B·scale`.
#[derive(Module, Debug)]
pub struct Lora<B: Backend> {
    /// Down projection `[d_in, r]` (PEFT's `lora_A.weight`, transposed).
    pub a: Param<Tensor<B, 2>>,
    /// Up projection `[r, d_out]` (PEFT's `lora_B.weight`, transposed); zero at the start.
    pub b: Param<Tensor<B, 2>>,
    /// `alpha / r`.
    pub scale: f64,
    /// Dropout probability on the input while training.
    pub dropout: f64,
}

impl<B: Backend> Lora<B> {
    /// A fresh adapter: `A` uniform in `±1/sqrt(d_in)` (PEFT's Kaiming-uniform with `a = √5`),
    /// `B` zero.
    pub fn new(d_in: usize, d_out: usize, config: &LoraConfig, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        Lora {
            a: Param::from_tensor(Tensor::random(
                [d_in, config.r],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            b: Param::from_tensor(Tensor::zeros([config.r, d_out], device)),
            scale: config.scale(),
            dropout: config.dropout,
        }
    }

    /// The update as a weight, `scale·A·B [d_in, d_out]`, for merging.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()) * self.scale
    }
}

impl<B: ModelBackend> Lora<B> {
    /// The update for `x [..., d_in]`: `[..., d_out]`, both products in `precision`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>, precision: Precision) -> Tensor<B, D> {
        let x = Dropout { prob: self.dropout }.forward(x);
        let dims = x.dims();
        let d_in = dims[D - 1];
        let rows = dims[..D - 1].iter().product();
        let [_, d_out] = self.b.val().dims();
        let mut out_dims = dims;
        out_dims[D - 1] = d_out;
        let down = matmul(x.reshape([rows, d_in]), self.a.val(), precision);
        (matmul(down, self.b.val(), precision) * self.scale).reshape(out_dims)
    }
}

/// The adapters of one attention block.
#[derive(Module, Debug)]
pub struct AttentionLora<B: Backend> {
    /// On the query projection.
    pub q: Option<Lora<B>>,
    /// On the key projection.
    pub k: Option<Lora<B>>,
    /// On the value projection.
    pub v: Option<Lora<B>>,
    /// On GPT-2's fused q/k/v projection (`c_attn`), output split as q, k, v.
    pub qkv: Option<Lora<B>>,
    /// On the output projection.
    pub o: Option<Lora<B>>,
}

/// The adapters of one MLP.
#[derive(Module, Debug)]
pub struct MlpLora<B: Backend> {
    /// On the gate projection.
    pub gate: Option<Lora<B>>,
    /// On the up projection.
    pub up: Option<Lora<B>>,
    /// On the down projection.
    pub down: Option<Lora<B>>,
}

/// Adds `lora(x)` to `y` when the adapter exists.
pub(crate) fn add<B: ModelBackend>(
    y: Tensor<B, 3>,
    lora: Option<&Lora<B>>,
    x: &Tensor<B, 3>,
    precision: Precision,
) -> Tensor<B, 3> {
    match lora {
        Some(lora) => y + lora.forward(x.clone(), precision),
        None => y,
    }
}

/// PEFT's `adapter_config.json` and weights file names.
const ADAPTER_CONFIG: &str = "adapter_config.json";
const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

impl<B: Backend> CausalLm<B> {
    /// The adapter slot of a site in layer `i`.
    fn lora_slot(&mut self, i: usize, site: Site) -> &mut Option<Lora<B>> {
        let block = &mut self.blocks[i];
        let attn = block.attn.lora.get_or_insert_with(|| AttentionLora {
            q: None,
            k: None,
            v: None,
            qkv: None,
            o: None,
        });
        let mlp = block.mlp.lora.get_or_insert_with(|| MlpLora {
            gate: None,
            up: None,
            down: None,
        });
        match site {
            Site::Q => &mut attn.q,
            Site::K => &mut attn.k,
            Site::V => &mut attn.v,
            Site::Qkv => &mut attn.qkv,
            Site::O => &mut attn.o,
            Site::Gate => &mut mlp.gate,
            Site::Up => &mut mlp.up,
            Site::Down => &mut mlp.down,
        }
    }

    /// `(d_in, d_out)` of a site's projection.
    fn site_dims(&self, i: usize, site: Site) -> (usize, usize) {
        let block = &self.blocks[i];
        let dims = |w: &Param<Tensor<B, 2>>| {
            let [d_in, d_out] = w.dims();
            (d_in, d_out)
        };
        match site {
            Site::Q => dims(&block.attn.q.weight),
            Site::K => dims(&block.attn.k.weight),
            Site::V => dims(&block.attn.v.weight),
            Site::Qkv => {
                let (d_in, q) = dims(&block.attn.q.weight);
                let (_, kv) = dims(&block.attn.k.weight);
                (d_in, q + 2 * kv)
            }
            Site::O => dims(&block.attn.o.weight),
            Site::Gate => block.mlp.gate.as_ref().map_or((0, 0), |g| dims(&g.weight)),
            Site::Up => dims(&block.mlp.up.weight),
            Site::Down => dims(&block.mlp.down.weight),
        }
    }

    /// The sites a resolved module list covers, in a fixed order.
    fn sites(&self, modules: &[String]) -> Vec<(String, Site)> {
        family_sites(self.config.family)
            .0
            .iter()
            .filter(|(name, _, _)| modules.iter().any(|m| m == name))
            .map(|(name, site, _)| (name.to_string(), *site))
            .filter(|(_, site)| {
                *site != Site::Gate || self.config.activation == crate::Activation::Silu
            })
            .collect()
    }

    /// Freezes every base weight (no gradients, so no optimizer state) and adds fresh adapters
    /// where `config` says. A reward or value head stays trainable, as PEFT's `modules_to_save`
    /// keeps a sequence classifier's `score`.
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Result<Self> {
        config.validate().map_err(ModelError::InvalidArgument)?;
        let modules = config
            .resolved_modules(self.config.family)
            .map_err(ModelError::InvalidArgument)?;
        let mut model = self.freeze_base();
        for i in 0..model.blocks.len() {
            for (_, site) in model.sites(&modules) {
                let (d_in, d_out) = model.site_dims(i, site);
                *model.lora_slot(i, site) = Some(Lora::new(d_in, d_out, config, device));
            }
        }
        Ok(model)
    }

    /// Every weight but the heads' set to need no gradient.
    fn freeze_base(mut self) -> Self {
        let reward = self.reward_head.take();
        let value = self.value_head.take();
        let mut model = self.no_grad();
        model.reward_head = reward;
        model.value_head = value;
        model
    }

    /// `(trainable, total)` parameter counts: what an optimizer will hold state for, of all.
    pub fn parameter_counts(&self) -> (usize, usize) {
        struct Count(usize, usize);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Count {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                let n = param.shape().num_elements();
                self.1 += n;
                if param.is_require_grad() {
                    self.0 += n;
                }
            }
        }
        let mut count = Count(0, 0);
        self.visit(&mut count);
        (count.0, count.1)
    }

    /// Whether any block carries an adapter.
    pub fn has_lora(&self) -> bool {
        self.blocks
            .iter()
            .any(|b| b.attn.lora.is_some() || b.mlp.lora.is_some())
    }

    /// Every adapter with its site, layer by layer.
    fn adapters(&self) -> Vec<(usize, Site, &Lora<B>)> {
        let mut out = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            if let Some(a) = &block.attn.lora {
                for (site, lora) in [
                    (Site::Q, &a.q),
                    (Site::K, &a.k),
                    (Site::V, &a.v),
                    (Site::Qkv, &a.qkv),
                    (Site::O, &a.o),
                ] {
                    if let Some(lora) = lora {
                        out.push((i, site, lora));
                    }
                }
            }
            if let Some(m) = &block.mlp.lora {
                for (site, lora) in [
                    (Site::Gate, &m.gate),
                    (Site::Up, &m.up),
                    (Site::Down, &m.down),
                ] {
                    if let Some(lora) = lora {
                        out.push((i, site, lora));
                    }
                }
            }
        }
        out
    }

    /// The model with every adapter's update added into its base weight and the adapters
    /// removed: the plain model a Hugging Face or GGUF export writes.
    pub fn merge_lora(mut self) -> Self {
        let merges: Vec<(usize, Site, Tensor<B, 2>)> = self
            .adapters()
            .into_iter()
            .map(|(i, site, lora)| (i, site, lora.delta()))
            .collect();
        for (i, site, delta) in merges {
            let block = &mut self.blocks[i];
            let (attn, mlp) = (&mut block.attn, &mut block.mlp);
            let add = |w: &mut Param<Tensor<B, 2>>, d: Tensor<B, 2>| {
                *w = Param::from_tensor(w.val().detach() + d.detach());
            };
            match site {
                Site::Q => add(&mut attn.q.weight, delta),
                Site::K => add(&mut attn.k.weight, delta),
                Site::V => add(&mut attn.v.weight, delta),
                Site::O => add(&mut attn.o.weight, delta),
                Site::Qkv => {
                    let [_, q] = attn.q.weight.dims();
                    let [_, kv] = attn.k.weight.dims();
                    add(&mut attn.q.weight, delta.clone().narrow(1, 0, q));
                    add(&mut attn.k.weight, delta.clone().narrow(1, q, kv));
                    add(&mut attn.v.weight, delta.narrow(1, q + kv, kv));
                }
                Site::Gate => {
                    if let Some(gate) = mlp.gate.as_mut() {
                        add(&mut gate.weight, delta);
                    }
                }
                Site::Up => add(&mut mlp.up.weight, delta),
                Site::Down => add(&mut mlp.down.weight, delta),
            }
        }
        for block in &mut self.blocks {
            block.attn.lora = None;
            block.mlp.lora = None;
        }
        self
    }

    /// Writes the adapters as a PEFT folder: `adapter_config.json` and
    /// `adapter_model.safetensors` with PEFT's names (`base_model.model.<module>.lora_A.weight`
    /// `[r, in]`, `lora_B.weight` `[out, r]`; a reward head as `base_model.model.score.weight`).
    /// `base_model` is recorded as `base_model_name_or_path`.
    pub fn save_peft_adapter(
        &self,
        dir: &Path,
        config: &LoraConfig,
        base_model: &str,
    ) -> Result<()> {
        let family = self.config.family;
        let modules = config
            .resolved_modules(family)
            .map_err(ModelError::InvalidArgument)?;
        std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        let mut tensors = Vec::new();
        for (i, site, lora) in self.adapters() {
            let path = format!("base_model.model.{}", module_path(family, i, site)?);
            tensors.push((
                format!("{path}.lora_A.weight"),
                host(lora.a.val().transpose()),
            ));
            tensors.push((
                format!("{path}.lora_B.weight"),
                host(lora.b.val().transpose()),
            ));
        }
        if let Some(head) = &self.reward_head {
            tensors.push((
                "base_model.model.score.weight".into(),
                host(head.weight.val().transpose()),
            ));
        }
        write_safetensors(&dir.join(ADAPTER_WEIGHTS), &tensors)?;
        let adapter_config = json!({
            "peft_type": "LORA",
            "task_type": if self.reward_head.is_some() { "SEQ_CLS" } else { "CAUSAL_LM" },
            "base_model_name_or_path": base_model,
            "r": config.r,
            "lora_alpha": config.alpha,
            "lora_dropout": config.dropout,
            "target_modules": modules,
            "fan_in_fan_out": family == Family::Gpt2,
            "bias": "none",
            "use_rslora": false,
            "use_dora": false,
            "init_lora_weights": true,
            "inference_mode": true,
            "modules_to_save": if self.reward_head.is_some() { json!(["score"]) } else { Value::Null },
            "layers_to_transform": Value::Null,
            "layers_pattern": Value::Null,
            "rank_pattern": {},
            "alpha_pattern": {},
        });
        let path = dir.join(ADAPTER_CONFIG);
        let text =
            serde_json::to_string_pretty(&adapter_config).map_err(|cause| ModelError::Json {
                path: path.clone(),
                cause,
            })?;
        std::fs::write(&path, text).map_err(|cause| ModelError::Io { path, cause })
    }

    /// Loads a PEFT LoRA folder onto this (base) model: the adapters it holds, frozen base
    /// weights, so the result scores as PEFT's `PeftModel` does and can go on training. Returns
    /// the adapter's config too.
    pub fn load_peft_adapter(self, dir: &Path, device: &B::Device) -> Result<(Self, LoraConfig)> {
        let config = LoraConfig::from_peft_dir(dir)?;
        let r = config.r;
        let mut model = self.with_lora(&config, device)?;
        let checkpoint = Checkpoint::open_file(&dir.join(ADAPTER_WEIGHTS))?;
        let family = model.config.family;
        let sites: Vec<(usize, Site)> = model.adapters().iter().map(|(i, s, _)| (*i, *s)).collect();
        for (i, site) in sites {
            let prefix = format!("base_model.model.{}", module_path(family, i, site)?);
            let (d_in, d_out) = model.site_dims(i, site);
            let a = checkpoint.read(&format!("{prefix}.lora_A.weight"), &[r, d_in])?;
            let b = checkpoint.read(&format!("{prefix}.lora_B.weight"), &[d_out, r])?;
            let slot = model.lora_slot(i, site);
            if let Some(lora) = slot.as_mut() {
                lora.a = Param::from_tensor(tensor(a.transposed(), device));
                lora.b = Param::from_tensor(tensor(b.transposed(), device));
            }
        }
        if checkpoint.contains("base_model.model.score.weight") {
            let d = model.config.hidden_size;
            let w = checkpoint.read("base_model.model.score.weight", &[1, d])?;
            if model.reward_head.is_none() {
                model = model.with_reward_head(device);
            }
            if let Some(head) = model.reward_head.as_mut() {
                head.weight = Param::from_tensor(tensor(w.transposed(), device));
            }
        }
        Ok((model, config))
    }
}

fn host(t: Tensor<impl Backend, 2>) -> HostTensor {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap_or_default();
    HostTensor { shape, values }
}

fn tensor<B: Backend>(host: HostTensor, device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(host.values, host.shape), device)
}
