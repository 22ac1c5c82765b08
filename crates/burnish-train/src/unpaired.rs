//! KTO on unpaired feedback: each row is a prompt, one completion and a desirable / undesirable
//! label (TRL's `KTOTrainer`, Ethayarajh et al. 2024).
//!
//! KTO's reference point is an estimate of KL(policy || reference) from *mismatched* pairs: a
//! prompt with a completion written for another prompt. TRL builds them once, when the data are
//! prepared, by shifting completions by one within consecutive chunks of the data set; burnish
//! gives each row the completion of the next row with another prompt over the whole split
//! ([`pair_mismatched`]), so every row carries its own mismatched completion and a batch of any
//! size (one row included) has its estimate. The
//! policy scores the mismatched pairs without gradient, as TRL does; the reference scores both
//! kinds once, before the first step ([`precompute_unpaired_reference`]), so training holds one
//! model.

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::AutodiffBackend;
use burnish_data::{Collator, TokenizedPair};
use burnish_losses::{UnpairedInputs, UnpairedLoss};
use burnish_model::{CausalLm, ModelAutodiffBackend, ModelBackend};

use crate::batch::{TokenTensors, vector};
use crate::objectives::BatchObjective;
use crate::progress::Progress;
use crate::trainer::{BatchLoss, TrainError};

/// One tokenized unpaired row with its mismatched completion and cached reference log-probs.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenizedUnpaired {
    /// Prompt ids (after truncation).
    pub prompt_ids: Vec<u32>,
    /// Completion ids (after truncation).
    pub completion_ids: Vec<u32>,
    /// True when the completion is desirable.
    pub label: bool,
    /// Another row's completion, truncated to fit after this prompt ([`pair_mismatched`]).
    pub kl_completion_ids: Vec<u32>,
    /// Reference log-prob of the completion, summed over its tokens.
    pub ref_logp: Option<f32>,
    /// Reference log-prob of the mismatched completion after this prompt.
    pub ref_kl_logp: Option<f32>,
}

impl TokenizedUnpaired {
    /// A row with no mismatched completion or reference log-probs yet.
    pub fn new(prompt_ids: Vec<u32>, completion_ids: Vec<u32>, label: bool) -> Self {
        TokenizedUnpaired {
            prompt_ids,
            completion_ids,
            label,
            kl_completion_ids: Vec::new(),
            ref_logp: None,
            ref_kl_logp: None,
        }
    }
}

/// How far [`pair_mismatched`] looks ahead for a row with another prompt.
const MISMATCH_SEARCH: usize = 64;

/// Gives row `i` the completion of the next row (cyclically) whose prompt differs from its own
/// (searching at most 64 rows ahead, else the next row), truncated so prompt + completion stay
/// within `max_length` tokens; a lone row keeps its own completion. Looking past rows with the
/// same prompt matters for data unpaired from pairs, where a prompt's desirable and undesirable
/// rows sit side by side: the next row's completion would answer the same prompt. Cached
/// reference log-probs of the mismatched pairs are cleared, since the pairs changed. Returns how
/// many rows (of more than one) found no row with another prompt, and so got one of their own
/// prompt's completions: their KL estimate is biased low, worth a warning.
pub fn pair_mismatched(rows: &mut [TokenizedUnpaired], max_length: usize) -> usize {
    let n = rows.len();
    let partner = |i: usize| {
        (1..n.min(MISMATCH_SEARCH + 1))
            .map(|k| (i + k) % n)
            .find(|&j| rows[j].prompt_ids != rows[i].prompt_ids)
    };
    let partners: Vec<Option<usize>> = (0..n).map(partner).collect();
    let same_prompt = if n > 1 {
        partners.iter().filter(|p| p.is_none()).count()
    } else {
        0
    };
    let partners: Vec<usize> = partners
        .into_iter()
        .enumerate()
        .map(|(i, p)| p.unwrap_or((i + 1) % n))
        .collect();
    let completions: Vec<Vec<u32>> = rows.iter().map(|r| r.completion_ids.clone()).collect();
    for (row, j) in rows.iter_mut().zip(partners) {
        let room = max_length.saturating_sub(row.prompt_ids.len()).max(1);
        let mut kl = completions[j].clone();
        kl.truncate(room);
        row.kl_completion_ids = kl;
        row.ref_kl_logp = None;
    }
    same_prompt
}

/// The two unpaired rows of a preference pair: its chosen completion as desirable, its rejected
/// one as undesirable (TRL's `unpair_preference_dataset`), mismatched completions not assigned.
pub fn unpair(pair: &TokenizedPair) -> [TokenizedUnpaired; 2] {
    [
        TokenizedUnpaired::new(pair.prompt_ids.clone(), pair.chosen_ids.clone(), true),
        TokenizedUnpaired::new(pair.prompt_ids.clone(), pair.rejected_ids.clone(), false),
    ]
}

/// Summed completion log-probs (`[rows]`) of `(prompt, completion)` sequences under `model`.
fn sequence_logps<B: ModelBackend>(
    model: &CausalLm<B>,
    collator: &Collator,
    sequences: &[(&[u32], &[u32])],
    device: &B::Device,
) -> (Tensor<B, 1>, usize) {
    let batch = collator.collate_sequences(sequences);
    let tokens = TokenTensors::<B>::from_sequences(&batch, device);
    let scored = model.completion_logps(
        tokens.input_ids,
        tokens.attention_mask,
        tokens.completion_mask,
    );
    (scored.logps, tokens.real_tokens)
}

fn matched(rows: &[TokenizedUnpaired]) -> Vec<(&[u32], &[u32])> {
    rows.iter()
        .map(|r| (r.prompt_ids.as_slice(), r.completion_ids.as_slice()))
        .collect()
}

fn mismatched(rows: &[TokenizedUnpaired]) -> Vec<(&[u32], &[u32])> {
    rows.iter()
        .map(|r| (r.prompt_ids.as_slice(), r.kl_completion_ids.as_slice()))
        .collect()
}

fn host<B: ModelBackend>(t: Tensor<B, 1>) -> Result<Vec<f32>, TrainError> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::Other(format!("reading log-probs back: {e:?}")))
}

/// Fills `ref_logp` and (with `kl`) `ref_kl_logp` of every row with the reference model's summed
/// completion log-probs, `batch_size` rows per forward pass, reporting progress when given.
pub fn precompute_unpaired_reference<B: ModelBackend>(
    reference: &CausalLm<B>,
    rows: &mut [TokenizedUnpaired],
    collator: &Collator,
    batch_size: usize,
    kl: bool,
    device: &B::Device,
    mut progress: Option<&mut Progress>,
) -> Result<(), TrainError> {
    let mut done = 0;
    for chunk in rows.chunks_mut(batch_size.max(1)) {
        let (logps, _) = sequence_logps(reference, collator, &matched(chunk), device);
        for (row, logp) in chunk.iter_mut().zip(host(logps)?) {
            row.ref_logp = Some(logp);
        }
        if kl {
            let (logps, _) = sequence_logps(reference, collator, &mismatched(chunk), device);
            for (row, logp) in chunk.iter_mut().zip(host(logps)?) {
                row.ref_kl_logp = Some(logp);
            }
        }
        done += chunk.len() as u64;
        if let Some(progress) = progress.as_mut() {
            progress.advance(done, "reference log-probs (rows)");
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    Ok(())
}

/// KTO (or `apo_zero_unpaired`) on unpaired rows whose reference log-probs are precomputed.
pub struct KtoObjective<B: AutodiffBackend> {
    /// Training rows.
    pub train: Vec<TokenizedUnpaired>,
    /// Held-out rows.
    pub eval: Vec<TokenizedUnpaired>,
    /// Padding policy.
    pub collator: Collator,
    /// The loss, chosen by name in the config.
    pub loss: UnpairedLoss,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for KtoObjective<B> {
    type Row = TokenizedUnpaired;

    fn splits(&self) -> (&[TokenizedUnpaired], &[TokenizedUnpaired]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        rows: &[TokenizedUnpaired],
    ) -> Result<BatchLoss<B>, TrainError> {
        let missing = || {
            TrainError::Other(format!(
                "loss `{}` needs the reference log-probs of every row; compute them before training",
                self.loss.name()
            ))
        };
        let reference: Vec<f32> = rows
            .iter()
            .map(|r| r.ref_logp.ok_or_else(missing))
            .collect::<Result<_, _>>()?;
        let (policy, tokens) = sequence_logps(model, &self.collator, &matched(rows), &self.device);
        let labels = rows.iter().map(|r| r.label).collect();
        let mut inputs = UnpairedInputs::new(policy, vector::<B>(&reference, &self.device), labels);
        if self.loss.needs_kl() {
            let reference_kl: Vec<f32> = rows
                .iter()
                .map(|r| r.ref_kl_logp.ok_or_else(missing))
                .collect::<Result<_, _>>()?;
            // No gradient through the reference point: score the mismatched pairs with the
            // inner backend, as TRL does under `torch.no_grad()`.
            let (policy_kl, _) = sequence_logps(
                &model.valid(),
                &self.collator,
                &mismatched(rows),
                &self.device,
            );
            inputs = inputs.with_kl(
                Tensor::from_inner(policy_kl),
                vector::<B>(&reference_kl, &self.device),
            );
        }
        let output = self.loss.compute(&inputs)?;
        Ok(BatchLoss {
            metrics: output.metrics_f64(),
            loss: output.loss,
            tokens,
        })
    }
}
