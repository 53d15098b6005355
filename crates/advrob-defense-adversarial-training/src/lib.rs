#![doc = include_str!("../README.md")]

use advrob_attack::{Attack, Fgsm, LabelMode, Pgd, PgdConfig};
use advrob_data::Split;
use advrob_data::idx::IdxImages;
use advrob_model::{
    Defense, DefenseConfig, DeployConfig, Deployed, LossKind, ModelError, Net, Plain, Progress,
    Stage, TeacherUse, TrainBatch, TrainHook, TrainSetup, Trained, train,
};
use burn::module::Module;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// Adversarial training: every batch is extended with adversarial versions of (a share of)
/// itself, made from the current model — by FGSM (Goodfellow et al. 2015, the study's recipe) or,
/// with `pgd_steps > 0`, by L∞ PGD with a random start (Madry et al. 2018).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdversarialTrainingConfig {
    /// FGSM budget of the training examples (L∞).
    pub eps: f64,
    /// Adversarial examples per clean example, in (0, 1]: 1 is the study's 1:1 (a batch of B
    /// becomes B clean + B adversarial), 0.5 attacks the first half of each batch.
    pub ratio: f64,
    /// Labels FGSM's loss is computed against.
    pub labels: LabelMode,
    /// Loss whose gradient the attack follows; `None`: the training loss.
    pub attack_loss: Option<LossKind>,
    /// 0: FGSM. Otherwise Madry et al.'s PGD adversarial training: this many L∞ steps of
    /// 2.5·ε/steps from a random start in the ε-ball (a fresh one per batch), keeping each
    /// example's highest-loss iterate.
    #[serde(skip_serializing_if = "is_zero")]
    pub pgd_steps: usize,
}

// not serialised when 0, so that the configurations (and cache keys) of FGSM training are those
// written before PGD training existed
fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for AdversarialTrainingConfig {
    fn default() -> Self {
        Self {
            eps: 0.1,
            ratio: 1.0,
            labels: LabelMode::True,
            attack_loss: None,
            pgd_steps: 0,
        }
    }
}

impl AdversarialTrainingConfig {
    /// Madry et al.'s PGD adversarial training at `eps` with `steps` steps.
    pub fn pgd(eps: f64, steps: usize) -> Self {
        Self {
            eps,
            pgd_steps: steps,
            ..Self::default()
        }
    }

    /// Refuses ε outside [0, 1] (or not finite) and a ratio outside (0, 1], naming the field.
    pub fn check(&self) -> advrob_model::Result<()> {
        check_eps(self.eps)?;
        if !(self.ratio > 0.0 && self.ratio <= 1.0) {
            return Err(ModelError::invalid(
                "ratio",
                format!("{} is outside (0, 1]", self.ratio),
            ));
        }
        Ok(())
    }

    /// Number of adversarial examples added to a batch of `batch` clean ones (at least one).
    pub fn adversarial_count(&self, batch: usize) -> usize {
        ((batch as f64 * self.ratio).round() as usize).clamp(1, batch.max(1))
    }

    /// The FGSM attack used for a model trained with `train_loss` (`pgd_steps = 0`).
    pub fn attack(&self, train_loss: LossKind) -> Fgsm {
        Fgsm::with_labels(self.labels).with_loss(self.attack_loss.unwrap_or(train_loss))
    }

    /// The PGD attack used for a model trained with `train_loss`, when `pgd_steps > 0`.
    pub fn pgd_attack(&self, train_loss: LossKind) -> advrob_model::Result<Option<Pgd>> {
        if self.pgd_steps == 0 {
            return Ok(None);
        }
        // Madry et al. train on the last iterate of every example, not on the first that fools
        // the model (an early-stopped attack trains a measurably less robust model)
        let config = PgdConfig {
            loss: self.attack_loss.unwrap_or(train_loss).into(),
            labels: self.labels,
            keep_last: true,
            ..PgdConfig::linf(self.pgd_steps)
        };
        Ok(Some(config.check()?))
    }
}

/// The training hook of adversarial training. It attacks the model as it will be deployed
/// (`deploy`: nothing, an input quantisation, a logit scale) and feeds the network the deployed
/// input transform of every example, so that a masked model is trained the way it is used.
#[derive(Debug, Clone)]
pub struct AdversarialHook {
    config: AdversarialTrainingConfig,
    attack: Fgsm,
    pgd: Option<Pgd>,
    deploy: DeployConfig,
    batches: u64,
}

impl AdversarialHook {
    /// A hook for a model trained with `train_loss`, deployed as `deploy`.
    pub fn new(
        config: AdversarialTrainingConfig,
        train_loss: LossKind,
        deploy: DeployConfig,
    ) -> advrob_model::Result<Self> {
        config.check()?;
        deploy.check()?;
        Ok(Self {
            attack: config.attack(train_loss),
            pgd: config.pgd_attack(train_loss)?,
            config,
            deploy,
            batches: 0,
        })
    }
}

impl TrainHook for AdversarialHook {
    fn describe(&self) -> String {
        format!(
            "adversarial training: {} at ε {} on {} of each batch",
            self.pgd
                .as_ref()
                .map_or_else(|| self.attack.name(), Attack::name),
            self.config.eps,
            self.config.ratio
        )
    }

    /// The logits reach the loss as the model gives them.
    fn changes_logits(&self) -> bool {
        false
    }

    fn prepare(&mut self, model: &Net, batch: TrainBatch) -> advrob_model::Result<TrainBatch> {
        let [b] = batch.labels.dims();
        let k = self.config.adversarial_count(b);
        let current = Deployed {
            net: model.clone().valid(),
            config: self.deploy.clone(),
        };
        let labels = batch.labels.clone().slice(0..k);
        let clean = batch.images.clone().slice(0..k);
        let adversarial = match &self.pgd {
            Some(pgd) => {
                // a fresh random start per batch
                pgd.perturb_seeded(
                    &current,
                    clean,
                    labels.clone(),
                    self.config.eps,
                    self.batches,
                )?
            }
            None => self
                .attack
                .perturb(&current, clean, labels.clone(), self.config.eps)?,
        };
        self.batches += 1;
        let classes = model.classes();
        let targets = batch.targets.head(k);
        Ok(TrainBatch {
            images: self
                .deploy
                .preprocess(Tensor::cat(vec![batch.images, adversarial], 0)),
            targets: batch.targets.cat(targets, classes),
            labels: Tensor::cat(vec![batch.labels, labels], 0),
        })
    }
}

impl DefenseConfig for AdversarialTrainingConfig {
    fn defense_name(&self) -> String {
        "adversarial-training".into()
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, _teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        Ok(Box::new(AdversarialTraining::new(self.clone())))
    }
}

impl DefenseConfig for RetrainingConfig {
    fn defense_name(&self) -> String {
        "adversarial-retraining".into()
    }

    fn teacher_use(&self) -> TeacherUse {
        TeacherUse::Required
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        let source = teacher.ok_or_else(|| {
            ModelError::invalid(
                "teacher",
                "adversarial retraining needs the model to attack",
            )
        })?;
        Ok(Box::new(AdversarialRetraining {
            config: self.clone(),
            source,
        }))
    }
}

/// Adversarial training as a [`Defense`]: from scratch, or fine-tuning the setup's initial
/// weights ([`TrainSetup::with_init`], [`TrainSetup::fine_tune`]).
#[derive(Debug, Clone, Default)]
pub struct AdversarialTraining {
    /// Its settings.
    pub config: AdversarialTrainingConfig,
}

impl AdversarialTraining {
    /// Adversarial training with `config`.
    pub fn new(config: AdversarialTrainingConfig) -> Self {
        Self { config }
    }
}

impl Defense for AdversarialTraining {
    fn name(&self) -> String {
        "adversarial-training".into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        let mut hook =
            AdversarialHook::new(self.config.clone(), setup.train.loss, DeployConfig::new())?;
        let (net, record) = train(
            setup.start()?,
            setup.data,
            &setup.train,
            &setup.device,
            &mut hook,
            &mut |p| on_progress("train", p),
        )?;
        Ok(Trained {
            model: Deployed::plain(net),
            stages: vec![Stage {
                name: "train".into(),
                record,
            }],
        })
    }
}

/// Static adversarial retraining (the seed-004 notebook): FGSM examples of the whole training set
/// are made once from a fixed source model, and a model is trained on clean + adversarial
/// examples (twice the data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrainingConfig {
    /// FGSM budget (L∞). The adversarial images are stored as 8-bit pixels like the originals,
    /// which is exact when ε is a multiple of 1/255 (the notebook's 10/255) and otherwise rounds
    /// each pixel to the nearest 1/255.
    pub eps: f64,
    /// Labels FGSM's loss is computed against.
    pub labels: LabelMode,
    /// Loss whose gradient FGSM follows.
    pub attack_loss: LossKind,
    /// Batch size of the attack.
    pub attack_batch: usize,
}

impl Default for RetrainingConfig {
    fn default() -> Self {
        Self {
            eps: 10.0 / 255.0,
            labels: LabelMode::True,
            attack_loss: LossKind::CrossEntropy,
            attack_batch: 1000,
        }
    }
}

impl RetrainingConfig {
    /// Refuses ε outside [0, 1] (or not finite) and an attack batch of zero.
    pub fn check(&self) -> advrob_model::Result<()> {
        check_eps(self.eps)?;
        if self.attack_batch == 0 {
            return Err(ModelError::invalid("attack_batch", "must be at least 1"));
        }
        Ok(())
    }
}

/// FGSM examples of every example of `data` against `source`, as a new split with the same
/// labels (pixels rounded to 8 bits, see [`RetrainingConfig::eps`]).
pub fn adversarial_split(
    source: &Deployed,
    data: &Split,
    config: &RetrainingConfig,
    device: &burn::tensor::Device,
) -> advrob_model::Result<Split> {
    config.check()?;
    let attack = Fgsm::with_labels(config.labels).with_loss(config.attack_loss);
    let mut pixels = Vec::with_capacity(data.images.pixels.len());
    for start in (0..data.len()).step_by(config.attack_batch) {
        let (x, y) = advrob_data::range_tensors(data, start, config.attack_batch, device);
        let adv = attack.perturb(source, x, y, config.eps)?;
        let v = adv
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ModelError::Hook {
                context: "reading adversarial images back".into(),
                source: format!("{e:?}").into(),
            })?;
        pixels.extend(
            v.iter()
                .map(|p| (p * 255.0).round().clamp(0.0, 255.0) as u8),
        );
    }
    Ok(Split {
        images: IdxImages {
            count: data.len(),
            channels: data.images.channels,
            rows: data.images.rows,
            cols: data.images.cols,
            pixels,
        },
        labels: data.labels.clone(),
    })
}

/// Static adversarial retraining as a [`Defense`]: the source model makes the adversarial copy of
/// the training set; the setup's model is then trained (from scratch unless the setup says
/// otherwise) on the clean examples followed by their adversarial copies.
#[derive(Debug, Clone)]
pub struct AdversarialRetraining {
    /// Its settings.
    pub config: RetrainingConfig,
    /// The model the adversarial examples are made from.
    pub source: Deployed,
}

impl Defense for AdversarialRetraining {
    fn name(&self) -> String {
        "adversarial-retraining".into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        let adversarial = adversarial_split(&self.source, setup.data, &self.config, &setup.device)?;
        let mut both = setup.data.clone();
        both.images
            .pixels
            .extend_from_slice(&adversarial.images.pixels);
        both.images.count += adversarial.images.count;
        both.labels.extend_from_slice(&adversarial.labels);
        let doubled = TrainSetup {
            data: &both,
            ..setup.clone()
        };
        doubled.train_with(&mut Plain, DeployConfig::new(), on_progress)
    }
}

/// Refuses a training budget that is not a number in [0, 1] (pixels lie in [0, 1]).
fn check_eps(eps: f64) -> advrob_model::Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(ModelError::invalid(
            "eps",
            format!("{eps} is not a finite number ≥ 0"),
        ));
    }
    if eps > 1.0 {
        return Err(ModelError::invalid(
            "eps",
            format!(
                "{eps} is above 1: pixels lie in [0, 1], so ε = 1 is already the whole input space"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_data::synthetic;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{MlpConfig, Targets, TrainConfig, accuracy};
    use burn::tensor::{Int, TensorData};

    fn host<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    fn batch(device: &burn::tensor::Device, n: usize) -> TrainBatch {
        let x: Vec<f32> = (0..n * 784).map(|i| [0.0, 1.0, 0.4][i % 3]).collect();
        let images = Tensor::<4>::from_data(TensorData::new(x, [n, 1, 28, 28]), device);
        let y: Vec<i64> = (0..n as i64).map(|i| i % 10).collect();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device);
        TrainBatch {
            images,
            targets: Targets::Labels(labels.clone()),
            labels,
        }
    }

    #[test]
    fn batch_has_the_configured_ratio_and_budget() {
        on_test_backends(|device| {
            let device = device.clone();
            let model: advrob_model::Net = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&device)
                .expect("init")
                .into();
            for (ratio, added) in [(1.0, 10), (0.5, 5), (0.25, 3)] {
                let config = AdversarialTrainingConfig {
                    eps: 0.1,
                    ratio,
                    ..Default::default()
                };
                let mut hook =
                    AdversarialHook::new(config, LossKind::CrossEntropy, DeployConfig::new())
                        .expect("hook");
                let clean = batch(&device, 10);
                let out = hook.prepare(&model, clean.clone()).expect("prepare");
                // 10 clean examples, then round(10 · ratio) adversarial copies of the first ones
                assert_eq!(out.labels.dims(), [10 + added]);
                assert_eq!(out.targets.len(), 10 + added);
                let x = host(clean.images);
                let y = host(out.images);
                assert_eq!(&y[..10 * 784], &x[..], "the clean half is untouched");
                for (a, c) in y[10 * 784..].iter().zip(&x) {
                    assert!((0.0..=1.0).contains(a) && (a - c).abs() <= 0.1 + 1e-6);
                }
                // the copies are labelled as their originals
                let l = out
                    .labels
                    .into_data()
                    .try_into_vec_as::<i64>()
                    .expect("i64");
                assert_eq!(&l[10..], &l[..added]);
                // and they are actually perturbed
                assert!(y[10 * 784..].iter().zip(&x).any(|(a, c)| a != c));
            }
        });
    }

    #[test]
    fn pgd_training_stays_in_budget_and_draws_a_fresh_start_per_batch() {
        on_test_backends(|device| {
            let device = device.clone();
            let model: advrob_model::Net = MlpConfig::new()
                .with_hidden(vec![8])
                .init(&device)
                .expect("init")
                .into();
            let config = AdversarialTrainingConfig::pgd(0.1, 3);
            let mut hook =
                AdversarialHook::new(config, LossKind::CrossEntropy, DeployConfig::new())
                    .expect("hook");
            assert!(
                hook.describe().contains("pgd-linf-3"),
                "{}",
                hook.describe()
            );
            let clean = batch(&device, 10);
            let x = host(clean.images.clone());
            let first = host(hook.prepare(&model, clean.clone()).expect("prepare").images);
            let second = host(hook.prepare(&model, clean).expect("prepare").images);
            for y in [&first, &second] {
                assert_eq!(&y[..10 * 784], &x[..], "the clean half is untouched");
                for (a, c) in y[10 * 784..].iter().zip(&x) {
                    assert!((0.0..=1.0).contains(a) && (a - c).abs() <= 0.1 + 1e-6);
                }
            }
            assert_ne!(first, second, "the same random start twice");
        });
    }

    #[test]
    fn fgsm_training_configs_serialise_as_before_pgd_training_existed() {
        // the cache keys of trained models hash this serialisation
        let v = serde_json::to_value(AdversarialTrainingConfig::default()).expect("json");
        assert!(v.get("pgd_steps").is_none(), "{v}");
        let v = serde_json::to_value(AdversarialTrainingConfig::pgd(0.1, 7)).expect("json");
        assert_eq!(v["pgd_steps"], 7);
        let back: AdversarialTrainingConfig =
            serde_json::from_value(serde_json::json!({ "eps": 0.2 })).expect("parse");
        assert_eq!(back.pgd_steps, 0);
    }

    #[test]
    fn bad_configs_name_the_field() {
        let e = AdversarialTrainingConfig {
            eps: -0.1,
            ..Default::default()
        }
        .check();
        assert!(e.expect_err("eps").to_string().contains("eps"));
        for ratio in [0.0, 1.5] {
            let e = AdversarialTrainingConfig {
                ratio,
                ..Default::default()
            }
            .check();
            assert!(e.expect_err("ratio").to_string().contains("ratio"));
        }
    }

    #[test]
    fn adversarial_training_learns_and_fine_tunes() {
        let data = synthetic::dataset(400, 100, 3);
        on_test_backends(|device| {
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![16]),
                TrainConfig::new().with_epochs(3).with_batch_size(20),
                &data.train,
                device,
            );
            let defense = AdversarialTraining::default();
            let trained = defense.fit(&setup, &mut |_, _| {}).expect("fit");
            // every epoch saw the 400 clean examples and 400 adversarial ones
            assert_eq!(trained.stages[0].record.epochs[0].examples, 800);
            let acc = accuracy(&trained.model, &data.test, 50, device);
            assert!(acc > 0.9, "{acc}");
            // fine-tuning starts from the given weights
            let tuned = defense
                .fit(
                    &setup.clone().with_init(trained.model.net.clone()),
                    &mut |_, _| {},
                )
                .expect("fine-tune");
            assert!(
                tuned.stages[0].record.epochs[0].loss < trained.stages[0].record.epochs[0].loss
            );
        });
    }

    #[test]
    fn retraining_doubles_the_data_with_exact_8_bit_perturbations() {
        on_test_backends(|device| {
            let (images, labels) = synthetic::make_split(30, 4);
            let data = Split { images, labels };
            let source = Deployed::plain(
                MlpConfig::new()
                    .with_hidden(vec![8])
                    .init(device)
                    .expect("init"),
            );
            let config = RetrainingConfig {
                attack_batch: 7,
                ..Default::default()
            };
            let adv = adversarial_split(&source, &data, &config, device).expect("attack");
            assert_eq!(adv.len(), 30);
            for (a, c) in adv.images.pixels.iter().zip(&data.images.pixels) {
                // ε = 10/255 is exactly 10 steps of 8 bits
                assert!(a.abs_diff(*c) <= 10, "{a} {c}");
            }
            assert!(adv.images.pixels != data.images.pixels);
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![8]),
                TrainConfig::new().with_epochs(1).with_batch_size(10),
                &data,
                device,
            );
            let trained = AdversarialRetraining { config, source }
                .fit(&setup, &mut |_, _| {})
                .expect("fit");
            assert_eq!(trained.stages[0].record.epochs[0].examples, 60);
        });
    }
}
