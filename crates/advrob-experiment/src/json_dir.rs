//! The per-checkpoint JSON files of a run directory (`observations/`, `bounds/`, `smoothing/`):
//! one document per checkpoint, written atomically, read back with a file that is not one named
//! as an error.

use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::{ExperimentError, Result};

/// Writes `doc` to `path` atomically (its directory created); `what` names the kind of file in
/// an error.
pub(crate) fn write<T: Serialize>(path: &Path, doc: &T, what: &'static str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ExperimentError::io(parent, e))?;
    }
    let text =
        serde_json::to_string(doc).map_err(|e| ExperimentError::invalid(what, e.to_string()))?;
    advrob_data::atomic_write(path, text.as_bytes())?;
    Ok(())
}

/// The document at `path`, `None` when there is no file; a file that is not a `what` file is an
/// error naming it.
pub(crate) fn read_file<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            ExperimentError::invalid(
                what,
                format!("{}: not a valid {what} file: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ExperimentError::io(path, e)),
    }
}

/// Every `.json` document in `dir`, in file-name order (none when there is no directory).
pub(crate) fn read_all<T: DeserializeOwned>(dir: &Path, what: &'static str) -> Result<Vec<T>> {
    let mut files: Vec<_> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ExperimentError::io(dir, e)),
    };
    files.sort();
    files
        .iter()
        .filter_map(|p| read_file(p, what).transpose())
        .collect()
}
