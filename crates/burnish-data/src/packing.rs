//! Prefix sharing and packing of preference pairs: each pair becomes one segment
//! `[prompt | chosen | rejected]` of a row, and several short segments share a row.
//!
//! The prompt is computed once for both completions (Wang et al. 2024, "Accelerating Direct
//! Preference Optimization with Prefix Sharing"), and rows are filled first-fit, longest pair
//! first, up to the longest pair's length, so a batch of uneven pairs holds little padding. Both
//! are exact: inside a segment a chosen token sees the prompt and the chosen tokens before it,
//! a rejected token sees the prompt and the rejected tokens before it (never the chosen ones),
//! and the rejected tokens' positions continue from the prompt's end; no token sees another
//! segment. Each sequence's log-prob is therefore the one it has alone.

use crate::collate::{Collator, pair_extras};
use crate::encode::TokenizedPair;

/// One completion token whose log-prob is scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoredToken {
    /// Flat index (`row * seq_len + column`) of the position whose output predicts the token.
    pub predictor: usize,
    /// The token's id.
    pub target: u32,
    /// The sequence it belongs to: pair `b`'s chosen is `b`, its rejected `batch + b`.
    pub sequence: usize,
}

/// Pairs laid out with shared prompts and packed rows.
#[derive(Debug, Clone, PartialEq)]
pub struct PackedPairBatch {
    /// Token ids, `[rows, seq_len]` row-major; padding holds the pad id.
    pub input_ids: Vec<i64>,
    /// `[rows, seq_len]`: each token's position in its own sequence (the rejected tokens
    /// continue from the prompt's end); 0 at padding.
    pub position_ids: Vec<i64>,
    /// `[rows, seq_len, seq_len]`: whether query `i` may attend to key `j`. A padding position
    /// attends to itself only.
    pub attends: Vec<bool>,
    /// Number of rows.
    pub rows: usize,
    /// Length of every row.
    pub seq_len: usize,
    /// Every scored completion token, in sequence order.
    pub scored: Vec<ScoredToken>,
    /// Number of pairs; the sequences are `2 * batch`, chosen first.
    pub batch: usize,
    /// Completion tokens per sequence, `[2 * batch]` (|y|).
    pub completion_lengths: Vec<usize>,
    /// Real tokens as an unshared batch holds them (the prompt once for chosen and once for
    /// rejected): the count that tokens/s figures use, as TRL's do.
    pub real_tokens: usize,
    /// Positions that hold a token here (each prompt once).
    pub computed_tokens: usize,
    /// `[batch]` margins, when every pair has one.
    pub margins: Option<Vec<f32>>,
    /// `[batch]` cached reference log-probs of chosen, when every pair has both cached values.
    pub ref_chosen_logps: Option<Vec<f32>>,
    /// `[batch]` cached reference log-probs of rejected, when every pair has both cached values.
    pub ref_rejected_logps: Option<Vec<f32>>,
}

fn segment_len(p: &TokenizedPair) -> usize {
    p.prompt_ids.len() + p.chosen_ids.len() + p.rejected_ids.len()
}

impl Collator {
    /// Lays `pairs` out with shared prompts, packed first-fit into rows no longer than the
    /// longest pair (rounded up to `pad_to_multiple_of`). Padding goes at the end of each row
    /// whatever `pad_side` says: positions and masks come from the layout, not from the side.
    pub fn pack_pairs(&self, pairs: &[TokenizedPair]) -> PackedPairBatch {
        let batch = pairs.len();
        let longest = pairs.iter().map(segment_len).max().unwrap_or(0);
        let seq_len = match self.pad_to_multiple_of {
            Some(m) => longest.div_ceil(m) * m,
            None => longest,
        }
        .max(1);
        // First-fit decreasing: longest pairs first, each into the first row it fits.
        let mut order: Vec<usize> = (0..batch).collect();
        order.sort_by_key(|&b| std::cmp::Reverse(segment_len(&pairs[b])));
        let mut fill: Vec<usize> = Vec::new();
        let mut place = vec![(0usize, 0usize); batch];
        for &b in &order {
            let len = segment_len(&pairs[b]);
            let row = match fill.iter().position(|&used| used + len <= seq_len) {
                Some(row) => row,
                None => {
                    fill.push(0);
                    fill.len() - 1
                }
            };
            place[b] = (row, fill[row]);
            fill[row] += len;
        }
        let rows = fill.len().max(1);
        let n = rows * seq_len;
        let mut out = PackedPairBatch {
            input_ids: vec![self.pad_token_id as i64; n],
            position_ids: vec![0; n],
            attends: vec![false; n * seq_len],
            rows,
            seq_len,
            scored: Vec::new(),
            batch,
            completion_lengths: vec![0; 2 * batch],
            real_tokens: 0,
            computed_tokens: 0,
            margins: None,
            ref_chosen_logps: None,
            ref_rejected_logps: None,
        };
        let mut scored_chosen = Vec::new();
        let mut scored_rejected = Vec::new();
        for (b, pair) in pairs.iter().enumerate() {
            let (row, offset) = place[b];
            let base = row * seq_len + offset;
            let (p, c, r) = (
                pair.prompt_ids.len(),
                pair.chosen_ids.len(),
                pair.rejected_ids.len(),
            );
            let tokens = pair
                .prompt_ids
                .iter()
                .chain(&pair.chosen_ids)
                .chain(&pair.rejected_ids);
            for (k, &id) in tokens.enumerate() {
                out.input_ids[base + k] = id as i64;
                out.position_ids[base + k] = if k < p + c { k } else { k - c } as i64;
            }
            // Query k of the segment sees key j <= k of the segment, except chosen keys from a
            // rejected query.
            let col0 = offset;
            for k in 0..p + c + r {
                let query = (row * seq_len + col0 + k) * seq_len;
                let rejected_query = k >= p + c;
                for j in 0..=k {
                    let chosen_key = j >= p && j < p + c;
                    out.attends[query + col0 + j] = !(rejected_query && chosen_key);
                }
            }
            // Token k of a completion is predicted by the token before it in its own sequence:
            // the last prompt token for k = 0 (none when the prompt is empty).
            let predictor = |start: usize, k: usize| -> Option<usize> {
                match (k, p) {
                    (0, 0) => None,
                    (0, _) => Some(base + p - 1),
                    _ => Some(base + start + k - 1),
                }
            };
            for (k, &id) in pair.chosen_ids.iter().enumerate() {
                if let Some(predictor) = predictor(p, k) {
                    scored_chosen.push(ScoredToken {
                        predictor,
                        target: id,
                        sequence: b,
                    });
                }
            }
            for (k, &id) in pair.rejected_ids.iter().enumerate() {
                if let Some(predictor) = predictor(p + c, k) {
                    scored_rejected.push(ScoredToken {
                        predictor,
                        target: id,
                        sequence: batch + b,
                    });
                }
            }
            out.completion_lengths[b] = c;
            out.completion_lengths[batch + b] = r;
            out.real_tokens += 2 * p + c + r;
            out.computed_tokens += p + c + r;
        }
        // Padding queries attend to themselves, so no softmax row is empty.
        for row in 0..rows {
            for col in fill.get(row).copied().unwrap_or(0)..seq_len {
                out.attends[(row * seq_len + col) * seq_len + col] = true;
            }
        }
        out.scored = scored_chosen;
        out.scored.extend(scored_rejected);
        let (margins, ref_chosen, ref_rejected) = pair_extras(pairs);
        out.margins = margins;
        out.ref_chosen_logps = ref_chosen;
        out.ref_rejected_logps = ref_rejected;
        out
    }
}
