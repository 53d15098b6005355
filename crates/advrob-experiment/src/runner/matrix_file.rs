//! The matrix a run directory keeps: written once its first model is there, checked against the
//! matrix of every later run into the directory, and the schema of the records it holds.

use std::path::PathBuf;

use advrob_data::sha256_hex;

use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::matrix::Matrix;
use crate::record::{Record, SCHEMA};

/// Refuses to add records to a run directory that holds records of an older schema: their keys
/// leave out what changes the numbers, so they could be reused silently.
pub(super) fn refuse_old_records(dir: &RunDir, records: &[Record]) -> Result<()> {
    if let Some(old) = records
        .iter()
        .map(|r| r.schema)
        .filter(|&s| s < SCHEMA)
        .min()
    {
        return Err(ExperimentError::OlderRecords {
            run: dir.root().to_path_buf(),
            schema: old,
            current: SCHEMA,
        });
    }
    Ok(())
}

/// `matrix` as the TOML a run directory keeps, and its digest.
pub(super) fn matrix_toml(dir: &RunDir, matrix: &Matrix) -> Result<(String, String)> {
    let toml =
        toml::to_string_pretty(matrix).map_err(|e| ExperimentError::file(dir.matrix(), e))?;
    let digest = sha256_hex(toml.as_bytes())[..16].to_string();
    Ok((toml, digest))
}

/// A run directory's matrix is written once: refuses `matrix` when the directory already holds
/// another one (`matrix.toml`, or one of `matrices/` that an earlier `--extend` or a Slurm
/// submission added), unless `extend` says to add it. Writes nothing.
pub fn check_matrix(dir: &RunDir, matrix: &Matrix, extend: bool) -> Result<()> {
    let path = dir.matrix();
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExperimentError::io(&path, e)),
    };
    let (toml, _) = matrix_toml(dir, matrix)?;
    let mut want = matrix.clone();
    want.adopt_parent_arch();
    // the same matrix as one the directory holds (read leniently: a file of an older advrob)
    let holds = |text: &str| {
        text == toml
            || toml::from_str::<Matrix>(text).is_ok_and(|mut m| {
                m.adopt_parent_arch();
                m == want
            })
    };
    let mut held = vec![old];
    held.extend(
        dir.matrix_files()
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok()),
    );
    if extend || held.iter().any(|t| holds(t)) {
        return Ok(());
    }
    Err(ExperimentError::OtherMatrix { path })
}

/// The file under `matrices/` that holds `matrix` once [`write_matrix`] wrote it.
pub fn matrix_file(dir: &RunDir, matrix: &Matrix) -> Result<PathBuf> {
    let (_, digest) = matrix_toml(dir, matrix)?;
    Ok(own_file(dir, &digest))
}

pub(super) fn own_file(dir: &RunDir, digest: &str) -> PathBuf {
    dir.matrices().join(format!("{digest}.toml"))
}

/// Writes `matrix.toml` when the directory has none, and the matrix under `matrices/<digest>.toml`
/// (a run with nothing to do writes nothing, so a read-only run directory can be re-read).
/// [`check_matrix`] decides whether it may.
pub fn write_matrix(dir: &RunDir, matrix: &Matrix) -> Result<()> {
    let (toml, digest) = matrix_toml(dir, matrix)?;
    for path in [dir.matrix(), own_file(dir, &digest)] {
        if !path.is_file() {
            advrob_data::atomic_write(&path, toml.as_bytes())?;
        }
    }
    Ok(())
}
