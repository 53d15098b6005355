#![doc = include_str!("../README.md")]

use advrob_model::{
    Classifier, Defense, DefenseConfig, Deployed, ModelError, Net, NetConfig, Progress, Stage,
    Targets, TeacherUse, TrainBatch, TrainHook, TrainSetup, Trained, train,
};
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;
use serde::{Deserialize, Serialize};

/// Defensive distillation (Papernot et al. 2016).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DistillationConfig {
    /// Softmax temperature of the teacher's training, its soft labels and the student's training.
    pub temperature: f64,
    /// Hidden widths of the teacher; `None`: the student's (the setup's model). MLPs only.
    pub teacher_hidden: Option<Vec<usize>>,
    /// Dropout of the teacher; `None`: the student's. MLPs only.
    pub teacher_dropout: Option<f64>,
    /// Epochs of the teacher; `None`: the student's.
    pub teacher_epochs: Option<usize>,
}

impl Default for DistillationConfig {
    fn default() -> Self {
        Self {
            temperature: 20.0,
            teacher_hidden: None,
            teacher_dropout: None,
            teacher_epochs: None,
        }
    }
}

impl DistillationConfig {
    /// Refuses a temperature that is not positive and finite, naming the field.
    pub fn check(&self) -> advrob_model::Result<()> {
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return Err(ModelError::invalid(
                "temperature",
                format!("{} is not a positive finite number", self.temperature),
            ));
        }
        if self.teacher_epochs == Some(0) {
            return Err(ModelError::invalid("teacher_epochs", "must be at least 1"));
        }
        Ok(())
    }

    /// The teacher's architecture for a student of architecture `student` (its seed shifted by
    /// one, so that teacher and student do not start from the same weights); `teacher_hidden` and
    /// `teacher_dropout` change an MLP teacher and are an error for other architectures.
    pub fn teacher_model(&self, student: &NetConfig) -> advrob_model::Result<NetConfig> {
        let mut t = student.clone();
        match &mut t {
            NetConfig::Mlp(m) => {
                if let Some(h) = &self.teacher_hidden {
                    m.hidden = h.clone();
                }
                if let Some(d) = self.teacher_dropout {
                    m.dropout = d;
                }
            }
            other if self.teacher_hidden.is_some() || self.teacher_dropout.is_some() => {
                return Err(ModelError::invalid(
                    "teacher_hidden",
                    format!(
                        "only an MLP teacher has hidden widths and dropout, not {}",
                        other.arch()
                    ),
                ));
            }
            _ => {}
        }
        Ok(t.clone().with_seed(student.seed().wrapping_add(1)))
    }
}

/// The teacher's soft labels at temperature `t`: `softmax(f(x) / t)`.
///
/// # Shapes
///
/// - images: `[B, C, H, W]`, output: `[B, classes]`
pub fn soft_labels(teacher: &dyn Classifier, images: Tensor<4>, t: f64) -> Tensor<2> {
    softmax(teacher.logits(images.without_autodiff()) / t, 1)
}

/// Training at temperature T: the loss sees `logits / T`. With `teacher`, the targets are the
/// teacher's soft labels at T (the student); without, the hard labels (the teacher).
#[derive(Debug, Clone)]
pub struct TemperatureHook {
    temperature: f64,
    teacher: Option<Net>,
}

impl TrainHook for TemperatureHook {
    fn describe(&self) -> String {
        match self.teacher {
            Some(_) => format!("distillation student at T {}", self.temperature),
            None => format!("distillation teacher at T {}", self.temperature),
        }
    }

    /// Only the targets change: the model's weights are not read.
    fn reads_weights(&self) -> bool {
        false
    }

    fn prepare(&mut self, _: &Net, mut batch: TrainBatch) -> advrob_model::Result<TrainBatch> {
        if let Some(teacher) = &self.teacher {
            batch.targets =
                Targets::Soft(soft_labels(teacher, batch.images.clone(), self.temperature));
        }
        Ok(batch)
    }

    fn logits(&self, logits: Tensor<2>) -> Tensor<2> {
        if self.temperature == 1.0 {
            logits
        } else {
            logits / self.temperature
        }
    }
}

/// Defensive distillation as a [`Defense`]: a teacher trained at temperature T (or a given one),
/// a student of the setup's architecture trained on the teacher's soft labels at T, and the student
/// deployed at T = 1 — its logits then are about T times larger than a plain model's, which
/// saturates the softmax: the reason distillation masks gradients rather than removing
/// adversarial examples (Carlini & Wagner 2016).
#[derive(Debug, Clone, Default)]
pub struct Distillation {
    /// Its settings.
    pub config: DistillationConfig,
    /// A trained teacher to use instead of training one (the seed-000 notebook distils its
    /// baseline at T = 1).
    pub teacher: Option<Net>,
}

impl Distillation {
    /// Distillation with `config`, training its own teacher.
    pub fn new(config: DistillationConfig) -> Self {
        Self {
            config,
            teacher: None,
        }
    }

    /// Use this trained teacher instead of training one.
    pub fn with_teacher(mut self, teacher: impl Into<Net>) -> Self {
        self.teacher = Some(teacher.into());
        self
    }
}

impl DefenseConfig for DistillationConfig {
    fn defense_name(&self) -> String {
        "distillation".into()
    }

    fn teacher_use(&self) -> TeacherUse {
        TeacherUse::Optional
    }

    fn validate(&self) -> advrob_model::Result<()> {
        self.check()
    }

    fn build(&self, teacher: Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>> {
        self.check()?;
        let d = Distillation::new(self.clone());
        Ok(Box::new(match teacher {
            Some(t) => d.with_teacher(t.net),
            None => d,
        }))
    }
}

impl Defense for Distillation {
    fn name(&self) -> String {
        "distillation".into()
    }

    fn fit(
        &self,
        setup: &TrainSetup<'_>,
        on_progress: &mut dyn FnMut(&str, Progress),
    ) -> advrob_model::Result<Trained> {
        self.config.check()?;
        let t = self.config.temperature;
        let mut stages = Vec::new();
        let teacher = match &self.teacher {
            Some(m) => m.clone().valid(),
            None => {
                let cfg = self.config.teacher_model(&setup.model)?;
                let mut train_cfg = setup.train.clone();
                if let Some(e) = self.config.teacher_epochs {
                    train_cfg.epochs = e;
                }
                let mut hook = TemperatureHook {
                    temperature: t,
                    teacher: None,
                };
                let (m, record) = train(
                    cfg.init(&setup.device)?,
                    setup.data,
                    &train_cfg,
                    &setup.device,
                    &mut hook,
                    &mut |p| on_progress("teacher", p),
                )?;
                stages.push(Stage {
                    name: "teacher".into(),
                    record,
                });
                m
            }
        };
        let mut hook = TemperatureHook {
            temperature: t,
            teacher: Some(teacher),
        };
        let (student, record) = train(
            setup.start()?,
            setup.data,
            &setup.train,
            &setup.device,
            &mut hook,
            &mut |p| on_progress("student", p),
        )?;
        stages.push(Stage {
            name: "student".into(),
            record,
        });
        Ok(Trained {
            model: Deployed::plain(student),
            stages,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_data::synthetic;
    use advrob_model::backend::on_test_backends;
    use advrob_model::{MlpConfig, TrainConfig, accuracy};
    use burn::tensor::TensorData;

    /// A "teacher" whose logits are the first 3 pixels of each image.
    struct PixelLogits;
    impl Classifier for PixelLogits {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            let [b, ..] = images.dims();
            images.reshape([b as i64, -1]).slice([0..b, 0..3])
        }
    }

    #[test]
    fn soft_labels_are_the_softmax_at_temperature() {
        on_test_backends(|device| {
            let device = device.clone();
            let mut x = vec![0.0f32; 784];
            x[..3].copy_from_slice(&[1.0, 0.5, 0.0]);
            let images = Tensor::<4>::from_data(TensorData::new(x, [1, 1, 28, 28]), &device);
            for t in [1.0, 20.0] {
                let p = soft_labels(&PixelLogits, images.clone(), t)
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32");
                // softmax((1, 0.5, 0) / t) worked out on the host
                let e: Vec<f64> = [1.0, 0.5, 0.0].iter().map(|z| (z / t).exp()).collect();
                let s: f64 = e.iter().sum();
                for (got, want) in p.iter().zip(e.iter().map(|v| v / s)) {
                    assert!(
                        (f64::from(*got) - want).abs() < 1e-6,
                        "T {t}: {got} vs {want}"
                    );
                }
            }
        });
    }

    #[test]
    fn temperature_must_be_positive() {
        for temperature in [0.0, -1.0, f64::INFINITY] {
            let e = DistillationConfig {
                temperature,
                ..Default::default()
            }
            .check()
            .expect_err("bad T");
            assert!(e.to_string().contains("temperature"), "{e}");
        }
    }

    #[test]
    fn distillation_trains_teacher_and_student_and_deploys_at_t1() {
        let data = synthetic::dataset(400, 100, 6);
        on_test_backends(|device| {
            let setup = TrainSetup::new(
                MlpConfig::new().with_hidden(vec![16]),
                TrainConfig::new().with_epochs(6).with_batch_size(10),
                &data.train,
                device,
            );
            // a low temperature: at T = 20 the logits must grow 20-fold, more steps than a unit test
            let config = DistillationConfig {
                temperature: 3.0,
                teacher_hidden: Some(vec![24]),
                teacher_epochs: Some(5),
                ..Default::default()
            };
            let trained = Distillation::new(config)
                .fit(&setup, &mut |_, _| {})
                .expect("fit");
            let names: Vec<&str> = trained.stages.iter().map(|s| s.name.as_str()).collect();
            assert_eq!(names, ["teacher", "student"]);
            assert_eq!(trained.stages[0].record.epochs.len(), 5);
            assert_eq!(trained.stages[1].record.epochs.len(), 6);
            assert!(trained.model.config.is_identity(), "deployed at T = 1");
            let advrob_model::Net::Mlp(student) = &trained.model.net else {
                panic!("an MLP student")
            };
            assert_eq!(student.layers[0].weight.dims(), [784, 16]);
            let acc = accuracy(&trained.model, &data.test, 50, device);
            assert!(acc > 0.9, "{acc}");
            // a given teacher is used as it is: one stage only
            let teacher = MlpConfig::new()
                .with_hidden(vec![8])
                .init(device)
                .expect("init");
            let trained = Distillation::new(DistillationConfig {
                temperature: 1.0,
                ..Default::default()
            })
            .with_teacher(teacher)
            .fit(&setup, &mut |_, _| {})
            .expect("fit");
            assert_eq!(trained.stages.len(), 1);
        });
    }
}
