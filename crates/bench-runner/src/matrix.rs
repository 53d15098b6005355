//! The experiment matrix: what to train, attack and evaluate, from a TOML file or from flags.

use std::path::PathBuf;

use advrob_attack::{Attack, Fgsm, LabelMode, Pgd};
use advrob_defense_adversarial_training::{AdversarialTrainingConfig, RetrainingConfig};
use advrob_defense_distillation::DistillationConfig;
use advrob_defense_gradient_masking::{GradientMaskingConfig, Mechanism};
use advrob_defense_label_smoothing::LabelSmoothingConfig;
use advrob_model::{Defense, LossKind};
use serde::{Deserialize, Serialize};

/// The ε grid of the default experiment.
pub const DEFAULT_EPS: [f64; 8] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4];

/// The defense a model of the matrix is trained with. In TOML: `defense = { kind = "...", ... }`
/// with the fields of the defense crate's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum DefenseSpec {
    /// Plain training.
    #[default]
    None,
    /// FGSM adversarial training (`advrob-defense-adversarial-training`).
    AdversarialTraining(AdversarialTrainingConfig),
    /// Adversarial training with gradient masking (`advrob-defense-gradient-masking`).
    GradientMasking(GradientMaskingConfig),
    /// Label smoothing (`advrob-defense-label-smoothing`).
    LabelSmoothing(LabelSmoothingConfig),
    /// Defensive distillation (`advrob-defense-distillation`); with the model's `teacher` set, that
    /// trained model is the teacher, else one is trained.
    Distillation(DistillationConfig),
    /// Static adversarial retraining from the model named by `teacher` (the seed-004 notebook).
    AdversarialRetraining(RetrainingConfig),
}

impl DefenseSpec {
    /// The name recorded with every result (`none` for plain training).
    pub fn kind(&self) -> String {
        match self {
            DefenseSpec::None => "none".into(),
            DefenseSpec::AdversarialTraining(_) => "adversarial-training".into(),
            DefenseSpec::GradientMasking(c) => {
                advrob_defense_gradient_masking::GradientMasking::new(c.clone()).name()
            }
            DefenseSpec::LabelSmoothing(_) => "label-smoothing".into(),
            DefenseSpec::Distillation(_) => "distillation".into(),
            DefenseSpec::AdversarialRetraining(_) => "adversarial-retraining".into(),
        }
    }
}

/// One model of the matrix: an architecture, a defense and, optionally, training settings of its
/// own and the models it builds on (which must come earlier in the list).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name in records and tables.
    pub name: String,
    /// Hidden layer widths (ignored with `from`: a fine-tuned model keeps its architecture).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Dropout after each hidden layer.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// How it is trained.
    #[serde(default)]
    pub defense: DefenseSpec,
    /// Fine-tune this earlier model's trained weights instead of starting from scratch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The earlier model a defense learns from: distillation's teacher, retraining's source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<String>,
    /// Epochs for this model (default: the matrix's `train.epochs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<usize>,
    /// Batch size for this model (default: the matrix's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<usize>,
    /// Loss for this model (default: the matrix's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<LossKind>,
    /// Added to the matrix seed for this model: an independently initialised and shuffled model
    /// (a transfer attack's surrogate) has a non-zero offset.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seed_offset: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn default_hidden() -> Vec<usize> {
    vec![128]
}
fn default_dropout() -> f64 {
    0.2
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            name: "baseline".into(),
            hidden: default_hidden(),
            dropout: default_dropout(),
            defense: DefenseSpec::None,
            from: None,
            teacher: None,
            epochs: None,
            batch_size: None,
            loss: None,
            seed_offset: 0,
        }
    }
}

impl ModelSpec {
    /// A model named `name` trained with `defense`, otherwise the default.
    pub fn defended(name: &str, defense: DefenseSpec) -> Self {
        Self {
            name: name.into(),
            defense,
            ..Self::default()
        }
    }

    /// Checks the defense's config and that `teacher` is given exactly where a defense needs it.
    pub fn check(&self) -> anyhow::Result<()> {
        let ctx = |e: advrob_model::ModelError| anyhow::anyhow!("model {}: {e}", self.name);
        match &self.defense {
            DefenseSpec::None => {}
            DefenseSpec::AdversarialTraining(c) => c.check().map_err(ctx)?,
            DefenseSpec::GradientMasking(c) => c.check().map_err(ctx)?,
            DefenseSpec::LabelSmoothing(c) => c.check().map_err(ctx)?,
            DefenseSpec::Distillation(c) => c.check().map_err(ctx)?,
            DefenseSpec::AdversarialRetraining(c) => {
                c.check().map_err(ctx)?;
                anyhow::ensure!(
                    self.teacher.is_some(),
                    "model {}: invalid teacher: adversarial retraining needs the model to attack",
                    self.name
                );
            }
        }
        if self.teacher.is_some() {
            anyhow::ensure!(
                matches!(
                    self.defense,
                    DefenseSpec::Distillation(_) | DefenseSpec::AdversarialRetraining(_)
                ),
                "model {}: invalid teacher: only distillation and adversarial retraining use one",
                self.name
            );
        }
        anyhow::ensure!(
            self.epochs != Some(0),
            "model {}: invalid epochs: must be at least 1",
            self.name
        );
        Ok(())
    }
}

/// Adversarial training with gradient masking by `mechanism`, otherwise the defaults.
pub fn masking(mechanism: Mechanism) -> DefenseSpec {
    DefenseSpec::GradientMasking(GradientMaskingConfig {
        mechanism,
        ..Default::default()
    })
}

/// The models of the default experiment: the README MLP undefended and with each defense of the
/// study, all from scratch with the same training settings, plus two real gradient-masking
/// mechanisms.
pub fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec::default(),
        ModelSpec::defended(
            "adversarial-training",
            DefenseSpec::AdversarialTraining(AdversarialTrainingConfig::default()),
        ),
        // Madry et al.: PGD in the training loop (10 L∞ steps from a random start), the defense the
        // verdict should not flag
        ModelSpec::defended(
            "pgd-adversarial-training",
            DefenseSpec::AdversarialTraining(AdversarialTrainingConfig::pgd(0.1, 10)),
        ),
        ModelSpec::defended("gm-notebook", masking(Mechanism::Notebook)),
        ModelSpec::defended("gm-quantize", masking(Mechanism::Quantize)),
        ModelSpec::defended("gm-saturated-logits", masking(Mechanism::SaturatedLogits)),
        ModelSpec::defended(
            "label-smoothing",
            DefenseSpec::LabelSmoothing(LabelSmoothingConfig::default()),
        ),
        ModelSpec::defended(
            "distillation",
            DefenseSpec::Distillation(DistillationConfig::default()),
        ),
        // the transfer attack's surrogate: the baseline again, independently initialised and
        // shuffled
        ModelSpec {
            name: "surrogate".into(),
            seed_offset: 1000,
            ..ModelSpec::default()
        },
    ]
}

/// The attacks of the default experiment: the study's white-box FGSM, 10-step L∞ PGD with a
/// random start on the cross-entropy (and 20-step, to check that 10 steps have converged), the same PGD made adaptive — margin loss on the logits
/// (immune to a saturated softmax) with straight-through gradients around input quantisation
/// (BPDA) — so that masked gradients are seen through, and that PGD transferred from an
/// independently trained undefended model.
pub fn default_attacks() -> Vec<AttackSpec> {
    vec![
        AttackSpec::fgsm(),
        AttackSpec::Pgd(Pgd::linf(10)),
        // the same attack with twice the steps: the verdict's convergence check
        AttackSpec::Pgd(Pgd::linf(20)),
        AttackSpec::Pgd(Pgd {
            loss: advrob_attack::AttackLoss::Margin,
            bpda: true,
            ..Pgd::linf(10)
        }),
        AttackSpec::Transfer {
            surrogate: "surrogate".into(),
            attack: Box::new(AttackSpec::Pgd(Pgd::linf(10))),
        },
    ]
}

/// How every model of the matrix is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainSpec {
    /// Epochs.
    pub epochs: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Criterion.
    pub loss: LossKind,
    /// Train on the first N training examples only (quick runs).
    pub train_limit: Option<usize>,
}

impl Default for TrainSpec {
    fn default() -> Self {
        Self {
            epochs: 5,
            batch_size: 128,
            lr: 1e-3,
            loss: LossKind::CrossEntropy,
            train_limit: None,
        }
    }
}

/// One attack of the matrix. In TOML: `kind = "fgsm"` with the attack's fields (`labels`, `loss`,
/// `target = { shift = 2 }`, `cumulative`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum AttackSpec {
    /// Fast Gradient Sign Method.
    Fgsm(Fgsm),
    /// Iterative attacks: PGD (L∞ or L2), BIM, MI-FGSM; with `bpda = true` gradients go around
    /// input quantisation, with `loss = "margin"` they are taken on the logits.
    Pgd(Pgd),
    /// A transfer (black-box) attack: `attack` crafted on the model named `surrogate` and
    /// evaluated on each model.
    Transfer {
        /// The model of the matrix the examples are crafted on.
        surrogate: String,
        /// The white-box attack run on it.
        attack: Box<AttackSpec>,
    },
}

impl AttackSpec {
    /// FGSM against the true labels on the cross-entropy.
    pub fn fgsm() -> Self {
        AttackSpec::Fgsm(Fgsm::new())
    }

    /// The labels the attack's loss uses.
    pub fn labels(&self) -> LabelMode {
        match self {
            AttackSpec::Fgsm(f) => f.labels,
            AttackSpec::Pgd(p) => p.labels,
            AttackSpec::Transfer { attack, .. } => attack.labels(),
        }
    }

    /// The name of the attack in records (as its [`Attack::name`]).
    pub fn name(&self) -> String {
        match self {
            AttackSpec::Fgsm(f) => f.name(),
            AttackSpec::Pgd(p) => p.name(),
            AttackSpec::Transfer { surrogate, attack } => {
                format!("transfer-{}-from-{surrogate}", attack.name())
            }
        }
    }

    /// Checks the attack's settings.
    pub fn check(&self) -> anyhow::Result<()> {
        match self {
            AttackSpec::Fgsm(_) => Ok(()),
            AttackSpec::Pgd(p) => Ok(p.check()?),
            AttackSpec::Transfer { attack, .. } => {
                anyhow::ensure!(
                    !matches!(**attack, AttackSpec::Transfer { .. }),
                    "invalid attack: a transfer attack of a transfer attack"
                );
                attack.check()
            }
        }
    }
}

/// How models are evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Batch size of attack and inference.
    pub batch_size: usize,
    /// Evaluate on the first N test examples only (quick runs).
    pub test_limit: Option<usize>,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            test_limit: None,
        }
    }
}

/// A whole experiment matrix. Every field has the default experiment's value (EXPERIMENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Matrix {
    /// Name of the run (its directory under `runs/` by default).
    pub name: String,
    /// The preset this matrix started from (`default`, `seed-000-notebook`, ...), recorded with
    /// every result.
    pub preset: String,
    /// Datasets, each `mnist` or `fashion-mnist`; every model is trained and attacked on each.
    pub datasets: Vec<String>,
    /// Load the IDX files from this directory as they are (no download, no canonical checksum),
    /// instead of `datasets`.
    pub dataset_dir: Option<PathBuf>,
    /// Backends to run on, each compiled in.
    pub backends: Vec<String>,
    /// Seeds; every model is trained once per seed.
    pub seeds: Vec<u64>,
    /// The ε grid.
    pub eps: Vec<f64>,
    /// Models, in training order (a model's `from` and `teacher` come before it).
    pub models: Vec<ModelSpec>,
    /// Training settings.
    pub train: TrainSpec,
    /// Attacks.
    pub attacks: Vec<AttackSpec>,
    /// Evaluation settings.
    pub eval: EvalSpec,
}

impl Default for Matrix {
    fn default() -> Self {
        Self {
            name: "default".into(),
            preset: "default".into(),
            datasets: vec!["mnist".into()],
            dataset_dir: None,
            backends: vec!["ndarray".into()],
            seeds: vec![42],
            eps: DEFAULT_EPS.to_vec(),
            models: default_models(),
            train: TrainSpec::default(),
            attacks: default_attacks(),
            eval: EvalSpec::default(),
        }
    }
}

impl Matrix {
    /// Parses a TOML matrix; unknown keys are errors (a typo must not silently run the default).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        let mut m: Matrix = toml::from_str(text)?;
        // the default attacks transfer from the default `surrogate` model: a matrix that lists
        // its own models and no attacks keeps the white-box ones only
        let table: toml::Table = toml::from_str(text)?;
        if !table.contains_key("attacks") {
            let models = m.models.clone();
            m.attacks.retain(|a| match a {
                AttackSpec::Transfer { surrogate, .. } => {
                    models.iter().any(|x| &x.name == surrogate)
                }
                _ => true,
            });
        }
        Ok(m)
    }

    /// Checks everything that can be checked before any work: ε values, sizes, names.
    pub fn check(&self) -> anyhow::Result<()> {
        for &e in &self.eps {
            advrob_attack::check_eps(e)?;
        }
        anyhow::ensure!(!self.eps.is_empty(), "invalid eps: the grid is empty");
        anyhow::ensure!(!self.models.is_empty(), "invalid models: none given");
        anyhow::ensure!(!self.attacks.is_empty(), "invalid attacks: none given");
        for a in &self.attacks {
            a.check()?;
            if let AttackSpec::Transfer { surrogate, .. } = a {
                anyhow::ensure!(
                    self.models.iter().any(|m| &m.name == surrogate),
                    "invalid attacks: the transfer surrogate {surrogate} is not a model of the matrix"
                );
            }
        }
        anyhow::ensure!(!self.seeds.is_empty(), "invalid seeds: none given");
        anyhow::ensure!(!self.backends.is_empty(), "invalid backends: none given");
        anyhow::ensure!(
            self.eval.batch_size > 0,
            "invalid eval.batch_size: must be at least 1"
        );
        for (i, m) in self.models.iter().enumerate() {
            m.check()?;
            let earlier = &self.models[..i];
            anyhow::ensure!(
                !earlier.iter().any(|e| e.name == m.name),
                "invalid models: two models are named {}",
                m.name
            );
            for (field, dep) in [("from", &m.from), ("teacher", &m.teacher)] {
                if let Some(d) = dep {
                    anyhow::ensure!(
                        earlier.iter().any(|e| &e.name == d),
                        "model {}: invalid {field}: no model named {d} comes before it",
                        m.name
                    );
                }
            }
        }
        anyhow::ensure!(
            self.train.epochs > 0 && self.train.batch_size > 0,
            "invalid train: epochs and batch_size must be at least 1"
        );
        for b in &self.backends {
            advrob_model::backend::device(b)?;
        }
        if self.dataset_dir.is_none() {
            anyhow::ensure!(!self.datasets.is_empty(), "invalid datasets: none given");
            for d in &self.datasets {
                advrob_data::DatasetKind::from_name(d)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_toml_is_the_default_experiment() {
        assert_eq!(Matrix::from_toml("").expect("parse"), Matrix::default());
    }

    #[test]
    fn toml_overrides_and_typos_are_refused() {
        let m = Matrix::from_toml(
            "name = \"x\"\ndatasets = [\"mnist\", \"fashion-mnist\"]\neps = [0.0, 0.1]\n[train]\nepochs = 1\n[[models]]\nname = \"wide\"\nhidden = [300]\n[[attacks]]\nkind = \"fgsm\"\nlabels = \"predicted\"\n",
        )
        .expect("parse");
        assert_eq!(m.train.epochs, 1);
        assert_eq!(m.datasets, ["mnist", "fashion-mnist"]);
        assert_eq!(m.models[0].hidden, vec![300]);
        assert_eq!(
            m.attacks[0],
            AttackSpec::Fgsm(Fgsm::with_labels(LabelMode::Predicted))
        );
        assert!(Matrix::from_toml("epoch = 3").is_err());
    }

    #[test]
    fn the_readme_example_parses_and_checks() {
        let readme = include_str!("../README.md");
        let start = readme.find("```toml\n").expect("toml block") + 8;
        let len = readme[start..].find("```").expect("end of block");
        let m = Matrix::from_toml(&readme[start..start + len]).expect("README matrix parses");
        assert_eq!(m.seeds, [42, 43]);
        assert_eq!(m.models.len(), 4);
        assert_eq!(m.attacks.len(), 2);
        m.check().expect("README matrix is valid");
    }

    #[test]
    fn defenses_parse_from_toml_and_bad_values_name_the_field() {
        let m = Matrix::from_toml(
            r#"
[[models]]
name = "base"
[[models]]
name = "at"
from = "base"
epochs = 2
defense = { kind = "adversarial-training", eps = 0.2 }
[[models]]
name = "ls"
defense = { kind = "label-smoothing" }
[[models]]
name = "kd"
teacher = "base"
defense = { kind = "distillation", temperature = 1.0 }
[[attacks]]
kind = "fgsm"
loss = "mse"
target = { shift = 2 }
"#,
        )
        .expect("parse");
        m.check().expect("valid");
        let DefenseSpec::AdversarialTraining(at) = &m.models[1].defense else {
            panic!("{:?}", m.models[1].defense)
        };
        assert_eq!((at.eps, at.ratio), (0.2, 1.0));
        assert_eq!(m.models[2].defense.kind(), "label-smoothing");
        let AttackSpec::Fgsm(f) = &m.attacks[0] else {
            panic!("{:?}", m.attacks[0])
        };
        assert_eq!(f.target, Some(advrob_attack::TargetRule::Shift(2)));
        // a typo inside a defense is refused, not ignored
        let typo =
            "[[models]]\nname = \"x\"\ndefense = { kind = \"label-smoothing\", alpah = 0.2 }\n";
        assert!(Matrix::from_toml(typo).is_err());
        // bad values and dangling references name what is wrong
        let bad = |toml: &str| {
            Matrix::from_toml(toml)
                .expect("parse")
                .check()
                .expect_err("invalid")
                .to_string()
        };
        let e = bad(
            "[[models]]\nname = \"x\"\ndefense = { kind = \"label-smoothing\", alpha = 1.5 }\n",
        );
        assert!(e.contains("alpha") && e.contains('x'), "{e}");
        let e = bad(
            "[[models]]\nname = \"x\"\ndefense = { kind = \"distillation\", temperature = 0.0 }\n",
        );
        assert!(e.contains("temperature"), "{e}");
        let e = bad("[[models]]\nname = \"x\"\nfrom = \"y\"\n");
        assert!(e.contains("from") && e.contains('y'), "{e}");
        let e = bad("[[models]]\nname = \"x\"\ndefense = { kind = \"adversarial-retraining\" }\n");
        assert!(e.contains("teacher"), "{e}");
    }

    #[test]
    fn iterative_and_transfer_attacks_parse_and_name_themselves() {
        let m = Matrix::from_toml(
            r#"
[[models]]
name = "base"
[[models]]
name = "other"
seed_offset = 7
[[attacks]]
kind = "pgd"
steps = 20
loss = "margin"
bpda = true
[[attacks]]
kind = "transfer"
surrogate = "other"
attack = { kind = "fgsm" }
"#,
        )
        .expect("parse");
        m.check().expect("valid");
        let names: Vec<String> = m.attacks.iter().map(AttackSpec::name).collect();
        assert_eq!(
            names,
            ["pgd-linf-20-margin-bpda", "transfer-fgsm-from-other"]
        );
        assert_eq!(m.models[1].seed_offset, 7);
        // a surrogate that is not a model of the matrix is refused by name
        let bad = Matrix::from_toml(
            "[[attacks]]\nkind = \"transfer\"\nsurrogate = \"ghost\"\nattack = { kind = \"fgsm\" }\n",
        )
        .expect("parse");
        assert!(
            bad.check()
                .expect_err("ghost")
                .to_string()
                .contains("ghost")
        );
        // without [[attacks]] and without a model named surrogate, the default transfer attack is
        // dropped rather than failing
        let own = Matrix::from_toml("[[models]]\nname = \"solo\"\n").expect("parse");
        own.check().expect("valid");
        assert!(
            own.attacks
                .iter()
                .all(|a| !matches!(a, AttackSpec::Transfer { .. }))
        );
    }

    #[test]
    fn negative_eps_and_unknown_backend_fail_the_check() {
        let m = Matrix {
            eps: vec![0.1, -0.2],
            ..Matrix::default()
        };
        assert!(m.check().expect_err("eps").to_string().contains("eps"));
        let m = Matrix {
            backends: vec!["tpu".into()],
            ..Matrix::default()
        };
        let msg = m.check().expect_err("backend").to_string();
        assert!(msg.contains("tpu") && msg.contains("available"), "{msg}");
    }
}
