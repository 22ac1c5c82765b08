//! Helpers the trainer tests share: a tiny GPT-2, learnable preference pairs, a config, and
//! comparisons of two models by their logits.

#![allow(dead_code)]

use std::path::Path;

use burn::tensor::{Int, Tensor, TensorData};
use burnish_data::{Collator, TokenizedPair};
use burnish_losses::PreferenceLoss;
use burnish_model::{CausalLm, ModelConfig};
use burnish_train::config::TrainingConfig;
use burnish_train::objectives::PreferenceObjective;
use burnish_train::trainer::{BatchLoss, Objective, RunOptions, TrainError};

#[cfg(not(feature = "wgpu"))]
pub type B = burn::backend::Autodiff<burn::backend::Flex>;
#[cfg(feature = "wgpu")]
pub type B = burn::backend::Autodiff<burn::backend::Wgpu>;

pub fn device() -> <B as burn::tensor::backend::BackendTypes>::Device {
    Default::default()
}

/// Pairs whose chosen completion repeats the prompt's last token and whose rejected one does
/// not: a preference a tiny model can learn.
pub fn pairs(n: usize, seed: u32) -> Vec<TokenizedPair> {
    (0..n as u32)
        .map(|i| {
            let a = 3 + (i * 7 + seed) % 50;
            let b = 3 + (i * 11 + seed + 5) % 50;
            let prompt_ids = vec![1, a, b, a];
            TokenizedPair {
                prompt_ids,
                chosen_ids: vec![a, a, 2],
                rejected_ids: vec![b, 60 - (i % 5), 61, 2],
                margin: None,
                ref_chosen_logp: None,
                ref_rejected_logp: None,
            }
        })
        .collect()
}

pub fn config(dir: &Path, steps: u64) -> TrainingConfig {
    let text = format!(
        "[optimizer]\nlr = 5e-3\nmax_grad_norm = 1.0\n[schedule]\nwarmup_steps = 2\ndecay = \"cosine\"\n\
         [train]\nmax_steps = {steps}\nbatch_size = 4\ngrad_accumulation = 2\neval_every = 0\ncheckpoint_every = 2\nseed = 3\noutput_dir = {:?}\n",
        dir.display().to_string()
    );
    TrainingConfig::from_toml_str(&text, "test", &[] as &[&str]).unwrap()
}

pub fn policy() -> CausalLm<B> {
    // Fixed init: seeding burn's RNG makes the two runs of a comparison start equal.
    <B as burn::tensor::backend::Backend>::seed(&device(), 11);
    CausalLm::init(&ModelConfig::gpt2(64, 16, 1, 2, 32), &device())
}

pub fn objective(
    train: Vec<TokenizedPair>,
    reference: Option<CausalLm<<B as burn::tensor::backend::AutodiffBackend>::InnerBackend>>,
) -> PreferenceObjective<B> {
    PreferenceObjective {
        train,
        eval: pairs(16, 1000),
        collator: Collator::new(0),
        loss: PreferenceLoss::default(),
        reference,
        device: device(),
    }
}

pub fn weights(model: &CausalLm<B>) -> Vec<f32> {
    let ids = Tensor::<B, 2, Int>::from_data(
        TensorData::new(vec![1i64, 5, 9, 5, 5, 2], [1, 6]),
        &device(),
    );
    let mask = Tensor::<B, 2, Int>::ones([1, 6], &device());
    model
        .forward(ids, mask)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .unwrap()
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn quiet() -> RunOptions {
    RunOptions {
        quiet: true,
        ..Default::default()
    }
}

/// A preference objective whose training batches pass through `hook` (to record them, or to
/// break one), with no held-out examples.
pub struct Hooked<F> {
    pub inner: PreferenceObjective<B>,
    pub hook: F,
}

impl<F> Objective<B> for Hooked<F>
where
    F: Fn(&[usize], BatchLoss<B>) -> Result<BatchLoss<B>, TrainError> + Sync,
{
    fn train_len(&self) -> usize {
        self.inner.train_len()
    }
    fn eval_len(&self) -> usize {
        0
    }
    fn train_loss(
        &self,
        model: &CausalLm<B>,
        indices: &[usize],
    ) -> Result<BatchLoss<B>, TrainError> {
        (self.hook)(indices, self.inner.train_loss(model, indices)?)
    }
    fn eval_loss(
        &self,
        model: &CausalLm<B>,
        indices: &[usize],
    ) -> Result<BatchLoss<B>, TrainError> {
        self.inner.eval_loss(model, indices)
    }
}
