//! Collated batches (plain vectors from burnish-data) as tensors on a device.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use burnish_data::{PairBatch, SequenceBatch};

/// Token ids and masks of `rows` sequences of `seq_len` tokens, on a device.
#[derive(Debug, Clone)]
pub struct TokenTensors<B: Backend> {
    /// `[rows, seq_len]` token ids.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[rows, seq_len]`, 1 at real tokens.
    pub attention_mask: Tensor<B, 2, Int>,
    /// `[rows, seq_len]`, 1 at completion tokens.
    pub completion_mask: Tensor<B, 2, Int>,
    /// `[rows]` completion token counts (|y|).
    pub completion_lengths: Tensor<B, 1>,
    /// Real (non-padding) tokens in the batch.
    pub real_tokens: usize,
}

fn mask(values: &[bool]) -> Vec<i64> {
    values.iter().map(|&b| i64::from(b)).collect()
}

impl<B: Backend> TokenTensors<B> {
    fn build(
        ids: &[i64],
        attention: &[bool],
        completion: &[bool],
        lengths: &[usize],
        rows: usize,
        seq_len: usize,
        device: &B::Device,
    ) -> Self {
        let shape = [rows, seq_len];
        let int = |v: Vec<i64>| Tensor::<B, 2, Int>::from_data(TensorData::new(v, shape), device);
        let lengths: Vec<f32> = lengths.iter().map(|&n| n as f32).collect();
        Self {
            input_ids: int(ids.to_vec()),
            attention_mask: int(mask(attention)),
            completion_mask: int(mask(completion)),
            completion_lengths: Tensor::from_data(TensorData::new(lengths, [rows]), device),
            real_tokens: attention.iter().filter(|&&b| b).count(),
        }
    }

    /// A pair batch: chosen rows first, then rejected (`2 * batch` rows).
    pub fn from_pairs(batch: &PairBatch, device: &B::Device) -> Self {
        Self::build(
            &batch.input_ids,
            &batch.attention_mask,
            &batch.completion_mask,
            &batch.completion_lengths,
            2 * batch.batch,
            batch.seq_len,
            device,
        )
    }

    /// A batch of prompt + completion sequences.
    pub fn from_sequences(batch: &SequenceBatch, device: &B::Device) -> Self {
        Self::build(
            &batch.input_ids,
            &batch.attention_mask,
            &batch.completion_mask,
            &batch.completion_lengths,
            batch.rows,
            batch.seq_len,
            device,
        )
    }
}

/// A host vector as a `[n]` tensor.
pub fn vector<B: Backend>(values: &[f32], device: &B::Device) -> Tensor<B, 1> {
    Tensor::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
}
