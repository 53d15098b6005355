//! Turning a [`Split`] into burn tensors, batch by batch, in a seeded order.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::dataset::Split;
use crate::error::{DataError, Result};
use crate::rng::SplitMix64;

/// Yields the example indices of a split in batches, in order or shuffled by a seed.
#[derive(Debug, Clone)]
pub struct Batcher {
    order: Vec<usize>,
    batch_size: usize,
}

impl Batcher {
    /// Batches of `batch_size` (the last may be smaller) over `len` examples. With `shuffle =
    /// Some(seed)` the order is a permutation drawn from `seed`; the same seed gives the same order.
    pub fn new(len: usize, batch_size: usize, shuffle: Option<u64>) -> Result<Self> {
        if batch_size == 0 {
            return Err(DataError::Invalid {
                field: "batch_size",
                reason: "must be at least 1".into(),
            });
        }
        let mut order: Vec<usize> = (0..len).collect();
        if let Some(seed) = shuffle {
            SplitMix64::new(seed).shuffle(&mut order);
        }
        Ok(Self { order, batch_size })
    }

    /// The seed of epoch `epoch` of a run seeded with `seed`: epochs differ, runs repeat.
    pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
        SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xA076_1D64_78BD_642F)).next_u64()
    }

    /// Number of batches.
    pub fn len(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    /// Whether there is no batch at all.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The index batches, in order.
    pub fn batches(&self) -> impl Iterator<Item = &[usize]> {
        self.order.chunks(self.batch_size)
    }
}

/// A stored pixel as the float every model sees: `pixel / 255`, in [0, 1].
pub fn unit_pixel(p: u8) -> f32 {
    f32::from(p) / 255.0
}

/// The images at `indices` as floats in [0, 1] ([`unit_pixel`]) and their labels.
///
/// # Shapes
///
/// - images: `[B, channels, rows, cols]` with `B = indices.len()`
/// - labels: `[B]`
pub fn to_tensors(
    split: &Split,
    indices: &[usize],
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let size = split.image_size();
    let mut pixels = Vec::with_capacity(indices.len() * size);
    let mut labels = Vec::with_capacity(indices.len());
    for &i in indices {
        let img = &split.images.pixels[i * size..(i + 1) * size];
        pixels.extend(img.iter().map(|&p| unit_pixel(p)));
        labels.push(i64::from(split.labels[i]));
    }
    let b = indices.len();
    let images = Tensor::<4>::from_data(
        TensorData::new(
            pixels,
            [
                b,
                split.images.channels,
                split.images.rows,
                split.images.cols,
            ],
        ),
        device,
    );
    let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [b]), device);
    (images, labels)
}

/// A contiguous range `start..start + len` of a split as tensors (see [`to_tensors`]).
///
/// # Shapes
///
/// - images: `[len, channels, rows, cols]`, labels: `[len]`
pub fn range_tensors(
    split: &Split,
    start: usize,
    len: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<1, Int>) {
    let indices: Vec<usize> = (start..(start + len).min(split.len())).collect();
    to_tensors(split, &indices, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::IdxImages;

    fn split() -> Split {
        Split {
            images: IdxImages {
                count: 3,
                channels: 1,
                rows: 1,
                cols: 2,
                pixels: vec![0, 255, 51, 102, 153, 204],
            },
            labels: vec![4, 5, 6],
        }
    }

    #[test]
    fn batches_cover_every_index_once() {
        let b = Batcher::new(10, 4, Some(3)).expect("batcher");
        assert_eq!(b.len(), 3);
        let mut all: Vec<usize> = b.batches().flatten().copied().collect();
        assert_eq!(b.batches().last().map(<[usize]>::len), Some(2));
        all.sort();
        assert_eq!(all, (0..10).collect::<Vec<_>>());
        assert!(Batcher::new(10, 0, None).is_err());
    }

    #[test]
    #[allow(deprecated)] // Device::ndarray is deprecated in burn 0.22 in favour of flex; it is our default CPU backend
    fn tensors_are_scaled_pixels_and_labels() {
        let device = Device::ndarray();
        let (x, y) = to_tensors(&split(), &[2, 0], &device);
        assert_eq!(x.dims(), [2, 1, 1, 2]);
        let xs = x.into_data().try_into_vec_as::<f32>().expect("f32");
        // 153/255 = 0.6, 204/255 = 0.8, then 0 and 1
        let expected = [0.6, 0.8, 0.0, 1.0];
        for (a, e) in xs.iter().zip(expected) {
            assert!((a - e).abs() < 1e-6, "{xs:?}");
        }
        let ys = y.into_data().try_into_vec_as::<i64>().expect("i64");
        assert_eq!(ys, vec![6, 4]);
    }
}
