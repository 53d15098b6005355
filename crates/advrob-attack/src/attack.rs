//! The two traits every attack implements: [`Attack`], what an evaluation calls, and
//! [`AttackConfig`], its settings as a matrix holds them.

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Result;
use crate::info::AttackInfo;

/// The settings of an attack as a matrix or a record holds them (serde, every field named), and
/// the one place they are checked: [`build`](AttackConfig::build) refuses bad values, naming the
/// field, and returns the attack, which then never checks them again (linfa's `ParamGuard`).
///
/// Implementing it is what makes an attack selectable by name in an experiment matrix (the
/// experiment crate's registry maps a `kind` to a config type).
pub trait AttackConfig: Serialize + DeserializeOwned + 'static {
    /// Checks the settings and builds the attack they describe.
    fn build(&self) -> Result<Box<dyn Attack>>;
}

/// An evasion attack: from clean images, their labels and a budget ε, adversarial images.
///
/// Object-safe, so that a runner can hold `Box<dyn Attack>` chosen from a config. Implementations
/// keep the result a valid image (pixels in [0, 1]) within the budget in their norm — unless their
/// [`info`](Attack::info) says `bounded: false`.
pub trait Attack {
    /// A short name for records and tables, with the settings that matter (`fgsm`, `fgsm-pred`).
    /// For people: code that needs to know what the attack is reads [`info`](Attack::info).
    fn name(&self) -> String;

    /// What the attack is: family, norm, loss, steps, restarts, targeted, adaptive, whether it
    /// respects its budget, what it sees of the model.
    fn info(&self) -> AttackInfo;

    /// Adversarial versions of `images` under budget `eps`. The model is used in inference mode.
    /// `seed` selects the attack's random draws (random starts, Square's windows): an evaluation
    /// derives it from the run's seed and the batch's first example, so that batches and restarts
    /// draw independently; deterministic attacks ignore it.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]` in [0, 1]
    /// - labels: `[B]`, the true classes
    /// - output: `[B, C, H, W]` in [0, 1]
    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>>;

    /// [`perturb_seeded`](Attack::perturb_seeded) with seed 0.
    ///
    /// # Shapes
    ///
    /// As [`perturb_seeded`](Attack::perturb_seeded).
    fn perturb(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
    ) -> Result<Tensor<4>> {
        self.perturb_seeded(model, images, labels, eps, 0)
    }

    /// The class each example is pushed towards, for a targeted attack (`None`: untargeted). An
    /// evaluation counts a targeted attack's success as "prediction equals this target".
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B]`
    fn targets(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        let _ = (model, images, labels);
        Ok(None)
    }

    /// [`perturb_seeded`](Attack::perturb_seeded) for each ε of a grid. The default runs it once
    /// per ε; attacks whose work can be shared across budgets (FGSM's gradient, a minimum-norm
    /// attack's single run) override it.
    ///
    /// # Shapes
    ///
    /// As [`perturb_seeded`](Attack::perturb_seeded); one output per ε.
    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        eps.iter()
            .map(|&e| self.perturb_seeded(model, images.clone(), labels.clone(), e, seed))
            .collect()
    }

    /// [`perturb_seeded`](Attack::perturb_seeded), and per example the model passes the attack
    /// spent on it up to and including the pass that first found it misclassified within the
    /// budget — or all it spent on it where it found nothing: a forward pass counts 1, a forward
    /// and backward pass 2. The cost curves of a report are drawn from them. `None` from attacks
    /// that do not count (the default).
    ///
    /// # Shapes
    ///
    /// As [`perturb_seeded`](Attack::perturb_seeded); the passes: one per example.
    fn perturb_costed(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<(Tensor<4>, Option<Vec<u64>>)> {
        Ok((self.perturb_seeded(model, images, labels, eps, seed)?, None))
    }

    /// For a minimum-norm attack: per example the adversarial image of smallest perturbation it
    /// found and that perturbation's norm ε* (infinite where it found none; 0 for an example
    /// misclassified without attack). `None` for attacks with a fixed budget.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, labels: `[B]`; the images returned: `[B, C, H, W]`
    fn minimum_norm(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        seed: u64,
    ) -> Result<Option<(Tensor<4>, Vec<f64>)>> {
        let _ = (model, images, labels, seed);
        Ok(None)
    }

    /// An ensemble's attacks, in the order they run ([`Ensemble`](crate::Ensemble)); empty for a single attack. An
    /// evaluation runs each component on what the earlier ones left robust and records which one
    /// broke each example.
    fn components(&self) -> &[Box<dyn Attack>] {
        &[]
    }
}
