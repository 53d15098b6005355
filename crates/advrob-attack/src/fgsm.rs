//! Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015), untargeted or targeted, on the
//! cross-entropy or the squared error, with the seed-004 notebook's cumulative-ε bug available for
//! faithful reproduction only.

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{Result, check_eps};
use crate::grad::{AttackLoss, LabelMode, device_loss_gradient, host_loss_gradient, target_labels};
use crate::info::{AttackInfo, Family, Norm};
use crate::targets::TargetRule;

/// FGSM, one step, model in inference mode:
///
/// - untargeted: `x_adv = clip(x + ε · sign(∇ₓ J(f(x), y)), 0, 1)`, away from the label;
/// - targeted: `x_adv = clip(x − ε · sign(∇ₓ J(f(x), t)), 0, 1)`, towards the target `t`.
///
/// `J` is the cross-entropy (default) or the squared error of the softmax (the loss of an
/// MSE-trained model). After clipping, `‖x_adv − x‖∞ ≤ ε` and every pixel stays in [0, 1] —
/// except with `cumulative`, which reproduces a bug and breaks the budget on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fgsm {
    /// Labels the untargeted loss is computed against.
    #[serde(default)]
    pub labels: LabelMode,
    /// The loss whose gradient sign is followed.
    #[serde(default)]
    pub loss: AttackLoss,
    /// Push towards a target class instead of away from the label.
    #[serde(default)]
    pub target: Option<TargetRule>,
    /// The seed-004 notebook's bug, for faithful reproduction only: over an ε grid each step starts
    /// from the previous ε's adversarial image (with its gradient recomputed there), so the
    /// perturbation at the k-th ε is bounded by ε₁ + … + ε_k, not ε_k. A single
    /// [`perturb`](Attack::perturb) is plain FGSM.
    #[serde(default)]
    pub cumulative: bool,
}

impl Fgsm {
    /// FGSM against the true labels on the cross-entropy, as in the study.
    pub fn new() -> Self {
        Self::default()
    }

    /// FGSM against labels chosen by `mode`.
    pub fn with_labels(mode: LabelMode) -> Self {
        Self {
            labels: mode,
            ..Self::default()
        }
    }

    /// The same attack following the gradient of `loss`.
    pub fn with_loss(mut self, loss: impl Into<AttackLoss>) -> Self {
        self.loss = loss.into();
        self
    }

    /// The same attack, targeted by `rule`.
    pub fn with_target(mut self, rule: TargetRule) -> Self {
        self.target = Some(rule);
        self
    }

    /// The same attack with the cumulative-ε bug switched on or off.
    pub fn with_cumulative(mut self, cumulative: bool) -> Self {
        self.cumulative = cumulative;
        self
    }

    /// The signed step direction, shared by every ε: `sign(∇J)` untargeted, `−sign(∇J)` targeted.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, labels: `[B]`, output: `[B, C, H, W]` with values in {−1, 0, 1}
    pub fn direction(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Tensor<4>> {
        let (dims, device) = (images.dims(), images.device().without_autodiff());
        Ok(match self.direction_on(model, &images, labels)? {
            Direction::Host { mut grad, descend } => {
                grad.iter_mut().for_each(|v| *v = sign(*v, descend));
                Tensor::from_data(TensorData::new(grad, dims), &device)
            }
            Direction::Device(d) => *d,
        })
    }

    /// [`Fgsm::direction`] where it is computed: on the host where the model has a host chain
    /// (burn-ndarray), else on the device.
    fn direction_on(
        &self,
        model: &dyn Classifier,
        images: &Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Direction> {
        let (y, descend) = match self.targets(model, images.clone(), labels.clone())? {
            Some(t) => (t, true),
            None => (
                target_labels(model, images.clone(), labels, self.labels),
                false,
            ),
        };
        if let Some(g) = host_loss_gradient(model, images, y.clone(), self.loss)? {
            return Ok(Direction::Host { grad: g, descend });
        }
        // no host chain here (host_loss_gradient said so): straight to the device
        let g = device_loss_gradient(model, images.clone(), y, self.loss)?.sign();
        Ok(Direction::Device(Box::new(if descend {
            g.neg()
        } else {
            g
        })))
    }
}

/// FGSM's step direction, on the host or on the device.
enum Direction {
    /// The loss gradient `[B·H·W]`, row-major, whose sign (negated when the attack descends)
    /// the direction is.
    Host { grad: Vec<f32>, descend: bool },
    /// `[B, C, H, W]` (boxed: a tensor handle is some 700 bytes).
    Device(Box<Tensor<4>>),
}

/// burn-ndarray's `sign` of `v` (0 at ±0 and NaN), negated when the attack descends.
#[inline(always)]
fn sign(v: f32, descend: bool) -> f32 {
    let s = if v > 0.0 {
        1.0
    } else if v < 0.0 {
        -1.0
    } else {
        0.0
    };
    if descend { -s } else { s }
}

/// `clamp(x + sign(g) · ε, 0, 1)` (the sign negated when the attack descends): the step of
/// [`step`] with the same f32 operations in the same order, for a gradient on the host, in one
/// parallel pass over the batch, written over `g`.
fn host_step(images: &Tensor<4>, mut g: Vec<f32>, descend: bool, eps: f64) -> Result<Tensor<4>> {
    use rayon::prelude::*;
    fn apply(g: &mut [f32], x: &[f32], descend: bool, eps: f32) {
        g.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(g, x)| {
                advrob_model::simd::vectorized(
                    #[inline(always)]
                    || {
                        for (g, x) in g.iter_mut().zip(x) {
                            *g = crate::rows::clip(x + sign(*g, descend) * eps, 0.0, 1.0);
                        }
                    },
                )
            });
    }
    let (dims, device, eps) = (images.dims(), images.device(), eps as f32);
    crate::rows::on_host(images, |x| apply(&mut g, x, descend, eps))?;
    Ok(Tensor::from_data(TensorData::new(g, dims), &device))
}

/// The step for a direction wherever it was computed.
fn step_on(images: &Tensor<4>, direction: &Direction, eps: f64) -> Result<Tensor<4>> {
    match direction {
        Direction::Host { grad, descend } => host_step(images, grad.clone(), *descend, eps),
        Direction::Device(d) => Ok(step(images, d, eps)),
    }
}

fn step(images: &Tensor<4>, direction: &Tensor<4>, eps: f64) -> Tensor<4> {
    (images.clone() + direction.clone() * eps).clamp(0.0, 1.0)
}

impl AttackConfig for Fgsm {
    fn build(&self) -> Result<Box<dyn Attack>> {
        if let Some(t) = self.target {
            t.check()?;
        }
        Ok(Box::new(*self))
    }
}

impl Attack for Fgsm {
    fn info(&self) -> AttackInfo {
        AttackInfo {
            targeted: self.target.is_some(),
            labels: self.labels,
            adaptive: self.loss == AttackLoss::Margin,
            bounded: !self.cumulative,
            ..AttackInfo::white_box(Family::Fgsm, Norm::Linf, self.loss, 1)
        }
    }

    fn name(&self) -> String {
        let mut n = String::from("fgsm");
        if let Some(t) = &self.target {
            n.push_str("-targeted-");
            n.push_str(&t.name());
        } else if self.labels == LabelMode::Predicted {
            n.push_str("-pred");
        }
        n.push_str(self.loss.suffix());
        if self.cumulative {
            n.push_str("-cumulative");
        }
        n
    }

    fn targets(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
    ) -> Result<Option<Tensor<1, Int>>> {
        let Some(rule) = self.target else {
            return Ok(None);
        };
        Ok(Some(rule.targets(model, images, labels)?))
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        _seed: u64,
    ) -> Result<Tensor<4>> {
        check_eps(eps)?;
        let images = images.without_autodiff();
        match self.direction_on(model, &images, labels)? {
            Direction::Host { grad, descend } => host_step(&images, grad, descend, eps),
            Direction::Device(d) => Ok(step(&images, &d, eps)),
        }
    }

    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        _seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        for &e in eps {
            check_eps(e)?;
        }
        let images = images.without_autodiff();
        if self.cumulative {
            let mut current = images;
            let mut out = Vec::with_capacity(eps.len());
            for &e in eps {
                let dir = self.direction_on(model, &current, labels.clone())?;
                current = step_on(&current, &dir, e)?;
                out.push(current.clone());
            }
            return Ok(out);
        }
        // one gradient for the whole grid: FGSM's direction does not depend on ε
        let dir = self.direction_on(model, &images, labels)?;
        eps.iter().map(|&e| step_on(&images, &dir, e)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_model::MlpConfig;
    use advrob_model::backend::on_test_backends;
    use burn::tensor::TensorData;

    fn to_vec(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    #[test]
    fn budget_and_pixel_range_hold() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![32])
                .init(&device)
                .expect("init");
            // pixels at 0, 1 and in between, so that clipping matters on both sides
            let x: Vec<f32> = (0..4 * 784).map(|i| [0.0, 1.0, 0.3, 0.97][i % 4]).collect();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [4, 1, 28, 28]), &device);
            let labels =
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
            let eps_grid = [0.0, 0.05, 0.1, 0.3, 1.0];
            for mode in [LabelMode::True, LabelMode::Predicted] {
                let advs = Fgsm::with_labels(mode)
                    .perturb_grid(&model, images.clone(), labels.clone(), &eps_grid, 0)
                    .expect("attack");
                for (adv, eps) in advs.into_iter().zip(eps_grid) {
                    let a = to_vec(adv);
                    for (p, q) in a.iter().zip(&x) {
                        assert!((0.0..=1.0).contains(p), "pixel {p} outside [0, 1]");
                        assert!(
                            (p - q).abs() <= eps as f32 + 1e-6,
                            "|δ| {} > ε {eps}",
                            (p - q).abs()
                        );
                    }
                    if eps == 0.0 {
                        assert_eq!(a, x, "ε = 0 changes nothing");
                    }
                }
            }
        });
    }

    /// The step taken on the host (burn-ndarray) is the tensor path's step from the same
    /// direction to the bit, untargeted and targeted, single ε and grids.
    #[test]
    fn the_host_step_is_the_tensor_step() {
        on_test_backends(|device| {
            let model = MlpConfig::new()
                .with_hidden(vec![16])
                .init(device)
                .expect("init");
            let x: Vec<f32> = (0..5 * 784)
                .map(|i| [0.0, 1.0, 0.3, 0.97, 0.05][i % 5])
                .collect();
            let images = Tensor::<4>::from_data(TensorData::new(x, [5, 1, 28, 28]), device);
            let labels =
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3, 4], [5]), device);
            for attack in [Fgsm::new(), Fgsm::new().with_target(TargetRule::Shift(2))] {
                let dir = attack
                    .direction(&model, images.clone(), labels.clone())
                    .expect("direction");
                let eps = [0.0, 0.1, 0.3];
                let grid = attack
                    .perturb_grid(&model, images.clone(), labels.clone(), &eps, 0)
                    .expect("grid");
                for (adv, e) in grid.into_iter().zip(eps) {
                    let want = to_vec(step(&images, &dir, e));
                    let one = attack
                        .perturb(&model, images.clone(), labels.clone(), e)
                        .expect("attack");
                    for got in [to_vec(adv), to_vec(one)] {
                        assert!(
                            got.iter()
                                .zip(&want)
                                .all(|(a, b)| a.to_bits() == b.to_bits()),
                            "ε {e}, {}",
                            attack.name()
                        );
                    }
                }
            }
        });
    }

    #[test]
    fn grid_equals_one_call_per_eps() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&device)
                .expect("init");
            let images = Tensor::<4>::ones([2, 1, 28, 28], &device) * 0.5;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 7], [2]), &device);
            let grid = Fgsm::new()
                .perturb_grid(&model, images.clone(), labels.clone(), &[0.1, 0.2], 0)
                .expect("grid");
            for (g, e) in grid.into_iter().zip([0.1, 0.2]) {
                let single = Fgsm::new()
                    .perturb(&model, images.clone(), labels.clone(), e)
                    .expect("single");
                assert_eq!(to_vec(g), to_vec(single));
            }
        });
    }

    #[test]
    fn on_a_linear_two_class_model_fgsm_is_the_sign_of_the_weight_difference() {
        on_test_backends(|device| {
            let device = device.clone();
            // logits z = xW + b with no hidden layer; for true class 0 the cross-entropy gradient is
            // p₁ (W₁ − W₀), so FGSM moves every pixel by ε · sign(W₁ − W₀)
            let model = MlpConfig::new()
                .with_hidden(vec![])
                .with_classes(2)
                .init(&device)
                .expect("init");
            let w = model.layers[0]
                .weight
                .val()
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            let expected: Vec<f32> = (0..784)
                .map(|i| 0.5 + 0.1 * (w[i * 2 + 1] - w[i * 2]).signum())
                .collect();
            let images = Tensor::<4>::ones([1, 1, 28, 28], &device) * 0.5;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
            let adv = to_vec(
                Fgsm::new()
                    .perturb(&model, images, labels, 0.1)
                    .expect("attack"),
            );
            for (a, e) in adv.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-6, "{a} vs {e}");
            }
        });
    }

    #[test]
    fn negative_eps_is_refused_by_name() {
        on_test_backends(|device| {
            let model = MlpConfig::new()
                .with_hidden(vec![4])
                .init(device)
                .expect("init");
            let images = Tensor::<4>::zeros([1, 1, 28, 28], device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), device);
            let err = Fgsm::new()
                .perturb(&model, images, labels, -0.1)
                .expect_err("eps < 0");
            assert!(err.to_string().contains("eps"), "{err}");
        });
    }

    /// A 2-class linear model and its weight difference W₁ − W₀ per pixel.
    fn linear_two_class(device: &burn::tensor::Device) -> (advrob_model::Mlp, Vec<f32>) {
        let model = MlpConfig::new()
            .with_hidden(vec![])
            .with_classes(2)
            .init(device)
            .expect("init");
        let w = model.layers[0]
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32");
        let diff = (0..784).map(|i| w[i * 2 + 1] - w[i * 2]).collect();
        (model, diff)
    }

    #[test]
    fn targeted_fgsm_steps_towards_the_target() {
        on_test_backends(|device| {
            let device = device.clone();
            // with 2 classes, shift 1 targets the other class: for y = 0 the target is 1 and the
            // step −ε·sign(∇CE(·, 1)) = −ε·sign(p₀ (W₀ − W₁)) = +ε·sign(W₁ − W₀), the same
            // direction as the untargeted attack on label 0
            let (model, diff) = linear_two_class(&device);
            let images = Tensor::<4>::ones([1, 1, 28, 28], &device) * 0.5;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
            let attack = Fgsm::new().with_target(TargetRule::Shift(1));
            assert_eq!(attack.name(), "fgsm-targeted-shift1");
            let t = attack
                .targets(&model, images.clone(), labels.clone())
                .expect("targets")
                .expect("targeted");
            assert_eq!(t.into_data().try_into_vec_as::<i64>().expect("i64"), [1]);
            let adv = to_vec(attack.perturb(&model, images, labels, 0.1).expect("attack"));
            for (a, d) in adv.iter().zip(&diff) {
                assert!((a - (0.5 + 0.1 * d.signum())).abs() < 1e-6);
            }
        });
    }

    #[test]
    fn target_rules_pick_what_they_say() {
        on_test_backends(|device| {
            let model = MlpConfig::new()
                .with_hidden(vec![8])
                .init(device)
                .expect("init");
            let x = Tensor::<4>::ones([4, 1, 28, 28], device) * 0.3;
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 7, 8, 9], [4]), device);
            let ints = |t: Tensor<1, Int>| t.into_data().try_into_vec_as::<i64>().expect("i64");
            let shift = TargetRule::Shift(2)
                .targets(&model, x.clone(), y.clone())
                .expect("targets");
            assert_eq!(ints(shift), [2, 9, 0, 1]);
            // least likely: the argmin of the clean logits
            let z = model
                .logits(x.clone())
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            let ll = ints(
                TargetRule::LeastLikely
                    .targets(&model, x.clone(), y.clone())
                    .expect("targets"),
            );
            for (row, t) in z.chunks(10).zip(ll) {
                let min = row.iter().cloned().fold(f32::INFINITY, f32::min);
                assert_eq!(row[t as usize], min);
            }
            // random: never the label, always a class, repeatable
            let r = ints(
                TargetRule::Random(5)
                    .targets(&model, x.clone(), y.clone())
                    .expect("targets"),
            );
            assert_eq!(
                r,
                ints(
                    TargetRule::Random(5)
                        .targets(&model, x, y.clone())
                        .expect("targets")
                )
            );
            for (t, l) in r.iter().zip(ints(y)) {
                assert!(*t != l && (0..10).contains(t), "{t} {l}");
            }
        });
    }

    #[test]
    fn cumulative_mode_accumulates_and_plain_mode_does_not() {
        on_test_backends(|device| {
            let device = device.clone();
            // on a linear model the gradient sign never changes, so the cumulative bug's k-th image
            // is x + (ε₁ + … + ε_k)·sign(W₁ − W₀) while plain FGSM's is x + ε_k·sign(W₁ − W₀)
            let (model, diff) = linear_two_class(&device);
            let images = Tensor::<4>::ones([1, 1, 28, 28], &device) * 0.3;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
            let grid = [0.01, 0.02, 0.04];
            let buggy = Fgsm::new()
                .with_cumulative(true)
                .perturb_grid(&model, images.clone(), labels.clone(), &grid, 0)
                .expect("attack");
            let plain = Fgsm::new()
                .perturb_grid(&model, images, labels, &grid, 0)
                .expect("attack");
            for ((b, p), total) in buggy.into_iter().zip(plain).zip([0.01, 0.03, 0.07]) {
                let (b, p) = (to_vec(b), to_vec(p));
                assert!((b[0] - (0.3 + total * diff[0].signum())).abs() < 1e-6);
                assert!(p.iter().all(|v| (v - 0.3).abs() <= 0.04 + 1e-6));
            }
        });
    }

    #[test]
    fn squared_error_fgsm_keeps_the_invariants() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![16])
                .init(&device)
                .expect("init");
            let x: Vec<f32> = (0..2 * 784).map(|i| (i % 11) as f32 / 10.0).collect();
            let images =
                Tensor::<4>::from_data(TensorData::new(x.clone(), [2, 1, 28, 28]), &device);
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![4i64, 9], [2]), &device);
            let attack = Fgsm::new().with_loss(advrob_model::LossKind::Mse);
            assert_eq!(attack.name(), "fgsm-mse");
            let adv = to_vec(attack.perturb(&model, images, labels, 0.2).expect("attack"));
            for (p, q) in adv.iter().zip(&x) {
                assert!((0.0..=1.0).contains(p) && (p - q).abs() <= 0.2 + 1e-6);
            }
        });
    }
}
