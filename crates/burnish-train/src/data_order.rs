//! The order in which training examples are visited, derived from `(seed, epoch)` alone.
//!
//! Each epoch visits every example once, in the permutation [`epoch_order`]`(len, seed, epoch)`.
//! Because that permutation is a pure function of its arguments, a checkpoint only has to store
//! the [`DataPosition`] (epoch, index into that epoch's order) to resume on exactly the next
//! example, with no generator state. The permutation is a Fisher–Yates shuffle driven by
//! SplitMix64, written out here rather than taken from `rand`, whose `StdRng` stream is allowed
//! to change between versions: a checkpoint must resume identically after a dependency update.

use serde::{Deserialize, Serialize};

/// SplitMix64's output function: a bijective, well-mixed hash of a 64-bit word.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed for an independent stream (`stream` = epoch, step, worker, ...) derived from `seed`.
///
/// Use it to seed anything else that must be reproducible on resume, e.g. the backend's dropout
/// generator at the start of step `s` with `derive_seed(seed ^ DROPOUT, s)`.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// A small deterministic generator (SplitMix64) for shuffles that must never change.
#[derive(Debug, Clone)]
struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.state.wrapping_sub(0x9E37_79B9_7F4A_7C15))
    }

    /// A number in `0..n` by multiply-shift; the bias (at most n / 2^64) is negligible here.
    fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }
}

/// The permutation of `0..len` that epoch `epoch` of a run seeded with `seed` visits.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    let mut rng = SplitMix64 {
        state: derive_seed(seed, epoch),
    };
    for i in (1..len).rev() {
        let j = rng.below(i + 1);
        order.swap(i, j);
    }
    order
}

/// Where a run is in its data: the epoch and how many examples of its order were consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DataPosition {
    /// The current epoch, 0-based.
    pub epoch: u64,
    /// Examples of this epoch's order already consumed.
    pub index: usize,
}

/// Walks the training examples epoch after epoch in the seeded order, from any [`DataPosition`].
#[derive(Debug, Clone)]
pub struct DataCursor {
    len: usize,
    seed: u64,
    position: DataPosition,
    order: Vec<usize>,
}

impl DataCursor {
    /// A cursor over `len` examples shuffled with `seed`, starting at `position`.
    pub fn new(len: usize, seed: u64, position: DataPosition) -> Self {
        DataCursor {
            len,
            seed,
            position,
            order: epoch_order(len, seed, position.epoch),
        }
    }

    /// The position of the next example to be handed out (what a checkpoint stores).
    pub fn position(&self) -> DataPosition {
        self.position
    }

    /// Fractional epochs consumed, for logging.
    pub fn epoch_progress(&self) -> f64 {
        if self.len == 0 {
            return self.position.epoch as f64;
        }
        self.position.epoch as f64 + self.position.index as f64 / self.len as f64
    }

    /// Up to `n` example indices; a batch never spans two epochs, so the last batch of an epoch
    /// may be short. Returns an empty batch only when there are no examples.
    pub fn next_batch(&mut self, n: usize) -> Vec<usize> {
        if self.len == 0 || n == 0 {
            return Vec::new();
        }
        if self.position.index >= self.len {
            self.position = DataPosition {
                epoch: self.position.epoch + 1,
                index: 0,
            };
            self.order = epoch_order(self.len, self.seed, self.position.epoch);
        }
        let start = self.position.index;
        let end = (start + n).min(self.len);
        self.position.index = end;
        self.order[start..end].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_are_permutations_and_depend_on_seed_and_epoch() {
        let a = epoch_order(100, 42, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 42, 0));
        assert_ne!(a, epoch_order(100, 42, 1));
        assert_ne!(a, epoch_order(100, 43, 0));
        assert!(epoch_order(0, 1, 0).is_empty());
        assert_eq!(epoch_order(1, 1, 0), vec![0]);
    }

    #[test]
    fn order_is_frozen() {
        // Checkpoints depend on this exact sequence: changing it breaks resuming old runs.
        assert_eq!(epoch_order(10, 42, 0), vec![5, 1, 9, 6, 7, 2, 4, 0, 8, 3]);
        assert_eq!(derive_seed(0, 0), splitmix64(splitmix64(0)));
    }

    #[test]
    fn resuming_from_a_position_continues_the_same_stream() {
        let mut full = DataCursor::new(10, 7, DataPosition::default());
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(full.next_batch(4));
        }
        // batches: 4, 4, 2 per epoch
        assert_eq!(
            seen.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![4, 4, 2, 4, 4, 2, 4]
        );
        let mut replay = DataCursor::new(10, 7, DataPosition::default());
        replay.next_batch(4);
        replay.next_batch(4);
        replay.next_batch(2);
        replay.next_batch(4);
        let saved = replay.position();
        assert_eq!(saved, DataPosition { epoch: 1, index: 4 });
        let mut resumed = DataCursor::new(10, 7, saved);
        assert_eq!(resumed.next_batch(4), seen[4]);
        assert_eq!(resumed.next_batch(4), seen[5]);
        assert_eq!(resumed.next_batch(4), seen[6]);
        assert!((resumed.epoch_progress() - 2.4).abs() < 1e-12);
    }

    #[test]
    fn shuffle_is_roughly_uniform() {
        // Position 0 of 10 over 5,000 seeds: each value about 500 times.
        let mut counts = [0usize; 10];
        for seed in 0..5000 {
            counts[epoch_order(10, seed, 0)[0]] += 1;
        }
        assert!(
            counts.iter().all(|&c| (400..600).contains(&c)),
            "{counts:?}"
        );
    }
}
