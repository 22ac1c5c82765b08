//! What every loss returns: the scalar loss (still attached to the autodiff graph) and its
//! metrics (detached), named as TRL names them.

use burn::tensor::{Tensor, backend::Backend};

/// Metric names shared with TRL, so dashboards built for TRL logs read burnish logs unchanged.
pub mod names {
    /// Mean implicit reward of the chosen completions.
    pub const REWARDS_CHOSEN: &str = "rewards/chosen";
    /// Mean implicit reward of the rejected completions.
    pub const REWARDS_REJECTED: &str = "rewards/rejected";
    /// Fraction of pairs (or ordered pairs of a ranking) whose better response has the larger reward.
    pub const REWARDS_ACCURACIES: &str = "rewards/accuracies";
    /// Mean of reward(better) - reward(worse).
    pub const REWARDS_MARGINS: &str = "rewards/margins";
    /// Mean summed policy log-prob of the chosen completions.
    pub const LOGPS_CHOSEN: &str = "logps/chosen";
    /// Mean summed policy log-prob of the rejected completions.
    pub const LOGPS_REJECTED: &str = "logps/rejected";
    /// Reward model: fraction of pairs ranked correctly.
    pub const ACCURACY: &str = "accuracy";
    /// Reward model: mean of r(better) - r(worse).
    pub const MARGIN: &str = "margin";

    /// Listwise: mean reward of the responses whose rank is `rank` (0 = best).
    pub fn rewards_rank(rank: usize) -> String {
        format!("rewards/rank_{rank}")
    }

    /// Listwise: mean summed policy log-prob of the responses whose rank is `rank`.
    pub fn logps_rank(rank: usize) -> String {
        format!("logps/rank_{rank}")
    }
}

/// Named scalar metrics, in a fixed order; each value is a detached tensor of shape `[1]`.
#[derive(Debug, Clone)]
pub struct Metrics<B: Backend> {
    entries: Vec<(String, Tensor<B, 1>)>,
}

impl<B: Backend> Default for Metrics<B> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<B: Backend> Metrics<B> {
    /// An empty set of metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a metric; `value` (shape `[1]`) is detached from the autodiff graph.
    pub fn push(&mut self, name: impl Into<String>, value: Tensor<B, 1>) {
        self.entries.push((name.into(), value.detach()));
    }

    /// The metric called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Tensor<B, 1>> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The metric names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// `(name, value)` pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Tensor<B, 1>)> {
        self.entries.iter().map(|(n, t)| (n.as_str(), t))
    }

    /// Number of metrics.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no metric.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All metrics read back to the host in one transfer (a single device sync), for logging.
    pub fn to_f64(&self) -> Vec<(String, f64)> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let values: Vec<Tensor<B, 1>> = self.entries.iter().map(|(_, t)| t.clone()).collect();
        let data = Tensor::cat(values, 0).into_data();
        self.entries
            .iter()
            .map(|(n, _)| n.clone())
            .zip(data.iter::<f64>())
            .collect()
    }
}

/// A loss value and its metrics.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// The scalar loss, shape `[1]`, attached to the graph: call `.backward()` on it.
    pub loss: Tensor<B, 1>,
    /// Metrics with TRL's names (see [`names`]), detached.
    pub metrics: Metrics<B>,
}

impl<B: Backend> LossOutput<B> {
    /// The loss read back to the host (one device sync).
    pub fn loss_f64(&self) -> f64 {
        self.loss
            .clone()
            .into_data()
            .iter::<f64>()
            .next()
            .unwrap_or(f64::NAN)
    }

    /// The metrics read back to the host in one transfer; see [`Metrics::to_f64`].
    pub fn metrics_f64(&self) -> Vec<(String, f64)> {
        self.metrics.to_f64()
    }
}
