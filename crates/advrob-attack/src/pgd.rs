//! Iterative attacks: projected gradient descent under L∞ or L2 (Madry et al. 2018) with random
//! starts and restarts, BIM / I-FGSM (Kurakin et al. 2017) and MI-FGSM (Dong et al. 2018), all one
//! configurable [`Pgd`], built from a [`PgdConfig`] that is checked once.

use advrob_data::rng::SplitMix64;
use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, LabelMode, loss_gradient, per_example_loss, target_labels};
use crate::info::{AttackInfo, Family, Norm};
use crate::{Attack, AttackConfig};

/// The settings of a [`Pgd`]: iterated gradient steps of size `step_size` on the loss, each
/// followed by a projection onto the ε-ball around the clean image and onto [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PgdConfig {
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

impl Default for PgdConfig {
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

impl PgdConfig {
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

    /// Checks the settings once: refuses zero steps or restarts, and step sizes or momenta that
    /// are not positive (momentum: not ≥ 0), naming the field.
    pub fn check(self) -> Result<Pgd> {
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
        Ok(Pgd(self))
    }
}

impl AttackConfig for PgdConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// PGD, BIM or MI-FGSM with checked settings ([`PgdConfig::check`]). The result is, per example,
/// the iterate with the highest loss over all steps and restarts (the first iterate is always a
/// candidate, so one step from the clean image with `step_size = ε` is FGSM).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pgd(PgdConfig);

impl Pgd {
    /// The settings.
    pub fn config(&self) -> &PgdConfig {
        &self.0
    }

    /// The same attack with another seed for its random starts (the settings stay valid).
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.0.seed = seed;
        self
    }

    fn alpha(&self, eps: f64) -> f64 {
        let c = &self.0;
        c.step_size.unwrap_or(if c.random_start {
            2.5 * eps / c.steps as f64
        } else {
            eps / c.steps as f64
        })
    }

    fn random_delta(&self, dims: [usize; 3], eps: f64, restart: usize) -> Vec<f32> {
        let mut rng = SplitMix64::new(self.0.seed ^ (restart as u64).wrapping_mul(0x9E37_79B9));
        let n = dims[0] * dims[1] * dims[2];
        match self.0.norm {
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
pub(crate) fn l2_norms(t: Tensor<3>) -> Tensor<3> {
    let [b, _, _] = t.dims();
    t.square()
        .reshape([b as i64, -1])
        .sum_dim(1)
        .sqrt()
        .reshape([b, 1, 1])
}

/// `δ` projected onto the ε-ball of `norm`.
pub(crate) fn project(delta: Tensor<3>, norm: Norm, eps: f64) -> Tensor<3> {
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
        let c = &self.0;
        let mut n = match (c.momentum, c.random_start, c.norm) {
            (Some(_), _, _) => format!("mi-fgsm-{}", c.steps),
            (None, false, Norm::Linf) => format!("bim-{}", c.steps),
            (None, _, Norm::Linf) => format!("pgd-linf-{}", c.steps),
            (None, _, Norm::L2) => format!("pgd-l2-{}", c.steps),
        };
        if c.restarts > 1 {
            n.push_str(&format!("x{}", c.restarts));
        }
        n.push_str(c.loss.suffix());
        if c.labels == LabelMode::Predicted {
            n.push_str("-pred");
        }
        if c.bpda {
            n.push_str("-bpda");
        }
        n
    }

    fn info(&self) -> AttackInfo {
        let c = &self.0;
        let family = match (c.momentum, c.random_start) {
            (Some(_), _) => Family::MiFgsm,
            (None, false) => Family::Bim,
            (None, true) => Family::Pgd,
        };
        AttackInfo {
            restarts: c.restarts,
            labels: c.labels,
            adaptive: c.bpda || c.loss == AttackLoss::Margin,
            ..AttackInfo::white_box(family, c.norm, c.loss, c.steps)
        }
    }

    fn perturb(
        &self,
        model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: f64,
    ) -> Result<Tensor<3>> {
        check_eps(eps)?;
        let c = &self.0;
        let x = images.without_autodiff();
        let dims = x.dims();
        let device = x.device();
        let view = if c.bpda {
            model.straight_through()
        } else {
            None
        };
        let grad_model: &dyn Classifier = view.as_deref().unwrap_or(model);
        let y = target_labels(model, x.clone(), labels, c.labels);
        let alpha = self.alpha(eps);
        let mut best: Option<(Tensor<3>, Tensor<1>)> = None;
        for restart in 0..c.restarts {
            let mut adv = if c.random_start && eps > 0.0 {
                let d = self.random_delta(dims, eps, restart);
                (x.clone() + Tensor::<3>::from_data(TensorData::new(d, dims), &device))
                    .clamp(0.0, 1.0)
            } else {
                x.clone()
            };
            let mut velocity: Option<Tensor<3>> = None;
            for _ in 0..c.steps {
                let mut g = loss_gradient(grad_model, adv.clone(), y.clone(), c.loss)?;
                if let Some(mu) = c.momentum {
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
                let step = match c.norm {
                    Norm::Linf => g.sign() * alpha,
                    Norm::L2 => {
                        let n = l2_norms(g.clone()).clamp_min(1e-12);
                        g / n * alpha
                    }
                };
                let delta = project(adv + step - x.clone(), c.norm, eps);
                adv = (x.clone() + delta).clamp(0.0, 1.0);
                let loss = per_example_loss(model.logits(adv.clone()), y.clone(), c.loss);
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

    fn pgd(c: PgdConfig) -> Pgd {
        c.check().expect("valid settings")
    }

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
                pgd(PgdConfig::linf(5)),
                pgd(PgdConfig::bim(4)),
                pgd(PgdConfig::mi_fgsm(4, 1.0)),
                pgd(PgdConfig {
                    restarts: 2,
                    loss: AttackLoss::Margin,
                    ..PgdConfig::linf(3)
                }),
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
                pgd(PgdConfig::l2(5))
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
            let one = pgd(PgdConfig {
                steps: 1,
                random_start: false,
                ..PgdConfig::default()
            });
            let a = host(
                one.perturb(&model, images.clone(), labels.clone(), 0.1)
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
                let attack = pgd(PgdConfig {
                    step_size: Some(0.02),
                    ..PgdConfig::linf(steps)
                });
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
                pgd(PgdConfig::bim(5))
                    .perturb(&model, images.clone(), labels.clone(), 0.2)
                    .expect("pgd"),
            );
            assert_eq!(plain, x, "zero gradient: plain BIM cannot move");
            let through = pgd(PgdConfig {
                bpda: true,
                ..PgdConfig::bim(5)
            });
            assert_eq!(through.name(), "bim-5-bpda");
            let adv = host(through.perturb(&model, images, labels, 0.2).expect("bpda"));
            assert!(adv != x, "BPDA moves the pixels");
        });
    }

    #[test]
    fn bad_settings_name_the_field() {
        let e = PgdConfig {
            steps: 0,
            ..PgdConfig::default()
        }
        .check()
        .expect_err("steps");
        assert!(e.to_string().contains("steps"));
        let e = PgdConfig {
            restarts: 0,
            ..PgdConfig::default()
        }
        .check()
        .expect_err("restarts");
        assert!(e.to_string().contains("restarts"));
    }
}
