//! Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy 2015).

use advrob_model::Classifier;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::Attack;
use crate::error::{Result, check_eps};
use crate::grad::{LabelMode, input_gradient, target_labels};

/// FGSM: `x_adv = clip(x + ε · sign(∇ₓ CE(f(x), y)), 0, 1)`, one step, model in inference mode.
///
/// After clipping, `‖x_adv − x‖∞ ≤ ε` and every pixel stays in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fgsm {
    /// Labels the loss is computed against.
    #[serde(default)]
    pub labels: LabelMode,
}

impl Fgsm {
    /// FGSM against the true labels, as in the study.
    pub fn new() -> Self {
        Self::default()
    }

    /// FGSM against labels chosen by `mode`.
    pub fn with_labels(mode: LabelMode) -> Self {
        Self { labels: mode }
    }

    /// The sign of the input gradient, shared by every ε.
    ///
    /// # Shapes
    ///
    /// - images: `[B, H, W]`, labels: `[B]`, output: `[B, H, W]` with values in {−1, 0, 1}
    pub fn direction(
        &self,
        model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
    ) -> Result<Tensor<3>> {
        let y = target_labels(model, images.clone(), labels, self.labels);
        Ok(input_gradient(model, images, y)?.sign())
    }
}

fn step(images: &Tensor<3>, direction: &Tensor<3>, eps: f64) -> Tensor<3> {
    (images.clone() + direction.clone() * eps).clamp(0.0, 1.0)
}

impl Attack for Fgsm {
    fn name(&self) -> String {
        match self.labels {
            LabelMode::True => "fgsm".into(),
            LabelMode::Predicted => "fgsm-pred".into(),
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
        let images = images.without_autodiff();
        let dir = self.direction(model, images.clone(), labels)?;
        Ok(step(&images, &dir, eps))
    }

    fn perturb_grid(
        &self,
        model: &dyn Classifier,
        images: Tensor<3>,
        labels: Tensor<1, Int>,
        eps: &[f64],
    ) -> Result<Vec<Tensor<3>>> {
        for &e in eps {
            check_eps(e)?;
        }
        let images = images.without_autodiff();
        // one gradient for the whole grid: FGSM's direction does not depend on ε
        let dir = self.direction(model, images.clone(), labels)?;
        Ok(eps.iter().map(|&e| step(&images, &dir, e)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_model::MlpConfig;
    use advrob_model::backend::test_devices;
    use burn::tensor::TensorData;

    fn to_vec(t: Tensor<3>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    #[test]
    fn budget_and_pixel_range_hold() {
        for device in test_devices() {
            let model = MlpConfig::new()
                .with_hidden(vec![32])
                .init(&device)
                .expect("init");
            // pixels at 0, 1 and in between, so that clipping matters on both sides
            let x: Vec<f32> = (0..4 * 784).map(|i| [0.0, 1.0, 0.3, 0.97][i % 4]).collect();
            let images = Tensor::<3>::from_data(TensorData::new(x.clone(), [4, 28, 28]), &device);
            let labels =
                Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 3], [4]), &device);
            let eps_grid = [0.0, 0.05, 0.1, 0.3, 1.0];
            for mode in [LabelMode::True, LabelMode::Predicted] {
                let advs = Fgsm::with_labels(mode)
                    .perturb_grid(&model, images.clone(), labels.clone(), &eps_grid)
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
        }
    }

    #[test]
    fn grid_equals_one_call_per_eps() {
        for device in test_devices() {
            let model = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&device)
                .expect("init");
            let images = Tensor::<3>::ones([2, 28, 28], &device) * 0.5;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 7], [2]), &device);
            let grid = Fgsm::new()
                .perturb_grid(&model, images.clone(), labels.clone(), &[0.1, 0.2])
                .expect("grid");
            for (g, e) in grid.into_iter().zip([0.1, 0.2]) {
                let single = Fgsm::new()
                    .perturb(&model, images.clone(), labels.clone(), e)
                    .expect("single");
                assert_eq!(to_vec(g), to_vec(single));
            }
        }
    }

    #[test]
    fn on_a_linear_two_class_model_fgsm_is_the_sign_of_the_weight_difference() {
        for device in test_devices() {
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
            let images = Tensor::<3>::ones([1, 28, 28], &device) * 0.5;
            let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), &device);
            let adv = to_vec(
                Fgsm::new()
                    .perturb(&model, images, labels, 0.1)
                    .expect("attack"),
            );
            for (a, e) in adv.iter().zip(&expected) {
                assert!((a - e).abs() < 1e-6, "{a} vs {e}");
            }
        }
    }

    #[test]
    fn negative_eps_is_refused_by_name() {
        let device = &test_devices()[0];
        let model = MlpConfig::new()
            .with_hidden(vec![4])
            .init(device)
            .expect("init");
        let images = Tensor::<3>::zeros([1, 28, 28], device);
        let labels = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64], [1]), device);
        let err = Fgsm::new()
            .perturb(&model, images, labels, -0.1)
            .expect_err("eps < 0");
        assert!(err.to_string().contains("eps"), "{err}");
    }
}
