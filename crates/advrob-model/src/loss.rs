//! Losses over logits against hard or soft targets.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// The training criterion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// Cross-entropy of softmax(logits) against the targets (the study's README).
    #[default]
    CrossEntropy,
    /// Mean squared error between softmax(logits) and the targets (the seed-000 notebook).
    Mse,
}

/// What a batch is trained towards.
#[derive(Debug, Clone)]
pub enum Targets {
    /// Class indices.
    ///
    /// # Shapes
    ///
    /// `[B]`
    Labels(Tensor<1, Int>),
    /// A probability distribution per example (smoothed labels, a teacher's soft labels).
    ///
    /// # Shapes
    ///
    /// `[B, classes]`
    Soft(Tensor<2>),
}

impl Targets {
    /// The targets as distributions: one-hot for labels.
    ///
    /// # Shapes
    ///
    /// output: `[B, classes]`
    pub fn dense(self, classes: usize) -> Tensor<2> {
        match self {
            Targets::Labels(y) => y.one_hot(classes).float(),
            Targets::Soft(p) => p,
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        match self {
            Targets::Labels(y) => y.dims()[0],
            Targets::Soft(p) => p.dims()[0],
        }
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` examples' targets.
    pub fn head(&self, n: usize) -> Targets {
        match self {
            Targets::Labels(y) => Targets::Labels(y.clone().slice(0..n)),
            Targets::Soft(p) => Targets::Soft(p.clone().slice(0..n)),
        }
    }

    /// Concatenation along the batch; mixed kinds become soft.
    pub fn cat(self, other: Targets, classes: usize) -> Targets {
        match (self, other) {
            (Targets::Labels(a), Targets::Labels(b)) => Targets::Labels(Tensor::cat(vec![a, b], 0)),
            (a, b) => Targets::Soft(Tensor::cat(vec![a.dense(classes), b.dense(classes)], 0)),
        }
    }
}

/// Mean loss over the batch.
///
/// Cross-entropy: `mean_b(−Σ_k t_bk · log softmax(z_b)_k)`. MSE: `mean_{b,k}((softmax(z_b)_k − t_bk)²)`,
/// as Keras' `mean_squared_error` on a softmax output.
///
/// # Shapes
///
/// - logits: `[B, classes]`; output: `[1]`
pub fn loss(kind: LossKind, logits: Tensor<2>, targets: Targets) -> Tensor<1> {
    let classes = logits.dims()[1];
    match (kind, targets) {
        (LossKind::CrossEntropy, Targets::Labels(y)) => {
            let b = y.dims()[0];
            let picked = log_softmax(logits, 1).gather(1, y.reshape([b, 1]));
            picked.mean().neg()
        }
        (LossKind::CrossEntropy, t) => {
            let t = t.dense(classes);
            (t * log_softmax(logits, 1)).sum_dim(1).mean().neg()
        }
        (LossKind::Mse, t) => {
            let t = t.dense(classes);
            (softmax(logits, 1) - t).square().mean()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use burn::tensor::TensorData;

    fn scalar(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_classes() {
        on_test_backends(|d| {
            let d = d.clone();
            let z = Tensor::<2>::zeros([2, 4], &d);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 3], [2]), &d);
            // softmax is 1/4 everywhere: −log(1/4) = 1.3863
            let l = scalar(loss(
                LossKind::CrossEntropy,
                z.clone(),
                Targets::Labels(y.clone()),
            ));
            assert!((l - 4f32.ln()).abs() < 1e-5, "{l}");
            // the soft path gives the same on one-hot targets
            let l2 = scalar(loss(
                LossKind::CrossEntropy,
                z,
                Targets::Soft(y.one_hot(4).float()),
            ));
            assert!((l2 - 4f32.ln()).abs() < 1e-5, "{l2}");
        });
    }

    #[test]
    fn mse_matches_hand_computation() {
        on_test_backends(|d| {
            let d = d.clone();
            let z = Tensor::<2>::zeros([1, 2], &d);
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64], [1]), &d);
            // softmax = (0.5, 0.5), target (0, 1): ((0.5)² + (0.5)²) / 2 = 0.25
            let l = scalar(loss(LossKind::Mse, z, Targets::Labels(y)));
            assert!((l - 0.25).abs() < 1e-6, "{l}");
        });
    }
}
