//! Llama's, Mistral's, Qwen2's and Qwen3's checkpoint names, in the order transformers'
//! `LlamaForCausalLM` and `Qwen2ForCausalLM` / `Qwen3ForCausalLM` list them.
//!
//! Their projections are `nn.Linear` weights, `[out, in]`, so each is transposed into burn's
//! `[in, out]` layout. Qwen2 (and Llama with `attention_bias`) carries q/k/v biases; Qwen3 a
//! per-head RMSNorm on queries and keys.

use crate::config::ModelConfig;
use crate::hf::{Entry, Part, Slot};

/// The tensor table of a Llama-layout checkpoint (Llama, Mistral, Qwen2, Qwen3).
pub(crate) fn tensor_names(config: &ModelConfig) -> Vec<Entry> {
    let mut table = vec![Entry::same(
        "model.embed_tokens.weight".into(),
        Slot::TokenEmbed,
    )];
    for i in 0..config.num_layers {
        let l = |name: &str| format!("model.layers.{i}.{name}");
        table.push(Entry::same(
            l("input_layernorm.weight"),
            Slot::AttnNorm(i, Part::Weight),
        ));
        for (name, slot) in [
            ("self_attn.q_proj", Slot::Q as fn(usize, Part) -> Slot),
            ("self_attn.k_proj", Slot::K),
            ("self_attn.v_proj", Slot::V),
        ] {
            table.push(Entry::transposed(
                l(&format!("{name}.weight")),
                slot(i, Part::Weight),
            ));
            if config.qkv_bias {
                table.push(Entry::same(l(&format!("{name}.bias")), slot(i, Part::Bias)));
            }
        }
        if config.family.qk_norm() {
            table.push(Entry::same(l("self_attn.q_norm.weight"), Slot::QNorm(i)));
            table.push(Entry::same(l("self_attn.k_norm.weight"), Slot::KNorm(i)));
        }
        table.push(Entry::transposed(
            l("self_attn.o_proj.weight"),
            Slot::O(i, Part::Weight),
        ));
        if config.o_bias {
            table.push(Entry::same(
                l("self_attn.o_proj.bias"),
                Slot::O(i, Part::Bias),
            ));
        }
        table.push(Entry::same(
            l("post_attention_layernorm.weight"),
            Slot::MlpNorm(i, Part::Weight),
        ));
        for (name, slot) in [
            ("mlp.gate_proj", Slot::Gate as fn(usize, Part) -> Slot),
            ("mlp.up_proj", Slot::Up),
            ("mlp.down_proj", Slot::Down),
        ] {
            table.push(Entry::transposed(
                l(&format!("{name}.weight")),
                slot(i, Part::Weight),
            ));
            if config.mlp_bias {
                table.push(Entry::same(l(&format!("{name}.bias")), slot(i, Part::Bias)));
            }
        }
    }
    table.push(Entry::same(
        "model.norm.weight".into(),
        Slot::FinalNorm(Part::Weight),
    ));
    if !config.tie_word_embeddings {
        table.push(Entry::transposed("lm_head.weight".into(), Slot::LmHead));
    }
    table
}
