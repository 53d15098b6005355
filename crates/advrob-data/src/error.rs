//! Errors of the data crate: each names the file and what was wrong with it.

use std::path::PathBuf;

/// Everything that can go wrong reading, writing or fetching a dataset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// An operating-system error on a file or directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A gzip stream that is corrupt or ends early.
    #[error("{path}: not a valid gzip stream ({reason})")]
    Gzip {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        reason: String,
    },
    /// The IDX magic number is not the one this kind of file must have.
    #[error("{path}: wrong IDX magic number: expected {expected:#010x}, found {found:#010x}")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The magic number a file of this kind has.
        expected: u32,
        /// The magic number read.
        found: u32,
    },
    /// The file is shorter (or longer) than its header says.
    #[error(
        "{path}: truncated or oversized IDX file: header promises {expected} bytes, found {found}"
    )]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Bytes the header promises (header included).
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Images with no pixels (a header saying 0 rows or 0 columns).
    #[error("{path}: images of {rows}x{cols} pixels hold nothing")]
    EmptyImages {
        /// The file.
        path: PathBuf,
        /// Rows in the header.
        rows: usize,
        /// Columns in the header.
        cols: usize,
    },
    /// Image dimensions that are not the ones asked for.
    #[error("{path}: images are {found_rows}x{found_cols}, expected {rows}x{cols}")]
    BadDims {
        /// The file.
        path: PathBuf,
        /// Rows expected.
        rows: usize,
        /// Columns expected.
        cols: usize,
        /// Rows found.
        found_rows: usize,
        /// Columns found.
        found_cols: usize,
    },
    /// The image and label files of one split disagree on the number of examples.
    #[error("{images} holds {n_images} images but {labels} holds {n_labels} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// The label file.
        labels: PathBuf,
        /// Number of images.
        n_images: usize,
        /// Number of labels.
        n_labels: usize,
    },
    /// A label outside the classes of the dataset.
    #[error("{path}: label {label} at index {index} is outside 0..={max}")]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// Position of the bad label.
        index: usize,
        /// The label read.
        label: u8,
        /// Largest valid label.
        max: u8,
    },
    /// Decompressed bytes whose SHA-256 is not the canonical one.
    #[error("{source_name}: SHA-256 mismatch for {file}: expected {expected}, found {found}")]
    Checksum {
        /// Where the bytes came from (a path or URL).
        source_name: String,
        /// The dataset file name.
        file: String,
        /// The canonical digest.
        expected: String,
        /// The digest of the bytes received.
        found: String,
    },
    /// A mirror directory that does not exist.
    #[error("mirror directory {0} does not exist")]
    MirrorMissing(PathBuf),
    /// Every mirror failed for one file; each attempt says why.
    #[error("could not fetch {file} from any mirror:\n  {}", attempts.join("\n  "))]
    AllMirrorsFailed {
        /// The dataset file name.
        file: String,
        /// One line per mirror tried.
        attempts: Vec<String>,
    },
    /// A dataset name that is not known.
    #[error("unknown dataset {name:?}; known: {known}")]
    UnknownDataset {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// An archive or a CIFAR batch file that is not what it must be (a tar entry cut short, a file
    /// missing from the archive, a length that is not a whole number of records).
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A batch size of zero or a similar nonsensical request.
    #[error("invalid argument {field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, DataError>;
