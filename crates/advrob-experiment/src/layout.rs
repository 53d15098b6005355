//! The run directory: where a run keeps its matrix, records and checkpoints. Every path inside a
//! run is made here, so that the runner, the report and the agreement find the same files.
//!
//! ```text
//! <run>/matrix.toml                              the matrix as it last ran
//! <run>/records/<writer>.jsonl                   each writer's append-only log of records
//! <run>/records.jsonl                            the single records file of earlier versions
//! <run>/models/<model>-<backend>-s<seed>-<key>/  one trained model: weights, configs, train.json
//! <run>/models/<model>-…-<key>.{train,eval}.lock held while a writer trains or evaluates it
//! <run>/observations/<model>-…-<key>.json       a checkpoint's probes and example images
//! <run>/agreement.json                           the cross-backend agreement (`agree`)
//! ```

use std::path::{Path, PathBuf};

use crate::record::Record;

/// Name of the single records file of earlier versions (still read, never written).
pub const RECORDS_FILE: &str = "records.jsonl";
/// Name of the directory of the writers' record logs.
pub const RECORD_LOGS: &str = "records";
/// Name of the matrix file inside a run directory.
pub const MATRIX_FILE: &str = "matrix.toml";
/// Name of the training record kept beside each checkpoint.
pub const TRAIN_FILE: &str = "train.json";
/// Name of the safetensors export of each checkpoint's weights.
pub const SAFETENSORS_FILE: &str = "model.safetensors";

/// A run directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// The run directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Its root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The single records file of earlier versions.
    pub fn records(&self) -> PathBuf {
        self.root.join(RECORDS_FILE)
    }

    /// The directory of the writers' record logs.
    pub fn record_logs(&self) -> PathBuf {
        self.root.join(RECORD_LOGS)
    }

    /// The lock a writer holds while it does `what` (`train`, `eval`) with the model of
    /// checkpoint directory `checkpoint`.
    pub fn lock(&self, checkpoint: &Path, what: &str) -> PathBuf {
        let name = checkpoint
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        self.root.join("models").join(format!("{name}.{what}.lock"))
    }

    /// The matrix file: the matrix the directory was started with.
    pub fn matrix(&self) -> PathBuf {
        self.root.join(MATRIX_FILE)
    }

    /// Every matrix run into the directory, each as `<digest>.toml` (the first, those added with
    /// `--extend`, those a Slurm submission's tasks read).
    pub fn matrices(&self) -> PathBuf {
        self.root.join("matrices")
    }

    /// The files under [`matrices`](Self::matrices) that are matrices (`*.toml`), sorted: not the
    /// temporary file a writer killed during its atomic write leaves there, which would read as an
    /// empty matrix (the default one). Empty when the folder does not exist.
    pub fn matrix_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.matrices())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// The observations of the run's checkpoints (`advrob_experiment::observe`), one file each.
    pub fn observations(&self) -> PathBuf {
        self.root.join("observations")
    }

    /// The observation file of the checkpoint in `checkpoint_dir`: named after it.
    pub fn observations_of(&self, checkpoint_dir: &Path) -> PathBuf {
        per_checkpoint(self.observations(), checkpoint_dir)
    }

    /// The certified bounds of the run's checkpoints (`advrob_experiment::certified`), one file
    /// each.
    pub fn bounds(&self) -> PathBuf {
        self.root.join("bounds")
    }

    /// The bounds file of the checkpoint in `checkpoint_dir`: named after it.
    pub fn bounds_of(&self, checkpoint_dir: &Path) -> PathBuf {
        per_checkpoint(self.bounds(), checkpoint_dir)
    }

    /// The randomized-smoothing files of the run's checkpoints (`advrob_experiment::smoothed`),
    /// one file each.
    pub fn smoothing(&self) -> PathBuf {
        self.root.join("smoothing")
    }

    /// The smoothing file of the checkpoint in `checkpoint_dir`: named after it.
    pub fn smoothing_of(&self, checkpoint_dir: &Path) -> PathBuf {
        per_checkpoint(self.smoothing(), checkpoint_dir)
    }

    /// The checkpoint directory of model `model` trained on `backend` with `seed`, whose
    /// configuration hashes to `key`: the one function that owns this layout.
    pub fn checkpoint(&self, model: &str, backend: &str, seed: u64, key: &str) -> PathBuf {
        self.root
            .join("models")
            .join(format!("{model}-{backend}-s{seed}-{key}"))
    }

    /// The checkpoint directory a record was evaluated from. A record renamed for a report
    /// (see `advrob_report::identity`) is found by its backend, seed and model key.
    pub fn checkpoint_of(&self, r: &Record) -> PathBuf {
        let named = self.checkpoint(&r.model, &r.backend, r.seed, r.model_key());
        if named.exists() {
            return named;
        }
        // the directory name without the model's: `-<backend>-s<seed>-<key>`
        let unnamed = self.checkpoint("", &r.backend, r.seed, r.model_key());
        let tail = unnamed
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        std::fs::read_dir(self.root.join("models"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.is_dir()
                    && p.file_name()
                        .is_some_and(|n| n.to_string_lossy().ends_with(&tail))
            })
            .unwrap_or(named)
    }
}

/// `dir/<the checkpoint directory's name>.json`.
fn per_checkpoint(dir: PathBuf, checkpoint_dir: &Path) -> PathBuf {
    let name = checkpoint_dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    dir.join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_killed_writers_temporary_file_is_not_a_matrix() {
        let tmp = tempfile::tempdir().expect("temp");
        let run = RunDir::new(tmp.path());
        assert!(run.matrix_files().is_empty(), "no folder, no matrix");
        std::fs::create_dir_all(run.matrices()).expect("mkdir");
        for name in ["b.toml", "a.toml", ".tmpX3kq9Z", "notes.txt"] {
            std::fs::write(run.matrices().join(name), "").expect("write");
        }
        assert_eq!(
            run.matrix_files(),
            vec![run.matrices().join("a.toml"), run.matrices().join("b.toml")]
        );
    }
}
