//! Hugging Face model folders: load `config.json` + safetensors into a [`CausalLm`], and export
//! one back so transformers (and `burnish logprobs`) load it with the same logits.
//!
//! Each family lists its checkpoint names once (`gpt2.rs`, `llama.rs`) as [`Entry`] rows that
//! point at a [`Slot`] of the model; loading and exporting both walk that one table.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::config::{Family, ModelConfig};
use crate::error::{ModelError, Result};
use crate::layers::Norm;
use crate::model::CausalLm;
use crate::safetensors_io::{Checkpoint, HostTensor, write_safetensors};
use crate::{gpt2, llama};

/// Weight or bias of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The weight (or norm scale).
    Weight,
    /// The bias (or norm shift).
    Bias,
}

/// A parameter of [`CausalLm`] that a checkpoint tensor fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Token embedding.
    TokenEmbed,
    /// Learned position embedding.
    PositionEmbed,
    /// Pre-attention norm of a layer.
    AttnNorm(usize, Part),
    /// Query projection.
    Q(usize, Part),
    /// Per-head query norm (Qwen3's `q_norm`).
    QNorm(usize),
    /// Per-head key norm (Qwen3's `k_norm`).
    KNorm(usize),
    /// Key projection.
    K(usize, Part),
    /// Value projection.
    V(usize, Part),
    /// q, k and v side by side along the output axis (GPT-2's `c_attn`).
    FusedQkv(usize, Part),
    /// Attention output projection.
    O(usize, Part),
    /// Pre-MLP norm of a layer.
    MlpNorm(usize, Part),
    /// MLP gate projection.
    Gate(usize, Part),
    /// MLP up projection.
    Up(usize, Part),
    /// MLP down projection.
    Down(usize, Part),
    /// Final norm.
    FinalNorm(Part),
    /// Untied output projection.
    LmHead,
    /// Reward head (`score`).
    RewardHead,
    /// Value head (`v_head.summary`).
    ValueHead(Part),
}

/// One row of a family's name table.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name transformers uses.
    pub name: String,
    /// The parameter it fills.
    pub slot: Slot,
    /// Stored `[out, in]` (torch `nn.Linear`) rather than burn's `[in, out]`.
    pub transposed: bool,
}

impl Entry {
    pub(crate) fn same(name: String, slot: Slot) -> Self {
        Self {
            name,
            slot,
            transposed: false,
        }
    }

    pub(crate) fn transposed(name: String, slot: Slot) -> Self {
        Self {
            name,
            slot,
            transposed: true,
        }
    }
}

/// The full table for a config: the family's names plus the heads it carries.
pub(crate) fn table(config: &ModelConfig, gpt2_prefix: &str) -> Vec<Entry> {
    let mut table = match config.family {
        Family::Gpt2 => gpt2::tensor_names(config, gpt2_prefix),
        Family::Llama | Family::Mistral | Family::Qwen2 | Family::Qwen3 => {
            llama::tensor_names(config)
        }
    };
    if config.reward_head {
        table.push(Entry::transposed("score.weight".into(), Slot::RewardHead));
    }
    if config.value_head {
        table.push(Entry::transposed(
            "v_head.summary.weight".into(),
            Slot::ValueHead(Part::Weight),
        ));
        table.push(Entry::same(
            "v_head.summary.bias".into(),
            Slot::ValueHead(Part::Bias),
        ));
    }
    table
}

/// Where a model's tensors come from, by transformers' names and layouts: a safetensors
/// checkpoint, or a GGUF file seen through llama.cpp's names.
pub(crate) trait TensorSource {
    /// Reads one tensor as f32 and checks its shape against `expected`.
    fn read(&self, name: &str, expected: &[usize]) -> Result<HostTensor>;
}

impl TensorSource for Checkpoint {
    fn read(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        Checkpoint::read(self, name, expected)
    }
}

enum ParamRef<'a, B: Backend> {
    Vector(&'a mut Param<Tensor<B, 1>>),
    Matrix(&'a mut Param<Tensor<B, 2>>),
}

fn linear_part<B: Backend>(linear: &mut Linear<B>, part: Part) -> ParamRef<'_, B> {
    match part {
        Part::Weight => ParamRef::Matrix(&mut linear.weight),
        Part::Bias => ParamRef::Vector(
            linear
                .bias
                .as_mut()
                .expect("the table lists a bias only where the config has one"),
        ),
    }
}

fn norm_part<B: Backend>(norm: &mut Norm<B>, part: Part) -> ParamRef<'_, B> {
    match part {
        Part::Weight => ParamRef::Vector(&mut norm.weight),
        Part::Bias => ParamRef::Vector(
            norm.bias
                .as_mut()
                .expect("the table lists a norm bias only for LayerNorm"),
        ),
    }
}

impl<B: Backend> CausalLm<B> {
    fn param(&mut self, slot: Slot) -> ParamRef<'_, B> {
        let missing = "the table lists a module only where the config has one";
        match slot {
            Slot::TokenEmbed => ParamRef::Matrix(&mut self.embed.weight),
            Slot::PositionEmbed => {
                ParamRef::Matrix(&mut self.pos_embed.as_mut().expect(missing).weight)
            }
            Slot::AttnNorm(i, part) => norm_part(&mut self.blocks[i].attn_norm, part),
            Slot::Q(i, part) => linear_part(&mut self.blocks[i].attn.q, part),
            Slot::QNorm(i) => norm_part(
                self.blocks[i].attn.q_norm.as_mut().expect(missing),
                Part::Weight,
            ),
            Slot::KNorm(i) => norm_part(
                self.blocks[i].attn.k_norm.as_mut().expect(missing),
                Part::Weight,
            ),
            Slot::K(i, part) => linear_part(&mut self.blocks[i].attn.k, part),
            Slot::V(i, part) => linear_part(&mut self.blocks[i].attn.v, part),
            Slot::O(i, part) => linear_part(&mut self.blocks[i].attn.o, part),
            Slot::MlpNorm(i, part) => norm_part(&mut self.blocks[i].mlp_norm, part),
            Slot::Gate(i, part) => {
                linear_part(self.blocks[i].mlp.gate.as_mut().expect(missing), part)
            }
            Slot::Up(i, part) => linear_part(&mut self.blocks[i].mlp.up, part),
            Slot::Down(i, part) => linear_part(&mut self.blocks[i].mlp.down, part),
            Slot::FinalNorm(part) => norm_part(&mut self.final_norm, part),
            Slot::LmHead => ParamRef::Matrix(&mut self.lm_head.as_mut().expect(missing).weight),
            Slot::RewardHead => {
                ParamRef::Matrix(&mut self.reward_head.as_mut().expect(missing).weight)
            }
            Slot::ValueHead(part) => linear_part(self.value_head.as_mut().expect(missing), part),
            Slot::FusedQkv(..) => unreachable!("fused q/k/v is split by the caller"),
        }
    }

    fn fill(
        &mut self,
        entry: &Entry,
        checkpoint: &dyn TensorSource,
        device: &B::Device,
    ) -> Result<()> {
        if let Slot::FusedQkv(i, part) = entry.slot {
            return self.fill_fused_qkv(i, part, entry, checkpoint, device);
        }
        match self.param(entry.slot) {
            ParamRef::Vector(param) => {
                let host = checkpoint.read(&entry.name, &param.dims())?;
                *param = Param::from_tensor(to_tensor(host, device));
            }
            ParamRef::Matrix(param) => {
                let [rows, cols] = param.dims();
                let stored = if entry.transposed {
                    [cols, rows]
                } else {
                    [rows, cols]
                };
                let host = checkpoint.read(&entry.name, &stored)?;
                let host = if entry.transposed {
                    host.transposed()
                } else {
                    host
                };
                *param = Param::from_tensor(to_tensor(host, device));
            }
        }
        Ok(())
    }

    fn fill_fused_qkv(
        &mut self,
        i: usize,
        part: Part,
        entry: &Entry,
        checkpoint: &dyn TensorSource,
        device: &B::Device,
    ) -> Result<()> {
        let attn = &mut self.blocks[i].attn;
        let d = self.config.hidden_size;
        let widths = [
            attn.num_heads * attn.head_dim,
            attn.num_kv_heads * attn.head_dim,
            attn.num_kv_heads * attn.head_dim,
        ];
        let total: usize = widths.iter().sum();
        let mut offset = 0;
        match part {
            Part::Weight => {
                let fused = checkpoint.read(&entry.name, &[d, total])?;
                for (linear, width) in [&mut attn.q, &mut attn.k, &mut attn.v]
                    .into_iter()
                    .zip(widths)
                {
                    linear.weight =
                        Param::from_tensor(to_tensor(fused.columns(offset, width), device));
                    offset += width;
                }
            }
            Part::Bias => {
                let fused = checkpoint.read(&entry.name, &[total])?;
                for (linear, width) in [&mut attn.q, &mut attn.k, &mut attn.v]
                    .into_iter()
                    .zip(widths)
                {
                    linear.bias = Some(Param::from_tensor(to_tensor(
                        fused.range(offset, width),
                        device,
                    )));
                    offset += width;
                }
            }
        }
        Ok(())
    }

    pub(crate) fn export_tensor(&mut self, entry: &Entry) -> HostTensor {
        if let Slot::FusedQkv(i, part) = entry.slot {
            let attn = &self.blocks[i].attn;
            return match part {
                Part::Weight => to_host(Tensor::cat(
                    vec![
                        attn.q.weight.val(),
                        attn.k.weight.val(),
                        attn.v.weight.val(),
                    ],
                    1,
                )),
                Part::Bias => {
                    let bias =
                        |l: &Linear<B>| l.bias.as_ref().expect("GPT-2 attention has biases").val();
                    to_host(Tensor::cat(
                        vec![bias(&attn.q), bias(&attn.k), bias(&attn.v)],
                        0,
                    ))
                }
            };
        }
        match self.param(entry.slot) {
            ParamRef::Vector(param) => to_host(param.val()),
            ParamRef::Matrix(param) => {
                let value = param.val();
                to_host(if entry.transposed {
                    value.transpose()
                } else {
                    value
                })
            }
        }
    }

    /// Loads a Hugging Face model folder: `config.json` and `model.safetensors` (or the shards
    /// named by `model.safetensors.index.json`). A `score.weight` or `v_head.summary.weight`
    /// tensor in the checkpoint brings its head along. A GGUF file loads too
    /// ([`CausalLm::from_gguf`]), so every command that takes a model folder takes one.
    pub fn from_pretrained(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        if crate::gguf::is_gguf(dir) {
            return Self::from_gguf(dir, device);
        }
        let mut config = ModelConfig::from_file(dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        config.reward_head |= checkpoint.contains("score.weight");
        config.value_head |= checkpoint.contains("v_head.summary.weight");
        let prefix =
            if checkpoint.contains("transformer.wte.weight") || config.family != Family::Gpt2 {
                "transformer."
            } else {
                ""
            };
        let mut model = CausalLm::init(&config, device);
        for entry in table(&config, prefix) {
            model.fill(&entry, &checkpoint, device)?;
        }
        Ok(model)
    }

    /// Loads a GGUF file (llama.cpp / Ollama): the config from its metadata, every tensor
    /// dequantized to f32 and mapped to transformers' layout.
    pub fn from_gguf(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let file = crate::gguf::GgufFile::open(path)?;
        Self::from_gguf_file(&file, device)
    }

    /// As [`CausalLm::from_gguf`], from a file already read.
    pub fn from_gguf_file(file: &crate::gguf::GgufFile, device: &B::Device) -> Result<Self> {
        let config = crate::gguf::config_from_gguf(file)?;
        let source = crate::gguf::GgufSource {
            file,
            config: &config,
        };
        let mut model = CausalLm::init(&config, device);
        for entry in table(&config, "transformer.") {
            model.fill(&entry, &source, device)?;
        }
        Ok(model)
    }

    /// Writes a Hugging Face model folder: `model.safetensors` (f32, transformers' names) and
    /// `config.json`. Copy the tokenizer files beside it with [`copy_tokenizer_files`].
    pub fn save_pretrained(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        let mut model = self.clone();
        let tensors: Vec<(String, HostTensor)> = table(&self.config, "transformer.")
            .into_iter()
            .map(|entry| {
                let host = model.export_tensor(&entry);
                (entry.name, host)
            })
            .collect();
        write_safetensors(&dir.join("model.safetensors"), &tensors)?;
        self.config.write(dir.join("config.json"))
    }
}

/// Copies `tokenizer.json` (required) and `tokenizer_config.json`, `special_tokens_map.json`,
/// `generation_config.json` (where present) from one model folder to another. From a GGUF file,
/// writes the tokenizer its metadata describes as `tokenizer.json` + `tokenizer_config.json`.
pub fn copy_tokenizer_files(from: &Path, to: &Path) -> Result<()> {
    if crate::gguf::is_gguf(from) {
        let file = crate::gguf::GgufFile::open(from)?;
        return crate::gguf::GgufTokenizer::from_file(&file)?.save(to);
    }
    for (name, required) in [
        ("tokenizer.json", true),
        ("tokenizer_config.json", false),
        ("special_tokens_map.json", false),
        ("generation_config.json", false),
    ] {
        let source = from.join(name);
        if !required && !source.exists() {
            continue;
        }
        std::fs::copy(&source, to.join(name)).map_err(|cause| ModelError::Io {
            path: source,
            cause,
        })?;
    }
    Ok(())
}

fn to_tensor<B: Backend, const D: usize>(host: HostTensor, device: &B::Device) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(host.values, host.shape), device)
}

fn to_host<B: Backend, const D: usize>(tensor: Tensor<B, D>) -> HostTensor {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .expect("converted to f32");
    HostTensor { shape, values }
}
