//! Iterative attacks: projected gradient descent under L∞ or L2 (Madry et al. 2018) with random
//! starts and restarts, BIM / I-FGSM (Kurakin et al. 2017) and MI-FGSM (Dong et al. 2018), all one
//! configurable [`Pgd`].

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::Attack;
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, LabelMode, loss_gradient, per_example_loss, target_labels};

/// The norm of the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Norm {
    /// ‖δ‖∞ ≤ ε: sign steps, projection by clamping.
    #[default]
    Linf,
    /// ‖δ‖₂ ≤ ε per example: normalised-gradient steps, projection by rescaling.
    L2,
}

/// Iterated gradient steps of size `step_size` on the loss, each followed by a projection onto
/// the ε-ball around the clean image and onto [0, 1]. The result is, per example, the iterate
/// with the highest loss over all steps and restarts (the first iterate is always a candidate, so
/// one step from the clean image with `step_size = ε` is FGSM).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pgd {
    /// Budget norm.
    pub norm: Norm,
    /// Gradient steps per restart.
    pub steps: usize,
    /// Step size; `None`: 2.5·ε / steps (Madry et al.), or ε / steps without a random start.
    pub step_size: Option<f64>,
    /// Start each restart from a uniformly random point of the ε-ball (else from the clean image).
    pub random_start: bool,
    /// Independent runs; the worst case per example is kept.
    pub restarts: usize,
    /// Momentum μ of MI-FGSM (gradients L1-normalised per example, then accumulated).
    pub momentum: Option<f64>,
    /// The loss ascended.
    pub loss: AttackLoss,
    /// Labels the loss is computed against.
    pub labels: LabelMode,
    /// Seed of the random starts.
    pub seed: u64,
    /// Take gradients through the model's straight-through view (BPDA) when it has one
    /// ([`Classifier::straight_through`]).
    pub bpda: bool,
}

impl Default for Pgd {
    fn default() -> Self {
        Self {
            norm: Norm::Linf,
            steps: 40,
            step_size: None,
            random_start: true,
            restarts: 1,
            momentum: None,
            loss: AttackLoss::CrossEntropy,
            labels: LabelMode::True,
            seed: 0,
            bpda: false,
        }
    }
}

impl Pgd {
    /// L∞ PGD with a random start and `steps` steps of 2.5·ε/steps.
    pub fn linf(steps: usize) -> Self {
        Self {
            steps,
            ..Self::default()
        }
    }

    /// L2 PGD with a random start.
    pub fn l2(steps: usize) -> Self {
        Self {
            norm: Norm::L2,
            steps,
            ..Self::default()
        }
    }

    /// BIM / I-FGSM: no random start, `steps` steps of ε/steps.
    pub fn bim(steps: usize) -> Self {
        Self {
            steps,
            random_start: false,
            ..Self::default()
        }
    }

    /// MI-FGSM: BIM with momentum μ (1.0 in the paper).
    pub fn mi_fgsm(steps: usize, mu: f64) -> Self {
        Self {
            momentum: Some(mu),
            ..Self::bim(steps)
        }
    }

    /// Refuses zero steps or restarts, and step sizes or momenta that are negative.
    pub fn check(&self) -> Result<()> {
        let bad = |field: &'static str, reason: String| AttackError::Invalid { field, reason };
        if self.steps == 0 {
            return Err(bad("steps", "must be at least 1".into()));
        }
        if self.restarts == 0 {
            return Err(bad("restarts", "must be at least 1".into()));
        }
        if let Some(a) = self.step_size
            && !(a.is_finite() && a > 0.0)
        {
            return Err(bad("step_size", format!("{a} is not a positive number")));
        }
        if let Some(m) = self.momentum
            && !(m.is_finite() && m >= 0.0)
        {
            return Err(bad("momentum", format!("{m} is not a number ≥ 0")));
        }
        Ok(())
    }

    fn alpha(&self, eps: f64) -> f64 {
        self.step_size.unwrap_or(if self.random_start {
            2.5 * eps / self.steps as f64
        } else {
            eps / self.steps as f64
        })
    }

    fn random_delta(&self, dims: [usize; 3], eps: f64, restart: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(self.seed ^ (restart as u64).wrapping_mul(0x9E37_79B9));
        let n = dims[0] * dims[1] * dims[2];
        match self.norm {
            Norm::Linf => (0..n)
                .map(|_| ((rng.next_f64() * 2.0 - 1.0) * eps) as f32)
                .collect(),
            Norm::L2 => {
                let size = dims[1] * dims[2];
                let mut v: Vec<f64> = (0..n)
                    .map(|_| {
                        // Box–Muller
                        let (u, w) = (rng.next_f64().max(1e-12), rng.next_f64());
                        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()
                    })
                    .collect();
                for ex in v.chunks_mut(size) {
                    let norm = ex.iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-12);
                    let radius = eps * rng.next_f64();
                    ex.iter_mut().for_each(|a| *a *= radius / norm);
                }
                v.into_iter().map(|a| a as f32).collect()
            }
        }
    }
}

/// Per-example L2 norm, shaped to broadcast over the image.
///
/// # Shapes
///
/// - t: `[B, H, W]`, output: `[B, 1, 1]`
fn l2_norms(t: Tensor<3>) -> Tensor<3> {
    let [b, _, _] = t.dims();
    t.square()
        .reshape([b as i64, -1])
        .sum_dim(1)
        .sqrt()
        .reshape([b, 1, 1])
}

/// `δ` projected onto the ε-ball of `norm`.
fn project(delta: Tensor<3>, norm: Norm, eps: f64) -> Tensor<3> {
    match norm {
        Norm::Linf => delta.clamp(-eps, eps),
        Norm::L2 => {
            let n = l2_norms(delta.clone()).clamp_min(1e-12);
            let factor = (n.recip() * eps).clamp_max(1.0);
            delta * factor
        }
    }
}

impl Attack for Pgd {
    fn name(&self) -> String {
        let mut n = match (self.momentum, self.random_start, self.norm) {
            (Some(_), _, _) => format!("mi-fgsm-{}", self.steps),
            (None, false, Norm::Linf) => format!("bim-{}", self.steps),
            (None, _, Norm::Linf) => format!("pgd-linf-{}", self.steps),
            (None, _, Norm::L2) => format!("pgd-l2-{}", self.steps),
        };
        if self.restarts > 1 {
            n.push_str(&format!("x{}", self.restarts));
        }
        n.push_str(self.loss.suffix());
        if self.labels == LabelMode::Predicted {
            n.push_str("-pred");
        }
        if self.bpda {
            n.push_str("-bpda");
        }
        n
    }

    fn perturb(
        &self,
        model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: f64,
    ) -> Result<Tensor<3>> {
        check_eps(eps)?;
        self.check()?;
        let x = images.without_autodiff();
        let dims = x.dims();
        let device = x.device();
        let view = if self.bpda {
            model.straight_through()
        } else {
            None
        };
        let grad_model: &dyn Classifier = view.as_deref().unwrap_or(model);
        let y = target_labels(model, x.clone(), labels, self.labels);
        let alpha = self.alpha(eps);
        let mut best: Option<(Tensor<3>, Tensor<1>)> = None;
        for restart in 0..self.restarts {
            let mut adv = if self.random_start && eps > 0.0 {
                let d = self.random_delta(dims, eps, restart);
                (x.clone() + Tensor::<3>::from_data(TensorData::new(d, dims), &device))
                    .clamp(0.0, 1.0)
            } else {
                x.clone()
            };
            let mut velocity: Option<Tensor<3>> = None;
            for _ in 0..self.steps {
                let mut g = loss_gradient(grad_model, adv.clone(), y.clone(), self.loss)?;
                if let Some(mu) = self.momentum {
                    let l1 = g
                        .clone()
                        .abs()
                        .reshape([dims[0] as i64, -1])
                        .sum_dim(1)
                        .reshape([dims[0], 1, 1])
                        .clamp_min(1e-12);
                    let normalised = g / l1;
                    g = match velocity.take() {
                        Some(v) => v * mu + normalised,
                        None => normalised,
                    };
                    velocity = Some(g.clone());
                }
                let step = match self.norm {
                    Norm::Linf => g.sign() * alpha,
                    Norm::L2 => {
                        let n = l2_norms(g.clone()).clamp_min(1e-12);
                        g / n * alpha
                    }
                };
                let delta = project(adv + step - x.clone(), self.norm, eps);
                adv = (x.clone() + delta).clamp(0.0, 1.0);
                let loss = per_example_loss(model.logits(adv.clone()), y.clone(), self.loss);
                best = Some(match best {
                    None => (adv.clone(), loss),
                    Some((b_adv, b_loss)) => {
                        let better = loss.clone().greater(b_loss.clone()).float();
                        let m = better.clone().reshape([dims[0], 1, 1]);
                        let kept = b_adv * (m.clone().neg() + 1.0) + adv.clone() * m;
                        (kept, b_loss.max_pair(loss))
                    }
                });
            }
        }
        Ok(best.map_or(x, |(a, _)| a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Fgsm;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{DeployConfig, Deployed, MlpConfig};

    fn host(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn setup(
        device: &burn::tensor::Device,
    ) -> (advrob_model::Mlp, Tensor<3>, Tensor<1, Int>, Vec<f32>) {
        let model = MlpConfig::new()
            .with_hidden(vec![16])
            .with_seed(3)
            .init(device)
            .expect("init");
        let x: Vec<f32> = (0..3 * 784).map(|i| [0.0, 1.0, 0.35, 0.8][i % 4]).collect();
        let images = Tensor::<3>::from_data(TensorData::new(x.clone(), [3, 28, 28]), device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![2i64, 5, 7], [3]), device);
        (model, images, labels, x)
    }

    #[test]
    fn budgets_and_pixel_range_hold_for_every_variant() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, x) = setup(&device);
            let eps = 0.2;
            for attack in [
                Pgd::linf(5),
                Pgd::bim(4),
                Pgd::mi_fgsm(4, 1.0),
                Pgd {
                    restarts: 2,
                    loss: AttackLoss::Margin,
                    ..Pgd::linf(3)
                },
            ] {
                let adv = host(
                    attack
                        .perturb(&model, images.clone(), labels.clone(), eps)
                        .expect("attack"),
                );
                for (p, q) in adv.iter().zip(&x) {
                    assert!((0.0..=1.0).contains(p), "{}: pixel {p}", attack.name());
                    assert!((p - q).abs() <= eps as f32 + 1e-6, "{}", attack.name());
                }
            }
            // L2: per example ‖δ‖₂ ≤ ε
            let eps2 = 1.5;
            let adv = host(
                Pgd::l2(5)
                    .perturb(&model, images.clone(), labels.clone(), eps2)
                    .expect("attack"),
            );
            for (a, c) in adv.chunks(784).zip(x.chunks(784)) {
                let n: f32 = a
                    .iter()
                    .zip(c)
                    .map(|(p, q)| (p - q) * (p - q))
                    .sum::<f32>()
                    .sqrt();
                assert!(n <= eps2 as f32 + 1e-4, "‖δ‖₂ = {n}");
                assert!(a.iter().all(|p| (0.0..=1.0).contains(p)));
            }
        });
    }

    #[test]
    fn one_step_without_random_start_is_fgsm() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, _) = setup(&device);
            let pgd = Pgd {
                steps: 1,
                random_start: false,
                ..Pgd::default()
            };
            let a = host(
                pgd.perturb(&model, images.clone(), labels.clone(), 0.1)
                    .expect("pgd"),
            );
            let b = host(
                Fgsm::new()
                    .perturb(&model, images, labels, 0.1)
                    .expect("fgsm"),
            );
            assert_eq!(a, b);
        });
    }

    #[test]
    fn more_steps_never_lower_the_per_example_loss() {
        on_test_backends(|device| {
            let device = device.clone();
            let (model, images, labels, _) = setup(&device);
            let loss = |steps: usize| -> Vec<f32> {
                let attack = Pgd {
                    step_size: Some(0.02),
                    ..Pgd::linf(steps)
                };
                let adv = attack
                    .perturb(&model, images.clone(), labels.clone(), 0.1)
                    .expect("attack");
                per_example_loss(model.logits(adv), labels.clone(), AttackLoss::CrossEntropy)
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32")
            };
            let (few, more) = (loss(2), loss(6));
            for (a, b) in few.iter().zip(&more) {
                assert!(b >= a, "{b} < {a}");
            }
            // and the attack actually raises the loss over the clean images
            let clean: Vec<f32> = per_example_loss(
                model.logits(images.clone()),
                labels.clone(),
                AttackLoss::CrossEntropy,
            )
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32");
            assert!(more.iter().zip(&clean).all(|(a, c)| a > c));
        });
    }

    #[test]
    fn bpda_goes_around_a_quantisation_that_stops_plain_pgd() {
        on_test_backends(|device| {
            let device = device.clone();
            let (mlp, images, labels, x) = setup(&device);
            let model = Deployed {
                mlp,
                config: DeployConfig::new().with_quantize(Some(16)),
            };
            let plain = host(
                Pgd::bim(5)
                    .perturb(&model, images.clone(), labels.clone(), 0.2)
                    .expect("pgd"),
            );
            assert_eq!(plain, x, "zero gradient: plain BIM cannot move");
            let through = Pgd {
                bpda: true,
                ..Pgd::bim(5)
            };
            assert_eq!(through.name(), "bim-5-bpda");
            let adv = host(through.perturb(&model, images, labels, 0.2).expect("bpda"));
            assert!(adv != x, "BPDA moves the pixels");
        });
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = Pgd {
            steps: 0,
            ..Pgd::default()
        }
        .check()
        .expect_err("steps");
        assert!(e.to_string().contains("steps"));
        let e = Pgd {
            restarts: 0,
            ..Pgd::default()
        }
        .check()
        .expect_err("restarts");
        assert!(e.to_string().contains("restarts"));
    }
}
