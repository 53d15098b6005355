//! Known datasets (their files, canonical checksums and mirrors) and loading a directory of IDX files.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DataError, Result};
use crate::idx;
pub use crate::split::{Split, sha256_hex};

/// Number of classes of every dataset this crate knows.
pub const NUM_CLASSES: usize = 10;

/// The four files of an MNIST-style dataset, by their uncompressed names.
pub const FILE_NAMES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// A dataset this crate can download and verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetKind {
    /// MNIST handwritten digits (LeCun, Cortes, Burges).
    Mnist,
    /// Fashion-MNIST (Zalando Research): same format, ten kinds of clothing.
    FashionMnist,
    /// CIFAR-10 (Krizhevsky 2009), its binary version: 3×32×32 colour images of ten classes, one
    /// archive ([`crate::cifar`]).
    #[serde(rename = "cifar10")]
    Cifar10,
}

impl DatasetKind {
    /// Every known dataset.
    pub const ALL: [DatasetKind; 3] = [
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Cifar10,
    ];

    /// The name used on the command line and as the directory name under the data directory.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Cifar10 => "cifar10",
        }
    }

    /// Looks a dataset up by [`name`](Self::name).
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == name)
            .ok_or_else(|| DataError::UnknownDataset {
                name: name.to_string(),
                known: Self::ALL.map(|k| k.name()).join(", "),
            })
    }

    /// The files the dataset is made of, as they are stored in its directory: the four IDX files
    /// of [`FILE_NAMES`], or CIFAR-10's one archive.
    pub fn files(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => &FILE_NAMES,
            DatasetKind::Cifar10 => &[crate::cifar::ARCHIVE],
        }
    }

    /// Whether the digests of [`sha256`](Self::sha256) are of the files' decompressed bytes (the
    /// IDX files: gzip bytes differ between compressors, the content does not) rather than of the
    /// files as published (CIFAR-10's archive, whose canonical digest is of the `.tar.gz`).
    pub fn digest_decompressed(self) -> bool {
        !matches!(self, DatasetKind::Cifar10)
    }

    /// SHA-256 of each of [`files`](Self::files), in that order: the canonical values of the
    /// original files (see [`digest_decompressed`](Self::digest_decompressed)).
    pub fn sha256(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist => &[
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            ],
            DatasetKind::FashionMnist => &[
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            ],
            DatasetKind::Cifar10 => &[crate::cifar::ARCHIVE_SHA256],
        }
    }

    /// Public mirrors tried in order; each serves `<file>.gz` under the base URL (CIFAR-10: the
    /// archive under its own name).
    pub fn mirrors(self) -> &'static [&'static str] {
        match self {
            DatasetKind::Mnist => &[
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ],
            DatasetKind::FashionMnist => {
                &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
            }
            DatasetKind::Cifar10 => &["https://www.cs.toronto.edu/~kriz/"],
        }
    }

    /// The canonical digest of one of [`files`](Self::files).
    pub fn expected_sha256(self, file: &str) -> Option<&'static str> {
        self.files()
            .iter()
            .position(|f| *f == file)
            .map(|i| self.sha256()[i])
    }
}

/// The digest of one file as loaded: provenance for every record made from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// File name (uncompressed form).
    pub name: String,
    /// SHA-256 of the decompressed bytes.
    pub sha256: String,
}

/// A loaded dataset: both splits and the digests of the files they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The 60k training examples of MNIST (or whatever the directory held).
    pub train: Split,
    /// The 10k test examples; never used for training or model selection.
    pub test: Split,
    /// Digest of each file, in [`DatasetKind::files`] order (the four IDX files, or CIFAR-10's
    /// archive).
    pub files: Vec<FileDigest>,
    /// Whether every digest equals the canonical one of a known dataset.
    pub verified: Option<DatasetKind>,
}

fn find_file(dir: &Path, name: &str) -> Result<PathBuf> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::io(
        dir,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("neither {name} nor {name}.gz is in this directory"),
        ),
    ))
}

fn load_split(images_path: &Path, labels_path: &Path) -> Result<(Split, [FileDigest; 2])> {
    let image_bytes = idx::read_maybe_gz(images_path)?;
    let label_bytes = idx::read_maybe_gz(labels_path)?;
    let digests = [
        FileDigest {
            name: images_path.display().to_string(),
            sha256: sha256_hex(&image_bytes),
        },
        FileDigest {
            name: labels_path.display().to_string(),
            sha256: sha256_hex(&label_bytes),
        },
    ];
    let images = idx::parse_images(images_path, &image_bytes)?;
    let labels = idx::parse_labels(labels_path, &label_bytes)?;
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images_path.to_path_buf(),
            labels: labels_path.to_path_buf(),
            n_images: images.count,
            n_labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, l)| usize::from(**l) >= NUM_CLASSES)
    {
        return Err(DataError::LabelOutOfRange {
            path: labels_path.to_path_buf(),
            index,
            label,
            max: (NUM_CLASSES - 1) as u8,
        });
    }
    Ok((Split { images, labels }, digests))
}

impl Dataset {
    /// Loads the four IDX files (plain or `.gz`) of [`FILE_NAMES`] from `dir`, checking magic
    /// numbers, lengths, image/label counts and label range. The digests are compared with the
    /// canonical ones of every known dataset and the match, if any, is recorded in `verified`; a
    /// directory of other data (a synthetic test set, say) loads with `verified: None`.
    ///
    /// A directory holding CIFAR-10's archive ([`crate::cifar::ARCHIVE`]) loads that instead:
    /// three-channel images, the archive's digest as the one file.
    pub fn load_dir(dir: &Path) -> Result<Dataset> {
        let archive = dir.join(crate::cifar::ARCHIVE);
        if archive.is_file() {
            return Self::load_cifar(&archive);
        }
        let paths = FILE_NAMES
            .iter()
            .map(|n| find_file(dir, n))
            .collect::<Result<Vec<_>>>()?;
        let (train, d_train) = load_split(&paths[0], &paths[1])?;
        let (test, d_test) = load_split(&paths[2], &paths[3])?;
        if (train.images.rows, train.images.cols) != (test.images.rows, test.images.cols) {
            return Err(DataError::BadDims {
                path: paths[2].clone(),
                rows: train.images.rows,
                cols: train.images.cols,
                found_rows: test.images.rows,
                found_cols: test.images.cols,
            });
        }
        let files: Vec<FileDigest> = d_train
            .into_iter()
            .chain(d_test)
            .zip(FILE_NAMES)
            .map(|(d, name)| FileDigest {
                name: name.to_string(),
                sha256: d.sha256,
            })
            .collect();
        Ok(Dataset::with_files(train, test, files))
    }

    /// Loads CIFAR-10's binary archive at `path` ([`crate::cifar::read_archive`]); `verified` is
    /// set when its digest is the canonical one.
    pub fn load_cifar(path: &Path) -> Result<Dataset> {
        let (cifar, sha256) = crate::cifar::read_archive_with_digest(path)?;
        let files = vec![FileDigest {
            name: crate::cifar::ARCHIVE.to_string(),
            sha256,
        }];
        Ok(Dataset::with_files(cifar.train, cifar.test, files))
    }

    fn with_files(train: Split, test: Split, files: Vec<FileDigest>) -> Dataset {
        let verified = DatasetKind::ALL.into_iter().find(|k| {
            files.len() == k.sha256().len()
                && files
                    .iter()
                    .zip(k.sha256())
                    .all(|(f, expected)| f.sha256 == *expected)
        });
        Dataset {
            train,
            test,
            files,
            verified,
        }
    }

    /// One digest over the four file digests: a short identity of the data a model saw.
    pub fn fingerprint(&self) -> String {
        let joined: String = self.files.iter().map(|f| f.sha256.as_str()).collect();
        sha256_hex(joined.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic;

    #[test]
    fn dataset_names_round_trip_and_unknown_is_listed() {
        for k in DatasetKind::ALL {
            assert_eq!(DatasetKind::from_name(k.name()).expect("known"), k);
        }
        let err = DatasetKind::from_name("cifar").expect_err("unknown");
        assert!(
            err.to_string().contains("mnist, fashion-mnist, cifar10"),
            "{err}"
        );
    }

    #[test]
    fn synthetic_dir_loads_unverified() {
        let dir = tempfile::tempdir().expect("temp dir");
        synthetic::write_dataset(dir.path(), 50, 20, 1).expect("write");
        let ds = Dataset::load_dir(dir.path()).expect("load");
        assert_eq!((ds.train.len(), ds.test.len()), (50, 20));
        assert_eq!(ds.verified, None);
        assert_eq!(ds.files.len(), 4);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().expect("temp dir");
        synthetic::write_dataset(dir.path(), 50, 20, 1).expect("write");
        let labels = dir.path().join("t10k-labels-idx1-ubyte.gz");
        idx::write_file(&labels, &idx::encode_labels(&[1; 19]), true).expect("write");
        let err = Dataset::load_dir(dir.path()).expect_err("mismatch");
        let msg = err.to_string();
        assert!(
            msg.contains("t10k-images") && msg.contains("t10k-labels") && msg.contains("20"),
            "{msg}"
        );
    }

    #[test]
    fn label_ten_is_refused() {
        let dir = tempfile::tempdir().expect("temp dir");
        synthetic::write_dataset(dir.path(), 50, 20, 1).expect("write");
        let mut labels = vec![0u8; 50];
        labels[7] = 10;
        let p = dir.path().join("train-labels-idx1-ubyte.gz");
        idx::write_file(&p, &idx::encode_labels(&labels), true).expect("write");
        let err = Dataset::load_dir(dir.path()).expect_err("label 10");
        assert!(matches!(
            err,
            DataError::LabelOutOfRange {
                index: 7,
                label: 10,
                ..
            }
        ));
        assert!(err.to_string().contains("train-labels"), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let dir = tempfile::tempdir().expect("temp dir");
        let err = Dataset::load_dir(dir.path()).expect_err("empty dir");
        assert!(err.to_string().contains("train-images-idx3-ubyte"), "{err}");
    }
}
