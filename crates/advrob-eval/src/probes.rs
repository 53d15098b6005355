//! Measurements on a trained model that its evaluation records cannot give: whether its input
//! gradient exists, and what an unbounded attack leaves of it. The masking verdict reads them.

use advrob_attack::{Attack, PgdConfig, input_gradient};
use advrob_data::{Split, range_tensors};
use advrob_model::Classifier;
use burn::tensor::Device;

use crate::{EvalError, Result};

/// Examples the unbounded-ε attack of [`probe`] runs on (the first of the test set).
pub const UNBOUNDED_EXAMPLES: usize = 1000;

/// What [`probe`] measured on one model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Share of the examples whose cross-entropy input gradient (against the true label, through
    /// the deployed model) is all zero or not finite.
    pub zero_gradient_share: f64,
    /// Accuracy under plain L∞ PGD (20 steps, random start) at ε = 1, the whole input space, on
    /// the first `unbounded_examples` examples: the share of them classified correctly after it.
    pub unbounded_accuracy: f64,
    /// Examples of the unbounded attack.
    pub unbounded_examples: usize,
    /// Classes of the model: chance accuracy is 1 / classes.
    pub classes: usize,
}

/// Share of `data`'s examples whose cross-entropy input gradient is all zero or not finite,
/// in batches of 1000.
pub fn zero_gradient_share(model: &dyn Classifier, data: &Split, device: &Device) -> Result<f64> {
    let size = data.image_size();
    let mut flat = 0usize;
    for start in (0..data.len()).step_by(1000) {
        let (x, y) = range_tensors(data, start, 1000, device);
        let g = input_gradient(model, x, y)?
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| EvalError::Readback(format!("{e:?}")))?;
        flat += g
            .chunks(size)
            .filter(|ex| ex.iter().all(|v| *v == 0.0) || ex.iter().any(|v| !v.is_finite()))
            .count();
    }
    Ok(flat as f64 / data.len().max(1) as f64)
}

/// Accuracy under plain L∞ PGD (20 steps, random start) at ε = 1 on the first `n` examples of
/// `data` (fewer if it has fewer), in batches of 500; returns it with the number of examples.
pub fn unbounded_accuracy(
    model: &dyn Classifier,
    data: &Split,
    n: usize,
    device: &Device,
) -> Result<(f64, usize)> {
    let attack = PgdConfig::linf(20).check()?;
    let n = data.len().min(n);
    let mut correct = 0i64;
    for start in (0..n).step_by(500) {
        let (x, y) = range_tensors(data, start, 500.min(n - start), device);
        let adv = attack.perturb(model, x, y.clone(), 1.0)?;
        let pred = model.logits(adv).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>();
    }
    Ok((correct as f64 / n.max(1) as f64, n))
}

/// Both measurements of a model with `classes` classes on `data`.
pub fn probe(
    model: &dyn Classifier,
    classes: usize,
    data: &Split,
    device: &Device,
) -> Result<Probe> {
    let zero_gradient_share = zero_gradient_share(model, data, device)?;
    let (unbounded_accuracy, unbounded_examples) =
        unbounded_accuracy(model, data, UNBOUNDED_EXAMPLES, device)?;
    Ok(Probe {
        zero_gradient_share,
        unbounded_accuracy,
        unbounded_examples,
        classes,
    })
}
