//! The certified side of robust accuracy: what [`advrob_verify`] proves of each trained model at
//! each radius, written once per checkpoint as `bounds/<checkpoint directory name>.json` by the
//! writer that evaluates the model, rewritten (atomically) after every radius so that a killed
//! run keeps what it finished.
//!
//! These are not records: a record is an attack's result, an upper bound on robust accuracy; a
//! [`Certified`] file is a lower bound ([`Side::Lower`]), and the two are kept apart so that no
//! code can take one for the other. Per image and radius the verifier says *verified* (proven
//! robust), *attacked* (a checked counterexample), *misclassified* (clean) or *unknown*.

use std::path::Path;
use std::time::Instant;

use advrob_data::Split;
use advrob_model::Deployed;
use advrob_verify::{Network, Status, VerifySettings, verify};
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::matrix::VerifySpec;

/// Which side of robust accuracy a figure bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Side {
    /// Proven: robust accuracy is at least this (the share of images verified robust).
    Lower,
}

/// What the verifier concluded about one checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Certified {
    /// Always [`Side::Lower`]: these figures are proofs, not attacks.
    pub side: Side,
    /// The model's name in the matrix.
    pub model: String,
    /// Its cache key.
    pub model_key: String,
    /// The backend the bounds were computed on.
    pub backend: String,
    /// Its seed.
    pub seed: u64,
    /// The weights verified (the records' `checkpoint_sha256`).
    pub checkpoint_sha256: String,
    /// Test examples verified: the first of the run's test set.
    pub test_examples: usize,
    /// The verifier's settings.
    pub settings: VerifySettings,
    /// Why the model is not bounded (a CNN too big to lower to dense layers, a model without a
    /// host chain, a CNN while `verify.cnns` is false: [`CNNS_OFF`]); no radii then.
    pub refused: Option<String>,
    /// One entry per radius, ascending.
    pub radii: Vec<AtRadius>,
    /// The verifier that wrote the file ([`VERIFIER`]; empty in files of an older one): a
    /// refusal by another verifier is tried again, since what it could not bound may be bounded
    /// now.
    #[serde(default)]
    pub verifier: String,
}

/// This verifier, as bounds files name it.
pub const VERIFIER: &str = "advrob-verify (CNNs lowered, 2026-12-07)";

impl Certified {
    /// Whether the file's refusal stands: a CNN left out while `cnns` is false (it is bounded
    /// once `cnns` is true), or another refusal by this verifier; `false` without a refusal.
    pub fn refusal_stands(&self, cnns: bool) -> bool {
        match &self.refused {
            None => false,
            Some(why) if why.starts_with(CNNS_OFF) => !cnns,
            Some(_) => self.verifier == VERIFIER,
        }
    }
}

/// The verdicts at one radius.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AtRadius {
    /// The L∞ radius.
    pub eps: f64,
    /// Images proven robust.
    pub verified: usize,
    /// Images with a counterexample found by the verifier's own search.
    pub attacked: usize,
    /// Images misclassified clean.
    pub misclassified: usize,
    /// Images neither proven nor broken within the budget.
    pub unknown: usize,
    /// Wall time of this radius.
    pub seconds: f64,
    /// Images the verifier ran on: those the next smaller radius verified (all at the smallest).
    /// The others keep that radius's verdict — a counterexample there lies in this ball too, an
    /// image it left unknown is not tried again (robust here would mean robust there) — so a
    /// radius after one that verified nothing costs nothing.
    pub tried: usize,
    /// Per image, in test-set order: `v` verified, `a` attacked, `m` misclassified, `u` unknown.
    pub statuses: String,
}

impl AtRadius {
    /// Whether image `i` is proven robust at this radius.
    pub fn is_verified(&self, i: usize) -> bool {
        self.statuses.as_bytes().get(i) == Some(&b'v')
    }
}

fn letter(s: Status) -> char {
    match s {
        Status::Verified => 'v',
        Status::Attacked => 'a',
        Status::Misclassified => 'm',
        Status::Unknown => 'u',
    }
}

/// The start of the reason a CNN is not bounded while `verify.cnns` is false.
pub const CNNS_OFF: &str = "a convolutional network while verify.cnns is false";

/// Whether `model` has convolutional blocks (its host chain starts with them).
pub fn is_cnn(model: &Deployed) -> bool {
    use advrob_model::Classifier;
    model.dense().is_some_and(|d| !d.convs.is_empty())
}

/// The verifier's settings for `spec`.
pub fn settings(spec: &VerifySpec) -> VerifySettings {
    VerifySettings {
        max_domains: spec.max_domains,
        ..VerifySettings::default()
    }
}

/// The radii `spec` asks for on a matrix grid `grid`, ascending, without 0.
pub fn radii(spec: &VerifySpec, grid: &[f64]) -> Vec<f64> {
    let mut r: Vec<f64> = spec
        .eps
        .as_deref()
        .unwrap_or(grid)
        .iter()
        .copied()
        .filter(|&e| e > 0.0)
        .collect();
    r.sort_by(f64::total_cmp);
    r.dedup();
    r
}

/// What the verifier needs of one checkpoint.
pub struct Subject<'a> {
    /// The deployed model.
    pub model: &'a Deployed,
    /// The test examples (the first `test_examples` are verified).
    pub test: &'a Split,
    /// The device of the model.
    pub device: &'a Device,
    /// Bound a CNN too (`verify.cnns`).
    pub cnns: bool,
}

/// Verifies the radii of `todo` that `so_far` lacks, calling `keep` with the document after each
/// one (the runner writes it there, so a kill loses at most the radius under way).
///
/// # Errors
///
/// A verifier failure other than a model it cannot bound (which ends up in `refused`), or what
/// `keep` returns.
pub fn extend(
    subject: &Subject<'_>,
    mut so_far: Certified,
    todo: &[f64],
    keep: &mut dyn FnMut(&Certified) -> Result<()>,
) -> Result<Certified> {
    // a CNN bounded before (cnns was true) keeps its radii; only one never bounded is left out
    if !subject.cnns && so_far.radii.is_empty() && is_cnn(subject.model) {
        so_far.refused = Some(format!(
            "{CNNS_OFF}: its lowered chain (thousands of ReLUs through the max-pools) is bounded \
             by CROWN-IBP, which proves little and costs the whole budget per image; \
             verify.cnns = true or `bench-runner verify` bounds it"
        ));
        keep(&so_far)?;
        return Ok(so_far);
    }
    let net = match Network::new(subject.model, subject.device) {
        Ok(n) => n,
        Err(advrob_verify::VerifyError::Unsupported(why)) => {
            so_far.refused = Some(why);
            keep(&so_far)?;
            return Ok(so_far);
        }
        Err(e) => return Err(verify_error(e)),
    };
    let n = so_far.test_examples;
    let test = subject.test.take(n);
    let (images, _) = advrob_data::range_tensors(&test, 0, n, subject.device);
    let labels: Vec<usize> = test.labels.iter().map(|&y| usize::from(y)).collect();
    for &eps in todo {
        if so_far.radii.iter().any(|r| r.eps == eps) {
            continue;
        }
        // the next smaller radius: only what it verified can be verified here (a ball inside
        // another), what it found a counterexample for keeps it (the point lies in this ball
        // too), what it left unknown is left unknown without another try
        let below = so_far.radii.iter().rfind(|r| r.eps < eps);
        let tried: Vec<usize> = match below {
            Some(b) => (0..n).filter(|&i| b.is_verified(i)).collect(),
            None => (0..n).collect(),
        };
        let mut statuses: Vec<char> = match below {
            Some(b) => b
                .statuses
                .chars()
                .map(|c| if c == 'v' { 'u' } else { c })
                .collect(),
            None => vec!['u'; n],
        };
        let t = Instant::now();
        if !tried.is_empty() {
            let [_, c, h, w] = images.dims();
            let idx = burn::tensor::Tensor::<1, burn::tensor::Int>::from_data(
                burn::tensor::TensorData::new(
                    tried.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                    [tried.len()],
                ),
                subject.device,
            );
            let part = images
                .clone()
                .select(0, idx)
                .reshape([tried.len(), c, h, w]);
            let part_labels: Vec<usize> = tried.iter().map(|&i| labels[i]).collect();
            let v = verify(
                subject.model,
                &net,
                part,
                &part_labels,
                eps as f32,
                &so_far.settings,
            )
            .map_err(verify_error)?;
            for (&i, r) in tried.iter().zip(&v) {
                statuses[i] = letter(r.status);
            }
        }
        let count = |l: char| statuses.iter().filter(|&&c| c == l).count();
        let at = AtRadius {
            eps,
            verified: count('v'),
            attacked: count('a'),
            misclassified: count('m'),
            unknown: count('u'),
            seconds: t.elapsed().as_secs_f64(),
            tried: tried.len(),
            statuses: statuses.into_iter().collect(),
        };
        log::info!(
            "{}: {} of {n} verified at eps {eps} ({:.1} s)",
            so_far.model,
            at.verified,
            at.seconds
        );
        so_far.radii.push(at);
        so_far.radii.sort_by(|a, b| a.eps.total_cmp(&b.eps));
        keep(&so_far)?;
    }
    Ok(so_far)
}

fn verify_error(e: advrob_verify::VerifyError) -> ExperimentError {
    ExperimentError::invalid("verify", e.to_string())
}

/// Writes `c` as the bounds of the checkpoint in `checkpoint_dir`, atomically.
pub fn write(run: &RunDir, checkpoint_dir: &Path, c: &Certified) -> Result<()> {
    crate::json_dir::write(&run.bounds_of(checkpoint_dir), c, "bounds")
}

/// The bounds of the checkpoint in `checkpoint_dir`, if written; a file that is not one is an
/// error naming it.
pub fn read(run: &RunDir, checkpoint_dir: &Path) -> Result<Option<Certified>> {
    crate::json_dir::read_file(&run.bounds_of(checkpoint_dir), "bounds")
}

/// Every bounds file of `run`, in file-name order.
pub fn read_all(run: &RunDir) -> Result<Vec<Certified>> {
    crate::json_dir::read_all(&run.bounds(), "bounds")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_stands_only_for_this_verifier_or_while_cnns_are_off() {
        let file = |refused: Option<&str>, verifier: &str| Certified {
            side: Side::Lower,
            model: "m".into(),
            model_key: "k".into(),
            backend: "ndarray".into(),
            seed: 42,
            checkpoint_sha256: "c".into(),
            test_examples: 10,
            settings: VerifySettings::default(),
            refused: refused.map(String::from),
            radii: Vec::new(),
            verifier: verifier.into(),
        };
        let cnn = format!("{CNNS_OFF}: …");
        assert!(file(Some(&cnn), VERIFIER).refusal_stands(false));
        assert!(!file(Some(&cnn), VERIFIER).refusal_stands(true));
        assert!(file(Some("too big"), VERIFIER).refusal_stands(true));
        // an older verifier refused every CNN: tried again
        assert!(!file(Some("convolutions not implemented yet"), "").refusal_stands(false));
        assert!(!file(None, VERIFIER).refusal_stands(false));
    }

    #[test]
    fn radii_are_the_grid_without_zero_ascending() {
        let spec = VerifySpec::default();
        assert_eq!(radii(&spec, &[0.3, 0.0, 0.1, 0.1]), [0.1, 0.3]);
        let own = VerifySpec {
            eps: Some(vec![0.05]),
            ..VerifySpec::default()
        };
        assert_eq!(radii(&own, &[0.1]), [0.05]);
    }
}
