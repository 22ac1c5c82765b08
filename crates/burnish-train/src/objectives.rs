//! The objectives burnish trains: preference optimisation (DPO and its family), supervised
//! fine-tuning, and Bradley-Terry reward models. Each turns a batch of tokenized examples into
//! a loss through the model and burnish-losses; the loop itself is in [`crate::trainer`].
//!
//! Chosen and rejected are scored in one forward pass (stacked on the batch axis). The
//! reference log-probs come from the batch when they were precomputed into the data
//! (`ref_chosen_logp` / `ref_rejected_logp`), otherwise from a frozen reference model run
//! alongside on the non-autodiff backend.

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Bool, ElementConversion, Int, Tensor, TensorData};
use burnish_data::{
    Collator, ListBatch, PackedPairBatch, Ranking, TokenizedList, TokenizedPair,
    TokenizedPromptCompletion,
};
use burnish_losses::{
    ListwiseInputs, PairwiseInputs, PreferenceLoss, RewardListInputs, RewardLoss, RewardPairInputs,
    ranks_from_scores,
};
use burnish_model::{CausalLm, ModelAutodiffBackend, ModelBackend, ScoredTokens, split_pair};

use crate::batch::{TokenTensors, vector};
use crate::progress::Progress;
use crate::trainer::{BatchLoss, Objective, TrainError};

/// An objective over a train and an eval list of rows, whose loss is a function of a batch of
/// rows; it is an [`Objective`] through the blanket impl below.
pub trait BatchObjective<B: AutodiffBackend> {
    /// One example.
    type Row: Clone;
    /// The training and held-out rows.
    fn splits(&self) -> (&[Self::Row], &[Self::Row]);
    /// Loss of a batch of rows.
    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        rows: &[Self::Row],
    ) -> Result<BatchLoss<B>, TrainError>;
}

impl<B: AutodiffBackend, T: BatchObjective<B>> Objective<B> for T {
    fn train_len(&self) -> usize {
        self.splits().0.len()
    }
    fn eval_len(&self) -> usize {
        self.splits().1.len()
    }
    fn train_loss(
        &self,
        model: &CausalLm<B>,
        indices: &[usize],
    ) -> Result<BatchLoss<B>, TrainError> {
        let rows: Vec<T::Row> = indices
            .iter()
            .map(|&i| self.splits().0[i].clone())
            .collect();
        self.batch_loss(model, &rows)
    }
    fn eval_loss(
        &self,
        model: &CausalLm<B>,
        indices: &[usize],
    ) -> Result<BatchLoss<B>, TrainError> {
        let rows: Vec<T::Row> = indices
            .iter()
            .map(|&i| self.splits().1[i].clone())
            .collect();
        self.batch_loss(model, &rows)
    }
}

/// Summed completion log-probs of chosen and rejected (`[batch]` each) under `model`, in one pass.
pub fn pair_logps<B: ModelBackend>(
    model: &CausalLm<B>,
    tokens: &TokenTensors<B>,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let scored = model.completion_logps(
        tokens.input_ids.clone(),
        tokens.attention_mask.clone(),
        tokens.completion_mask.clone(),
    );
    split_pair(scored.logps)
}

/// Summed completion log-probs of chosen and rejected (`[batch]` each) under `model`, from pairs
/// laid out with shared prompts in packed rows ([`Collator::pack_pairs`]): each prompt runs
/// once for both completions, and short pairs share a row. Equal to [`pair_logps`] on the
/// padded batch, with fewer positions computed.
pub fn packed_pair_logps<B: ModelBackend>(
    model: &CausalLm<B>,
    batch: &PackedPairBatch,
    device: &B::Device,
) -> (Tensor<B, 1>, Tensor<B, 1>) {
    let (rows, seq) = (batch.rows, batch.seq_len);
    let int = |v: &[i64]| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(v.to_vec(), [rows, seq]), device)
    };
    let allowed = Tensor::<B, 4, Bool>::from_data(
        TensorData::new(batch.attends.clone(), [rows, 1, seq, seq]),
        device,
    );
    let mut scored = ScoredTokens::default();
    for t in &batch.scored {
        scored.push(t.predictor, i64::from(t.target), t.sequence);
    }
    let hidden = model.hidden_at(int(&batch.input_ids), int(&batch.position_ids), allowed);
    split_pair(model.sequence_logps(hidden, &scored, 2 * batch.batch).logps)
}

/// Pairs per forward pass of the reference: inference keeps no graph, so it takes larger
/// batches than training, which pack into fuller rows.
pub fn reference_batch_size(train_batch_size: usize) -> usize {
    (4 * train_batch_size).max(16)
}

/// Fills `ref_chosen_logp` / `ref_rejected_logp` of every pair with the reference model's
/// summed completion log-probs, `batch_size` pairs per forward pass (prompts shared, rows
/// packed), reporting the pairs done to `progress` when given.
pub fn precompute_reference<B: ModelBackend>(
    reference: &CausalLm<B>,
    pairs: &mut [TokenizedPair],
    collator: &Collator,
    batch_size: usize,
    device: &B::Device,
    mut progress: Option<&mut Progress>,
) {
    let mut done = 0;
    for chunk in pairs.chunks_mut(batch_size.max(1)) {
        let batch = collator.pack_pairs(chunk);
        let (chosen, rejected) = packed_pair_logps(reference, &batch, device);
        let host = |t: Tensor<B, 1>| {
            t.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .expect("f32")
        };
        for ((pair, c), r) in chunk.iter_mut().zip(host(chosen)).zip(host(rejected)) {
            pair.ref_chosen_logp = Some(c);
            pair.ref_rejected_logp = Some(r);
        }
        done += chunk.len() as u64;
        if let Some(progress) = progress.as_mut() {
            progress.advance(done, "reference log-probs (pairs)");
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
}

/// DPO and every pairwise preference loss of burnish-losses.
pub struct PreferenceObjective<B: AutodiffBackend> {
    /// Training pairs.
    pub train: Vec<TokenizedPair>,
    /// Held-out pairs.
    pub eval: Vec<TokenizedPair>,
    /// Padding policy.
    pub collator: Collator,
    /// The loss, chosen by name in the config.
    pub loss: PreferenceLoss,
    /// The frozen reference, when the pairs carry no precomputed reference log-probs.
    pub reference: Option<CausalLm<B::InnerBackend>>,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for PreferenceObjective<B> {
    type Row = TokenizedPair;

    fn splits(&self) -> (&[TokenizedPair], &[TokenizedPair]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        pairs: &[TokenizedPair],
    ) -> Result<BatchLoss<B>, TrainError> {
        let batch = self.collator.pack_pairs(pairs);
        let (chosen, rejected) = packed_pair_logps(model, &batch, &self.device);
        let lengths: Vec<f32> = batch.completion_lengths.iter().map(|&n| n as f32).collect();
        let (chosen_lengths, rejected_lengths) = split_pair(vector::<B>(&lengths, &self.device));
        let mut inputs = PairwiseInputs::new(chosen, rejected, chosen_lengths, rejected_lengths);
        if self.loss.needs_reference() {
            let (ref_chosen, ref_rejected) = match (
                &batch.ref_chosen_logps,
                &batch.ref_rejected_logps,
                &self.reference,
            ) {
                (Some(c), Some(r), _) => {
                    (vector::<B>(c, &self.device), vector::<B>(r, &self.device))
                }
                (_, _, Some(reference)) => {
                    let (c, r) = packed_pair_logps(reference, &batch, &self.device);
                    (Tensor::from_inner(c), Tensor::from_inner(r))
                }
                _ => {
                    return Err(TrainError::Other(format!(
                        "loss `{}` needs reference log-probs: give a reference model or precompute them (`burnish precompute-ref`)",
                        self.loss.name()
                    )));
                }
            };
            inputs = inputs.with_reference(ref_chosen, ref_rejected);
        }
        let output = self.loss.pairwise(&inputs)?;
        Ok(BatchLoss {
            metrics: output.metrics_f64(),
            loss: output.loss,
            tokens: batch.real_tokens,
        })
    }
}

/// Supervised fine-tuning: token-mean negative log-likelihood of the completions.
pub struct SftObjective<B: AutodiffBackend> {
    /// Training rows.
    pub train: Vec<TokenizedPromptCompletion>,
    /// Held-out rows.
    pub eval: Vec<TokenizedPromptCompletion>,
    /// Padding policy.
    pub collator: Collator,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for SftObjective<B> {
    type Row = TokenizedPromptCompletion;

    fn splits(&self) -> (&[TokenizedPromptCompletion], &[TokenizedPromptCompletion]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        rows: &[TokenizedPromptCompletion],
    ) -> Result<BatchLoss<B>, TrainError> {
        let batch = self.collator.collate_prompt_completions(rows);
        let tokens = TokenTensors::<B>::from_sequences(&batch, &self.device);
        let scored = model.completion_logps(
            tokens.input_ids,
            tokens.attention_mask,
            tokens.completion_mask,
        );
        let count = scored.tokens.sum().clamp_min(1.0);
        let loss = scored.logps.sum().neg() / count;
        let nll: f64 = loss.clone().into_scalar().elem();
        let metrics = vec![("nll".to_string(), nll), ("ppl".to_string(), f64::exp(nll))];
        Ok(BatchLoss {
            loss,
            metrics,
            tokens: tokens.real_tokens,
        })
    }
}

/// A Bradley-Terry reward model on pairs (with optional per-pair margins); the model needs a
/// reward head ([`CausalLm::with_reward_head`]).
pub struct RewardObjective<B: AutodiffBackend> {
    /// Training pairs.
    pub train: Vec<TokenizedPair>,
    /// Held-out pairs.
    pub eval: Vec<TokenizedPair>,
    /// Padding policy.
    pub collator: Collator,
    /// The reward loss.
    pub loss: RewardLoss,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for RewardObjective<B> {
    type Row = TokenizedPair;

    fn splits(&self) -> (&[TokenizedPair], &[TokenizedPair]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        pairs: &[TokenizedPair],
    ) -> Result<BatchLoss<B>, TrainError> {
        let batch = self.collator.collate_pairs(pairs);
        let tokens = TokenTensors::<B>::from_pairs(&batch, &self.device);
        let (chosen, rejected) = split_pair(model.reward(tokens.input_ids, tokens.attention_mask));
        let mut inputs = RewardPairInputs::new(chosen, rejected);
        if let Some(margins) = &batch.margins {
            inputs = inputs.with_margin(vector::<B>(margins, &self.device));
        }
        let output = self.loss.pairwise(&inputs)?;
        Ok(BatchLoss {
            metrics: output.metrics_f64(),
            loss: output.loss,
            tokens: tokens.real_tokens,
        })
    }
}

/// Ranks (0 = best, ties equal) of a ranking given as ranks or as scores.
fn ranks_of(ranking: &Ranking) -> Result<Vec<usize>, TrainError> {
    match ranking {
        Ranking::Ranks(ranks) => ranks
            .iter()
            .map(|&r| {
                usize::try_from(r).map_err(|_| TrainError::Other(format!("negative rank {r}")))
            })
            .collect(),
        Ranking::Scores(scores) => Ok(ranks_from_scores(scores)),
    }
}

/// Where each `[prompt, slot]` of a `[prompts, width]` layout of a list batch's responses is in
/// the flat order of its sequences; padding slots repeat the prompt's first response and are
/// masked by the listwise losses (each ranking is only as long as its prompt's responses).
struct ListLayout<B: burn::tensor::backend::Backend> {
    index: Tensor<B, 1, Int>,
    lengths: Vec<f32>,
    prompts: usize,
    width: usize,
}

impl<B: burn::tensor::backend::Backend> ListLayout<B> {
    fn new(batch: &ListBatch, device: &B::Device) -> Self {
        let prompts = batch.rankings.len();
        let width = (0..prompts)
            .map(|p| batch.offsets[p + 1] - batch.offsets[p])
            .max()
            .unwrap_or(0);
        let mut index = Vec::with_capacity(prompts * width);
        let mut lengths = Vec::with_capacity(prompts * width);
        for p in 0..prompts {
            let (start, end) = (batch.offsets[p], batch.offsets[p + 1]);
            for k in 0..width {
                let i = if start + k < end { start + k } else { start };
                index.push(i as i64);
                lengths.push(batch.sequences.completion_lengths[i] as f32);
            }
        }
        let index = Tensor::from_data(TensorData::new(index, [prompts * width]), device);
        ListLayout {
            index,
            lengths,
            prompts,
            width,
        }
    }

    /// A `[responses]` vector in the batch's flat order as `[prompts, width]`.
    fn apply(&self, flat: Tensor<B, 1>) -> Tensor<B, 2> {
        flat.select(0, self.index.clone())
            .reshape([self.prompts, self.width])
    }

    /// Completion token counts as `[prompts, width]`.
    fn lengths(&self, device: &B::Device) -> Tensor<B, 2> {
        vector::<B>(&self.lengths, device).reshape([self.prompts, self.width])
    }
}

/// The rankings of a list batch as ranks (0 = best).
fn batch_ranks(batch: &ListBatch) -> Result<Vec<Vec<usize>>, TrainError> {
    batch.rankings.iter().map(ranks_of).collect()
}

/// Fills `ref_logps` of every listwise row with the reference model's summed completion
/// log-probs of each response, `batch_size` rows per forward pass (all their responses together).
pub fn precompute_list_reference<B: ModelBackend>(
    reference: &CausalLm<B>,
    rows: &mut [TokenizedList],
    collator: &Collator,
    batch_size: usize,
    device: &B::Device,
    mut progress: Option<&mut Progress>,
) -> Result<(), TrainError> {
    let mut done = 0;
    for chunk in rows.chunks_mut(batch_size.max(1)) {
        let batch = collator.collate_lists(chunk);
        let tokens = TokenTensors::<B>::from_sequences(&batch.sequences, device);
        let scored = reference.completion_logps(
            tokens.input_ids,
            tokens.attention_mask,
            tokens.completion_mask,
        );
        let logps = scored
            .logps
            .into_data()
            .convert::<f32>()
            .into_vec::<f32>()
            .map_err(|e| TrainError::Other(format!("reading log-probs back: {e:?}")))?;
        for (p, row) in chunk.iter_mut().enumerate() {
            row.ref_logps = Some(logps[batch.offsets[p]..batch.offsets[p + 1]].to_vec());
        }
        done += chunk.len() as u64;
        if let Some(progress) = progress.as_mut() {
            progress.advance(done, "reference log-probs (rankings)");
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    Ok(())
}

/// Listwise preference optimisation (PRO, Plackett-Luce DPO) on prompts with several ranked
/// responses. All responses of a batch run in one forward pass; their summed log-probs are laid
/// out as `[prompts, max_responses]` for the loss (the loss masks each prompt's padding). The
/// reference log-probs come from the rows when precomputed ([`precompute_list_reference`]),
/// else from a reference model run alongside.
pub struct ListwiseObjective<B: AutodiffBackend> {
    /// Training rows.
    pub train: Vec<TokenizedList>,
    /// Held-out rows.
    pub eval: Vec<TokenizedList>,
    /// Padding policy.
    pub collator: Collator,
    /// A listwise loss (`pro`, `plackett_luce`).
    pub loss: PreferenceLoss,
    /// The frozen reference, for losses that need one and rows without precomputed log-probs.
    pub reference: Option<CausalLm<B::InnerBackend>>,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for ListwiseObjective<B> {
    type Row = TokenizedList;

    fn splits(&self) -> (&[TokenizedList], &[TokenizedList]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        rows: &[TokenizedList],
    ) -> Result<BatchLoss<B>, TrainError> {
        let batch = self.collator.collate_lists(rows);
        let tokens = TokenTensors::<B>::from_sequences(&batch.sequences, &self.device);
        let layout = ListLayout::<B>::new(&batch, &self.device);
        let policy = model.completion_logps(
            tokens.input_ids.clone(),
            tokens.attention_mask.clone(),
            tokens.completion_mask.clone(),
        );
        let mut inputs = ListwiseInputs::new(
            layout.apply(policy.logps),
            layout.lengths(&self.device),
            batch_ranks(&batch)?,
        );
        if self.loss.needs_reference() {
            let reference = match (&batch.ref_logps, &self.reference) {
                (Some(cached), _) => vector::<B>(cached, &self.device),
                (None, Some(reference)) => {
                    let inner = TokenTensors::<B::InnerBackend>::from_sequences(
                        &batch.sequences,
                        &self.device,
                    );
                    let scored = reference.completion_logps(
                        inner.input_ids,
                        inner.attention_mask,
                        inner.completion_mask,
                    );
                    Tensor::from_inner(scored.logps)
                }
                (None, None) => {
                    return Err(TrainError::Other(format!(
                        "loss `{}` needs reference log-probs: give a reference model or precompute them (`burnish precompute-ref`)",
                        self.loss.name()
                    )));
                }
            };
            inputs = inputs.with_reference(layout.apply(reference));
        }
        let output = self.loss.listwise(&inputs)?;
        Ok(BatchLoss {
            metrics: output.metrics_f64(),
            loss: output.loss,
            tokens: tokens.real_tokens,
        })
    }
}

/// A K-wise Bradley-Terry reward model on rankings (InstructGPT: every ordered pair of a
/// ranking, ties giving none), all responses of a batch in one forward pass; the model needs a
/// reward head. `accuracy` is the fraction of ordered pairs ranked correctly.
pub struct RewardListObjective<B: AutodiffBackend> {
    /// Training rankings.
    pub train: Vec<TokenizedList>,
    /// Held-out rankings.
    pub eval: Vec<TokenizedList>,
    /// Padding policy.
    pub collator: Collator,
    /// The reward loss.
    pub loss: RewardLoss,
    /// Where batches go.
    pub device: B::Device,
}

impl<B: ModelAutodiffBackend> BatchObjective<B> for RewardListObjective<B> {
    type Row = TokenizedList;

    fn splits(&self) -> (&[TokenizedList], &[TokenizedList]) {
        (&self.train, &self.eval)
    }

    fn batch_loss(
        &self,
        model: &CausalLm<B>,
        rows: &[TokenizedList],
    ) -> Result<BatchLoss<B>, TrainError> {
        let batch = self.collator.collate_lists(rows);
        let tokens = TokenTensors::<B>::from_sequences(&batch.sequences, &self.device);
        let layout = ListLayout::<B>::new(&batch, &self.device);
        let rewards = model.reward(tokens.input_ids, tokens.attention_mask);
        let inputs = RewardListInputs::new(layout.apply(rewards), batch_ranks(&batch)?);
        let output = self.loss.listwise(&inputs)?;
        Ok(BatchLoss {
            metrics: output.metrics_f64(),
            loss: output.loss,
            tokens: tokens.real_tokens,
        })
    }
}
