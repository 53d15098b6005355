//! The norms of a perturbation and the projections onto their balls, shared by the attacks that
//! take steps (PGD, FMN, the host rows of APGD).

use burn::tensor::Tensor;

use crate::info::Norm;

/// Per-example L2 norm, shaped to broadcast over the image.
///
/// # Shapes
///
/// - t: `[B, C, H, W]`, output: `[B, 1, 1, 1]`
pub(crate) fn l2_norms(t: Tensor<4>) -> Tensor<4> {
    let [b, ..] = t.dims();
    t.square()
        .reshape([b as i64, -1])
        .sum_dim(1)
        .sqrt()
        .reshape([b, 1, 1, 1])
}

/// `δ` projected onto the ε-ball of `norm` (per example for L2).
///
/// # Shapes
///
/// - delta: `[B, C, H, W]`, output: `[B, C, H, W]`
pub fn project(delta: Tensor<4>, norm: Norm, eps: f64) -> Tensor<4> {
    match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let n = l2_norms(delta.clone()).clamp_min(1e-12);
            let factor = (n.recip() * eps).clamp_max(1.0);
            delta * factor
        }
    }
}
