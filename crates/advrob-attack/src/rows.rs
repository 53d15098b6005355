//! The bookkeeping iterative attacks share: per-example results on the host that several runs
//! (restarts, target classes) improve in turn, the rows of a batch still being attacked, and the
//! seeds of their random draws.

use advrob_data::rng::SplitMix64;
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{AttackError, Result};

pub(crate) use advrob_model::backend::sum_f32;

/// A seed for the random draws of `parts` (the attack's own seed, the evaluation's, a restart):
/// every combination gives an independent SplitMix64 stream.
pub fn mix_seed(parts: &[u64]) -> u64 {
    let mut rng = SplitMix64::new(0x05EE_D0FA_D50B);
    let mut h = rng.next_u64();
    for &p in parts {
        h = SplitMix64::new(h ^ p.wrapping_mul(0x9E37_79B9_7F4A_7C15)).next_u64();
    }
    h
}

pub(crate) use advrob_model::backend::{host_f32 as host, host_i64 as host_int};

/// `f` of a float tensor's values on the host (where they lie on burn-ndarray, else a copy).
pub(crate) fn on_host<const D: usize, R>(t: &Tensor<D>, f: impl FnMut(&[f32]) -> R) -> Result<R> {
    advrob_model::backend::on_host_f32(t, f)
        .ok_or_else(|| AttackError::Readback("the tensor's values are not f32".into()))
}

/// Rows `rows` of `t`, in that order.
///
/// # Shapes
///
/// - t: `[B, ...]`, output: `[rows.len(), ...]`
pub(crate) fn select_rows<const D: usize, K>(t: Tensor<D, K>, rows: &[usize]) -> Tensor<D, K>
where
    K: burn::tensor::kind::Basic,
{
    let device = t.device();
    let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
    let n = idx.len();
    t.select(
        0,
        Tensor::<1, Int>::from_data(TensorData::new(idx, [n]), &device),
    )
}

/// Rows `kept` of `v` (rows of `size` values on the host), in that order.
pub(crate) fn take_rows<T: Copy>(v: &[T], size: usize, kept: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(kept.len() * size);
    for &i in kept {
        out.extend_from_slice(&v[i * size..(i + 1) * size]);
    }
    out
}

/// Row `i` of `dst` replaced by row `i` of `src` wherever `mask[i]` (rows of `size` values on the
/// host): [`blend`] without the device.
pub(crate) fn copy_rows(dst: &mut [f32], src: &[f32], size: usize, mask: &[bool]) {
    for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
        dst[i * size..(i + 1) * size].copy_from_slice(&src[i * size..(i + 1) * size]);
    }
}

/// `(x + P(a − x)).clamp(0, 1)` for one value: `a` projected onto the L∞ ball of radius `eps`
/// around `x` and into [0, 1], in the f32 operations of [`project`](crate::norms::project) on tensors.
#[inline(always)]
pub(crate) fn project_linf(x: f32, a: f32, eps: f32) -> f32 {
    clip(x + clip(a - x, -eps, eps), 0.0, 1.0)
}

/// `v.clamp(lo, hi)` without its check that `lo ≤ hi` (which keeps a loop from vectorising): the
/// same comparisons in the same order, so the same value, NaN included.
#[inline(always)]
pub(crate) fn clip(v: f32, lo: f32, hi: f32) -> f32 {
    let v = if v < lo { lo } else { v };
    if v > hi { hi } else { v }
}

/// The L2 norm of a row (summed as [`sum_f32`] does).
pub(crate) fn norm_l2(row: &[f32]) -> f32 {
    sum_f32(&row.iter().map(|v| v * v).collect::<Vec<f32>>()).sqrt()
}

/// Row `a` projected onto the L2 ball of radius `eps` around row `x` and into [0, 1], in place
/// (as [`project`](crate::norms::project) does on tensors: δ scaled by min(1, ε/‖δ‖), then clipped).
pub(crate) fn project_l2_row(x: &[f32], a: &mut [f32], eps: f32) {
    let delta: Vec<f32> = a.iter().zip(x).map(|(a, x)| a - x).collect();
    let factor = (norm_l2(&delta).max(1e-12).recip() * eps).min(1.0);
    for ((a, x), d) in a.iter_mut().zip(x).zip(&delta) {
        *a = (x + d * factor).clamp(0.0, 1.0);
    }
}

/// The sign of a gradient value as burn's `sign` gives it (0 for 0 and NaN).
#[inline(always)]
pub(crate) fn sign(g: f32) -> f32 {
    if g > 0.0 {
        1.0
    } else if g < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Per example of a batch, the model passes an attack spent on it (forward 1, forward and
/// backward 2) and those up to its first success: what
/// [`Attack::perturb_costed`](crate::Attack::perturb_costed) returns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    spent: Vec<u64>,
    success_at: Vec<Option<u64>>,
}

impl Ledger {
    /// Nothing spent on `examples` examples yet.
    pub fn new(examples: usize) -> Self {
        Self {
            spent: vec![0; examples],
            success_at: vec![None; examples],
        }
    }

    /// Charges `units` passes to example `row`.
    pub fn charge(&mut self, row: usize, units: u64) {
        self.spent[row] += units;
    }

    /// Example `row` succeeded `within` passes after those charged so far (kept only the first
    /// time).
    pub fn succeed(&mut self, row: usize, within: u64) {
        if self.success_at[row].is_none() {
            self.success_at[row] = Some(self.spent[row] + within);
        }
    }

    /// Per example, the passes up to its first success, or all of them where it has none.
    pub fn costs(&self) -> Vec<u64> {
        self.success_at
            .iter()
            .zip(&self.spent)
            .map(|(at, spent)| at.unwrap_or(*spent))
            .collect()
    }
}

/// The best result so far of every example of a batch, on the host: an image that is
/// misclassified if one was found, else the one of highest loss. Runs offer their results; a
/// misclassified image is kept over any unsuccessful one, and among unsuccessful ones the higher
/// loss wins ("success first, loss second").
#[derive(Debug, Clone)]
pub(crate) struct Best {
    size: usize,
    /// Per example, `size` pixels.
    pub images: Vec<f32>,
    /// Per example, the loss of its image (−∞ before any offer).
    pub loss: Vec<f32>,
    /// Per example, whether its image is misclassified.
    pub fooled: Vec<bool>,
    /// Per example, the model passes charged to it ([`Best::charge`]) and those up to its first
    /// misclassified image.
    ledger: Ledger,
}

impl Best {
    /// Every example starts as its clean image, unsuccessful, at loss −∞.
    pub fn new(clean: Vec<f32>, examples: usize) -> Self {
        let size = clean.len() / examples.max(1);
        Self {
            size,
            images: clean,
            loss: vec![f32::NEG_INFINITY; examples],
            fooled: vec![false; examples],
            ledger: Ledger::new(examples),
        }
    }

    /// Charges `units` model passes (forward 1, forward and backward 2) to each example of
    /// `rows`.
    pub fn charge(&mut self, rows: &[usize], units: u64) {
        for &r in rows {
            self.ledger.charge(r, units);
        }
    }

    /// Per example, the passes charged up to its first misclassified image, or all of them where
    /// it has none ([`Attack::perturb_costed`](crate::Attack::perturb_costed)).
    pub fn costs(&self) -> Vec<u64> {
        self.ledger.costs()
    }

    /// The examples not fooled yet, in order.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.fooled.len())
            .filter(|&i| !self.fooled[i])
            .collect()
    }

    /// Offers `image` (its loss, whether it is misclassified) as example `row`'s result.
    pub fn offer(&mut self, row: usize, image: &[f32], loss: f32, fooled: bool) {
        let better = if fooled {
            !self.fooled[row]
        } else {
            !self.fooled[row] && loss > self.loss[row]
        };
        if fooled {
            self.ledger.succeed(row, 0);
        }
        if better {
            self.images[row * self.size..(row + 1) * self.size].copy_from_slice(image);
            self.loss[row] = loss;
            self.fooled[row] = fooled;
        }
    }

    /// The images as a device tensor of shape `dims`.
    pub fn tensor(&self, dims: [usize; 4], device: &Device) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.images.clone(), dims), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_first_then_loss() {
        let mut b = Best::new(vec![0.0; 4], 2);
        b.offer(0, &[1.0, 1.0], 2.0, false);
        b.offer(0, &[2.0, 2.0], 1.0, false); // lower loss: kept out
        assert_eq!(&b.images[0..2], &[1.0, 1.0]);
        b.offer(0, &[3.0, 3.0], 0.5, true); // success beats any loss
        b.offer(0, &[4.0, 4.0], 9.0, false); // and stays
        b.offer(0, &[5.0, 5.0], 9.0, true); // the first success is kept
        assert_eq!(&b.images[0..2], &[3.0, 3.0]);
        assert_eq!(b.pending(), vec![1]);
        assert!(mix_seed(&[1, 2]) != mix_seed(&[2, 1]) && mix_seed(&[1]) != mix_seed(&[1, 0]));
    }

    #[test]
    fn host_sums_are_burn_ndarrays_to_the_bit() {
        #[allow(deprecated)]
        let device = Device::ndarray();
        let mut rng = SplitMix64::new(7);
        for len in [1usize, 7, 8, 9, 100, 784] {
            let rows = 5;
            let v: Vec<f32> = (0..rows * len)
                .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32 * 3.7)
                .collect();
            let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [rows, len]), &device);
            let want = host(t.sum_dim(1)).expect("host");
            let got: Vec<f32> = v.chunks(len).map(sum_f32).collect();
            assert_eq!(got, want, "rows of {len}");
        }
    }
}
