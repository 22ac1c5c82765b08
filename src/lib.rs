//! burnish: align causal language models with human preferences, on burn.
//!
//! This facade re-exports the workspace crates so a library user depends on one crate:
//! [`model`] (the backend-generic causal LM and Hugging Face checkpoints), [`losses`] (every
//! preference loss as a pure function of log-probs) and [`data`] (Parquet preference data,
//! chat templates, tokenization and collation), [`train`] (trainers, checkpoints, metrics,
//! plots), [`ppo`] (rollouts, rewards including VADER, PPO, RLOO and GRPO), plus [`backend`],
//! which picks the backend at run time from `--device` or the cargo features, and
//! [`sentiment_task`], the controlled-sentiment experiment's steps shared by the examples.

pub mod backend;
pub mod sentiment_task;

pub use burn;
pub use burnish_data as data;
pub use burnish_losses as losses;
pub use burnish_model as model;
pub use burnish_ppo as ppo;
pub use burnish_train as train;
