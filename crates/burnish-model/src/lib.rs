//! burnish-model: the backend-generic causal language model burnish trains and scores with.
//!
//! [`CausalLm`] covers the GPT-2, Llama, Mistral, Qwen2 and Qwen3 families, loads Hugging Face model folders
//! ([`CausalLm::from_pretrained`]) with the logits transformers gives, scores completions
//! ([`CausalLm::completion_logps`]), carries optional reward and value heads, generates with a
//! KV cache ([`CausalLm::generate`]), and saves in burn's record format or back to Hugging Face
//! safetensors. Everything is generic over [`ModelBackend`] (burn's `Backend` plus burnish's fused
//! operations in [`ops`]), so the same code runs on flex (CPU), wgpu and CUDA.

pub mod config;
pub mod error;
pub mod generate;
pub mod gguf;
mod gpt2;
pub mod hf;
pub mod layers;
mod llama;
pub mod lora;
pub mod model;
pub mod ops;
pub mod precision;
pub mod record;
pub mod safetensors_io;
pub mod tokenizer;

pub use config::{Activation, Family, ModelConfig, RopeScaling};
pub use error::{ModelError, Result};
pub use generate::{Generation, SamplingConfig};
pub use hf::copy_tokenizer_files;
pub use layers::KvCache;
pub use lora::{LoraConfig, TargetModules};
pub use model::{CausalLm, CompletionLogps, ScoredTokens, split_pair};
pub use ops::{ModelAutodiffBackend, ModelBackend};
pub use precision::Precision;
pub use tokenizer::{PromptCompletion, TextTokenizer, check_vocab};
