//! Advantages of the sampled tokens, on the host (responses are short and a rollout batch is
//! small next to the forward passes): GAE with a value head, whitening over real tokens only,
//! and the critic-free sequence-level baselines RLOO and GRPO.
//!
//! Rows are ragged: each response keeps its own length, so padding never enters a sum, a mean
//! or a variance.

/// Generalised advantage estimation of one response: per-token rewards and values, discount
/// `gamma`, trace decay `lam`. Returns `(advantages, returns)` with `returns = advantages +
/// values`; the value after the last token is 0 (the episode ends there).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lam: f32) -> (Vec<f32>, Vec<f32>) {
    let n = rewards.len();
    let mut advantages = vec![0.0f32; n];
    let mut last = 0.0f32;
    for t in (0..n).rev() {
        let next_value = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_value - values[t];
        last = delta + gamma * lam * last;
        advantages[t] = last;
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    (advantages, returns)
}

/// Mean and unbiased variance over every element of ragged rows (torch's `var`, as TRL's
/// `masked_var`); the variance of a single element is 0.
pub fn mean_var(rows: &[Vec<f32>]) -> (f64, f64) {
    let n: usize = rows.iter().map(Vec::len).sum();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = rows.iter().flatten().map(|&x| x as f64).sum::<f64>() / n as f64;
    if n == 1 {
        return (mean, 0.0);
    }
    let ss: f64 = rows
        .iter()
        .flatten()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum();
    (mean, ss / (n - 1) as f64)
}

/// Whitens ragged rows in place: `(x - mean) / sqrt(var + 1e-8)`, mean added back unless
/// `shift_mean` (TRL's `masked_whiten`); statistics over real elements only.
pub fn whiten(rows: &mut [Vec<f32>], shift_mean: bool) {
    let (mean, var) = mean_var(rows);
    let scale = 1.0 / (var + 1e-8).sqrt();
    for x in rows.iter_mut().flatten() {
        let w = (*x as f64 - mean) * scale;
        *x = if shift_mean { w } else { w + mean } as f32;
    }
}

/// REINFORCE leave-one-out (Ahmadian et al. 2024): with `k` samples per prompt (consecutive in
/// `rewards`), each sample's baseline is the mean reward of the other `k - 1`.
pub fn rloo(rewards: &[f32], k: usize) -> Vec<f32> {
    rewards
        .chunks(k)
        .flat_map(|group| {
            let sum: f32 = group.iter().sum();
            let others = (group.len() - 1).max(1) as f32;
            group.iter().map(move |&r| r - (sum - r) / others)
        })
        .collect()
}

/// GRPO's group-normalised advantage (Shao et al. 2024): `(r - mean) / (std + 1e-4)` within each
/// prompt's `k` samples (unbiased std, as torch's).
pub fn grpo(rewards: &[f32], k: usize) -> Vec<f32> {
    rewards
        .chunks(k)
        .flat_map(|group| {
            let n = group.len() as f32;
            let mean = group.iter().sum::<f32>() / n;
            let var = if group.len() > 1 {
                group.iter().map(|r| (r - mean).powi(2)).sum::<f32>() / (n - 1.0)
            } else {
                0.0
            };
            let std = var.sqrt();
            group.iter().map(move |&r| (r - mean) / (std + 1e-4))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worked by hand: rewards [0, 0, 1], values [0.5, 0.4, 0.3], gamma 1, lam 0.5.
    /// deltas: t2 = 1 - 0.3 = 0.7; t1 = 0 + 0.3 - 0.4 = -0.1; t0 = 0 + 0.4 - 0.5 = -0.1.
    /// A2 = 0.7; A1 = -0.1 + 0.5 * 0.7 = 0.25; A0 = -0.1 + 0.5 * 0.25 = 0.025.
    #[test]
    fn gae_matches_a_hand_worked_example() {
        let (adv, ret) = gae(&[0.0, 0.0, 1.0], &[0.5, 0.4, 0.3], 1.0, 0.5);
        let want = [0.025, 0.25, 0.7];
        for (a, w) in adv.iter().zip(want) {
            assert!((a - w).abs() < 1e-6, "{adv:?}");
        }
        let want_ret = [0.525, 0.65, 1.0];
        for (r, w) in ret.iter().zip(want_ret) {
            assert!((r - w).abs() < 1e-6, "{ret:?}");
        }
        // gamma discounts the next value: one token with gamma 0.5, lam 1.
        let (adv, _) = gae(&[0.0, 2.0], &[1.0, 1.0], 0.5, 1.0);
        // delta1 = 2 - 1 = 1; delta0 = 0 + 0.5 - 1 = -0.5; A0 = -0.5 + 0.5 * 1 = 0.
        assert!((adv[0] - 0.0).abs() < 1e-6 && (adv[1] - 1.0).abs() < 1e-6);
    }

    /// Ragged rows whiten as if the padding were not there: the same values padded with
    /// anything give the same result as the flat list.
    #[test]
    fn whitening_ignores_padding() {
        let mut ragged = vec![vec![1.0, 2.0, 3.0], vec![10.0]];
        whiten(&mut ragged, true);
        let mut flat = vec![vec![1.0, 2.0, 3.0, 10.0]];
        whiten(&mut flat, true);
        let ragged_flat: Vec<f32> = ragged.concat();
        assert_eq!(ragged_flat, flat[0]);
        let (mean, var) = mean_var(&ragged);
        assert!(
            mean.abs() < 1e-6 && (var - 1.0).abs() < 1e-5,
            "{mean} {var}"
        );
        // Without the shift the mean stays.
        let mut kept = vec![vec![1.0, 3.0]];
        whiten(&mut kept, false);
        assert!((mean_var(&kept).0 - 2.0).abs() < 1e-6);
    }

    #[test]
    fn rloo_and_grpo_baselines() {
        let r = [1.0, 2.0, 3.0, 5.0, 5.0, 5.0];
        let a = rloo(&r, 3);
        // 1 - (2 + 3) / 2 = -1.5; 2 - 2 = 0; 3 - 1.5 = 1.5; a constant group gives 0.
        assert_eq!(a, vec![-1.5, 0.0, 1.5, 0.0, 0.0, 0.0]);
        let g = grpo(&r, 3);
        // mean 2, unbiased std 1.
        assert!((g[0] + 1.0 / 1.0001).abs() < 1e-5 && g[1].abs() < 1e-6);
        assert!(g[3..].iter().all(|x| *x == 0.0));
    }
}
