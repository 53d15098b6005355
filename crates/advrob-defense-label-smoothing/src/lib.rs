#![doc = include_str!("../README.md")]

use advrob_model::{
    Defense, DefenseConfig, DeployConfig, Deployed, ModelError, Net, Progress, TrainBatch,
    TrainHook, TrainSetup, Trained,
};
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// Label smoothing (Szegedy et al. 2016): train towards `(1 − α)·onehot(y) + α/K`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LabelSmoothingConfig {
    /// The mass moved from the true class to the uniform distribution, in [0, 1).
    pub alpha: f64,
}

impl Default for LabelSmoothingConfig {
    fn default() -> Self {
        Self { alpha: 0.1 }
    }
}

impl LabelSmoothingConfig {
    /// Refuses α outside [0, 1), naming the field.
    pub fn check(&self) -> advrob_model::Result<()> {
        if !(0.0..1.0).contains(&self.alpha) {
            return Err(ModelError::invalid(
                "alpha",
                format!("{} is outside [0, 1)", self.alpha),
            ));
        }
        Ok(())
    }
}

/// `(1 − α)·onehot(y) + α/classes`: each row sums to one.
///
/// # Shapes
///
/// - labels: `[B]`, output: `[B, classes]`
pub fn smooth(labels: Tensor<1, Int>, classes: usize, alpha: f64) -> Tensor<2> {
    labels.one_hot(classes).float() * (1.0 - alpha) + alpha / classes as f64
}

/// The training hook: replaces each batch's targets by smoothed ones.
#[derive(Debug, Clone)]
pub struct SmoothingHook {
    alpha: f64,
}

impl TrainHook for SmoothingHook {
    fn describe(&self) -> String {
        format!("label smoothing α {}", self.alpha)
    }

    /// Only the targets change: the model's weights are not read.
    fn reads_weights(&self) -> bool {
        false
    }

    /// The logits reach the loss as the model gives them.
    fn changes_logits(&self) -> bool {
        false
    }

    fn prepare(&mut self, model: &Net, mut batch: TrainBatch) -> advrob_model::Result<TrainBatch> {
        let classes = model.classes();
        batch.targets =
            advrob_model::Targets::Soft(smooth(batch.labels.clone(), classes, self.alpha));
        Ok(batch)
    }
}

/// Label smoothing as a [`Defense`] (from scratch, or fine-tuning the setup's weights).
#[derive(Debug, Clone, Default)]
pub struct LabelSmoothing {
    /// Its settings.
    pub config: LabelSmoothingConfig,
}

impl LabelSmoothing {
    /// The defense with `config`.
    pub fn new(config: LabelSmoothingConfig) -> Self {
        Self { config }
    }
}

impl DefenseConfig for LabelSmoothingConfig {
    fn defense_name(&self) -> String {
        "label-smoothing".into()
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, _teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        Ok(Box::new(LabelSmoothing::new(self.clone())))
    }
}

impl Defense for LabelSmoothing {
    fn name(&self) -> String {
        "label-smoothing".into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        self.config.check()?;
        let mut hook = SmoothingHook {
            alpha: self.config.alpha,
        };
        setup.train_with(&mut hook, DeployConfig::new(), on_progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_data::synthetic;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{LossKind, MlpConfig, TrainConfig, accuracy};
    use burn::tensor::TensorData;

    #[test]
    fn smoothed_targets_sum_to_one_with_the_study_values() {
        on_test_backends(|device| {
            let device = device.clone();
            let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 9, 4], [3]), &device);
            let t = smooth(y, 10, 0.1)
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            // α = 0.1, K = 10: 0.9 + 0.01 = 0.91 on the true class, 0.01 elsewhere
            for (row, label) in t.chunks(10).zip([0, 9, 4]) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
                for (k, v) in row.iter().enumerate() {
                    let want = if k == label { 0.91 } else { 0.01 };
                    assert!((v - want).abs() < 1e-6, "{k}: {v}");
                }
            }
        });
    }

    #[test]
    fn alpha_outside_its_range_is_refused_by_name() {
        for alpha in [-0.1, 1.0, f64::NAN] {
            let e = LabelSmoothingConfig { alpha }
                .check()
                .expect_err("bad alpha");
            assert!(e.to_string().contains("alpha"), "{e}");
        }
    }

    #[test]
    fn smoothing_trains_and_lowers_confidence() {
        let data = synthetic::dataset(400, 100, 2);
        on_test_backends(|device| {
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![16]),
                TrainConfig::new()
                    .with_epochs(3)
                    .with_batch_size(20)
                    .with_loss(LossKind::CrossEntropy),
                &data.train,
                device,
            );
            let trained = LabelSmoothing::new(LabelSmoothingConfig { alpha: 0.3 })
                .fit(&setup, &mut |_, _| {})
                .expect("fit");
            assert!(accuracy(&trained.model, &data.test, 50, device) > 0.9);
            // cross-entropy against targets with 0.3 spread is bounded below by their entropy
            // (0.73·ln(1/0.73) + 9·0.03·ln(1/0.03) ≈ 1.18), far above a plain model's loss
            let last = trained.stages[0].record.epochs.last().expect("epochs").loss;
            assert!(last > 1.1, "{last}");
        });
    }
}
