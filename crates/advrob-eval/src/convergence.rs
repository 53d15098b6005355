//! Whether the figure quoted for a model has converged: the attack whose robust accuracy is
//! quoted (the ensemble) against a stronger setting of itself ([`stronger` in advrob-experiment's
//! specs]: twice the iterations, twice the restarts, twice the queries, a fresh seed) on the
//! first [`EXAMPLES`] test examples.
//!
//! The figure has converged when the stronger run breaks at most [`GAP`] (one point) of the
//! sample's examples that the quoted attack left robust: the examples the quoted figure counts
//! robust that more attack effort would not. Counting the examples newly broken, not the
//! difference of two robust accuracies, keeps the stronger run's own random misses (examples the
//! quoted attack broke and it did not) out of the measure.

use advrob_attack::Attack;
use advrob_data::Split;
use advrob_model::Classifier;
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::{EvalError, EvalRequest, Result, evaluate};

/// Test examples of the comparison by default (the first of the test set).
pub const EXAMPLES: usize = 200;
/// Share of the sample the stronger attack may newly break for the figure to count as converged.
pub const GAP: f64 = 0.01;

/// The quoted attack against its stronger setting on one model at one ε.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// The quoted attack (its name in the matrix).
    pub attack: String,
    /// The stronger setting's name.
    pub stronger: String,
    /// The budget.
    pub eps: f64,
    /// Examples compared.
    pub examples: usize,
    /// Robust under the quoted attack.
    pub robust: usize,
    /// Robust under the stronger one.
    pub robust_stronger: usize,
    /// Robust under the quoted attack and broken by the stronger one.
    pub newly_broken: usize,
}

impl Convergence {
    /// The share of the examples newly broken.
    pub fn change(&self) -> f64 {
        self.newly_broken as f64 / self.examples.max(1) as f64
    }

    /// Whether the figure has converged ([`GAP`]).
    pub fn converged(&self) -> bool {
        self.change() <= GAP
    }
}

/// `quoted` (named `name`) and `stronger` on the first `n` examples of `data` at `eps`, in
/// batches of `batch_size`; the stronger run's seed is `seed + 1`.
#[allow(clippy::too_many_arguments)]
pub fn convergence(
    model: &dyn Classifier,
    (name, quoted): (&str, &dyn Attack),
    stronger: &dyn Attack,
    data: &Split,
    n: usize,
    eps: f64,
    (batch_size, seed): (usize, u64),
    device: &Device,
) -> Result<Convergence> {
    let sample = data.take(n);
    let robust = |attack: &dyn Attack, seed: u64| -> Result<Vec<bool>> {
        let request = EvalRequest {
            data: &sample,
            eps: &[eps],
            batch_size,
            seed,
            device,
        };
        let rec = evaluate(model, attack, &request, &mut |_, _| {})?
            .pop()
            .ok_or_else(|| EvalError::Invalid {
                field: "eps",
                reason: "no record came back".into(),
            })?;
        rec.adversarial_correct_examples
            .map(|b| b.0)
            .ok_or_else(|| EvalError::Invalid {
                field: "attack",
                reason: format!("{} kept no per-example results", attack.name()),
            })
    };
    let a = robust(quoted, seed)?;
    let b = robust(stronger, seed.wrapping_add(1))?;
    Ok(Convergence {
        attack: name.to_string(),
        stronger: stronger.name(),
        eps,
        examples: sample.len(),
        robust: a.iter().filter(|r| **r).count(),
        robust_stronger: b.iter().filter(|r| **r).count(),
        newly_broken: a.iter().zip(&b).filter(|(a, b)| **a && !**b).count(),
    })
}
