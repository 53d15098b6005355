//! One split of a dataset (images and their labels) and the digest every file is checked by:
//! what the readers of each format (IDX, CIFAR-10's archive) produce.

use sha2::{Digest, Sha256};

use crate::idx::IdxImages;

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// One split (train or test): images and their labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The images, `count × channels × rows × cols` bytes.
    pub images: IdxImages,
    /// One label per image, each below [`crate::NUM_CLASSES`].
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split holds no example.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Bytes per image (`channels · rows · cols`).
    pub fn image_size(&self) -> usize {
        self.images.image_size()
    }

    /// The first `n` examples (all of them when `n` is larger).
    pub fn take(&self, n: usize) -> Split {
        let n = n.min(self.len());
        Split {
            images: IdxImages {
                count: n,
                channels: self.images.channels,
                rows: self.images.rows,
                cols: self.images.cols,
                pixels: self.images.pixels[..n * self.image_size()].to_vec(),
            },
            labels: self.labels[..n].to_vec(),
        }
    }
}
