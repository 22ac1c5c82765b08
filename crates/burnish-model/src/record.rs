//! Saving and loading a [`CausalLm`] in burn's own record format (`model.mpk` + `config.json`).
//!
//! This is the fast, lossless format for checkpoints between burnish runs; use
//! [`CausalLm::save_pretrained`] to hand a model to transformers.

use std::path::Path;

use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;

use crate::config::ModelConfig;
use crate::error::{ModelError, Result};
use crate::model::CausalLm;

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

impl<B: Backend> CausalLm<B> {
    /// Writes `config.json` and `model.mpk` into `dir` (created if needed).
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|cause| ModelError::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        self.config.write(dir.join("config.json"))?;
        let path = dir.join("model");
        self.clone()
            .save_file(path.clone(), &recorder())
            .map_err(|e| ModelError::Record {
                path: path.with_extension("mpk"),
                reason: e.to_string(),
            })
    }

    /// Reads a model written by [`CausalLm::save`].
    pub fn load(dir: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let dir = dir.as_ref();
        let config = ModelConfig::from_file(dir.join("config.json"))?;
        let path = dir.join("model");
        CausalLm::init(&config, device)
            .load_file(path.clone(), &recorder(), device)
            .map_err(|e| ModelError::Record {
                path: path.with_extension("mpk"),
                reason: e.to_string(),
            })
    }
}
