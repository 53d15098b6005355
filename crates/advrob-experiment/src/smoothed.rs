//! Randomized smoothing in a matrix run: the smoothed classifier of each model the matrix's
//! `[smoothing]` section names ([`SmoothingSpec`]) is certified with
//! [`advrob_verify::certify_smoothed`] on the first test examples, into
//! `smoothing/<checkpoint directory name>.json`, written once (atomically) by the writer that
//! evaluates the model.
//!
//! It is a threat model of its own — the L2 norm, the *smoothed* classifier `g` rather than the
//! model `f`, and a probability `α` that a certificate is wrong — so its figures live apart from
//! the records (attacks on `f`, L∞ upper bounds) and from the bounds (L∞ proofs about `f`), and
//! the report prints them in a table of their own.

use std::path::Path;
use std::time::Instant;

use advrob_data::Split;
use advrob_defense_gaussian_noise::GaussianNoiseConfig;
use advrob_model::Deployed;
use advrob_verify::{SmoothingSettings, certified_accuracy, certify_smoothed};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::matrix::{ModelSpec, SmoothingSpec};

/// The threat model every smoothing file states.
pub const THREAT_MODEL: &str = "l2-smoothed";

/// What randomized smoothing certified of one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SmoothedRun {
    /// Always [`THREAT_MODEL`]: an L2 certificate of the smoothed classifier, never an L∞
    /// figure of the model.
    pub threat_model: String,
    /// The model's name in the matrix.
    pub model: String,
    /// Its cache key.
    pub model_key: String,
    /// The backend the base classifier ran on.
    pub backend: String,
    /// Its seed.
    pub seed: u64,
    /// The weights of the base classifier (the records' `checkpoint_sha256`).
    pub checkpoint_sha256: String,
    /// Test examples certified: the first of the run's test set.
    pub test_examples: usize,
    /// σ, the samples, α and the noise's seed.
    pub settings: SmoothingSettings,
    /// Wall time of the certification.
    pub seconds: f64,
    /// Images where the smoothed classifier abstained (`p̲ ≤ 1/2`).
    pub abstained: usize,
    /// Certified accuracy (share of all `test_examples`) at each radius of the matrix.
    pub accuracy: Vec<AtL2Radius>,
    /// Per image, in test-set order: its certified radius when the smoothed classifier predicts
    /// the true label, −1 otherwise (a wrong class or an abstention).
    pub radii_correct: Vec<f64>,
}

/// Certified accuracy at one L2 radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtL2Radius {
    /// The L2 radius (pixels in [0, 1]).
    pub radius: f64,
    /// The share of the test examples certified correct at it.
    pub accuracy: f64,
}

/// The σ model `spec` is smoothed at under `smoothing`: its own training noise for a model
/// trained with `gaussian-noise` (σ 0.25 when its settings give none), else the section's
/// `sigma` (`None`: the model is not smoothed).
pub fn sigma_of(spec: &ModelSpec, smoothing: &SmoothingSpec) -> Option<f64> {
    // the defense's own config type reads its settings (a matrix was checked against the
    // registry, so they parse)
    let noise = (spec.defense.kind == advrob_defense_gaussian_noise::KIND)
        .then(|| {
            serde_json::from_value::<GaussianNoiseConfig>(serde_json::Value::Object(
                spec.defense.params.clone(),
            ))
            .ok()
        })
        .flatten();
    noise.map(|c| c.sigma).or(smoothing.sigma)
}

/// What the certifier needs of one checkpoint, and how the file is labelled.
pub struct Subject<'a> {
    /// The deployed model (the base classifier).
    pub model: &'a Deployed,
    /// The test examples (the first `test_examples` are certified).
    pub test: &'a Split,
    /// The device of the model.
    pub device: &'a Device,
}

/// Certifies the smoothed classifier of `subject` with `start`'s settings on its first
/// `start.test_examples` test examples at `radii`, filling in `start`'s figures.
///
/// # Errors
///
/// A failure of the certifier (bad settings, logits that cannot be read).
pub fn certify(
    subject: &Subject<'_>,
    mut start: SmoothedRun,
    radii: &[f64],
) -> Result<SmoothedRun> {
    let test = subject.test.take(start.test_examples);
    let im = &test.images;
    let pixels: Vec<f32> = im
        .pixels
        .iter()
        .map(|&p| advrob_data::unit_pixel(p))
        .collect();
    let labels: Vec<usize> = test.labels.iter().map(|&y| usize::from(y)).collect();
    let t = Instant::now();
    let results = certify_smoothed(
        subject.model,
        &pixels,
        [im.channels, im.rows, im.cols],
        subject.model.net.classes(),
        &start.settings,
        subject.device,
    )
    .map_err(|e| ExperimentError::invalid("smoothing", e.to_string()))?;
    start.seconds = t.elapsed().as_secs_f64();
    start.abstained = results.iter().filter(|s| s.prediction.is_none()).count();
    start.accuracy = radii
        .iter()
        .map(|&radius| AtL2Radius {
            radius,
            accuracy: certified_accuracy(&results, &labels, radius),
        })
        .collect();
    start.radii_correct = results
        .iter()
        .zip(&labels)
        .map(|(s, &y)| {
            if s.prediction == Some(y) {
                s.radius
            } else {
                -1.0
            }
        })
        .collect();
    log::info!(
        "{}: smoothed (σ {}) on {} images in {:.1} s",
        start.model,
        start.settings.sigma,
        start.test_examples,
        start.seconds
    );
    Ok(start)
}

/// `run`'s certified accuracy at `radii`, from its per-image radii (no noise drawn: an image
/// counts at r when the smoothed classifier is right there with a radius of at least r) — what
/// a matrix whose radii changed needs of a file certified before.
pub fn tabulate(run: &mut SmoothedRun, radii: &[f64]) {
    let n = run.radii_correct.len().max(1) as f64;
    run.accuracy = radii
        .iter()
        .map(|&radius| AtL2Radius {
            radius,
            accuracy: run.radii_correct.iter().filter(|&&r| r >= radius).count() as f64 / n,
        })
        .collect();
}

/// Writes `s` as the smoothing file of the checkpoint in `checkpoint_dir`, atomically.
pub fn write(run: &RunDir, checkpoint_dir: &Path, s: &SmoothedRun) -> Result<()> {
    crate::json_dir::write(&run.smoothing_of(checkpoint_dir), s, "smoothing")
}

/// The smoothing file of the checkpoint in `checkpoint_dir`, if written; a file that is not one
/// is an error naming it.
pub fn read(run: &RunDir, checkpoint_dir: &Path) -> Result<Option<SmoothedRun>> {
    crate::json_dir::read_file(&run.smoothing_of(checkpoint_dir), "smoothing")
}

/// Every smoothing file of `run`, in file-name order.
pub fn read_all(run: &RunDir) -> Result<Vec<SmoothedRun>> {
    crate::json_dir::read_all(&run.smoothing(), "smoothing")
}
