//! Turning rankings and scores into preference pairs.
//!
//! InstructGPT asks labellers to rank K responses and trains on every pair of them with
//! different ranks: C(K,2) pairs when there are no ties, fewer with ties, since a tie says
//! neither is preferred. UltraFeedback-style data (one rating per response) is usually reduced to
//! one pair per prompt instead: the best response against a randomly drawn worse one, as Zephyr
//! did. Both are here, on a [`ListwiseRow`].

use rand::RngExt;

use crate::row::{ListwiseRow, PreferencePair, Ranking};

fn pair(row: &ListwiseRow, w: usize, l: usize) -> PreferencePair {
    PreferencePair {
        id: row.id.as_ref().map(|id| format!("{id}#{w}>{l}")),
        prompt: row.prompt.clone(),
        chosen: row.responses[w].clone(),
        rejected: row.responses[l].clone(),
        margin: None,
        ref_chosen_logp: None,
        ref_rejected_logp: None,
    }
}

/// Every ordered pair (better, worse) of responses with different ranks or scores; ties give no
/// pair. Pairs come best-first: for each response from best to worst, against every worse one.
pub fn all_pairs(row: &ListwiseRow) -> Vec<PreferencePair> {
    let order = row.ranking.order();
    let mut out = Vec::new();
    for (a, &w) in order.iter().enumerate() {
        for &l in &order[a + 1..] {
            if row.ranking.better(w, l) {
                out.push(pair(row, w, l));
            }
        }
    }
    out
}

/// The best response (the first of equal best) against one strictly worse response drawn at
/// random; `None` when every response ties.
pub fn best_vs_random<R: rand::Rng + ?Sized>(
    row: &ListwiseRow,
    rng: &mut R,
) -> Option<PreferencePair> {
    let order = row.ranking.order();
    let best = *order.first()?;
    let worse: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| row.ranking.better(best, i))
        .collect();
    if worse.is_empty() {
        return None;
    }
    let l = worse[rng.random_range(0..worse.len())];
    Some(pair(row, best, l))
}

/// Scores turned into ranks (0 = best, equal scores share a rank), for writing listwise files
/// that use `ranks`.
pub fn ranks_from_scores(scores: &[f64]) -> Vec<i64> {
    let ranking = Ranking::Scores(scores.to_vec());
    let order = ranking.order();
    let mut ranks = vec![0i64; scores.len()];
    let mut rank = 0i64;
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && scores[order[k - 1]] != scores[i] {
            rank += 1;
        }
        ranks[i] = rank;
    }
    ranks
}
