//! The fast minimum-norm attack (Pintor, Roli, Brendel, Biggio 2021), L∞: instead of a fixed
//! budget it looks, per example, for the smallest ε* at which the prediction flips. It takes
//! normalised gradient steps on the logit difference `max_{j≠y} z_j − z_y` while projecting onto an
//! ε-ball whose radius it adapts: a linear estimate of the distance to the boundary until the
//! first adversarial point, then shrinking by a factor 1 − γ after every adversarial step and
//! growing by 1 + γ after every other one, with step α and factor γ annealed by cosine.
//!
//! One run gives ε* for every example, and from it the robust accuracy at every budget: an
//! example is broken at ε exactly when ε* ≤ ε.
//!
//! One departure from the reference implementation: before the first adversarial point, the
//! linear estimate of the distance to the boundary is overshot by the factor 1 + γ. Inside a linear
//! region of a ReLU network the estimate is exact, and a step that lands exactly on the boundary is
//! not adversarial; without the overshoot the radius stays there and nothing is found.

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, AttackConfig};
use crate::error::{AttackError, Result, check_eps};
use crate::grad::{AttackLoss, HostModel, per_example_loss};
use crate::info::{AttackInfo, Family, Norm};
use crate::norms::project;
use crate::rows::{copy_rows, host, sum_f32};

/// The settings of [`Fmn`]; the defaults are those of the paper's reference implementation (step
/// α annealed from 1 to 0.01, γ from 0.05 to 0.001), with 100 steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FmnConfig {
    /// Steps.
    pub steps: usize,
    /// Initial step size (on the L2-normalised gradient).
    pub alpha_init: f64,
    /// Final step size, after cosine annealing.
    pub alpha_final: f64,
    /// Initial factor by which ε shrinks or grows.
    pub gamma_init: f64,
    /// Final factor, after cosine annealing.
    pub gamma_final: f64,
}

impl Default for FmnConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            alpha_init: 1.0,
            alpha_final: 0.01,
            gamma_init: 0.05,
            gamma_final: 0.001,
        }
    }
}

impl FmnConfig {
    /// Checks the settings once: at least one step, positive step sizes, factors in (0, 1).
    pub fn check(self) -> Result<Fmn> {
        let bad = |field: &'static str, v: f64, domain: &str| AttackError::Invalid {
            field,
            reason: format!("{v} is not {domain}"),
        };
        if self.steps == 0 {
            return Err(AttackError::Invalid {
                field: "steps",
                reason: "must be at least 1".into(),
            });
        }
        for (field, v) in [
            ("alpha_init", self.alpha_init),
            ("alpha_final", self.alpha_final),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(bad(field, v, "a positive number"));
            }
        }
        for (field, v) in [
            ("gamma_init", self.gamma_init),
            ("gamma_final", self.gamma_final),
        ] {
            if !(v > 0.0 && v < 1.0) {
                return Err(bad(field, v, "in (0, 1)"));
            }
        }
        Ok(Fmn(self))
    }
}

impl AttackConfig for FmnConfig {
    fn build(&self) -> Result<Box<dyn Attack>> {
        Ok(Box::new(self.check()?))
    }
}

/// FMN (L∞) with checked settings ([`FmnConfig::check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fmn(FmnConfig);

impl Fmn {
    /// The settings.
    pub fn config(&self) -> &FmnConfig {
        &self.0
    }
}

impl Attack for Fmn {
    fn name(&self) -> String {
        format!("fmn-linf-{}", self.0.steps)
    }

    fn info(&self) -> AttackInfo {
        AttackInfo::white_box(Family::Fmn, Norm::Linf, AttackLoss::Margin, self.0.steps)
    }

    fn perturb_seeded(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: f64,
        seed: u64,
    ) -> Result<Tensor<4>> {
        check_eps(eps)?;
        Ok(self
            .perturb_grid(model, images, labels, &[eps], seed)?
            .remove(0))
    }

    /// One run for the whole grid: at each ε, every example's smallest adversarial point
    /// projected onto the ε-ball (itself when ε* ≤ ε).
    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        eps: &[f64],
        seed: u64,
    ) -> Result<Vec<Tensor<4>>> {
        for &e in eps {
            check_eps(e)?;
        }
        let x = images.without_autodiff();
        let (best, _) = self
            .minimum_norm(model, x.clone(), labels, seed)?
            .ok_or(AttackError::NoGradient)?;
        Ok(eps
            .iter()
            .map(|&e| {
                (x.clone() + project(best.clone() - x.clone(), Norm::Linf, e)).clamp(0.0, 1.0)
            })
            .collect())
    }

    /// The run on the host: the images, δ and the best points live there, `size` values a row,
    /// and each step updates every row in one pass after reading the gradient back once (the
    /// same f32 operations, reductions in burn-ndarray's order, as the tensor version it
    /// replaced); the model's pass is the only device work.
    fn minimum_norm(
        &self,
        model: &dyn Classifier,
        images: Tensor<4>,
        labels: Tensor<1, Int>,
        _seed: u64,
    ) -> Result<Option<(Tensor<4>, Vec<f64>)>> {
        let c = &self.0;
        let x_dev = images.without_autodiff();
        let dims = x_dev.dims();
        let [b, ch, h, w] = dims;
        let size = ch * h * w;
        let device = x_dev.device();
        let x = host(x_dev)?;
        let y = labels.without_autodiff();
        let on_host = HostModel::new(model, &device);
        let rows = |v: &[f32]| -> Vec<std::ops::Range<usize>> {
            (0..v.len() / size.max(1))
                .map(|j| j * size..(j + 1) * size)
                .collect()
        };
        let linf = |v: &[f32]| -> Vec<f32> {
            rows(v)
                .into_iter()
                .map(|r| v[r].iter().fold(0.0f32, |m, d| m.max(d.abs())))
                .collect()
        };
        // the largest L∞ distance any image in [0, 1] can be from x
        let worst: Vec<f32> = linf(&x.iter().map(|p| -p + 0.5).collect::<Vec<f32>>())
            .iter()
            .map(|m| m + 0.5)
            .collect();
        let mut delta = vec![0.0f32; x.len()];
        let mut eps = vec![f32::INFINITY; b];
        let mut best_norm = worst.clone();
        let mut best = x.clone();
        let mut found = vec![false; b];
        for i in 0..c.steps {
            let cosine = (1.0 + (std::f64::consts::PI * i as f64 / c.steps as f64).cos()) / 2.0;
            let alpha = (c.alpha_final + (c.alpha_init - c.alpha_final) * cosine) as f32;
            let gamma = (c.gamma_final + (c.gamma_init - c.gamma_final) * cosine) as f32;
            let norm = linf(&delta);
            let adv: Vec<f32> = x.iter().zip(&delta).map(|(x, d)| x + d).collect();
            let yy = y.clone();
            // ascend max_{j≠y} z_j − z_y: adversarial once it is positive
            let loss = move |z: Tensor<2>| per_example_loss(z, yy.clone(), AttackLoss::Margin);
            let p = on_host.pass(&adv, dims, &loss, true)?;
            let g = p.grad.ok_or(AttackError::NoGradient)?;
            let is_adv: Vec<bool> = p.loss.iter().map(|l| *l > 0.0).collect();
            let improves: Vec<bool> = (0..b)
                .map(|j| is_adv[j] && norm[j] < best_norm[j])
                .collect();
            copy_rows(&mut best, &adv, size, &improves);
            for (j, r) in rows(&g).into_iter().enumerate() {
                if improves[j] {
                    best_norm[j] = norm[j];
                }
                found[j] |= is_adv[j];
                eps[j] = if is_adv[j] {
                    (eps[j] * (1.0 - gamma)).min(best_norm[j])
                } else if found[j] {
                    eps[j] * (1.0 + gamma)
                } else {
                    // the linear estimate of the distance to the boundary, overshot by γ: on a
                    // piecewise-linear network the estimate is exact inside a linear region, and a
                    // step that lands exactly on the boundary is not adversarial, so without the
                    // overshoot the radius would stay there
                    let dual = sum_f32(&g[r.clone()].iter().map(|v| v.abs()).collect::<Vec<f32>>());
                    norm[j] + p.loss[j].abs() / dual.max(1e-12) * (1.0 + gamma)
                };
                eps[j] = eps[j].min(worst[j]);
                // a step along the L2-normalised gradient, δ clamped into [−ε, ε] and x + δ
                // into [0, 1]
                let gr = &g[r.clone()];
                let l2 = sum_f32(&gr.iter().map(|v| v * v).collect::<Vec<f32>>())
                    .sqrt()
                    .max(1e-12);
                let e = eps[j];
                for (d, (gv, xv)) in delta[r.clone()].iter_mut().zip(gr.iter().zip(&x[r])) {
                    let clamped = (*d + gv / l2 * alpha).max(-e).min(e);
                    *d = (xv + clamped).clamp(0.0, 1.0) - xv;
                }
            }
        }
        let norms = (0..b)
            .map(|j| {
                if found[j] {
                    f64::from(best_norm[j])
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        Ok(Some((
            Tensor::from_data(TensorData::new(best, dims), &device),
            norms,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_model::backend::on_test_backends;
    use burn::module::Param;
    use burn::nn::Linear;
    use burn::tensor::TensorData;

    /// Two classes, z = W x + b on the flattened image.
    struct Linear2(Linear);
    impl Classifier for Linear2 {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            self.0.forward(images.flatten(1, 3))
        }
    }

    #[test]
    fn finds_the_analytic_minimum_of_a_linear_model() {
        on_test_backends(|device| {
            // 1×4 images; z₀ − z₁ = (w₀ − w₁)·x + (b₀ − b₁) with w₀ − w₁ = (1, −1, 0.5, 0.5) and
            // b₀ − b₁ = −0.1: at x = 0.5 everywhere the margin is 0.4, and the smallest L∞ step
            // that closes it is 0.4 / ‖w₀ − w₁‖₁ = 0.4 / 3 ≈ 0.1333
            let w = Tensor::<2>::from_data(
                TensorData::new(vec![1.0f32, 0.0, -1.0, 0.0, 0.5, 0.0, 0.5, 0.0], [4, 2]),
                device,
            );
            let b = Tensor::<1>::from_data(TensorData::new(vec![-0.1f32, 0.0], [2]), device);
            let model = Linear2(Linear {
                weight: Param::from_tensor(w),
                bias: Some(Param::from_tensor(b)),
            });
            let x = Tensor::<4>::ones([1, 1, 1, 4], device) * 0.5;
            let y = Tensor::<1, Int>::zeros([1], device);
            let fmn = FmnConfig::default().check().expect("fmn");
            let (best, norms) = fmn
                .minimum_norm(&model, x.clone(), y.clone(), 0)
                .expect("fmn")
                .expect("minimum-norm");
            assert!((norms[0] - 0.4 / 3.0).abs() < 0.004, "ε* = {}", norms[0]);
            let pred: i64 = model.logits(best.clone()).argmax(1).into_scalar();
            assert_eq!(pred, 1, "the minimum-norm point is misclassified");
            // over a grid: broken exactly where ε ≥ ε*, each within its budget
            let grid = [0.1, 0.2];
            let advs = fmn
                .perturb_grid(&model, x.clone(), y, &grid, 0)
                .expect("grid");
            let preds: Vec<i64> = advs
                .iter()
                .map(|a| model.logits(a.clone()).argmax(1).into_scalar())
                .collect();
            assert_eq!(preds, [0, 1]);
            for (a, e) in advs.into_iter().zip(grid) {
                let d: f32 = (a - x.clone()).abs().max().into_scalar();
                assert!(f64::from(d) <= e + 1e-6);
            }
        });
    }
}
