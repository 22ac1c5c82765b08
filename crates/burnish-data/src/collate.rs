//! Padding tokenized rows into rectangular batches.
//!
//! Batches are plain row-major vectors (this crate knows nothing of tensors): a batch of `rows`
//! sequences padded to `seq_len` tokens holds `rows * seq_len` values, row `r` at
//! `[r * seq_len .. (r + 1) * seq_len]`. A pair batch stacks the chosen sequences first and the
//! rejected ones after them, so one forward pass over `2 * batch` rows scores both; row `i` and
//! row `batch + i` are the two halves of pair `i`.
//!
//! Masks are per position, not shifted: `completion_mask[t]` is true when token `t` belongs to
//! the completion. The log-prob of token `t` comes from the logits at `t - 1`, so a trainer
//! reads `completion_mask[1..]` against `logits[..T-1]`.

use crate::encode::{TokenizedList, TokenizedPair, TokenizedPromptCompletion};
use crate::row::Ranking;

/// Which side of a sequence padding goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadSide {
    /// Pad after the tokens (training, most models).
    #[default]
    Right,
    /// Pad before the tokens (batched generation, or models that ask for it).
    Left,
}

/// Padding policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collator {
    /// Id written at padded positions (masked out, so any valid id works).
    pub pad_token_id: u32,
    /// Where padding goes.
    pub pad_side: PadSide,
    /// Round `seq_len` up to a multiple of this (e.g. 8 for tensor cores); `None` for the longest row.
    pub pad_to_multiple_of: Option<usize>,
}

/// Padded sequences: supervised batches, and the layout shared by pair and list batches.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceBatch {
    /// Token ids, `[rows, seq_len]` row-major; padding holds `pad_token_id`.
    pub input_ids: Vec<i64>,
    /// `[rows, seq_len]`: true at real tokens, false at padding.
    pub attention_mask: Vec<bool>,
    /// `[rows, seq_len]`: true at completion tokens (not prompt, not padding).
    pub completion_mask: Vec<bool>,
    /// `[rows, seq_len]`: 0, 1, 2, ... from each row's first real token; 0 at padding.
    pub position_ids: Vec<i64>,
    /// Number of sequences.
    pub rows: usize,
    /// Padded length of every sequence.
    pub seq_len: usize,
    /// Prompt tokens per row, `[rows]`.
    pub prompt_lengths: Vec<usize>,
    /// Completion tokens per row, `[rows]` (|y| for length-normalised losses).
    pub completion_lengths: Vec<usize>,
}

/// A padded batch of pairs: chosen rows `0..batch`, rejected rows `batch..2*batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct PairBatch {
    /// Token ids, `[2 * batch, seq_len]` row-major, chosen rows first then rejected.
    pub input_ids: Vec<i64>,
    /// `[2 * batch, seq_len]`: true at real tokens.
    pub attention_mask: Vec<bool>,
    /// `[2 * batch, seq_len]`: true at completion tokens.
    pub completion_mask: Vec<bool>,
    /// `[2 * batch, seq_len]`: positions from each row's first real token; 0 at padding.
    pub position_ids: Vec<i64>,
    /// Number of pairs.
    pub batch: usize,
    /// Padded sequence length.
    pub seq_len: usize,
    /// Prompt tokens per row, `[2 * batch]`.
    pub prompt_lengths: Vec<usize>,
    /// Completion tokens per row, `[2 * batch]`.
    pub completion_lengths: Vec<usize>,
    /// `[batch]` margins, when every pair has one.
    pub margins: Option<Vec<f32>>,
    /// `[batch]` cached reference log-probs of chosen, when every pair has both cached values.
    pub ref_chosen_logps: Option<Vec<f32>>,
    /// `[batch]` cached reference log-probs of rejected, when every pair has both cached values.
    pub ref_rejected_logps: Option<Vec<f32>>,
}

/// A padded batch of listwise rows: the responses of row `b` are rows
/// `offsets[b]..offsets[b + 1]` of `sequences`, in the input order of its responses.
#[derive(Debug, Clone, PartialEq)]
pub struct ListBatch {
    /// All responses, each with its prompt, padded together.
    pub sequences: SequenceBatch,
    /// `[batch + 1]` start of each row's responses in `sequences`.
    pub offsets: Vec<usize>,
    /// The rankings, one per row.
    pub rankings: Vec<Ranking>,
    /// `[sequences.rows]` cached reference log-probs in the order of `sequences`, when every row
    /// of the batch has them.
    pub ref_logps: Option<Vec<f32>>,
}

impl Collator {
    /// Right padding with `pad_token_id`, to the longest row.
    pub fn new(pad_token_id: u32) -> Self {
        Collator {
            pad_token_id,
            pad_side: PadSide::Right,
            pad_to_multiple_of: None,
        }
    }

    /// Sets the padding side.
    pub fn pad_side(mut self, side: PadSide) -> Self {
        self.pad_side = side;
        self
    }

    /// Rounds the padded length up to a multiple of `m` (`None` or 0/1 to disable).
    pub fn pad_to_multiple_of(mut self, m: Option<usize>) -> Self {
        self.pad_to_multiple_of = m.filter(|&m| m > 1);
        self
    }

    /// Pads `(prompt, completion)` sequences into one batch.
    pub fn collate_sequences(&self, seqs: &[(&[u32], &[u32])]) -> SequenceBatch {
        let longest = seqs
            .iter()
            .map(|(p, c)| p.len() + c.len())
            .max()
            .unwrap_or(0);
        let seq_len = match self.pad_to_multiple_of {
            Some(m) => longest.div_ceil(m) * m,
            None => longest,
        };
        let n = seqs.len() * seq_len;
        let mut b = SequenceBatch {
            input_ids: vec![self.pad_token_id as i64; n],
            attention_mask: vec![false; n],
            completion_mask: vec![false; n],
            position_ids: vec![0; n],
            rows: seqs.len(),
            seq_len,
            prompt_lengths: Vec::with_capacity(seqs.len()),
            completion_lengths: Vec::with_capacity(seqs.len()),
        };
        for (r, (prompt, completion)) in seqs.iter().enumerate() {
            let len = prompt.len() + completion.len();
            let start = r * seq_len
                + if self.pad_side == PadSide::Left {
                    seq_len - len
                } else {
                    0
                };
            for (k, &id) in prompt.iter().chain(completion.iter()).enumerate() {
                b.input_ids[start + k] = id as i64;
                b.attention_mask[start + k] = true;
                b.completion_mask[start + k] = k >= prompt.len();
                b.position_ids[start + k] = k as i64;
            }
            b.prompt_lengths.push(prompt.len());
            b.completion_lengths.push(completion.len());
        }
        b
    }

    /// Pads pairs into one batch, chosen rows first then rejected, all to the same length.
    pub fn collate_pairs(&self, pairs: &[TokenizedPair]) -> PairBatch {
        let seqs: Vec<(&[u32], &[u32])> = pairs
            .iter()
            .map(|p| (p.prompt_ids.as_slice(), p.chosen_ids.as_slice()))
            .chain(
                pairs
                    .iter()
                    .map(|p| (p.prompt_ids.as_slice(), p.rejected_ids.as_slice())),
            )
            .collect();
        let s = self.collate_sequences(&seqs);
        let (margins, ref_chosen_logps, ref_rejected_logps) = pair_extras(pairs);
        PairBatch {
            input_ids: s.input_ids,
            attention_mask: s.attention_mask,
            completion_mask: s.completion_mask,
            position_ids: s.position_ids,
            batch: pairs.len(),
            seq_len: s.seq_len,
            prompt_lengths: s.prompt_lengths,
            completion_lengths: s.completion_lengths,
            margins,
            ref_chosen_logps,
            ref_rejected_logps,
        }
    }

    /// Pads supervised rows into one batch; the completion mask covers the completion only.
    pub fn collate_prompt_completions(&self, rows: &[TokenizedPromptCompletion]) -> SequenceBatch {
        let seqs: Vec<(&[u32], &[u32])> = rows
            .iter()
            .map(|r| (r.prompt_ids.as_slice(), r.completion_ids.as_slice()))
            .collect();
        self.collate_sequences(&seqs)
    }

    /// Pads listwise rows into one batch of all their responses.
    pub fn collate_lists(&self, rows: &[TokenizedList]) -> ListBatch {
        let mut offsets = vec![0];
        let mut seqs: Vec<(&[u32], &[u32])> = Vec::new();
        for r in rows {
            for resp in &r.response_ids {
                seqs.push((r.prompt_ids.as_slice(), resp.as_slice()));
            }
            offsets.push(seqs.len());
        }
        let ref_logps = rows
            .iter()
            .map(|r| r.ref_logps.as_deref())
            .collect::<Option<Vec<&[f32]>>>()
            .map(|all| all.concat())
            .filter(|flat| flat.len() == seqs.len());
        ListBatch {
            sequences: self.collate_sequences(&seqs),
            offsets,
            rankings: rows.iter().map(|r| r.ranking.clone()).collect(),
            ref_logps,
        }
    }
}

/// The per-pair values a batch carries when every pair has them: margins, and the cached
/// reference log-probs of chosen and rejected (both or neither).
pub(crate) type PairExtras = (Option<Vec<f32>>, Option<Vec<f32>>, Option<Vec<f32>>);

/// [`PairExtras`] of `pairs`.
pub(crate) fn pair_extras(pairs: &[TokenizedPair]) -> PairExtras {
    let all =
        |f: fn(&TokenizedPair) -> Option<f32>| pairs.iter().map(f).collect::<Option<Vec<f32>>>();
    match (all(|p| p.ref_chosen_logp), all(|p| p.ref_rejected_logp)) {
        (Some(c), Some(r)) => (all(|p| p.margin), Some(c), Some(r)),
        _ => (all(|p| p.margin), None, None),
    }
}
