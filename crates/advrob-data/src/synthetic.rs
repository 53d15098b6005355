//! Small synthetic MNIST-shaped datasets for tests and examples: learnable, seeded, written as real
//! IDX files so that every code path (reader, loader, CLI) is exercised without a download.

use std::path::Path;

use crate::dataset::{Dataset, FILE_NAMES, NUM_CLASSES, Split};
use crate::error::Result;
use crate::idx::{self, IdxImages};
use crate::rng::SplitMix64;

/// Image side of the synthetic data (same as MNIST).
pub const SIDE: usize = 28;

/// `n` 28×28 images whose class `c` is drawn as a bright horizontal bar at rows `2c+4..2c+6`
/// (plus noise), with balanced labels: a task a small MLP learns in one epoch.
pub fn make_split(n: usize, seed: u64) -> (IdxImages, Vec<u8>) {
    let mut rng = SplitMix64::new(seed);
    let mut pixels = vec![0u8; n * SIDE * SIDE];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = (i + rng.below(NUM_CLASSES as u64) as usize) % NUM_CLASSES;
        labels.push(c as u8);
        let img = &mut pixels[i * SIDE * SIDE..(i + 1) * SIDE * SIDE];
        for p in img.iter_mut() {
            *p = rng.below(60) as u8;
        }
        let row0 = 2 * c + 4;
        for r in row0..row0 + 2 {
            for col in 4..24 {
                img[r * SIDE + col] = 180 + rng.below(76) as u8;
            }
        }
    }
    (
        IdxImages {
            count: n,
            channels: 1,
            rows: SIDE,
            cols: SIDE,
            pixels,
        },
        labels,
    )
}

/// A synthetic dataset in memory, the same examples [`write_dataset`] writes (for tests that do
/// not need the files).
pub fn dataset(n_train: usize, n_test: usize, seed: u64) -> Dataset {
    let split = |n, seed| {
        let (images, labels) = make_split(n, seed);
        Split { images, labels }
    };
    Dataset {
        train: split(n_train, seed),
        test: split(n_test, seed.wrapping_add(1)),
        files: Vec::new(),
        verified: None,
    }
}

/// Writes the four gzip IDX files of a synthetic dataset (`n_train` and `n_test` examples) into
/// `dir`, under the MNIST file names with `.gz`.
pub fn write_dataset(dir: &Path, n_train: usize, n_test: usize, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::DataError::io(dir, e))?;
    let (tr_x, tr_y) = make_split(n_train, seed);
    let (te_x, te_y) = make_split(n_test, seed.wrapping_add(1));
    let files = [
        idx::encode_images(&tr_x),
        idx::encode_labels(&tr_y),
        idx::encode_images(&te_x),
        idx::encode_labels(&te_y),
    ];
    for (name, bytes) in FILE_NAMES.iter().zip(files) {
        idx::write_file(&dir.join(format!("{name}.gz")), &bytes, true)?;
    }
    Ok(())
}
