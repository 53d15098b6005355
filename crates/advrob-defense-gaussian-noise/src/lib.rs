#![doc = include_str!("../README.md")]

use advrob_data::rng::SplitMix64;
use advrob_model::{
    Defense, DefenseConfig, DeployConfig, Deployed, ModelError, Net, Progress, TrainBatch,
    TrainHook, TrainSetup, Trained,
};
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

/// Gaussian noise augmentation: train on `x + N(0, σ²)` (Cohen et al. 2019).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GaussianNoiseConfig {
    /// The noise's standard deviation, in pixel units (pixels in [0, 1]).
    pub sigma: f64,
}

impl Default for GaussianNoiseConfig {
    fn default() -> Self {
        Self { sigma: 0.25 }
    }
}

impl GaussianNoiseConfig {
    /// Refuses σ that is not positive and finite, naming the field.
    pub fn check(&self) -> advrob_model::Result<()> {
        if !(self.sigma.is_finite() && self.sigma > 0.0) {
            return Err(ModelError::invalid(
                "sigma",
                format!("{} is not a positive number", self.sigma),
            ));
        }
        Ok(())
    }
}

/// `images + σ·z`, `z` standard normal from the stream of (`seed`, `batch`): one draw per value,
/// in the images' row-major order.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, output: the same
pub fn add_noise(images: Tensor<4>, sigma: f64, seed: u64, batch: u64) -> Tensor<4> {
    let dims = images.dims();
    let mut rng = SplitMix64::new(
        SplitMix64::new(seed ^ 0x6E01_5E00).next_u64() ^ batch.wrapping_mul(0x9E37_79B9_7F4A_7C15),
    );
    let noise: Vec<f32> = (0..dims.iter().product::<usize>())
        .map(|_| (sigma * rng.gaussian()) as f32)
        .collect();
    let noise = Tensor::<4>::from_data(TensorData::new(noise, dims), &images.device());
    let noise = if images.is_autodiff() {
        noise.autodiff()
    } else {
        noise
    };
    images + noise
}

/// The training hook: adds fresh noise to every batch's images.
#[derive(Debug, Clone)]
pub struct NoiseHook {
    sigma: f64,
    seed: u64,
    batches: u64,
}

impl NoiseHook {
    /// The hook for noise of standard deviation `sigma`, its streams seeded by `seed`.
    pub fn new(sigma: f64, seed: u64) -> Self {
        Self {
            sigma,
            seed,
            batches: 0,
        }
    }
}

impl TrainHook for NoiseHook {
    fn describe(&self) -> String {
        format!("gaussian noise σ {}", self.sigma)
    }

    /// Only the images change: the model's weights are not read.
    fn reads_weights(&self) -> bool {
        false
    }

    /// The logits reach the loss as the model gives them.
    fn changes_logits(&self) -> bool {
        false
    }

    fn prepare(&mut self, _model: &Net, mut batch: TrainBatch) -> advrob_model::Result<TrainBatch> {
        batch.images = add_noise(batch.images, self.sigma, self.seed, self.batches);
        self.batches += 1;
        Ok(batch)
    }
}

/// Gaussian noise augmentation as a [`Defense`] (from scratch, or fine-tuning the setup's
/// weights).
#[derive(Debug, Clone, Default)]
pub struct GaussianNoise {
    /// Its settings.
    pub config: GaussianNoiseConfig,
}

/// The defense's kind in a matrix and its name.
pub const KIND: &str = "gaussian-noise";

impl GaussianNoise {
    /// The defense with `config`.
    pub fn new(config: GaussianNoiseConfig) -> Self {
        Self { config }
    }
}

impl DefenseConfig for GaussianNoiseConfig {
    fn defense_name(&self) -> String {
        KIND.into()
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, _teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        Ok(Box::new(GaussianNoise::new(self.clone())))
    }
}

impl Defense for GaussianNoise {
    fn name(&self) -> String {
        KIND.into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        self.config.check()?;
        let mut hook = NoiseHook::new(self.config.sigma, setup.train.seed);
        setup.train_with(&mut hook, DeployConfig::new(), on_progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_data::synthetic;
    use advrob_model::backend::{host_f32, on_test_backends};
    use advrob_model::{MlpConfig, TrainConfig, accuracy};

    #[test]
    fn the_noise_has_its_sigma_and_is_seeded() {
        on_test_backends(|device| {
            let x = Tensor::<4>::zeros([50, 1, 8, 8], device);
            let a = host_f32(add_noise(x.clone(), 0.5, 1, 0)).expect("f32");
            let n = a.len() as f64;
            let mean = a.iter().map(|&v| v as f64).sum::<f64>() / n;
            let sd = (a.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            // 3200 draws: the mean within 4 standard errors of 0, σ within 5%
            assert!(mean.abs() < 4.0 * 0.5 / n.sqrt(), "{mean}");
            assert!((sd - 0.5).abs() < 0.025, "{sd}");
            assert_eq!(a, host_f32(add_noise(x.clone(), 0.5, 1, 0)).expect("f32"));
            assert_ne!(a, host_f32(add_noise(x, 0.5, 1, 1)).expect("f32"));
        });
    }

    #[test]
    fn sigma_outside_its_range_is_refused_by_name() {
        for sigma in [0.0, -0.1, f64::NAN, f64::INFINITY] {
            let e = GaussianNoiseConfig { sigma }
                .check()
                .expect_err("bad sigma");
            assert!(e.to_string().contains("sigma"), "{e}");
        }
    }

    /// The hook changes the images by noise of its σ, one fresh draw per batch, and nothing
    /// else; a model trained with it still learns the task. (That noise training makes the
    /// *smoothed* classifier accurate is measured on MNIST by the `smoothing` preset, where the
    /// baseline smoothed at σ = 0.25 is the control: docs/verify.md.)
    #[test]
    fn the_hook_adds_fresh_noise_and_the_model_still_learns() {
        let data = synthetic::dataset(600, 200, 4);
        on_test_backends(|device| {
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![32]),
                TrainConfig::new().with_epochs(3).with_batch_size(30),
                &data.train,
                device,
            );
            let net = setup.model.init(device).expect("init");
            let (x, y) = advrob_data::range_tensors(&data.train, 0, 40, device);
            let batch = || TrainBatch {
                images: x.clone(),
                targets: advrob_model::Targets::Labels(y.clone()),
                labels: y.clone(),
            };
            let mut hook = NoiseHook::new(0.3, 7);
            let first = hook.prepare(&net, batch()).expect("prepare");
            let second = hook.prepare(&net, batch()).expect("prepare");
            let clean = host_f32(x.clone()).expect("f32");
            let delta = |b: &TrainBatch| -> Vec<f64> {
                let v = host_f32(b.images.clone()).expect("f32");
                v.iter()
                    .zip(&clean)
                    .map(|(a, c)| f64::from(a - c))
                    .collect()
            };
            let (d1, d2) = (delta(&first), delta(&second));
            let sd = (d1.iter().map(|d| d * d).sum::<f64>() / d1.len() as f64).sqrt();
            assert!((sd - 0.3).abs() < 0.02, "{sd}");
            assert_ne!(d1, d2, "the same noise on two batches");
            assert_eq!(
                advrob_model::backend::host_i64(first.labels).expect("labels"),
                advrob_model::backend::host_i64(y.clone()).expect("labels")
            );
            let trained = GaussianNoise::new(GaussianNoiseConfig { sigma: 0.3 })
                .fit(&setup, &mut |_, _| {})
                .expect("fit");
            assert!(accuracy(&trained.model, &data.test, 100, device) > 0.8);
        });
    }
}
