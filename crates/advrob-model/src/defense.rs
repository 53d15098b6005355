//! The one trait every defense implements: a training setup in, a trained (deployed) classifier and
//! the record of its training out. Defenses live in their own crates (`advrob-defense-*`); this
//! crate only defines the contract and the undefended case.

use std::path::Path;

use advrob_data::Split;
use burn::tensor::Device;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::deploy::{DeployConfig, Deployed};
use crate::network::{Net, NetConfig};
use crate::train::{Plain, Progress, TrainConfig, TrainHook, TrainRecord, train};

/// Everything a defense needs to train a model.
#[derive(Debug, Clone)]
pub struct TrainSetup<'a> {
    /// Architecture (and initialisation seed) of the model to train.
    pub model: NetConfig,
    /// Optimiser, epochs, batch size, loss and seed.
    pub train: TrainConfig,
    /// Training examples.
    pub data: &'a Split,
    /// Where to train.
    pub device: Device,
    /// Weights to start from (fine-tuning); `None` starts from `model`'s initialisation.
    pub init: Option<Net>,
}

impl<'a> TrainSetup<'a> {
    /// A setup that trains `model` from scratch with `train` on `data`.
    pub fn new(
        model: impl Into<NetConfig>,
        train: TrainConfig,
        data: &'a Split,
        device: &Device,
    ) -> Self {
        Self {
            model: model.into(),
            train,
            data,
            device: device.clone(),
            init: None,
        }
    }

    /// Fine-tune these weights instead of starting from scratch.
    pub fn with_init(mut self, init: impl Into<Net>) -> Self {
        self.init = Some(init.into());
        self
    }

    /// Fine-tune the checkpoint in `dir` (written by [`crate::checkpoint::save`]); its
    /// architecture replaces `model`'s.
    pub fn fine_tune(mut self, dir: &Path) -> crate::Result<Self> {
        let (deployed, config, _) = crate::checkpoint::load(dir, &self.device)?;
        self.model = config;
        self.init = Some(deployed.net);
        Ok(self)
    }

    /// One training stage, `train`, of the starting weights with `hook`, the result deployed as
    /// `deploy`: what most defenses are.
    pub fn train_with(
        &self,
        hook: &mut dyn TrainHook,
        deploy: DeployConfig,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> crate::Result<Trained> {
        let (net, record) = train(
            self.start()?,
            self.data,
            &self.train,
            &self.device,
            hook,
            &mut |p| on_progress("train", p),
        )?;
        Ok(Trained {
            model: Deployed {
                net,
                config: deploy,
            },
            stages: vec![Stage {
                name: "train".into(),
                record,
            }],
        })
    }

    /// The starting weights: [`init`](Self::init) if set, else a fresh initialisation.
    pub fn start(&self) -> crate::Result<Net> {
        match &self.init {
            Some(m) => Ok(m.clone()),
            None => self.model.init(&self.device),
        }
    }
}

/// One training stage of a defense (distillation has two: teacher and student).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stage {
    /// `train`, `teacher`, `student`, ...
    pub name: String,
    /// What the stage did.
    pub record: TrainRecord,
}

/// What a defense returns: the deployed classifier and the record of every stage.
#[derive(Debug, Clone)]
pub struct Trained {
    /// The classifier as it is deployed (network plus any wrapper).
    pub model: Deployed,
    /// The training stages, in order.
    pub stages: Vec<Stage>,
}

/// A defense: turns a training setup into a trained classifier. Object-safe, so that a runner can
/// hold `Box<dyn Defense>` chosen from a config.
pub trait Defense {
    /// A short name for records and tables (`adversarial-training`, `distillation`).
    fn name(&self) -> String;

    /// Trains. `on_progress(stage, progress)` is called after every batch.
    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> crate::Result<Trained>;
}

/// No defense: plain training of the setup's model, deployed as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Undefended;

impl Defense for Undefended {
    fn name(&self) -> String {
        "none".into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> crate::Result<Trained> {
        setup.train_with(&mut Plain, DeployConfig::new(), on_progress)
    }
}

/// Whether a defense learns from another trained model (distillation's teacher, retraining's
/// source of adversarial examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TeacherUse {
    /// Never.
    Never,
    /// When one is given (distillation trains its own teacher otherwise).
    Optional,
    /// Always.
    Required,
}

/// The settings of a defense as a matrix or a record holds them (serde, every field named), the
/// one place they are checked, and the way to the [`Defense`] they describe.
///
/// Implementing it is what makes a defense selectable by name in an experiment matrix (the
/// experiment crate's registry maps a `kind` to a config type).
pub trait DefenseConfig: Serialize + DeserializeOwned + 'static {
    /// The name recorded with every result of a model it trained (`adversarial-training`).
    fn defense_name(&self) -> String;

    /// Whether it learns from another trained model.
    fn teacher_use(&self) -> TeacherUse {
        TeacherUse::Never
    }

    /// Refuses values outside their domain, naming the field.
    fn validate(&self) -> crate::Result<()>;

    /// Checks the settings and builds the defense; `teacher` is the trained model named as the
    /// model's teacher, given exactly when [`teacher_use`](DefenseConfig::teacher_use) allows one.
    fn build(&self, teacher: Option<Deployed>) -> crate::Result<Box<dyn Defense>>;
}

/// The settings of [`Undefended`]: there are none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoDefense {}

impl DefenseConfig for NoDefense {
    fn defense_name(&self) -> String {
        Undefended.name()
    }

    fn validate(&self) -> crate::Result<()> {
        Ok(())
    }

    fn build(&self, _teacher: Option<Deployed>) -> crate::Result<Box<dyn Defense>> {
        Ok(Box::new(Undefended))
    }
}
