//! GPT-2's checkpoint names, in the order transformers' `GPT2LMHeadModel` lists them.
//!
//! GPT-2 stores its projections as Conv1D weights, already `[in, out]` like burn's `Linear`, so
//! nothing is transposed; `c_attn` holds q, k and v side by side and is split on load and fused
//! again on export. The lm_head is tied to `wte` unless the config says otherwise.

use crate::config::ModelConfig;
use crate::hf::{Entry, Part, Slot};

/// The tensor table of a GPT-2 checkpoint whose names start with `prefix` (`"transformer."` as
/// transformers saves it, `""` in the original OpenAI export).
pub(crate) fn tensor_names(config: &ModelConfig, prefix: &str) -> Vec<Entry> {
    let p = |name: &str| format!("{prefix}{name}");
    let mut table = vec![
        Entry::same(p("wte.weight"), Slot::TokenEmbed),
        Entry::same(p("wpe.weight"), Slot::PositionEmbed),
    ];
    for i in 0..config.num_layers {
        let h = |name: &str| p(&format!("h.{i}.{name}"));
        for (part, suffix) in [(Part::Weight, "weight"), (Part::Bias, "bias")] {
            table.extend([
                Entry::same(h(&format!("ln_1.{suffix}")), Slot::AttnNorm(i, part)),
                Entry::same(h(&format!("attn.c_attn.{suffix}")), Slot::FusedQkv(i, part)),
                Entry::same(h(&format!("attn.c_proj.{suffix}")), Slot::O(i, part)),
                Entry::same(h(&format!("ln_2.{suffix}")), Slot::MlpNorm(i, part)),
                Entry::same(h(&format!("mlp.c_fc.{suffix}")), Slot::Up(i, part)),
                Entry::same(h(&format!("mlp.c_proj.{suffix}")), Slot::Down(i, part)),
            ]);
        }
    }
    table.push(Entry::same(p("ln_f.weight"), Slot::FinalNorm(Part::Weight)));
    table.push(Entry::same(p("ln_f.bias"), Slot::FinalNorm(Part::Bias)));
    if !config.tie_word_embeddings {
        table.push(Entry::transposed("lm_head.weight".into(), Slot::LmHead));
    }
    table
}
