//! Counting a model's forward and backward passes while an attack runs on it.

use std::cell::Cell;

use advrob_model::Classifier;
use burn::tensor::Tensor;

use crate::record::Passes;

/// A model that counts the examples passed through it ([`Passes`]).
pub(crate) struct Counting<'a> {
    pub(crate) inner: &'a dyn Classifier,
    pub(crate) passes: &'a Cell<Passes>,
}

impl Counting<'_> {
    fn count(&self, images: &Tensor<4>) {
        count_into(self.passes)(images.dims()[0], images.is_require_grad());
    }
}

impl Classifier for Counting<'_> {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.count(&images);
        self.inner.logits(images)
    }

    /// The inner model's split, its head counted: each row it maps is one forward pass.
    fn affine_first(&self) -> Option<advrob_model::AffineFirst<'_>> {
        let passes = self.passes;
        Some(
            self.inner
                .affine_first()?
                .wrap(None::<fn(f32) -> f32>, move |logits| {
                    let mut p = passes.get();
                    p.forward += logits.dims()[0] as u64;
                    passes.set(p);
                    logits
                }),
        )
    }

    /// The inner model's host chain, its passes counted as the model's own.
    fn dense(&self) -> Option<advrob_model::Dense<'_>> {
        Some(self.inner.dense()?.counted(count_into(self.passes)))
    }

    fn straight_through(&self) -> Option<Box<dyn Classifier + '_>> {
        let view = self.inner.straight_through()?;
        Some(Box::new(CountingView {
            view,
            passes: self.passes,
        }))
    }
}

/// Counts a host pass of `rows` examples (with a gradient or not) into `passes`.
fn count_into(passes: &Cell<Passes>) -> impl Fn(usize, bool) + '_ {
    move |rows, with_gradient| {
        let mut p = passes.get();
        p.forward += rows as u64;
        if with_gradient {
            p.backward += rows as u64;
        }
        passes.set(p);
    }
}

/// A straight-through view of a counted model, counted too.
struct CountingView<'a> {
    view: Box<dyn Classifier + 'a>,
    passes: &'a Cell<Passes>,
}

impl Classifier for CountingView<'_> {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        Counting {
            inner: self.view.as_ref(),
            passes: self.passes,
        }
        .count(&images);
        self.view.logits(images)
    }

    fn dense(&self) -> Option<advrob_model::Dense<'_>> {
        Some(self.view.dense()?.counted(count_into(self.passes)))
    }
}
