//! The rows of the data sets, in memory.
//!
//! Column names and shapes follow TRL: a prompt and its completions are either plain text
//! ("standard" rows) or lists of `{role, content}` messages ("conversational" rows, rendered
//! later with the tokenizer's chat template). A row is pairwise ([`PreferencePair`]), listwise
//! ([`ListwiseRow`]), unpaired with a desirable/undesirable label ([`UnpairedRow`], for KTO), or
//! a plain demonstration for supervised fine-tuning ([`PromptCompletion`]).

use serde::{Deserialize, Serialize};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The message's text.
    pub content: String,
}

impl Message {
    /// A message with this role and content.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Message {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A prompt or a completion: plain text, or a list of messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Standard row: text used as it is.
    Text(String),
    /// Conversational row: messages rendered with the chat template.
    Messages(Vec<Message>),
}

impl Content {
    /// True for a message list.
    pub fn is_messages(&self) -> bool {
        matches!(self, Content::Messages(_))
    }

    /// True when there is no text at all (an empty string, no messages, or only empty messages).
    pub fn is_empty(&self) -> bool {
        match self {
            Content::Text(t) => t.is_empty(),
            Content::Messages(m) => m.iter().all(|m| m.content.is_empty()),
        }
    }

    /// The text as one string: the text itself, or `role: content` lines (for display and hashing).
    pub fn to_display_text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Messages(m) => m
                .iter()
                .map(|m| format!("{}: {}", m.role, m.content))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Number of characters (all message contents together for a message list).
    pub fn char_len(&self) -> usize {
        match self {
            Content::Text(t) => t.chars().count(),
            Content::Messages(m) => m.iter().map(|m| m.content.chars().count()).sum(),
        }
    }
}

impl From<&str> for Content {
    fn from(s: &str) -> Self {
        Content::Text(s.to_owned())
    }
}

impl From<String> for Content {
    fn from(s: String) -> Self {
        Content::Text(s)
    }
}

impl From<Vec<Message>> for Content {
    fn from(m: Vec<Message>) -> Self {
        Content::Messages(m)
    }
}

/// One pairwise preference row: for `prompt`, `chosen` is preferred to `rejected`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreferencePair {
    /// Optional stable identifier; the train/eval split hashes it when present.
    pub id: Option<String>,
    /// The prompt x.
    pub prompt: Content,
    /// The preferred completion y_w.
    pub chosen: Content,
    /// The dispreferred completion y_l.
    pub rejected: Content,
    /// Optional preference strength (Bradley-Terry with margin).
    pub margin: Option<f32>,
    /// Cached reference log-prob of `chosen`, summed over its completion tokens.
    pub ref_chosen_logp: Option<f32>,
    /// Cached reference log-prob of `rejected`, summed over its completion tokens.
    pub ref_rejected_logp: Option<f32>,
}

impl PreferencePair {
    /// A pair with no id, margin or cached reference log-probs.
    pub fn new(
        prompt: impl Into<Content>,
        chosen: impl Into<Content>,
        rejected: impl Into<Content>,
    ) -> Self {
        PreferencePair {
            id: None,
            prompt: prompt.into(),
            chosen: chosen.into(),
            rejected: rejected.into(),
            margin: None,
            ref_chosen_logp: None,
            ref_rejected_logp: None,
        }
    }

    /// True when prompt, chosen and rejected are message lists.
    pub fn is_conversational(&self) -> bool {
        self.prompt.is_messages()
    }

    /// Checks the rules of DESIGN.md: completions not empty, chosen != rejected, one kind of content.
    ///
    /// Returns the reason as one line when the row must be rejected.
    pub fn validate(&self) -> Result<(), String> {
        let conv = self.prompt.is_messages();
        if self.chosen.is_messages() != conv {
            return Err("`chosen` and `prompt` mix plain text and message lists".into());
        }
        if self.rejected.is_messages() != conv {
            return Err("`rejected` and `prompt` mix plain text and message lists".into());
        }
        if self.chosen.is_empty() {
            return Err("`chosen` is empty".into());
        }
        if self.rejected.is_empty() {
            return Err("`rejected` is empty".into());
        }
        if self.chosen == self.rejected {
            return Err("`chosen` is identical to `rejected`".into());
        }
        finite("margin", self.margin)?;
        finite("ref_chosen_logp", self.ref_chosen_logp)?;
        finite("ref_rejected_logp", self.ref_rejected_logp)
    }
}

/// An optional number from the data must be finite: a NaN or an infinity would reach the loss
/// and stop (or silently spoil) training far from the row that caused it.
fn finite(column: &str, value: Option<f32>) -> Result<(), String> {
    match value {
        Some(v) if !v.is_finite() => Err(format!("`{column}` is {v}, not a finite number")),
        _ => Ok(()),
    }
}

/// How the responses of a listwise row are ordered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ranking {
    /// One rank per response, 0 = best; equal ranks are ties ("D > C > A = B").
    Ranks(Vec<i64>),
    /// One score per response, higher is better (ratings, Elo).
    Scores(Vec<f64>),
}

impl Ranking {
    /// Number of responses ranked.
    pub fn len(&self) -> usize {
        match self {
            Ranking::Ranks(r) => r.len(),
            Ranking::Scores(s) => s.len(),
        }
    }

    /// True when nothing is ranked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True when response `a` is strictly better than response `b` (ties are neither).
    pub fn better(&self, a: usize, b: usize) -> bool {
        match self {
            Ranking::Ranks(r) => r[a] < r[b],
            Ranking::Scores(s) => s[a] > s[b],
        }
    }

    /// Indices of the responses from best to worst; ties keep their input order.
    pub fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        match self {
            Ranking::Ranks(r) => idx.sort_by_key(|&i| r[i]),
            Ranking::Scores(s) => idx.sort_by(|&a, &b| s[b].total_cmp(&s[a])),
        }
        idx
    }
}

/// One listwise row: several responses to one prompt, ranked or scored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListwiseRow {
    /// Optional stable identifier.
    pub id: Option<String>,
    /// The prompt.
    pub prompt: Content,
    /// The responses, all of the prompt's kind.
    pub responses: Vec<Content>,
    /// Their ranks or scores, one per response.
    pub ranking: Ranking,
    /// Cached reference log-prob of each response, summed over its tokens (column `ref_logps`).
    pub ref_logps: Option<Vec<f32>>,
}

impl ListwiseRow {
    /// Checks lengths agree, at least two responses, none empty, scores finite, one kind of content.
    pub fn validate(&self) -> Result<(), String> {
        if self.responses.len() < 2 {
            return Err(format!(
                "{} response(s); a ranking needs at least 2",
                self.responses.len()
            ));
        }
        if self.ranking.len() != self.responses.len() {
            return Err(format!(
                "{} responses but {} ranks/scores",
                self.responses.len(),
                self.ranking.len()
            ));
        }
        if let Ranking::Scores(s) = &self.ranking
            && let Some(i) = s.iter().position(|x| !x.is_finite())
        {
            return Err(format!("score {i} is not a finite number"));
        }
        if let Some(r) = &self.ref_logps {
            if r.len() != self.responses.len() {
                return Err(format!(
                    "{} responses but {} reference log-probs",
                    self.responses.len(),
                    r.len()
                ));
            }
            for (i, &logp) in r.iter().enumerate() {
                finite(&format!("ref_logps[{i}]"), Some(logp))?;
            }
        }
        let conv = self.prompt.is_messages();
        for (i, r) in self.responses.iter().enumerate() {
            if r.is_messages() != conv {
                return Err(format!(
                    "response {i} and `prompt` mix plain text and message lists"
                ));
            }
            if r.is_empty() {
                return Err(format!("response {i} is empty"));
            }
        }
        Ok(())
    }
}

/// One demonstration for supervised fine-tuning: the loss covers the completion only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptCompletion {
    /// Optional stable identifier.
    pub id: Option<String>,
    /// The prompt.
    pub prompt: Content,
    /// The demonstrated completion.
    pub completion: Content,
}

impl PromptCompletion {
    /// A row with no id.
    pub fn new(prompt: impl Into<Content>, completion: impl Into<Content>) -> Self {
        PromptCompletion {
            id: None,
            prompt: prompt.into(),
            completion: completion.into(),
        }
    }
}

/// One unpaired preference row (KTO): a completion labelled desirable (`true`) or undesirable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnpairedRow {
    /// Optional stable identifier.
    pub id: Option<String>,
    /// The prompt.
    pub prompt: Content,
    /// The completion that is judged.
    pub completion: Content,
    /// True when the completion is desirable, false when it is undesirable.
    pub label: bool,
    /// Cached reference log-prob of the completion, summed over its tokens.
    pub ref_logp: Option<f32>,
    /// Cached reference log-prob of the mismatched completion KTO's KL estimate uses.
    pub ref_kl_logp: Option<f32>,
}

impl UnpairedRow {
    /// A row with no id and no cached reference log-probs.
    pub fn new(prompt: impl Into<Content>, completion: impl Into<Content>, label: bool) -> Self {
        UnpairedRow {
            id: None,
            prompt: prompt.into(),
            completion: completion.into(),
            label,
            ref_logp: None,
            ref_kl_logp: None,
        }
    }

    /// True when prompt and completion are message lists.
    pub fn is_conversational(&self) -> bool {
        self.prompt.is_messages()
    }

    /// Checks that the completion is not empty and prompt and completion are of one kind.
    pub fn validate(&self) -> Result<(), String> {
        if self.completion.is_messages() != self.prompt.is_messages() {
            return Err("`completion` and `prompt` mix plain text and message lists".into());
        }
        if self.completion.is_empty() {
            return Err("`completion` is empty".into());
        }
        finite("ref_logp", self.ref_logp)?;
        finite("ref_kl_logp", self.ref_kl_logp)
    }
}

/// A prompt alone, for on-policy training (PPO, RLOO, GRPO) where the policy writes the
/// completion itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptRow {
    /// Optional stable identifier.
    pub id: Option<String>,
    /// The prompt: text, or messages rendered by the chat template with the generation prompt.
    pub prompt: Content,
}

impl PromptRow {
    /// A row with no id.
    pub fn new(prompt: impl Into<Content>) -> Self {
        PromptRow {
            id: None,
            prompt: prompt.into(),
        }
    }
}
