//! What an attack is, as data: the metadata every record stores and every report reads. Code that
//! needs to know whether an attack is iterative, targeted, adaptive, black-box or within its budget
//! asks [`AttackInfo`], never the attack's name.

use serde::{Deserialize, Serialize};

use crate::grad::{AttackLoss, LabelMode};

/// The norm of a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// ‖δ‖∞ ≤ ε.
    #[default]
    Linf,
    /// ‖δ‖₂ ≤ ε per example.
    L2,
}

/// The algorithm an attack belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// Fast Gradient Sign Method: one signed gradient step.
    Fgsm,
    /// Projected gradient descent (with or without a random start).
    Pgd,
    /// Basic iterative method / I-FGSM: PGD without a random start.
    Bim,
    /// Momentum iterative FGSM.
    MiFgsm,
    /// Auto-PGD (Croce & Hein 2020): step-size schedule, momentum, checkpoints.
    Apgd,
    /// Square attack (Andriushchenko et al. 2020): score-based random search.
    Square,
    /// Fast minimum-norm attack (Pintor et al. 2021).
    Fmn,
    /// Fast adaptive boundary attack (Croce & Hein 2020), targeted as AutoAttack runs it.
    Fab,
    /// Several attacks run one after another on what is still robust.
    Ensemble,
    /// An attack defined outside this crate.
    Other,
}

/// What the attack may see of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Gradients of the attacked model.
    #[default]
    WhiteBox,
    /// The attacked model's outputs only (scores), no gradients.
    BlackBox,
    /// Nothing of the attacked model: examples crafted on a surrogate.
    Transfer,
}

/// An attack's typed description, stored in every record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttackInfo {
    /// The algorithm.
    pub family: Family,
    /// The norm of its budget.
    pub norm: Norm,
    /// The loss it follows (`None` for attacks that follow no loss of the labels, such as a
    /// minimum-norm attack's logit difference).
    pub loss: Option<AttackLoss>,
    /// Gradient steps (Square: queries) per restart; 1 for single-step attacks.
    pub steps: usize,
    /// Independent restarts, the best kept per example.
    pub restarts: usize,
    /// Whether it pushes towards a target class (success: prediction equals the target) rather
    /// than away from the label.
    pub targeted: bool,
    /// Labels its loss is computed against.
    pub labels: LabelMode,
    /// Whether it is built to see through gradient masking (a loss on the logits, BPDA around
    /// non-differentiable transforms).
    pub adaptive: bool,
    /// Whether every adversarial example it returns is within ε of its clean image in `norm`.
    /// An attack that breaks its budget (the seed-004 notebook's cumulative FGSM) never enters a
    /// robust-accuracy figure.
    pub bounded: bool,
    /// What it may see of the model.
    pub access: Access,
}

impl AttackInfo {
    /// A white-box, untargeted, bounded attack of `family` in `norm` following `loss` against
    /// the true labels, `steps` steps, one restart, not adaptive: the common case, to be adjusted.
    pub fn white_box(family: Family, norm: Norm, loss: AttackLoss, steps: usize) -> Self {
        Self {
            family,
            norm,
            loss: Some(loss),
            steps,
            restarts: 1,
            targeted: false,
            labels: LabelMode::True,
            adaptive: false,
            bounded: true,
            access: Access::WhiteBox,
        }
    }

    /// Whether the attack takes several gradient steps on the attacked model itself.
    pub fn is_iterative(&self) -> bool {
        self.access == Access::WhiteBox && self.steps > 1
    }

    /// Whether the attack takes one gradient step on the attacked model itself.
    pub fn is_single_step(&self) -> bool {
        self.access == Access::WhiteBox && self.steps == 1
    }

    /// Whether its accuracies bound robust accuracy: untargeted and within its budget. Targeted
    /// attacks measure something else; budget-breaking ones are not robustness at ε.
    pub fn counts_for_robustness(&self) -> bool {
        !self.targeted && self.bounded
    }

    /// The same description with `steps` replaced: two attacks whose infos agree this way
    /// differ only in their number of steps (the verdict's convergence check).
    pub fn with_steps(&self, steps: usize) -> Self {
        Self {
            steps,
            ..self.clone()
        }
    }
}
