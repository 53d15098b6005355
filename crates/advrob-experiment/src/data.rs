//! Where a matrix's data comes from: a known dataset fetched and verified into a data directory,
//! or IDX files loaded from a directory as they are.

use std::path::{Path, PathBuf};

use advrob_data::{Dataset, DatasetKind, Mirror};

use crate::error::{ExperimentError, Result};
use crate::matrix::Matrix;

/// Where one dataset of a matrix comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A known dataset, fetched and verified into the data directory.
    Named(String),
    /// IDX files loaded from a directory as they are.
    Dir(PathBuf),
}

impl DataSource {
    /// `dir` if given, else verified MNIST: the data of a benchmark.
    pub fn dir_or_mnist(dir: Option<PathBuf>) -> DataSource {
        dir.map_or_else(|| DataSource::Named("mnist".into()), DataSource::Dir)
    }

    /// The sources of a matrix: its `dataset_dir` if set, else each of its `datasets`.
    pub fn of(matrix: &Matrix) -> Vec<DataSource> {
        match &matrix.dataset_dir {
            Some(d) => vec![DataSource::Dir(d.clone())],
            None => matrix
                .datasets
                .iter()
                .cloned()
                .map(DataSource::Named)
                .collect(),
        }
    }
}

/// Loads one dataset: from a directory as it is, or fetched and verified into `data_dir` (from
/// `mirrors`, the public ones when empty). Returns it with its name for records.
pub fn load_data(
    source: &DataSource,
    data_dir: &Path,
    mirrors: &[Mirror],
) -> Result<(Dataset, String)> {
    let name = match source {
        DataSource::Dir(dir) => {
            let ds = Dataset::load_dir(dir)?;
            return Ok((ds, dir.display().to_string()));
        }
        DataSource::Named(n) => n,
    };
    let kind = DatasetKind::from_name(name)?;
    let report = fetch_dataset(kind, data_dir, mirrors)?;
    for (file, from) in &report.fetched {
        log::info!("fetched {file} from {from} (SHA-256 verified)");
    }
    let ds = Dataset::load_dir(&report.dir)?;
    if ds.verified != Some(kind) {
        return Err(ExperimentError::file(
            &report.dir,
            "files changed after verification",
        ));
    }
    Ok((ds, kind.name().to_string()))
}

/// [`advrob_data::fetch`] with a hint for the user when no mirror could be reached.
pub fn fetch_dataset(
    kind: DatasetKind,
    data_dir: &Path,
    mirrors: &[Mirror],
) -> Result<advrob_data::FetchReport> {
    advrob_data::fetch(kind, data_dir, mirrors).map_err(|e| match e {
        advrob_data::DataError::AllMirrorsFailed { .. } => ExperimentError::NoMirror {
            dataset: kind.name().to_string(),
            source: e,
        },
        other => other.into(),
    })
}
