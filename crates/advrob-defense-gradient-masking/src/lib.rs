#![doc = include_str!("../README.md")]

use advrob_attack::{Fgsm, LabelMode, input_gradient};
use advrob_defense_adversarial_training::{AdversarialHook, AdversarialTrainingConfig};
use advrob_model::{
    Classifier, Defense, DefenseConfig, DeployConfig, Deployed, ModelError, Net, Progress,
    TrainBatch, TrainHook, TrainSetup, Trained,
};
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Int, Tensor};
use serde::{Deserialize, Serialize};

/// How the model masks its gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mechanism {
    /// The seed-000 notebook's recipe, faithfully: the adversarial half of each batch is
    /// `clip(x + ε·(x_step − x))` with `x_m = x − ∂(Σ softmax)/∂x` and
    /// `x_step = x_m + α·sign(∇ₓ CE(f(x_m), y))`. Since the softmax sums to 1, `∂(Σ softmax)/∂x`
    /// is zero up to rounding and the perturbation is about ε·α = 0.001: in effect more clean
    /// training. Nothing is masked at deployment.
    #[default]
    Notebook,
    /// A non-differentiable rounding of every input pixel to `levels` levels in front of the
    /// network, in training and at deployment: white-box gradients are exactly zero, so FGSM (and
    /// adversarial training's own FGSM) does nothing, while the network is as fragile as before
    /// to anyone who differentiates around the rounding (BPDA) or transfers an attack.
    Quantize,
    /// Adversarial training of a network deployed with its logits multiplied by `scale`: the
    /// predictions do not change, the softmax saturates and the cross-entropy gradient underflows
    /// to zero on confidently classified inputs. An attack on the logits sees through it.
    SaturatedLogits,
}

/// Adversarial training whose model masks its gradients.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GradientMaskingConfig {
    /// The masking mechanism.
    pub mechanism: Mechanism,
    /// Budget of the adversarial training examples (L∞).
    pub eps: f64,
    /// Adversarial examples per clean example, in (0, 1].
    pub ratio: f64,
    /// Labels of the training attack.
    pub labels: LabelMode,
    /// [`Mechanism::Notebook`]: the size of its inner FGSM step.
    pub alpha: f64,
    /// [`Mechanism::Quantize`]: number of levels in [0, 1].
    pub levels: u32,
    /// [`Mechanism::SaturatedLogits`]: the factor on the logits.
    pub scale: f64,
}

impl Default for GradientMaskingConfig {
    fn default() -> Self {
        Self {
            mechanism: Mechanism::Notebook,
            eps: 0.1,
            ratio: 1.0,
            labels: LabelMode::True,
            alpha: 0.01,
            levels: 16,
            scale: 1000.0,
        }
    }
}

impl GradientMaskingConfig {
    /// The adversarial-training part of the config.
    pub fn adversarial(&self) -> AdversarialTrainingConfig {
        AdversarialTrainingConfig {
            eps: self.eps,
            ratio: self.ratio,
            labels: self.labels,
            attack_loss: None,
            pgd_steps: 0,
        }
    }

    /// How the trained network is deployed.
    pub fn deploy(&self) -> DeployConfig {
        match self.mechanism {
            Mechanism::Notebook => DeployConfig::new(),
            Mechanism::Quantize => DeployConfig::new().with_quantize(Some(self.levels)),
            Mechanism::SaturatedLogits => DeployConfig::new().with_logit_scale(self.scale),
        }
    }

    /// Refuses ε < 0, a ratio outside (0, 1], α < 0 and a bad deployment, naming the field.
    pub fn check(&self) -> advrob_model::Result<()> {
        self.adversarial().check()?;
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(ModelError::invalid(
                "alpha",
                format!("{} is not a finite number ≥ 0", self.alpha),
            ));
        }
        self.deploy().check().map_err(|e| match e {
            ModelError::InvalidConfig {
                field: "quantize",
                reason,
            } => ModelError::invalid("levels", reason),
            ModelError::InvalidConfig {
                field: "logit_scale",
                reason,
            } => ModelError::invalid("scale", reason),
            other => other,
        })
    }
}

/// ∇ₓ Σ_b Σ_k softmax(f(x_b))_k: the gradient of a constant (the softmax sums to one), so zero up
/// to rounding — the first step of the notebook's recipe.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, output: `[B, C, H, W]`
pub fn softmax_sum_gradient(
    model: &dyn Classifier,
    images: Tensor<4>,
) -> advrob_model::Result<Tensor<4>> {
    let x = images.without_autodiff().autodiff().require_grad();
    let total = softmax(model.logits(x.clone()), 1).sum();
    let grads = total.backward();
    x.grad(&grads).ok_or_else(|| ModelError::Hook {
        context: "gradient of the softmax sum".into(),
        source: "no gradient with respect to the input".into(),
    })
}

/// The notebook's adversarial examples: `clip(x + ε·(x_step − x), 0, 1)` with
/// `x_m = x − ∂(Σ softmax)/∂x` and `x_step = x_m + α·sign(∇ₓ CE(f(x_m), y))`.
///
/// # Shapes
///
/// - images: `[B, C, H, W]` in [0, 1], labels: `[B]`, output: `[B, C, H, W]` in [0, 1]
pub fn notebook_examples(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
    eps: f64,
    alpha: f64,
) -> advrob_model::Result<Tensor<4>> {
    let x = images.without_autodiff();
    let masked = x.clone() - softmax_sum_gradient(model, x.clone())?.without_autodiff();
    let g = input_gradient(model, masked.clone(), labels)?;
    let step = masked + g.sign() * alpha;
    Ok((x.clone() + (step - x) * eps).clamp(0.0, 1.0))
}

/// The training hook of the notebook's recipe.
#[derive(Debug, Clone)]
pub struct NotebookHook {
    config: GradientMaskingConfig,
}

impl TrainHook for NotebookHook {
    fn describe(&self) -> String {
        format!(
            "adversarial training with the seed-000 notebook's gradient masking: ε {}, α {}",
            self.config.eps, self.config.alpha
        )
    }

    /// The logits reach the loss as the model gives them.
    fn changes_logits(&self) -> bool {
        false
    }

    fn prepare(&mut self, model: &Net, batch: TrainBatch) -> advrob_model::Result<TrainBatch> {
        let [b] = batch.labels.dims();
        let k = self.config.adversarial().adversarial_count(b);
        let labels = batch.labels.clone().slice(0..k);
        let adversarial = notebook_examples(
            &model.valid(),
            batch.images.clone().slice(0..k),
            labels.clone(),
            self.config.eps,
            self.config.alpha,
        )?;
        let classes = model.classes();
        let targets = batch.targets.head(k);
        Ok(TrainBatch {
            images: Tensor::cat(vec![batch.images, adversarial], 0),
            targets: batch.targets.cat(targets, classes),
            labels: Tensor::cat(vec![batch.labels, labels], 0),
        })
    }
}

/// Adversarial training with gradient masking as a [`Defense`] (from scratch, or fine-tuning the
/// setup's weights as the notebook does).
#[derive(Debug, Clone, Default)]
pub struct GradientMasking {
    /// Its settings.
    pub config: GradientMaskingConfig,
}

impl GradientMasking {
    /// The defense with `config`.
    pub fn new(config: GradientMaskingConfig) -> Self {
        Self { config }
    }
}

impl DefenseConfig for GradientMaskingConfig {
    fn defense_name(&self) -> String {
        match self.mechanism {
            Mechanism::Notebook => "gradient-masking-notebook".into(),
            Mechanism::Quantize => "gradient-masking-quantize".into(),
            Mechanism::SaturatedLogits => "gradient-masking-saturated-logits".into(),
        }
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, _teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        Ok(Box::new(GradientMasking::new(self.clone())))
    }
}

impl Defense for GradientMasking {
    fn name(&self) -> String {
        self.config.defense_name()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        self.config.check()?;
        let deploy = self.config.deploy();
        let mut notebook;
        let mut adversarial;
        let hook: &mut dyn TrainHook = match self.config.mechanism {
            Mechanism::Notebook => {
                notebook = NotebookHook {
                    config: self.config.clone(),
                };
                &mut notebook
            }
            Mechanism::Quantize | Mechanism::SaturatedLogits => {
                adversarial = AdversarialHook::new(
                    self.config.adversarial(),
                    setup.train.loss,
                    deploy.clone(),
                )?;
                &mut adversarial
            }
        };
        setup.train_with(hook, deploy, on_progress)
    }
}

/// How much of a batch FGSM actually moves: the share of pixels with a non-zero FGSM direction
/// against `model` (0 when the gradient is masked everywhere).
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, labels: `[B]`
pub fn moved_share(
    model: &dyn Classifier,
    images: Tensor<4>,
    labels: Tensor<1, Int>,
) -> advrob_model::Result<f64> {
    let dir = Fgsm::new().direction(model, images, labels)?;
    let n = dir.shape().num_elements().max(1);
    let moved = dir.abs().sum().into_scalar::<f32>();
    Ok(f64::from(moved) / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_attack::Attack;
    use advrob_data::synthetic;
    use advrob_model::Deployed;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{MlpConfig, TrainConfig, accuracy};
    use burn::tensor::TensorData;

    fn host(t: Tensor<4>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn inputs(device: &burn::tensor::Device) -> (Tensor<4>, Tensor<1, Int>) {
        let x: Vec<f32> = (0..4 * 784)
            .map(|i| ((i * 31) % 100) as f32 / 100.0)
            .collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(vec![1i64, 3, 5, 7], [4]), device);
        (
            Tensor::from_data(TensorData::new(x, [4, 1, 28, 28]), device),
            y,
        )
    }

    #[test]
    fn notebook_recipe_is_a_near_no_op() {
        on_test_backends(|device| {
            let device = device.clone();
            let model = MlpConfig::new()
                .with_hidden(vec![16])
                .init(&device)
                .expect("init");
            let (x, y) = inputs(&device);
            // Σ softmax ≡ 1, so its gradient is zero up to f32 rounding
            let g = host(softmax_sum_gradient(&model, x.clone()).expect("gradient"));
            assert!(g.iter().all(|v| v.abs() < 1e-5), "{:?}", &g[..4]);
            // the perturbation is ε·α = 0.1·0.01 = 0.001 per pixel (plus that rounding)
            let adv = host(notebook_examples(&model, x.clone(), y, 0.1, 0.01).expect("examples"));
            let clean = host(x);
            let max = adv
                .iter()
                .zip(&clean)
                .map(|(a, c)| (a - c).abs())
                .fold(0.0f32, f32::max);
            assert!(max <= 0.001 + 1e-5 && max > 0.0005, "{max}");
        });
    }

    #[test]
    fn quantised_model_gives_fgsm_nothing_to_follow() {
        on_test_backends(|device| {
            let device = device.clone();
            let mlp = MlpConfig::new()
                .with_hidden(vec![16])
                .init(&device)
                .expect("init");
            let (x, y) = inputs(&device);
            let plain = Deployed::plain(mlp.clone());
            let masked = Deployed {
                net: mlp.into(),
                config: GradientMaskingConfig {
                    mechanism: Mechanism::Quantize,
                    ..Default::default()
                }
                .deploy(),
            };
            assert!(moved_share(&plain, x.clone(), y.clone()).expect("plain") > 0.5);
            assert_eq!(
                moved_share(&masked, x.clone(), y.clone()).expect("masked"),
                0.0
            );
            // so FGSM leaves the images as they are
            let adv = Fgsm::new()
                .perturb(&masked, x.clone(), y, 0.3)
                .expect("fgsm");
            assert_eq!(host(adv), host(x));
        });
    }

    #[test]
    fn saturated_logits_zero_the_gradient_of_confident_predictions() {
        on_test_backends(|device| {
            let device = device.clone();
            // a linear model whose weights make class 0 win by a wide margin on every input
            let mut mlp = MlpConfig::new()
                .with_hidden(vec![])
                .init(&device)
                .expect("init");
            let mut w = vec![0.0f32; 784 * 10];
            for i in 0..784 {
                w[i * 10] = 0.01;
                w[i * 10 + 1] = 0.005;
            }
            mlp.layers[0].weight = burn::module::Param::from_tensor(Tensor::from_data(
                TensorData::new(w, [784, 10]),
                &device,
            ));
            let (x, _) = inputs(&device);
            let y = Tensor::<1, Int>::zeros([4], &device);
            let plain = Deployed::plain(mlp.clone());
            let masked = Deployed {
                net: mlp.into(),
                config: GradientMaskingConfig {
                    mechanism: Mechanism::SaturatedLogits,
                    ..Default::default()
                }
                .deploy(),
            };
            // the margin (0.005 · Σx ≈ 2) is wide enough for a gradient at scale 1, and at scale
            // 1000 the softmax of the other classes, e^(−2000), is 0 in f32
            assert!(moved_share(&plain, x.clone(), y.clone()).expect("plain") > 0.5);
            assert_eq!(moved_share(&masked, x, y).expect("masked"), 0.0);
        });
    }

    #[test]
    fn masked_training_keeps_clean_accuracy_and_deploys_the_mask() {
        let data = synthetic::dataset(400, 100, 9);
        on_test_backends(|device| {
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![16]),
                TrainConfig::new().with_epochs(3).with_batch_size(20),
                &data.train,
                device,
            );
            for mechanism in [
                Mechanism::Notebook,
                Mechanism::Quantize,
                Mechanism::SaturatedLogits,
            ] {
                let defense = GradientMasking::new(GradientMaskingConfig {
                    mechanism,
                    ..Default::default()
                });
                let trained = defense.fit(&setup, &mut |_, _| {}).expect("fit");
                assert_eq!(trained.model.config, defense.config.deploy());
                let acc = accuracy(&trained.model, &data.test, 50, device);
                assert!(acc > 0.9, "{mechanism:?}: {acc}");
            }
        });
    }

    #[test]
    fn bad_configs_name_the_field() {
        let bad = |c: GradientMaskingConfig| c.check().expect_err("bad").to_string();
        let d = GradientMaskingConfig::default;
        assert!(bad(GradientMaskingConfig { eps: -1.0, ..d() }).contains("eps"));
        assert!(bad(GradientMaskingConfig { ratio: 0.0, ..d() }).contains("ratio"));
        assert!(bad(GradientMaskingConfig { alpha: -0.1, ..d() }).contains("alpha"));
        let q = GradientMaskingConfig {
            mechanism: Mechanism::Quantize,
            levels: 1,
            ..d()
        };
        assert!(bad(q).contains("levels"));
        let s = GradientMaskingConfig {
            mechanism: Mechanism::SaturatedLogits,
            scale: 0.0,
            ..d()
        };
        assert!(bad(s).contains("scale"));
    }
}
