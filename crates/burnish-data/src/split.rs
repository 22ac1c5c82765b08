//! A train/eval split by a hash of each row.
//!
//! Whether a row goes to evaluation depends only on the row itself (its `id` when it has one,
//! otherwise its text) and a salt, never on its position: the split is the same across runs,
//! machines, file orderings and shuffles. The hash is FNV-1a followed by a SplitMix64 finaliser,
//! both fixed here, because the standard library's hasher may change between Rust versions.

use crate::row::{Content, ListwiseRow, PreferencePair, PromptCompletion, PromptRow, UnpairedRow};

/// Which subset a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Subset {
    /// Used for training.
    Train,
    /// Held out for evaluation.
    Eval,
}

/// A row that can be hashed for the split.
pub trait SplitKey {
    /// Feeds the row's identity into the hasher: its id if present, else all its text.
    fn split_key(&self, h: &mut StableHasher);
}

/// FNV-1a 64, stable across platforms and Rust versions.
#[derive(Debug, Clone)]
pub struct StableHasher(u64);

impl Default for StableHasher {
    fn default() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
}

impl StableHasher {
    /// Feeds bytes.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    /// Feeds a string with a terminator, so that ("ab","c") and ("a","bc") differ.
    pub fn write_str(&mut self, s: &str) {
        self.write(s.as_bytes());
        self.write(&[0xff]);
    }

    /// The well-mixed 64-bit hash.
    pub fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn hash_content(c: &Content, h: &mut StableHasher) {
    match c {
        Content::Text(t) => {
            h.write(b"t");
            h.write_str(t);
        }
        Content::Messages(ms) => {
            h.write(b"m");
            for m in ms {
                h.write_str(&m.role);
                h.write_str(&m.content);
            }
        }
    }
}

impl SplitKey for PreferencePair {
    fn split_key(&self, h: &mut StableHasher) {
        match &self.id {
            Some(id) => h.write_str(id),
            None => {
                hash_content(&self.prompt, h);
                hash_content(&self.chosen, h);
                hash_content(&self.rejected, h);
            }
        }
    }
}

impl SplitKey for ListwiseRow {
    fn split_key(&self, h: &mut StableHasher) {
        match &self.id {
            Some(id) => h.write_str(id),
            None => {
                hash_content(&self.prompt, h);
                self.responses.iter().for_each(|r| hash_content(r, h));
            }
        }
    }
}

impl SplitKey for UnpairedRow {
    fn split_key(&self, h: &mut StableHasher) {
        match &self.id {
            Some(id) => h.write_str(id),
            None => {
                hash_content(&self.prompt, h);
                hash_content(&self.completion, h);
            }
        }
    }
}

impl SplitKey for PromptCompletion {
    fn split_key(&self, h: &mut StableHasher) {
        match &self.id {
            Some(id) => h.write_str(id),
            None => {
                hash_content(&self.prompt, h);
                hash_content(&self.completion, h);
            }
        }
    }
}

impl SplitKey for PromptRow {
    fn split_key(&self, h: &mut StableHasher) {
        match &self.id {
            Some(id) => h.write_str(id),
            None => hash_content(&self.prompt, h),
        }
    }
}

/// Assigns rows to train or eval by hash: a fraction `eval_fraction` of rows (in expectation) is
/// held out; `salt` picks a different, equally stable split.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Split {
    /// Expected fraction of rows held out, in [0, 1].
    pub eval_fraction: f64,
    /// Changes which rows are held out.
    pub salt: u64,
}

impl Split {
    /// A split holding out `eval_fraction` of the rows, salt 0.
    pub fn new(eval_fraction: f64) -> Self {
        Split {
            eval_fraction,
            salt: 0,
        }
    }

    /// The row's stable hash under this split's salt.
    pub fn hash<R: SplitKey + ?Sized>(&self, row: &R) -> u64 {
        let mut h = StableHasher::default();
        h.write(&self.salt.to_le_bytes());
        row.split_key(&mut h);
        h.finish()
    }

    /// The subset the row belongs to.
    pub fn subset<R: SplitKey + ?Sized>(&self, row: &R) -> Subset {
        // The top 53 bits as a uniform number in [0, 1).
        let u = (self.hash(row) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.eval_fraction {
            Subset::Eval
        } else {
            Subset::Train
        }
    }

    /// True when the row is held out for evaluation.
    pub fn is_eval<R: SplitKey + ?Sized>(&self, row: &R) -> bool {
        self.subset(row) == Subset::Eval
    }
}
