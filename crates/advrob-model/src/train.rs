//! The training loop: Adam, seeded shuffles and dropout, and a per-batch hook through which
//! defenses change the inputs, the targets or the logits the loss sees.

use std::time::Instant;

use advrob_data::rng::SplitMix64;
use advrob_data::{Batcher, Split, to_tensors};
use burn::config::Config;
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

use crate::loss::{LossKind, Targets, loss};
use crate::network::Net;

/// How a model is trained. Defaults: the README experiment (Adam 1e-3, cross-entropy, 5 epochs,
/// batch 128, seed 42).
#[derive(Config, Debug, PartialEq)]
pub struct TrainConfig {
    /// Passes over the training set.
    #[config(default = 5)]
    pub epochs: usize,
    /// Examples per batch (before a hook extends it).
    #[config(default = 128)]
    pub batch_size: usize,
    /// Adam learning rate.
    #[config(default = 1e-3)]
    pub lr: f64,
    /// Adam's ε (Keras' default, the framework of the study).
    #[config(default = 1e-7)]
    pub adam_epsilon: f32,
    /// Seed of the shuffles and dropout masks.
    #[config(default = 42)]
    pub seed: u64,
    /// Training criterion.
    #[config(default = "LossKind::CrossEntropy")]
    pub loss: LossKind,
}

impl TrainConfig {
    /// Refuses zero epochs or batch size and a learning rate that is not positive and finite.
    pub fn check(&self) -> crate::Result<()> {
        if self.epochs == 0 {
            return Err(ModelError::invalid("epochs", "must be at least 1"));
        }
        if self.batch_size == 0 {
            return Err(ModelError::invalid("batch_size", "must be at least 1"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(ModelError::invalid(
                "lr",
                format!("{} is not a positive finite number", self.lr),
            ));
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return Err(ModelError::invalid("adam_epsilon", "must be positive"));
        }
        Ok(())
    }
}

/// One batch on its way to the loss.
#[derive(Debug, Clone)]
pub struct TrainBatch {
    /// Inputs.
    ///
    /// # Shapes
    ///
    /// `[B, H, W]` in [0, 1]
    pub images: Tensor<3>,
    /// What the loss compares the logits with.
    pub targets: Targets,
    /// True class of each example (training accuracy is measured against these).
    ///
    /// # Shapes
    ///
    /// `[B]`
    pub labels: Tensor<1, Int>,
}

/// A per-batch hook: the one place where defenses change training.
///
/// Adversarial training extends the batch with attacked copies (made from the current model);
/// label smoothing replaces the targets; distillation divides the logits by a temperature and
/// trains on soft labels. The defaults change nothing.
pub trait TrainHook {
    /// A short description recorded with the training run.
    fn describe(&self) -> String {
        "plain".to_string()
    }

    /// Changes a batch before the forward pass. `model` is the current model in training mode
    /// (autodiff parameters); call [`Module::valid`] on it for an inference-mode copy.
    fn prepare(&mut self, model: &Net, batch: TrainBatch) -> crate::Result<TrainBatch> {
        let _ = model;
        Ok(batch)
    }

    /// Changes the logits the loss sees.
    ///
    /// # Shapes
    ///
    /// `[B, classes]` in and out
    fn logits(&self, logits: Tensor<2>) -> Tensor<2> {
        logits
    }
}

/// The hook that changes nothing: plain training.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl TrainHook for Plain {}

/// Statistics of one epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean over batches of the batch loss.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub loss: f64,
    /// Share of the examples fed to the model (after the hook, so adversarial copies count) whose
    /// training-mode prediction equals their true label.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub accuracy: f64,
    /// Examples fed, after the hook.
    pub examples: usize,
    /// Wall time of the epoch.
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
    pub seconds: f64,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainRecord {
    /// One entry per epoch.
    pub epochs: Vec<EpochStats>,
    /// Total wall time.
    pub seconds: f64,
    /// The hook's description.
    pub hook: String,
}

/// Where training is, for progress bars.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// 1-based epoch.
    pub epoch: usize,
    /// Number of epochs.
    pub epochs: usize,
    /// Batches done in this epoch.
    pub batch: usize,
    /// Batches per epoch.
    pub batches: usize,
}

/// Trains `model` on `data` and returns it in inference mode with the record of the run.
///
/// Each epoch visits the examples in an order drawn from `config.seed` and the epoch number;
/// dropout masks come from the same seed, so a run is repeatable on a given backend.
pub fn train(
    model: impl Into<Net>,
    data: &Split,
    config: &TrainConfig,
    device: &Device,
    hook: &mut dyn TrainHook,
    on_progress: &mut dyn FnMut(Progress),
) -> crate::Result<(Net, TrainRecord)> {
    config.check()?;
    let start = Instant::now();
    let mut model: Net = model.into().to_device(device).train();
    let mut trainer = Trainer {
        config,
        device,
        optim: AdamConfig::new().with_epsilon(config.adam_epsilon).init(),
        dropout_rng: SplitMix64::new(config.seed ^ 0x00D2_0900_u64),
    };
    let mut record = TrainRecord {
        epochs: Vec::with_capacity(config.epochs),
        seconds: 0.0,
        hook: hook.describe(),
    };
    for epoch in 1..=config.epochs {
        let (trained, stats) = trainer.epoch(model, data, epoch, hook, on_progress)?;
        model = trained;
        log::info!(
            "epoch {epoch}/{}: loss {:.4}, train accuracy {:.4}",
            config.epochs,
            stats.loss,
            stats.accuracy
        );
        record.epochs.push(stats);
    }
    record.seconds = start.elapsed().as_secs_f64();
    Ok((model.valid(), record))
}

/// What every batch of a training run uses: the settings, the device, Adam's state and the
/// dropout masks' stream.
struct Trainer<'a> {
    config: &'a TrainConfig,
    device: &'a Device,
    optim: ModuleOptimizer,
    dropout_rng: SplitMix64,
}

impl Trainer<'_> {
    /// One epoch of `model` over `data`, in the order drawn from the seed and `epoch`, each batch
    /// through `hook`; returns the model after it and the epoch's statistics, or an error when
    /// the mean loss is not finite.
    fn epoch(
        &mut self,
        mut model: Net,
        data: &Split,
        epoch: usize,
        hook: &mut dyn TrainHook,
        on_progress: &mut dyn FnMut(Progress),
    ) -> crate::Result<(Net, EpochStats)> {
        let (config, device) = (self.config, self.device);
        let epoch_start = Instant::now();
        let batcher = Batcher::new(
            data.len(),
            config.batch_size,
            Some(Batcher::epoch_seed(config.seed, epoch)),
        )?;
        let batches = batcher.len();
        let mut loss_sum = Tensor::<1>::zeros([1], device);
        let mut correct = Tensor::<1, Int>::zeros([1], device);
        let mut examples = 0usize;
        for (i, indices) in batcher.batches().enumerate() {
            let (images, labels) = to_tensors(data, indices, device);
            let batch = hook.prepare(
                &model,
                TrainBatch {
                    images,
                    targets: Targets::Labels(labels.clone()),
                    labels,
                },
            )?;
            examples += batch.labels.dims()[0];
            let logits = hook.logits(model.forward_train(batch.images, &mut self.dropout_rng));
            let preds = logits
                .clone()
                .without_autodiff()
                .argmax(1)
                .flatten::<1>(0, 1);
            correct = correct + preds.equal(batch.labels).int().sum();
            let l = loss(config.loss, logits, batch.targets);
            loss_sum = loss_sum + l.clone().without_autodiff();
            let grads = GradientsParams::from_grads(l.backward(), &model);
            model = self.optim.step(config.lr, model, grads);
            on_progress(Progress {
                epoch,
                epochs: config.epochs,
                batch: i + 1,
                batches,
            });
        }
        let mean_loss = f64::from(loss_sum.into_scalar::<f32>()) / batches.max(1) as f64;
        if !mean_loss.is_finite() {
            return Err(ModelError::Diverged {
                epoch,
                batch: batches,
                loss: mean_loss,
            });
        }
        let correct = correct.into_scalar::<i64>() as f64;
        let stats = EpochStats {
            epoch,
            loss: mean_loss,
            accuracy: correct / examples.max(1) as f64,
            examples,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        Ok((model, stats))
    }
}

/// Share of `data` whose inference-mode prediction equals the label, in batches of `batch_size`.
pub fn accuracy(
    model: &dyn crate::Classifier,
    data: &Split,
    batch_size: usize,
    device: &Device,
) -> f64 {
    let mut correct = 0i64;
    for start in (0..data.len()).step_by(batch_size.max(1)) {
        let (x, y) = advrob_data::range_tensors(data, start, batch_size, device);
        let pred = model.logits(x).argmax(1).flatten::<1>(0, 1);
        correct += pred.equal(y).int().sum().into_scalar::<i64>();
    }
    correct as f64 / data.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use crate::mlp::MlpConfig;
    use advrob_data::{Dataset, synthetic};

    fn tiny_data() -> Dataset {
        let dir = tempfile::tempdir().expect("temp");
        synthetic::write_dataset(dir.path(), 600, 200, 5).expect("write");
        Dataset::load_dir(dir.path()).expect("load")
    }

    fn weights(m: &Net) -> Vec<f32> {
        let Net::Mlp(m) = m else { panic!("an MLP") };
        m.layers[0]
            .weight
            .val()
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32")
    }

    #[test]
    fn learns_the_synthetic_task() {
        let ds = tiny_data();
        on_test_backends(|device| {
            let device = device.clone();
            let cfg = TrainConfig::new().with_epochs(2).with_batch_size(32);
            let model = MlpConfig::new()
                .with_hidden(vec![32])
                .init(&device)
                .expect("init");
            let before = accuracy(&model, &ds.test, 100, &device);
            let (model, rec) =
                train(model, &ds.train, &cfg, &device, &mut Plain, &mut |_| {}).expect("train");
            let after = accuracy(&model, &ds.test, 100, &device);
            assert_eq!(rec.epochs.len(), 2);
            assert!(rec.epochs[1].loss < rec.epochs[0].loss, "{rec:?}");
            assert!(
                after > 0.9 && after > before,
                "before {before}, after {after}"
            );
        });
    }

    #[test]
    fn same_seed_same_weights_after_training() {
        let ds = tiny_data();
        on_test_backends(|device| {
            let device = device.clone();
            let run = |seed| {
                let cfg = TrainConfig::new()
                    .with_epochs(1)
                    .with_batch_size(64)
                    .with_seed(seed);
                let m = MlpConfig::new()
                    .with_hidden(vec![16])
                    .init(&device)
                    .expect("init");
                train(m, &ds.train, &cfg, &device, &mut Plain, &mut |_| {})
                    .expect("train")
                    .0
            };
            assert_eq!(weights(&run(1)), weights(&run(1)));
            assert_ne!(weights(&run(1)), weights(&run(2)));
        });
    }

    #[test]
    fn hook_sees_every_batch_and_can_change_targets() {
        struct Counting(usize);
        impl TrainHook for Counting {
            fn prepare(&mut self, _: &Net, mut b: TrainBatch) -> crate::Result<TrainBatch> {
                self.0 += 1;
                // uniform soft targets: the model should learn nothing useful
                let [n] = b.labels.dims();
                b.targets = Targets::Soft(Tensor::<2>::ones([n, 10], &b.images.device()) / 10.0);
                Ok(b)
            }
        }
        let ds = tiny_data();
        on_test_backends(|device| {
            let cfg = TrainConfig::new().with_epochs(1).with_batch_size(100);
            let m = MlpConfig::new()
                .with_hidden(vec![8])
                .init(device)
                .expect("init");
            let mut hook = Counting(0);
            let (_, rec) =
                train(m, &ds.train, &cfg, device, &mut hook, &mut |_| {}).expect("train");
            assert_eq!(hook.0, 6);
            // cross-entropy against uniform targets is at least log(10) = 2.3026
            assert!(rec.epochs[0].loss >= 2.30, "{rec:?}");
        });
    }

    #[test]
    fn bad_train_config_names_the_field() {
        let err = TrainConfig::new().with_lr(-1.0).check().expect_err("lr");
        assert!(err.to_string().contains("lr"), "{err}");
    }
}
