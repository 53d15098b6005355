//! Measurements on a trained model that its evaluation records cannot give: whether its input
//! gradient exists (on the cross-entropy and on the DLR loss), what an unbounded attack leaves of
//! it, whether its forward pass is random, and whether its outputs look like probabilities rather
//! than logits. The masking verdict reads them.

use advrob_attack::{Attack, AttackLoss, PgdConfig, loss_gradient};
use advrob_data::{Split, range_tensors};
use advrob_model::Classifier;
use burn::tensor::Device;

use crate::{EvalError, Result};

/// Examples the unbounded-ε attack of [`probe`] runs on (the first of the test set).
pub const UNBOUNDED_EXAMPLES: usize = 1000;

/// What [`probe`] measured on one model.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// Share of the examples whose cross-entropy input gradient (against the true label, through
    /// the deployed model) is all zero or not finite.
    pub zero_gradient_share: f64,
    /// The same for the DLR loss (Croce & Hein 2020), which needs no softmax: `None` for models
    /// of fewer than 3 classes.
    pub zero_dlr_gradient_share: Option<f64>,
    /// Robust accuracy under plain L∞ PGD (20 steps, random start) at ε = 1, the whole input
    /// space, on the first `unbounded_examples` examples: the share of them classified correctly
    /// both before and after it.
    pub unbounded_accuracy: f64,
    /// Of those examples classified correctly before the unbounded attack, the share it broke.
    pub unbounded_broken: f64,
    /// Examples of the unbounded attack.
    pub unbounded_examples: usize,
    /// Classes of the model: chance accuracy is 1 / classes.
    pub classes: usize,
    /// Whether two forward passes on the same images gave different outputs (a randomised
    /// defense: attacks then need expectation over transformation).
    pub random_forward: bool,
    /// Whether every output row lies in [0, 1] and sums to 1: the model returns probabilities,
    /// not logits, and every loss that applies a softmax to them is squashed.
    pub probability_outputs: bool,
    /// The binarization test of the quoted attack, per ε ([`crate::binarization`]): filled by the
    /// runner, which knows the attack; empty where it did not run (and in files written before it).
    #[serde(default)]
    pub binarization: Vec<crate::binarization::Binarization>,
    /// The quoted attack against a stronger setting of itself, per ε ([`crate::convergence`]):
    /// filled by the runner; empty where it did not run.
    #[serde(default)]
    pub convergence: Vec<crate::convergence::Convergence>,
}

/// Share of `data`'s examples whose input gradient of `loss` is all zero or not finite, in
/// batches of 1000.
pub fn zero_gradient_share(
    model: &dyn Classifier,
    data: &Split,
    loss: AttackLoss,
    device: &Device,
) -> Result<f64> {
    let size = data.image_size();
    let mut flat = 0usize;
    for start in (0..data.len()).step_by(1000) {
        let (x, y) = range_tensors(data, start, 1000, device);
        let g = loss_gradient(model, x, y, loss)?
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

/// Plain L∞ PGD (20 steps, random start) at ε = 1 on the first `n` examples of `data` (fewer if
/// it has fewer), in batches of 500: the robust accuracy (correct before and after), the share of
/// the clean-correct examples it broke, and the number of examples.
pub fn unbounded_attack(
    model: &dyn Classifier,
    data: &Split,
    n: usize,
    device: &Device,
) -> Result<(f64, f64, usize)> {
    let attack = PgdConfig::linf(20).check()?;
    let n = data.len().min(n);
    let (mut clean, mut robust) = (0i64, 0i64);
    for start in (0..n).step_by(500) {
        let (x, y) = range_tensors(data, start, 500.min(n - start), device);
        let clean_ok = model
            .logits(x.clone())
            .argmax(1)
            .flatten::<1>(0, 1)
            .equal(y.clone());
        let adv = attack.perturb_seeded(model, x, y.clone(), 1.0, start as u64)?;
        let adv_ok = model.logits(adv).argmax(1).flatten::<1>(0, 1).equal(y);
        clean += clean_ok.clone().int().sum().into_scalar::<i64>();
        robust += clean_ok.int().mul(adv_ok.int()).sum().into_scalar::<i64>();
    }
    let broken = if clean > 0 {
        (clean - robust) as f64 / clean as f64
    } else {
        1.0
    };
    Ok((robust as f64 / n.max(1) as f64, broken, n))
}

/// Whether two forward passes on the first 100 examples differ, and whether the outputs look
/// like probabilities (every entry in [0, 1], every row summing to 1 within 10⁻³).
pub fn forward_checks(
    model: &dyn Classifier,
    data: &Split,
    device: &Device,
) -> Result<(bool, bool)> {
    let (x, _) = range_tensors(data, 0, 100, device);
    let host = |t: burn::tensor::Tensor<2>| {
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| EvalError::Readback(format!("{e:?}")))
    };
    let first = model.logits(x.clone());
    let classes = first.dims()[1];
    let a = host(first)?;
    let b = host(model.logits(x))?;
    let random = a != b;
    let probabilities = a.iter().all(|v| (0.0..=1.0).contains(v))
        && a.chunks(classes)
            .all(|row| (row.iter().sum::<f32>() - 1.0).abs() < 1e-3);
    Ok((random, probabilities))
}

/// Every measurement of a model with `classes` classes on `data`.
pub fn probe(
    model: &dyn Classifier,
    classes: usize,
    data: &Split,
    device: &Device,
) -> Result<Probe> {
    let ce = zero_gradient_share(model, data, AttackLoss::CrossEntropy, device)?;
    let dlr = if classes >= 3 {
        Some(zero_gradient_share(model, data, AttackLoss::Dlr, device)?)
    } else {
        None
    };
    let (unbounded_accuracy, unbounded_broken, unbounded_examples) =
        unbounded_attack(model, data, UNBOUNDED_EXAMPLES, device)?;
    let (random_forward, probability_outputs) = forward_checks(model, data, device)?;
    Ok(Probe {
        zero_gradient_share: ce,
        zero_dlr_gradient_share: dlr,
        unbounded_accuracy,
        unbounded_broken,
        unbounded_examples,
        classes,
        random_forward,
        probability_outputs,
        binarization: Vec::new(),
        convergence: Vec::new(),
    })
}
