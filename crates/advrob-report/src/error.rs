//! Errors of the report crate.

use std::path::PathBuf;

/// What can go wrong making a report.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// Reading a run: its records, matrix or checkpoints' training records.
    #[error(transparent)]
    Experiment(#[from] advrob_experiment::ExperimentError),
    /// Loading a checkpoint or picking a backend.
    #[error(transparent)]
    Model(#[from] advrob_model::ModelError),
    /// Running an attack for an example grid.
    #[error(transparent)]
    Attack(#[from] advrob_attack::AttackError),
    /// A checkpoint probe or the cross-backend agreement.
    #[error(transparent)]
    Eval(#[from] advrob_eval::EvalError),
    /// Writing a file atomically.
    #[error(transparent)]
    Data(#[from] advrob_data::DataError),
    /// A table.
    #[error("tables: {0}")]
    Table(#[from] polars::prelude::PolarsError),
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A figure could not be drawn, or a value read back from a tensor.
    #[error("{}: {reason}", path.display())]
    Figure {
        /// The figure (or the checkpoint whose tensors were read).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The runs given hold nothing to report, or something that cannot be reported.
    #[error("{0}")]
    Records(String),
}

impl ReportError {
    /// A [`ReportError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ReportError::Io {
            path: path.into(),
            source,
        }
    }

    /// A [`ReportError::Figure`] on `path`.
    pub fn figure(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        ReportError::Figure {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ReportError>;
