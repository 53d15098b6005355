//! The trait every attack and evaluation is written against: a model is whatever maps a batch of
//! images to logits; the optional views (a straight-through copy for BPDA, an affine first layer
//! for incremental Square, a host chain of dense layers) let attacks take faster or exact paths
//! where a model offers them.

use burn::tensor::Tensor;

use crate::affine::AffineFirst;
use crate::dense::Dense;

/// Anything that maps a batch of images to logits: what attacks and evaluations need of a model.
/// Defenses that change the deployed function (input transforms, temperatures) implement it too.
pub trait Classifier {
    /// Inference-mode logits.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]` in [0, 1]
    /// - output: `[B, classes]`
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// The same function with every non-differentiable input transform replaced, for gradients
    /// only, by the identity (BPDA's straight-through estimator, Athalye et al. 2018): the forward
    /// values are unchanged. `None` when the model has no such transform.
    fn straight_through(&self) -> Option<Box<dyn Classifier + '_>> {
        None
    }

    /// The same function opened at an affine first layer, `head(pixel(x) · W + b)`, for attacks
    /// that change a few pixels at a time ([`AffineFirst`]). `None` when the model has no such
    /// layer (convolutions, a non-elementwise input transform) or its weights cannot be read.
    fn affine_first(&self) -> Option<AffineFirst<'_>> {
        None
    }

    /// The same function as a chain of dense layers on the host ([`Dense`]), for attacks that
    /// run many passes on a CPU. `None` when the model is not such a chain (convolutions) or its
    /// weights cannot be read.
    fn dense(&self) -> Option<Dense<'_>> {
        None
    }
}
