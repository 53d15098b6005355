//! What a run measures on each trained model besides its records, so that a report needs nothing
//! but the run directory: the gradient and forward-pass probes the masking verdict reads, and the
//! example images of the report's grids (a few test digits, the adversarial images at a few ε and
//! what the model says of each). Written once per checkpoint, as
//! `observations/<checkpoint directory name>.json`, by the writer that evaluates the model.

use std::path::Path;

use advrob_attack::{Access, AttackInfo, AttackLoss, Family, Norm};
use advrob_data::Split;
use advrob_data::rng::SplitMix64;
use advrob_eval::Probe;
use advrob_model::{Classifier, backend};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;

/// Test digits of an example grid.
pub const GRID_EXAMPLES: usize = 6;
/// Seed that draws them: the same digits for every model.
pub const GRID_SEED: u64 = 42;
/// Budgets an example grid shows at most.
pub const GRID_EPS: usize = 4;

/// The measurements of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observations {
    /// The model's name in the matrix.
    pub model: String,
    /// Its cache key.
    pub model_key: String,
    /// The backend it ran on.
    pub backend: String,
    /// Its seed.
    pub seed: u64,
    /// The weights measured (the records' `checkpoint_sha256`).
    pub checkpoint_sha256: String,
    /// Test examples of the run: the probe's gradient checks ran on all of them.
    pub test_examples: usize,
    /// The probe ([`advrob_eval::probe`]).
    pub probe: Probe,
    /// The example grid, when the matrix has an attack to draw ([`grid_attack`]).
    pub grid: Option<ExampleGrid>,
}

fn one_channel() -> usize {
    1
}

/// The images of an example grid and the model's predictions on them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleGrid {
    /// The attack's name in the matrix.
    pub attack: String,
    /// Channels per image: 1 (grey) or 3 (red, green, blue planes); 1 in files written before
    /// colour images.
    #[serde(default = "one_channel")]
    pub channels: usize,
    /// Image height.
    pub rows: usize,
    /// Image width.
    pub cols: usize,
    /// The test indices drawn ([`example_indices`]).
    pub indices: Vec<usize>,
    /// Their labels.
    pub labels: Vec<i64>,
    /// The originals.
    pub clean: Column,
    /// The adversarial images, one column per budget shown ([`shown_eps`]).
    pub adversarial: Vec<(f64, Column)>,
}

/// Images side by side with the class the model predicts for each and its confidence (the
/// softmax's maximum).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    /// Pixels in [0, 1], image after image.
    pub pixels: Vec<f32>,
    /// Predicted classes.
    pub predicted: Vec<i64>,
    /// Confidences.
    pub confidence: Vec<f32>,
}

/// `n` distinct test indices drawn from `seed`: the same digits for every model.
pub fn example_indices(len: usize, n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut out: Vec<usize> = Vec::with_capacity(n.min(len));
    while out.len() < n.min(len) {
        let i = rng.below(len as u64) as usize;
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// Up to `k` budgets of `grid` to show, spread over it (never 0).
pub fn shown_eps(grid: &[f64], k: usize) -> Vec<f64> {
    let nz: Vec<f64> = grid.iter().copied().filter(|&e| e > 0.0).collect();
    if nz.len() <= k {
        return nz;
    }
    (0..k)
        .map(|i| nz[(i * (nz.len() - 1)) / (k - 1).max(1)])
        .collect()
}

/// Whether `info` is the study's FGSM (untargeted L∞ cross-entropy, one step, white-box).
pub fn is_study_fgsm(info: &AttackInfo) -> bool {
    *info == AttackInfo::white_box(Family::Fgsm, Norm::Linf, AttackLoss::CrossEntropy, 1)
}

/// The attack whose images stand for a model in a report: the study's FGSM, else the first
/// untargeted attack that is not a transfer attack (that one would need its surrogate); `None`
/// when there is neither. Indices into `infos`.
pub fn grid_attack<'a>(infos: impl IntoIterator<Item = &'a AttackInfo>) -> Option<usize> {
    let mut first = None;
    for (i, info) in infos.into_iter().enumerate() {
        if info.targeted || info.access == Access::Transfer {
            continue;
        }
        if is_study_fgsm(info) {
            return Some(i);
        }
        first.get_or_insert(i);
    }
    first
}

/// The attack whose figure a report quotes for a model: the first ensemble that counts for
/// robustness (AutoAttack's recipe: the per-example worst case of its components). Its
/// convergence and its binarization test are measured on each checkpoint. `None` without one.
pub fn quoted_attack<'a>(infos: impl IntoIterator<Item = &'a AttackInfo>) -> Option<usize> {
    infos
        .into_iter()
        .position(|info| info.family == Family::Ensemble && info.counts_for_robustness())
}

/// The example grid of `model` under `attack` at the budgets [`shown_eps`] picks from `grid`.
pub fn example_grid(
    model: &dyn Classifier,
    attack: (&str, &dyn advrob_attack::Attack),
    test: &Split,
    grid: &[f64],
    device: &Device,
) -> Result<ExampleGrid> {
    let indices = example_indices(test.len(), GRID_EXAMPLES, GRID_SEED);
    let [channels, rows, cols] = test.images.image();
    let (x, y) = advrob_data::to_tensors(test, &indices, device);
    let labels: Vec<i64> = indices.iter().map(|&i| i64::from(test.labels[i])).collect();
    let eps = shown_eps(grid, GRID_EPS);
    let advs = attack.1.perturb_grid(model, x.clone(), y, &eps, 0)?;
    let clean = column(model, x)?;
    let mut adversarial = Vec::with_capacity(eps.len());
    for (adv, &e) in advs.into_iter().zip(&eps) {
        adversarial.push((e, column(model, adv)?));
    }
    Ok(ExampleGrid {
        attack: attack.0.to_string(),
        channels,
        rows,
        cols,
        indices,
        labels,
        clean,
        adversarial,
    })
}

/// The images of `t` and what `model` says of them.
fn column(model: &dyn Classifier, t: Tensor<4>) -> Result<Column> {
    let t = t.without_autodiff();
    let p = softmax(model.logits(t.clone()), 1);
    let confidence = p.clone().max_dim(1).flatten::<1>(0, 1);
    let predicted = p.argmax(1).flatten::<1>(0, 1);
    let readback = |e: backend::Readback| ExperimentError::invalid("observations", e.to_string());
    Ok(Column {
        pixels: backend::host_f32(t).map_err(readback)?,
        predicted: backend::host_i64(predicted).map_err(readback)?,
        confidence: backend::host_f32(confidence).map_err(readback)?,
    })
}

/// Writes `obs` as the observations of the checkpoint in `checkpoint_dir`.
pub fn write(run: &RunDir, checkpoint_dir: &Path, obs: &Observations) -> Result<()> {
    crate::json_dir::write(&run.observations_of(checkpoint_dir), obs, "observations")
}

/// Every observation file of `run`, in file-name order; a file that is not one is an error
/// naming it.
pub fn read_all(run: &RunDir) -> Result<Vec<Observations>> {
    crate::json_dir::read_all(&run.observations(), "observations")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_indices_are_distinct_and_repeatable() {
        let a = example_indices(100, 6, 42);
        assert_eq!(a, example_indices(100, 6, 42));
        let mut b = a.clone();
        b.sort();
        b.dedup();
        assert_eq!(b.len(), 6);
        assert!(a.iter().all(|&i| i < 100));
        assert_eq!(example_indices(3, 6, 1).len(), 3);
    }

    #[test]
    fn shown_eps_spreads_over_the_grid() {
        assert_eq!(shown_eps(&[0.0, 0.1, 0.2], 4), [0.1, 0.2]);
        assert_eq!(
            shown_eps(&[0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4], 4),
            [0.05, 0.15, 0.25, 0.4]
        );
    }

    #[test]
    fn the_grid_attack_is_the_study_fgsm_else_the_first_untargeted_white_box_one() {
        let fgsm = AttackInfo::white_box(Family::Fgsm, Norm::Linf, AttackLoss::CrossEntropy, 1);
        let pgd = AttackInfo::white_box(Family::Pgd, Norm::Linf, AttackLoss::CrossEntropy, 40);
        let mut targeted = fgsm.clone();
        targeted.targeted = true;
        let mut transfer = pgd.clone();
        transfer.access = Access::Transfer;
        assert_eq!(grid_attack([&pgd, &fgsm]), Some(1));
        assert_eq!(grid_attack([&targeted, &transfer, &pgd]), Some(2));
        assert_eq!(grid_attack([&targeted, &transfer]), None);
    }
}
