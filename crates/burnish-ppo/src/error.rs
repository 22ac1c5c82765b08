//! The one error type of burnish-ppo: a user's mistake names the key or file, the rest wraps
//! the error of the crate it came from.

use burnish_train::trainer::TrainError;

/// Why an on-policy run could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum PpoError {
    /// A `[ppo]` key has a value that makes no sense.
    #[error("config key `ppo.{key}`: {message}")]
    Config {
        /// The key inside `[ppo]`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The `[ppo]` table does not parse (unknown key, wrong type, unknown estimator).
    #[error("config section [ppo]: {0}")]
    Table(String),
    /// The reward could not be computed.
    #[error("reward: {0}")]
    Reward(String),
    /// The training loop failed (NaN guard, checkpoint, metrics).
    #[error(transparent)]
    Train(#[from] TrainError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] burnish_model::ModelError),
    /// The data or the configuration could not be read.
    #[error(transparent)]
    Pipeline(#[from] burnish_train::pipeline::PipelineError),
}

impl From<burnish_train::checkpoint::CheckpointError> for PpoError {
    fn from(e: burnish_train::checkpoint::CheckpointError) -> Self {
        PpoError::Train(TrainError::from(e))
    }
}
