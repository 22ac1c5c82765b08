//! Host-side layout of a batch of rankings: which responses each Plackett-Luce term normalises
//! over, which ordered pairs a ranking implies, and which slots are padding, turned into small
//! weight tensors so the losses themselves are a handful of tensor ops with no host sync.
//!
//! A ranking gives each response an integer rank, 0 = best; equal ranks are ties
//! (for responses A, B, C, D, "D > C > A = B" is `[2, 2, 1, 0]`).

use burn::tensor::{Bool, Tensor, TensorData, backend::Backend};
use burn::tensor::{DType, Device};

use crate::error::LossError;

/// Dense ranks from scores, higher score = better: the best score gets rank 0, equal scores
/// share a rank (`[0.1, 0.9, 0.1, 0.5]` -> `[2, 0, 2, 1]`). NaN scores rank last.
pub fn ranks_from_scores(scores: &[f64]) -> Vec<usize> {
    let mut distinct: Vec<f64> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
    distinct.sort_by(|a, b| b.total_cmp(a));
    distinct.dedup();
    scores
        .iter()
        .map(|s| {
            distinct
                .iter()
                .position(|d| d == s)
                .unwrap_or(distinct.len())
        })
        .collect()
}

/// A validated batch of rankings over `[n_prompts, max_responses]` tensors.
#[derive(Debug, Clone)]
pub(crate) struct RankLayout {
    n: usize,
    k: usize,
    ranks: Vec<Vec<usize>>,
}

impl RankLayout {
    /// Validates `ranks` against tensors of shape `[n, k]`.
    ///
    /// `ranks[p]` has one entry per real response of prompt p; shorter rankings mean the
    /// remaining columns are padding, but the longest ranking must fill all `k` columns.
    pub(crate) fn new(
        loss: &'static str,
        ranks: &[Vec<usize>],
        n: usize,
        k: usize,
    ) -> Result<Self, LossError> {
        if n == 0 {
            return Err(LossError::EmptyBatch { loss });
        }
        if ranks.len() != n {
            return Err(LossError::RankingCount {
                loss,
                rankings: ranks.len(),
                prompts: n,
            });
        }
        for (prompt, r) in ranks.iter().enumerate() {
            if r.len() > k {
                return Err(LossError::RanksLength {
                    loss,
                    prompt,
                    ranks: r.len(),
                    responses: k,
                    hint: "",
                });
            }
            if r.len() < 2 {
                return Err(LossError::NoPreference {
                    loss,
                    prompt,
                    reason: "fewer than 2 responses",
                });
            }
            if r.iter().all(|&x| x == r[0]) {
                return Err(LossError::NoPreference {
                    loss,
                    prompt,
                    reason: "all responses are tied",
                });
            }
        }
        let widest = ranks.iter().map(Vec::len).max().unwrap_or(0);
        if widest != k {
            let prompt = ranks.iter().position(|r| r.len() == widest).unwrap_or(0);
            return Err(LossError::RanksLength {
                loss,
                prompt,
                ranks: widest,
                responses: k,
                hint: " (shorter rankings mark padding, but the longest must fill every column)",
            });
        }
        Ok(Self {
            n,
            k,
            ranks: ranks.to_vec(),
        })
    }

    /// Whether slot `i` of prompt `p` holds a real response.
    fn valid(&self, p: usize, i: usize) -> bool {
        i < self.ranks[p].len()
    }

    /// Whether any prompt has padding slots.
    fn padded(&self) -> bool {
        self.ranks.iter().any(|r| r.len() < self.k)
    }

    /// Replaces padding slots by 0 (so padding of any value, even NaN, cannot leak); identity
    /// when nothing is padded.
    pub(crate) fn zero_padding<B: Backend>(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if !self.padded() {
            return x;
        }
        let mut padding = Vec::with_capacity(self.n * self.k);
        for p in 0..self.n {
            for i in 0..self.k {
                padding.push(!self.valid(p, i));
            }
        }
        let mask = Tensor::<B, 2, Bool>::from_data(
            TensorData::new(padding, [self.n, self.k]),
            &x.device(),
        );
        x.mask_fill(mask, 0.0)
    }

    /// Plackett-Luce terms: `(excluded [n, k, k], active [n, k])`. Row `(p, i)` of the
    /// normaliser keeps slot j (`excluded = false`) when j is a real response ranked no better
    /// than i (`rank_j >= rank_i`, ties included); a padding row keeps only itself, so no row is
    /// empty. `active[p, i] = 1 / n` when i is a real response outside the worst group (the worst
    /// group contributes nothing), else 0, so `sum(active * term)` is the mean over prompts of the
    /// sum over positions.
    pub(crate) fn plackett_luce_masks<B: Backend>(
        &self,
        device: &Device<B>,
        dtype: DType,
    ) -> (Tensor<B, 3, Bool>, Tensor<B, 2>) {
        let (n, k) = (self.n, self.k);
        let mut excluded = vec![true; n * k * k];
        let mut active = vec![0.0f64; n * k];
        for (p, r) in self.ranks.iter().enumerate() {
            let worst = r.iter().copied().max().unwrap_or(0);
            for (i, &ri) in r.iter().enumerate() {
                if ri != worst {
                    active[p * k + i] = 1.0 / n as f64;
                }
                for (j, &rj) in r.iter().enumerate() {
                    if rj >= ri {
                        excluded[(p * k + i) * k + j] = false;
                    }
                }
            }
            for i in r.len()..k {
                excluded[(p * k + i) * k + i] = false;
            }
        }
        (
            Tensor::from_data(TensorData::new(excluded, [n, k, k]), device),
            Tensor::from_data(TensorData::new(active, [n, k]), (device, dtype)),
        )
    }

    /// Ordered-pair weights `[n, k, k]`: `1 / (n * pairs_p)` at `(p, i, j)` when
    /// `rank_i < rank_j` (i strictly better), else 0. Summing `weights * f(i, j)` gives the mean
    /// over each prompt's pairs, then over prompts, each prompt weighted equally whatever its K.
    pub(crate) fn pair_weights<B: Backend>(
        &self,
        device: &Device<B>,
        dtype: DType,
    ) -> Tensor<B, 3> {
        let (n, k) = (self.n, self.k);
        let mut weights = vec![0.0f64; n * k * k];
        for (p, r) in self.ranks.iter().enumerate() {
            let pairs = r
                .iter()
                .map(|&ri| r.iter().filter(|&&rj| ri < rj).count())
                .sum::<usize>();
            let w = 1.0 / (n * pairs) as f64;
            for (i, &ri) in r.iter().enumerate() {
                for (j, &rj) in r.iter().enumerate() {
                    if ri < rj {
                        weights[(p * k + i) * k + j] = w;
                    }
                }
            }
        }
        Tensor::from_data(TensorData::new(weights, [n, k, k]), (device, dtype))
    }

    /// Weights `[n, k]` averaging over each prompt's best group then over prompts:
    /// `1 / (n * best_p)` where `rank = min rank of prompt p`.
    pub(crate) fn best_weights<B: Backend>(
        &self,
        device: &Device<B>,
        dtype: DType,
    ) -> Tensor<B, 2> {
        let (n, k) = (self.n, self.k);
        let mut weights = vec![0.0f64; n * k];
        for (p, r) in self.ranks.iter().enumerate() {
            let best = r.iter().copied().min().unwrap_or(0);
            let count = r.iter().filter(|&&x| x == best).count();
            for (i, &ri) in r.iter().enumerate() {
                if ri == best {
                    weights[p * k + i] = 1.0 / (n * count) as f64;
                }
            }
        }
        Tensor::from_data(TensorData::new(weights, [n, k]), (device, dtype))
    }

    /// The distinct rank values in the batch, ascending, and weights `[levels, n * k]` averaging
    /// over the responses (of every prompt) that have each rank.
    pub(crate) fn level_weights<B: Backend>(
        &self,
        device: &Device<B>,
        dtype: DType,
    ) -> (Vec<usize>, Tensor<B, 2>) {
        let (n, k) = (self.n, self.k);
        let mut levels: Vec<usize> = self.ranks.iter().flatten().copied().collect();
        levels.sort_unstable();
        levels.dedup();
        let mut weights = vec![0.0f64; levels.len() * n * k];
        for (l, &level) in levels.iter().enumerate() {
            let count = self.ranks.iter().flatten().filter(|&&x| x == level).count();
            for (p, r) in self.ranks.iter().enumerate() {
                for (i, &ri) in r.iter().enumerate() {
                    if ri == level {
                        weights[l * n * k + p * k + i] = 1.0 / count as f64;
                    }
                }
            }
        }
        let tensor = Tensor::from_data(
            TensorData::new(weights, [levels.len(), n * k]),
            (device, dtype),
        );
        (levels, tensor)
    }
}

#[cfg(test)]
mod tests {
    use super::ranks_from_scores;

    #[test]
    fn dense_ranks_with_ties() {
        assert_eq!(ranks_from_scores(&[0.1, 0.9, 0.1, 0.5]), vec![2, 0, 2, 1]);
        assert_eq!(ranks_from_scores(&[1.0, f64::NAN, 2.0]), vec![1, 2, 0]);
    }
}
