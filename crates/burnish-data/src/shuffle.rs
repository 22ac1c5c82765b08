//! A seeded shuffle buffer for streamed rows.
//!
//! A stream cannot be shuffled whole without holding it in memory, so rows pass through a buffer
//! of fixed capacity and leave it in a random order: the larger the buffer, the better the mix.
//! With the same seed, the same input order and the same capacity the output order is always
//! the same, which a resumed run needs.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// An iterator adaptor that yields its input's items in a seeded random order.
pub struct ShuffleBuffer<I: Iterator> {
    inner: I,
    buffer: Vec<I::Item>,
    capacity: usize,
    rng: StdRng,
}

impl<I: Iterator> ShuffleBuffer<I> {
    /// Shuffles `inner` through a buffer of `capacity` items (at least 1) with `seed`.
    pub fn new(inner: I, capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        ShuffleBuffer {
            inner,
            buffer: Vec::with_capacity(capacity),
            capacity,
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl<I: Iterator> Iterator for ShuffleBuffer<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        while self.buffer.len() < self.capacity {
            match self.inner.next() {
                Some(x) => self.buffer.push(x),
                None => break,
            }
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = self.rng.random_range(0..self.buffer.len());
        Some(self.buffer.swap_remove(i))
    }
}
