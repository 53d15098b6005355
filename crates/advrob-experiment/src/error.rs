//! Errors of the experiment crate.

use std::path::PathBuf;

use advrob_attack::AttackError;
use advrob_data::DataError;
use advrob_eval::EvalError;
use advrob_model::ModelError;

/// What can go wrong describing or running an experiment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExperimentError {
    /// Reading, verifying or downloading data.
    #[error(transparent)]
    Data(#[from] DataError),
    /// No mirror could be reached for a dataset.
    #[error("{source}")]
    NoMirror {
        /// The dataset.
        dataset: String,
        /// What every mirror answered.
        source: DataError,
    },
    /// Building, training, loading or saving a model.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// An attack's settings or its run.
    #[error(transparent)]
    Attack(#[from] AttackError),
    /// An evaluation.
    #[error(transparent)]
    Eval(#[from] EvalError),
    /// A setting of the matrix outside its domain; names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The setting (`eps`, `models`, `teacher`, ...).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Something wrong with one model of the matrix.
    #[error("model {model}: {source}")]
    InModel {
        /// The model's name.
        model: String,
        /// What is wrong.
        source: Box<ExperimentError>,
    },
    /// An attack or defense `kind` that no registry entry has.
    #[error("unknown {what} kind {kind:?}; available: {available}")]
    UnknownKind {
        /// `attack` or `defense`.
        what: &'static str,
        /// The kind asked for.
        kind: String,
        /// The kinds registered.
        available: String,
    },
    /// The settings of an attack or a defense do not parse (unknown field, wrong type).
    #[error("{what} {kind}: {reason}")]
    Settings {
        /// `attack` or `defense`.
        what: &'static str,
        /// Its kind.
        kind: String,
        /// What serde said.
        reason: String,
    },
    /// A run directory holds records of an earlier schema, whose keys a rerun could reuse
    /// silently.
    #[error(
        "{}: holds records of an older advrob (schema {schema}, this one writes {current}: its keys leave out the attack's settings and the test examples), which a rerun could reuse silently",
        run.display()
    )]
    OlderRecords {
        /// The run directory.
        run: PathBuf,
        /// The oldest schema it holds.
        schema: u32,
        /// The schema this build writes.
        current: u32,
    },
    /// A run directory holds another matrix than the one asked to run into it.
    #[error(
        "{}: holds another matrix, and a run directory keeps the matrix it was started with (queued Slurm tasks and reports rely on it)",
        path.display()
    )]
    OtherMatrix {
        /// The run directory's matrix file.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file's content is not what it should be (a matrix, a record, a training record).
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it (with the line where there is one).
        reason: String,
    },
}

impl ExperimentError {
    /// An [`ExperimentError::Invalid`] naming `field`.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        ExperimentError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// This error, said of the model named `model`.
    pub fn in_model(self, model: &str) -> Self {
        ExperimentError::InModel {
            model: model.to_string(),
            source: Box::new(self),
        }
    }

    /// An [`ExperimentError::Io`] on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ExperimentError::Io {
            path: path.into(),
            source,
        }
    }

    /// An [`ExperimentError::File`] on `path`.
    pub fn file(path: impl Into<PathBuf>, reason: impl ToString) -> Self {
        ExperimentError::File {
            path: path.into(),
            reason: reason.to_string(),
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ExperimentError>;

/// Fails with [`ExperimentError::Invalid`] on `field` unless `cond` holds.
pub(crate) fn ensure(cond: bool, field: &str, reason: impl FnOnce() -> String) -> Result<()> {
    if cond {
        Ok(())
    } else {
        Err(ExperimentError::invalid(field, reason()))
    }
}
