//! The one error type of this crate: every message names the loss, the parameter or the input
//! that is wrong, so a user can fix a config or a batch without a debugger.

use thiserror::Error;

/// Everything that can go wrong when configuring or evaluating a loss.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum LossError {
    /// A hyper-parameter is outside its valid range (or not finite).
    #[error("loss `{loss}`: {name} = {value} is invalid, expected {expected}")]
    InvalidParameter {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// The parameter's config key.
        name: &'static str,
        /// The offending value.
        value: f64,
        /// The valid range, in words.
        expected: &'static str,
    },
    /// The batch holds no example (or no prompt).
    #[error("loss `{loss}`: the batch is empty")]
    EmptyBatch {
        /// The loss's `loss_type` name.
        loss: &'static str,
    },
    /// Two inputs that must have the same shape do not.
    #[error("loss `{loss}`: input `{input}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// The input's field name.
        input: &'static str,
        /// The shape it should have.
        expected: Vec<usize>,
        /// The shape it has.
        found: Vec<usize>,
    },
    /// The loss needs reference-model log-probs and the inputs have none.
    #[error(
        "loss `{loss}` needs reference log-probs (`{input}`), but none were given; \
         compute them with the reference model or use a reference-free loss"
    )]
    MissingReference {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// The missing input's field name.
        input: &'static str,
    },
    /// A pairwise loss was given listwise inputs (or the other way round).
    #[error("loss `{loss}` takes {expected} inputs, it was called with {found} inputs")]
    WrongInputKind {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// The kind of inputs the loss takes.
        expected: InputKind,
        /// The kind of inputs it was given.
        found: InputKind,
    },
    /// The number of rankings differs from the number of prompts in the tensors.
    #[error("loss `{loss}`: {rankings} rankings for {prompts} prompts (one ranking per prompt)")]
    RankingCount {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// Number of `ranks` vectors given.
        rankings: usize,
        /// Number of prompts (rows) in the tensors.
        prompts: usize,
    },
    /// A prompt's ranks do not have one entry per response.
    #[error(
        "loss `{loss}`: prompt {prompt} has {ranks} ranks but the tensors hold {responses} \
         responses per prompt{hint}"
    )]
    RanksLength {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// Index of the prompt in the batch.
        prompt: usize,
        /// Number of ranks given for it.
        ranks: usize,
        /// Number of responses (columns) in the tensors.
        responses: usize,
        /// Extra explanation (may be empty).
        hint: &'static str,
    },
    /// A ranking with fewer than two responses, or whose responses are all tied, says nothing.
    #[error("loss `{loss}`: prompt {prompt} has no preference to learn from ({reason})")]
    NoPreference {
        /// The loss's `loss_type` name.
        loss: &'static str,
        /// Index of the prompt in the batch.
        prompt: usize,
        /// Why: too few responses, or all tied.
        reason: &'static str,
    },
}

/// The shape of data a loss consumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// One chosen and one rejected completion per prompt.
    Pairwise,
    /// A ranking of n responses per prompt.
    Listwise,
    /// One completion per row, labelled desirable or undesirable (KTO).
    Unpaired,
}

impl std::fmt::Display for InputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InputKind::Pairwise => "pairwise",
            InputKind::Listwise => "listwise",
            InputKind::Unpaired => "unpaired",
        })
    }
}
