#![doc = include_str!("../README.md")]

mod batch;
pub mod cifar;
mod dataset;
mod download;
mod error;
pub mod floats;
pub mod idx;
pub mod rng;
mod split;
pub mod synthetic;

pub use batch::{Batcher, range_tensors, to_tensors, unit_pixel};
pub use dataset::{Dataset, DatasetKind, FILE_NAMES, FileDigest, NUM_CLASSES, Split, sha256_hex};
pub use download::{FetchReport, Mirror, Stored, fetch, fetch_verified, fetch_verified_as};
pub use error::{DataError, Result};

use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename, so that
/// readers see either the old file or the whole new one, never a part.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(path, |f| {
        f.write_all(bytes).map_err(|e| DataError::io(path, e))
    })
}

/// Writes `path` through `write` into a temporary file of the same directory, synced, then a
/// rename: readers see the old file or the whole new one, never a part, and the file gets the
/// permissions the umask gives any new file (as [`atomic_write`]; a bare temporary file would be
/// 0600). The one atomic writer of the workspace: the report's tables go through it too.
pub fn atomic_write_with<E: From<DataError>>(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::result::Result<(), E>,
) -> std::result::Result<(), E> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut tmp = temp_in(dir).map_err(|e| DataError::io(dir, e))?;
    write(tmp.as_file_mut())?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| DataError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// A temporary file in `dir`, readable by others as the umask allows, like any file the user
/// creates (tempfile's own default is 0600).
fn temp_in(dir: &Path) -> std::io::Result<tempfile::NamedTempFile> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tempfile::Builder::new()
            .permissions(std::fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
    }
    #[cfg(not(unix))]
    {
        tempfile::NamedTempFile::new_in(dir)
    }
}
