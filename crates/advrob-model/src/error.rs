//! Errors of the model crate.

use std::path::PathBuf;

/// What can go wrong building, training, saving or loading a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A hyperparameter outside its domain; names the field.
    #[error("invalid {field}: {reason}")]
    InvalidConfig {
        /// The field, as spelled in the config.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that cannot be decoded or does not fit its config.
    #[error("{path}: bad checkpoint: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An ONNX file that cannot be read or does not fit the dataset (`evaluate --onnx`, or the
    /// file inside a checkpoint).
    #[error("{path}: {reason}")]
    Onnx {
        /// The ONNX file.
        path: PathBuf,
        /// What is wrong, as advrob-onnx says it.
        reason: String,
    },
    /// An error of the data crate (batching).
    #[error(transparent)]
    Data(#[from] advrob_data::DataError),
    /// Training diverged (a loss that is not a finite number).
    #[error("training diverged: loss is {loss} at epoch {epoch}, batch {batch}")]
    Diverged {
        /// Epoch (1-based).
        epoch: usize,
        /// Batch within the epoch (0-based).
        batch: usize,
        /// The loss value.
        loss: f64,
    },
    /// A failure inside a training hook or a defense (an attack that refused its parameters).
    #[error("{context}: {source}")]
    Hook {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ModelError {
    /// A config value outside its domain: `invalid {field}: {reason}`.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ModelError>;
