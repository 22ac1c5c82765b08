//! burnish-train: the machinery of training runs, independent of any particular model or loss.
//!
//! Configuration ([`config`]), learning-rate schedule ([`schedule`]), the seeded data order
//! ([`data_order`]), checkpoints that resume exactly ([`checkpoint`]), metrics as JSON lines
//! ([`metrics_log`]), progress reporting ([`progress`]) and SVG plots ([`plot`]); [`pipeline`]
//! holds the high-level entry points (`run_dpo`, `run_sft`, `run_reward`, `run_kto`,
//! `precompute_reference_file`); [`objectives`] and [`unpaired`] the objectives they train.

pub mod batch;
pub mod checkpoint;
pub mod clip;
pub mod config;
pub mod data_order;
#[cfg(feature = "collective")]
pub mod distributed;
pub mod metrics_log;
pub mod objectives;
pub mod pipeline;
pub mod plot;
pub mod progress;
pub mod run_dir;
pub mod schedule;
pub mod trainer;
pub mod unpaired;
