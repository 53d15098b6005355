//! The experiment matrix: what to train, attack and evaluate, from a TOML file or from flags.
//! Attacks and defenses are entries `{ kind = "...", <settings> }` that the [`Registry`] parses
//! and checks.

use std::path::PathBuf;

use advrob_attack::{FmnConfig, PgdConfig};
use advrob_defense_adversarial_training::AdversarialTrainingConfig;
use advrob_defense_distillation::DistillationConfig;
use advrob_defense_gradient_masking::{GradientMaskingConfig, Mechanism};
use advrob_defense_label_smoothing::LabelSmoothingConfig;
use advrob_model::{LossKind, Normalize, TeacherUse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ExperimentError, Result, ensure};
use crate::registry::Registry;
pub use crate::spec::{AttackSpec, DefenseSpec, ENSEMBLE, TRANSFER, params_of};

/// The ε grid of the default experiment.
pub const DEFAULT_EPS: [f64; 8] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4];

/// The architecture of a model of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    /// The multilayer perceptron of the study (`hidden`, `dropout`).
    #[default]
    Mlp,
    /// LeNet-5.
    Lenet,
    /// The network of PyTorch's FGSM tutorial (`dropout`, 0.5 by default there).
    FgsmTutorial,
    /// The CNN of Madry et al. (2018).
    MadryCnn,
    /// A model read from an ONNX file (`weights = "model.onnx"`), evaluated as the file defines
    /// it: any architecture of the operators `advrob_onnx::SUPPORTED_OPS`.
    Onnx,
}

/// One model of the matrix: an architecture, a defense and, optionally, training settings of its
/// own and the models it builds on (which must come earlier in the list) — or the weights of a
/// model trained elsewhere (PyTorch), imported instead of trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name in records and tables.
    pub name: String,
    /// The architecture (a fine-tuned model keeps the one it starts from).
    #[serde(default, skip_serializing_if = "is_mlp")]
    pub arch: Arch,
    /// Hidden layer widths of an MLP (ignored with `from`: a fine-tuned model keeps its
    /// architecture).
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Dropout after each hidden layer of an MLP (the FGSM tutorial net: of both its dropouts).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// The trained weights of a PyTorch model (`safetensors.torch.save_file(model.state_dict(),
    /// path)`) to evaluate instead of training one; with `defense` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<PathBuf>,
    /// With `weights`: advrob's module names mapped to the PyTorch ones where they differ
    /// (`"layers.0" = "fc1"`).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub names: std::collections::BTreeMap<String, String>,
    /// With `weights`: the standardisation the model was trained with, `(x − mean) / std`,
    /// applied inside the model (attacks still work on images in [0, 1]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// With `weights`: the input quantisation it is deployed with (levels in [0, 1], as
    /// `DeployConfig::quantize`), so that a model advrob trained with it can be evaluated again
    /// from its exported weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<u32>,
    /// With `weights`: the factor its logits are multiplied by at deployment (as
    /// `DeployConfig::logit_scale`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_scale: Option<f64>,
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

fn is_mlp(a: &Arch) -> bool {
    *a == Arch::Mlp
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
            arch: Arch::Mlp,
            hidden: default_hidden(),
            dropout: default_dropout(),
            weights: None,
            names: Default::default(),
            normalize: None,
            quantize: None,
            logit_scale: None,
            defense: DefenseSpec::default(),
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

    /// Checks the defense's settings and that `teacher` is given exactly where the defense uses
    /// one.
    pub fn check(&self, registry: &Registry) -> Result<()> {
        let inner = || -> Result<()> {
            let (_, _, teacher_use) = registry.describe_defense(&self.defense)?;
            match (teacher_use, &self.teacher) {
                (TeacherUse::Required, None) => {
                    return Err(ExperimentError::invalid(
                        "teacher",
                        format!("{} needs the model it learns from", self.defense.kind),
                    ));
                }
                (TeacherUse::Never, Some(_)) => {
                    return Err(ExperimentError::invalid(
                        "teacher",
                        format!("{} uses no teacher", self.defense.kind),
                    ));
                }
                _ => {}
            }
            ensure(self.epochs != Some(0), "epochs", || {
                "must be at least 1".into()
            })?;
            ensure(
                self.arch != Arch::Onnx || self.weights.is_some(),
                "weights",
                || {
                    "arch = \"onnx\" reads the model from a file: give weights = \"model.onnx\""
                        .into()
                },
            )?;
            if self.weights.is_some() {
                ensure(
                    self.defense.kind == "none" && self.from.is_none() && self.teacher.is_none(),
                    "weights",
                    || {
                        "imported weights are evaluated as they are: no defense, from or teacher"
                            .into()
                    },
                )?;
            } else {
                ensure(
                    self.names.is_empty()
                        && self.normalize.is_none()
                        && self.quantize.is_none()
                        && self.logit_scale.is_none(),
                    "names",
                    || {
                        "names, normalize, quantize and logit_scale describe imported weights: give weights too"
                            .into()
                    },
                )?;
            }
            let deploy = advrob_model::DeployConfig::new()
                .with_quantize(self.quantize)
                .with_logit_scale(self.logit_scale.unwrap_or(1.0));
            if let Err(e) = deploy.check() {
                return Err(ExperimentError::invalid("deploy", e.to_string()));
            }
            if let Some(n) = self.normalize {
                ensure(
                    n.std > 0.0 && n.std.is_finite() && n.mean.is_finite(),
                    "normalize",
                    || {
                        format!(
                            "mean {} and std {}: the std must be positive, both finite",
                            n.mean, n.std
                        )
                    },
                )?;
                // the model computes in float32: (x − mean) / std must stay a number for pixels
                // x in [0, 1]
                let in_f32 = |x: f64| ((x - n.mean) / n.std) as f32;
                ensure(
                    (n.std as f32).is_normal()
                        && in_f32(0.0).is_finite()
                        && in_f32(1.0).is_finite(),
                    "normalize",
                    || {
                        format!(
                            "mean {} and std {}: (x − mean) / std overflows float32 for pixels in [0, 1]",
                            n.mean, n.std
                        )
                    },
                )?;
            }
            Ok(())
        };
        inner().map_err(|e| e.in_model(&self.name))
    }
}

/// The path of the first float of `v` that is NaN or infinite (`attacks[0].step_size = nan`).
fn non_finite(v: &toml::Value, path: &str) -> Option<String> {
    match v {
        toml::Value::Float(f) if !f.is_finite() => Some(format!("{path} = {f}")),
        toml::Value::Table(t) => t.iter().find_map(|(k, x)| {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            non_finite(x, &p)
        }),
        toml::Value::Array(a) => a
            .iter()
            .enumerate()
            .find_map(|(i, x)| non_finite(x, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// An architecture as the matrix spells it (`"lenet"`).
fn arch_name(a: Arch) -> String {
    serde_json::to_string(&a).unwrap_or_default()
}

/// Refuses a fine-tuned model (`from`) that declares an architecture (`arch`, `hidden`,
/// `dropout`) other than the one of the model it starts from: it would silently train the
/// parent's. `table` is the TOML `m` was parsed from (what a model leaves out is not declared).
fn check_fine_tuned_arch(
    m: &Matrix,
    table: &toml::Table,
) -> std::result::Result<(), toml::de::Error> {
    let Some(tables) = table.get("models").and_then(toml::Value::as_array) else {
        return Ok(());
    };
    for (i, (spec, t)) in m.models.iter().zip(tables).enumerate() {
        let Some(parent) = &spec.from else { continue };
        let root = &m.models[m.root_of(i)];
        let declared = |k: &str| t.get(k).is_some();
        let differs = [
            ("arch", declared("arch") && spec.arch != root.arch),
            ("hidden", declared("hidden") && spec.hidden != root.hidden),
            (
                "dropout",
                declared("dropout") && spec.dropout != root.dropout,
            ),
        ];
        if let Some((field, _)) = differs.iter().find(|(_, d)| *d) {
            let value = match *field {
                "arch" => arch_name(spec.arch),
                "hidden" => format!("{:?}", spec.hidden),
                _ => format!("{}", spec.dropout),
            };
            return Err(serde::de::Error::custom(format!(
                "model {}: {field} = {value} contradicts its from = {parent:?}, whose architecture is {} with hidden {:?} and dropout {}: a fine-tuned model keeps the architecture it starts from; remove {field} from {}, or train it from scratch without from",
                spec.name,
                arch_name(root.arch),
                root.hidden,
                root.dropout,
                spec.name
            )));
        }
    }
    Ok(())
}

/// Refuses a name that is not a plain file name (it becomes a directory of the run): letters,
/// digits, `.`, `_` and `-`, not starting with `.` or `-`, at most 100 characters.
pub fn check_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with(['.', '-'])
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    ensure(ok, field, || {
        format!(
            "{name:?} is not a plain name (letters, digits, '.', '_' and '-', not starting with '.' or '-', at most 100 characters): it names a directory of the run"
        )
    })
}

/// Refuses an empty grid, an ε that is negative, not finite or above 1 (L∞ on images in [0, 1]:
/// ε = 1 is already the whole input space), and an ε given twice (−0 and 0 are the same).
pub fn check_grid(field: &str, eps: &[f64]) -> Result<()> {
    ensure(!eps.is_empty(), field, || "the grid is empty".into())?;
    for &e in eps {
        advrob_attack::check_eps(e)?;
        ensure(e <= 1.0, field, || {
            format!(
                "{e} is above 1: pixels lie in [0, 1], so ε = 1 is already the whole input space"
            )
        })?;
    }
    let mut seen: Vec<f64> = Vec::with_capacity(eps.len());
    for &e in eps {
        let e = if e == 0.0 { 0.0 } else { e };
        ensure(!seen.contains(&e), field, || format!("{e} is given twice"))?;
        seen.push(e);
    }
    Ok(())
}

/// Refuses a target shift that is a multiple of the class count (it targets the true label) and
/// more target classes than there are classes other than the true one, in an attack's settings
/// or any attack inside them.
fn check_shifts(config: &Value) -> Result<()> {
    match config {
        Value::Object(m) => {
            if let Some(k) = m
                .get("target")
                .and_then(|t| t.get("shift"))
                .and_then(Value::as_u64)
            {
                ensure(
                    !k.is_multiple_of(advrob_data::NUM_CLASSES as u64),
                    "target",
                    || {
                        format!(
                            "a shift of {k} is a multiple of the {} classes: it targets the true label",
                            advrob_data::NUM_CLASSES
                        )
                    },
                )?;
            }
            if let Some(k) = m.get("target_classes").and_then(Value::as_u64) {
                ensure(
                    k < advrob_data::NUM_CLASSES as u64,
                    "target_classes",
                    || {
                        format!(
                            "{k} target classes: with {} classes there are {} other than the true one",
                            advrob_data::NUM_CLASSES,
                            advrob_data::NUM_CLASSES - 1
                        )
                    },
                )?;
            }
            m.values().try_for_each(check_shifts)
        }
        Value::Array(a) => a.iter().try_for_each(check_shifts),
        _ => Ok(()),
    }
}

/// Adversarial training with gradient masking by `mechanism`, otherwise the defaults.
pub fn masking(mechanism: Mechanism) -> DefenseSpec {
    DefenseSpec::new(
        "gradient-masking",
        &GradientMaskingConfig {
            mechanism,
            ..Default::default()
        },
    )
}

/// The models of the default experiment: the README MLP undefended and with each defense of the
/// study, all from scratch with the same training settings, plus two real gradient-masking
/// mechanisms.
pub fn default_models() -> Vec<ModelSpec> {
    vec![
        ModelSpec::default(),
        ModelSpec::defended(
            "adversarial-training",
            DefenseSpec::new(
                "adversarial-training",
                &AdversarialTrainingConfig::default(),
            ),
        ),
        // Madry et al.: PGD in the training loop (10 L∞ steps from a random start), the defense the
        // verdict should not flag
        ModelSpec::defended(
            "pgd-adversarial-training",
            DefenseSpec::new(
                "adversarial-training",
                &AdversarialTrainingConfig::pgd(0.1, 10),
            ),
        ),
        ModelSpec::defended("gm-notebook", masking(Mechanism::Notebook)),
        ModelSpec::defended("gm-quantize", masking(Mechanism::Quantize)),
        ModelSpec::defended("gm-saturated-logits", masking(Mechanism::SaturatedLogits)),
        ModelSpec::defended(
            "label-smoothing",
            DefenseSpec::new("label-smoothing", &LabelSmoothingConfig::default()),
        ),
        ModelSpec::defended(
            "distillation",
            DefenseSpec::new("distillation", &DistillationConfig::default()),
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

/// The budget of the default experiment's standard ensemble: the study's training budget.
pub const ENSEMBLE_EPS: [f64; 1] = [0.1];

/// The ε grid of the default experiment on CIFAR-10: 0 to 16/255, the field's range (RobustBench
/// and AutoAttack quote L∞ robustness at 8/255).
pub const CIFAR10_EPS: [f64; 6] = [
    0.0,
    1.0 / 255.0,
    2.0 / 255.0,
    4.0 / 255.0,
    8.0 / 255.0,
    16.0 / 255.0,
];

/// The standard ensemble's budget on CIFAR-10: 8/255.
pub const CIFAR10_ENSEMBLE_EPS: [f64; 1] = [8.0 / 255.0];

/// The attacks of the default experiment: the study's white-box FGSM, 10-step L∞ PGD with a
/// random start on the cross-entropy (and 20-step, to check that 10 steps have converged), the
/// same PGD made adaptive — margin loss on the logits (immune to a saturated softmax) with
/// straight-through gradients around input quantisation (BPDA) — so that masked gradients are
/// seen through, that PGD transferred from an independently trained undefended model, the
/// minimum-norm attack FMN (one run gives the whole curve and the median ε*), and the standard
/// ensemble — AutoAttack's standard version, APGD-CE, APGD-T, FAB-T, Square — at [`ENSEMBLE_EPS`].
pub fn default_attacks() -> Vec<AttackSpec> {
    vec![
        AttackSpec::fgsm(),
        AttackSpec::pgd(PgdConfig::linf(10)),
        // the same attack with twice the steps: the verdict's convergence check
        AttackSpec::pgd(PgdConfig::linf(20)),
        AttackSpec::pgd(PgdConfig {
            loss: advrob_attack::AttackLoss::Margin,
            bpda: true,
            ..PgdConfig::linf(10)
        }),
        AttackSpec::transfer("surrogate", AttackSpec::pgd(PgdConfig::linf(10))),
        AttackSpec::new("fmn", &FmnConfig::default()),
        AttackSpec::autoattack_standard().at(&ENSEMBLE_EPS),
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

/// How models are evaluated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalSpec {
    /// Batch size of attack and inference.
    pub batch_size: usize,
    /// Evaluate on the first N test examples only (quick runs).
    pub test_limit: Option<usize>,
    /// Sample images per side of the quoted attack's result (broken, left robust) in its
    /// binarization test ([`advrob_eval::binarization`]); 0 runs no test.
    pub binarization_samples: usize,
    /// Test examples of the quoted attack's convergence run against a stronger setting of itself
    /// ([`advrob_eval::convergence`]); 0 runs none.
    pub convergence_examples: usize,
}

impl Default for EvalSpec {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            test_limit: None,
            binarization_samples: advrob_eval::binarization::PER_GROUP,
            convergence_examples: advrob_eval::convergence::EXAMPLES,
        }
    }
}

/// Certified lower bounds on robust accuracy ([`advrob_verify`], [`crate::certified`]): which
/// radii, on how many test examples, how hard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySpec {
    /// Bound every model the verifier can read (the MLPs; a CNN's file says why not); false:
    /// none.
    pub enabled: bool,
    /// Radii. `None`: the matrix's nonzero grid. Each radius tries only the images the next
    /// smaller one verified ([`crate::certified::AtRadius::tried`]).
    pub eps: Option<Vec<f64>>,
    /// Branch and bound's budget of bounded domains per image (0: α-CROWN and the margin PGD
    /// only).
    pub max_domains: usize,
    /// The first N of the run's test examples (`None`: all of them).
    pub test_limit: Option<usize>,
    /// Bound CNNs too. Off by default: a CNN is lowered to thousands of ReLUs whose bounds
    /// (CROWN-IBP through the max-pools) prove little while spending the whole budget on every
    /// image; its file says so.
    pub cnns: bool,
}

impl Default for VerifySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            eps: None,
            max_domains: DEFAULT_MAX_DOMAINS,
            test_limit: Some(DEFAULT_VERIFY_EXAMPLES),
            cnns: false,
        }
    }
}

/// The default budget of [`VerifySpec::max_domains`], with [`DEFAULT_VERIFY_EXAMPLES`]: what the
/// default reproduce affords (its nine MLPs verified in 1 min 21 s on 2 cores, against about 4
/// min at 200 domains, which verifies 51% instead of 43% of the PGD-trained MLP's first 1000
/// images at ε = 0.1); `bench-runner verify` takes 2000 by default.
pub const DEFAULT_MAX_DOMAINS: usize = 50;
/// The default of [`VerifySpec::test_limit`].
pub const DEFAULT_VERIFY_EXAMPLES: usize = 1000;

/// Randomized smoothing (Cohen et al. 2019; [`crate::smoothed`]): the smoothed classifier of
/// every model trained with `gaussian-noise` at its own σ, and of every other model at `sigma`
/// when it is given, certified in L2 on the first test examples — a threat model of its own,
/// reported apart from the L∞ tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmoothingSpec {
    /// Certify at all (false by default: n = 100 000 noisy copies per image cost minutes per
    /// model; the `smoothing` preset turns it on).
    pub enabled: bool,
    /// σ for the models not trained with Gaussian noise (`None`: they are not smoothed).
    pub sigma: Option<f64>,
    /// Noisy copies that choose the class.
    pub n0: usize,
    /// Noisy copies that estimate its probability.
    pub n: usize,
    /// The probability that a certificate is wrong.
    pub alpha: f64,
    /// Noisy copies per forward pass.
    pub batch: usize,
    /// The noise's seed.
    pub seed: u64,
    /// The first N of the run's test examples (`None`: all of them).
    pub test_limit: Option<usize>,
    /// L2 radii at which the certified accuracy is reported.
    pub radii: Vec<f64>,
}

impl SmoothingSpec {
    /// The certifier's settings at σ `sigma`.
    pub fn settings(&self, sigma: f64) -> advrob_verify::SmoothingSettings {
        advrob_verify::SmoothingSettings {
            sigma,
            n0: self.n0,
            n: self.n,
            alpha: self.alpha,
            batch: self.batch,
            seed: self.seed,
        }
    }
}

impl Default for SmoothingSpec {
    fn default() -> Self {
        let s = advrob_verify::SmoothingSettings::default();
        Self {
            enabled: false,
            sigma: None,
            n0: s.n0,
            n: s.n,
            alpha: s.alpha,
            batch: s.batch,
            seed: s.seed,
            test_limit: Some(500),
            radii: vec![0.0, 0.5, 1.0, 1.5],
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
    /// Datasets, each `mnist`, `fashion-mnist` or `cifar10`; every model is trained and attacked on
    /// each.
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
    /// Certified lower bounds.
    pub verify: VerifySpec,
    /// Randomized smoothing's L2 certificates.
    pub smoothing: SmoothingSpec,
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
            verify: VerifySpec::default(),
            smoothing: SmoothingSpec::default(),
        }
    }
}

impl Matrix {
    /// The same matrix with CIFAR-10's budgets in place of MNIST's: the grid [`CIFAR10_EPS`], and
    /// every attack that ran at [`ENSEMBLE_EPS`] at [`CIFAR10_ENSEMBLE_EPS`] instead. For a
    /// preset run on colour images; a matrix file's own budgets are never changed.
    pub fn with_cifar10_budgets(mut self) -> Self {
        self.eps = CIFAR10_EPS.to_vec();
        for a in &mut self.attacks {
            if a.eps.as_deref() == Some(&ENSEMBLE_EPS[..]) {
                a.eps = Some(CIFAR10_ENSEMBLE_EPS.to_vec());
            }
        }
        self
    }

    /// The models in training stages: a model's stage comes after the stages of the models it is
    /// fine-tuned from or learns from (a job array per stage, each waiting for the one before).
    pub fn training_stages(&self) -> Vec<Vec<String>> {
        let mut stage: Vec<usize> = Vec::with_capacity(self.models.len());
        for m in &self.models {
            let deps = [&m.from, &m.teacher];
            let s = deps
                .iter()
                .filter_map(|d| d.as_ref())
                .filter_map(|d| self.models.iter().position(|x| &x.name == d))
                .map(|j| stage[j] + 1)
                .max()
                .unwrap_or(0);
            stage.push(s);
        }
        let n = stage.iter().max().map_or(0, |m| m + 1);
        (0..n)
            .map(|k| {
                self.models
                    .iter()
                    .zip(&stage)
                    .filter(|(_, s)| **s == k)
                    .map(|(m, _)| m.name.clone())
                    .collect()
            })
            .collect()
    }

    /// Refuses smoothing settings that certify nothing, naming the field under `smoothing.`.
    fn check_smoothing(&self) -> Result<()> {
        let s = &self.smoothing;
        if !s.enabled {
            return Ok(());
        }
        ensure(s.test_limit != Some(0), "smoothing.test_limit", || {
            "0 test examples: nothing to certify (smoothing.enabled = false turns it off)".into()
        })?;
        for &r in &s.radii {
            ensure(r.is_finite() && r >= 0.0, "smoothing.radii", || {
                format!("{r} is not a radius")
            })?;
        }
        let sigma = s
            .sigma
            .unwrap_or(advrob_verify::SmoothingSettings::default().sigma);
        s.settings(sigma)
            .check()
            .map_err(|e| ExperimentError::invalid("smoothing", e.to_string()))
    }

    /// Parses a TOML matrix; unknown keys are errors (a typo must not silently run the default).
    /// The settings of attacks and defenses are checked by [`Matrix::check`].
    pub fn from_toml(text: &str) -> std::result::Result<Self, toml::de::Error> {
        let table: toml::Table = toml::from_str(text)?;
        // an attack's or defense's settings pass through JSON, where NaN and ±∞ become null
        // (read back as "not given"): refuse them here, by their path
        if let Some(path) = non_finite(&toml::Value::Table(table.clone()), "") {
            return Err(serde::de::Error::custom(format!(
                "{path}: not a finite number"
            )));
        }
        let mut m: Matrix = toml::from_str(text)?;
        check_fine_tuned_arch(&m, &table)?;
        m.adopt_parent_arch();
        // the default attacks transfer from the default `surrogate` model: a matrix that lists
        // its own models and no attacks keeps the white-box ones only
        if !table.contains_key("attacks") {
            let models = m.models.clone();
            m.attacks.retain(|a| {
                a.kind != TRANSFER
                    || a.params
                        .get("surrogate")
                        .and_then(Value::as_str)
                        .is_some_and(|s| models.iter().any(|x| x.name == s))
            });
        }
        Ok(m)
    }

    /// The model the `from` chain of model `i` starts from (`i` itself when it has none; a chain
    /// that does not end stops after as many steps as there are models).
    fn root_of(&self, i: usize) -> usize {
        let mut root = i;
        for _ in 0..self.models.len() {
            let parent = self.models[root]
                .from
                .as_ref()
                .and_then(|f| self.models.iter().position(|x| &x.name == f));
            match parent {
                Some(p) if p != root => root = p,
                _ => break,
            }
        }
        root
    }

    /// Gives every fine-tuned model (`from`) the architecture (`arch`, `hidden`, `dropout`) of the
    /// model its chain starts from: the one it is trained with, whatever it left out.
    pub fn adopt_parent_arch(&mut self) {
        for i in 0..self.models.len() {
            let root = self.root_of(i);
            if root != i {
                let (arch, hidden, dropout) = (
                    self.models[root].arch,
                    self.models[root].hidden.clone(),
                    self.models[root].dropout,
                );
                let m = &mut self.models[i];
                (m.arch, m.hidden, m.dropout) = (arch, hidden, dropout);
            }
        }
    }

    /// Checks everything that can be checked before any work: ε values, sizes, names, and every
    /// attack's and defense's settings against `registry`.
    pub fn check(&self, registry: &Registry) -> Result<()> {
        check_name("name", &self.name)?;
        check_grid("eps", &self.eps)?;
        ensure(!self.models.is_empty(), "models", || "none given".into())?;
        ensure(!self.attacks.is_empty(), "attacks", || "none given".into())?;
        for a in &self.attacks {
            let described = registry.describe(a)?;
            check_shifts(&described.config)?;
            if let Some(grid) = &a.eps {
                check_grid("attacks.eps", grid)?;
            }
            if let Some(surrogate) = registry.surrogate_of(a)? {
                ensure(
                    self.models.iter().any(|m| m.name == surrogate),
                    "attacks",
                    || format!("the transfer surrogate {surrogate} is not a model of the matrix"),
                )?;
            }
        }
        ensure(!self.seeds.is_empty(), "seeds", || "none given".into())?;
        // the matrix is kept as TOML, whose integers are signed 64-bit
        if let Some(s) = self.seeds.iter().find(|s| i64::try_from(**s).is_err()) {
            return Err(ExperimentError::invalid(
                "seeds",
                format!(
                    "{s} is above {}: a run directory keeps its matrix as TOML, whose integers are signed 64-bit",
                    i64::MAX
                ),
            ));
        }
        ensure(!self.backends.is_empty(), "backends", || {
            "none given".into()
        })?;
        ensure(self.eval.batch_size > 0, "eval.batch_size", || {
            "must be at least 1".into()
        })?;
        ensure(self.eval.test_limit != Some(0), "eval.test_limit", || {
            "0 test examples: nothing to evaluate".into()
        })?;
        ensure(
            self.verify.test_limit != Some(0),
            "verify.test_limit",
            || "0 test examples: nothing to verify (verify.enabled = false turns it off)".into(),
        )?;
        if let Some(grid) = &self.verify.eps {
            check_grid("verify.eps", grid)?;
        }
        self.check_smoothing()?;
        ensure(
            self.train.train_limit != Some(0),
            "train.train_limit",
            || "0 training examples: the models would stay untrained".into(),
        )?;
        for (i, m) in self.models.iter().enumerate() {
            check_name("models", &m.name).map_err(|e| e.in_model(&m.name))?;
            m.check(registry)?;
            let earlier = &self.models[..i];
            ensure(!earlier.iter().any(|e| e.name == m.name), "models", || {
                format!("two models are named {}", m.name)
            })?;
            for (field, dep) in [("from", &m.from), ("teacher", &m.teacher)] {
                if let Some(d) = dep
                    && !earlier.iter().any(|e| &e.name == d)
                {
                    return Err(ExperimentError::invalid(
                        field,
                        format!("no model named {d} comes before it"),
                    )
                    .in_model(&m.name));
                }
            }
        }
        ensure(
            self.train.epochs > 0 && self.train.batch_size > 0,
            "train",
            || "epochs and batch_size must be at least 1".into(),
        )?;
        for b in &self.backends {
            advrob_model::backend::device(b)?;
        }
        if self.dataset_dir.is_none() {
            ensure(!self.datasets.is_empty(), "datasets", || {
                "none given".into()
            })?;
        }
        // named even when a directory replaces them: a typo is refused, not ignored
        for d in &self.datasets {
            advrob_data::DatasetKind::from_name(d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_attack::Fgsm;
    use advrob_attack::{LabelMode, TargetRule};

    fn registry() -> Registry {
        Registry::default()
    }

    #[test]
    fn an_imported_models_deployment_needs_weights_and_sound_settings() {
        let check = |text: &str| -> std::result::Result<Matrix, String> {
            let m = Matrix::from_toml(text).map_err(|e| e.to_string())?;
            m.check(&Registry::default()).map_err(|e| e.to_string())?;
            Ok(m)
        };
        let base = "name = \"x\"\n[[models]]\nname = \"q\"\n";
        let e = check(&format!("{base}quantize = 16\n")).expect_err("no weights");
        assert!(e.contains("give weights too"), "{e}");
        let e = check(&format!(
            "{base}weights = \"w.safetensors\"\nquantize = 1\n"
        ))
        .expect_err("one level");
        assert!(
            e.to_string().contains("quantize") && e.to_string().contains("q"),
            "{e}"
        );
        let e = check(&format!(
            "{base}weights = \"w.safetensors\"\nlogit_scale = -2.0\n"
        ))
        .expect_err("negative scale");
        assert!(e.contains("logit"), "{e}");
        let m = check(&format!(
            "{base}weights = \"w.safetensors\"\nquantize = 16\nlogit_scale = 1000.0\n"
        ))
        .expect("deployed import");
        assert_eq!(
            (m.models[0].quantize, m.models[0].logit_scale),
            (Some(16), Some(1000.0))
        );
    }

    #[test]
    fn cifar10_budgets_replace_the_grid_and_the_ensembles_budget_only() {
        let m = Matrix::default();
        let c = m.clone().with_cifar10_budgets();
        assert_eq!(c.eps, CIFAR10_EPS);
        for (a, b) in m.attacks.iter().zip(&c.attacks) {
            match &a.eps {
                Some(e) if e[..] == ENSEMBLE_EPS[..] => {
                    assert_eq!(
                        b.eps.as_deref(),
                        Some(&CIFAR10_ENSEMBLE_EPS[..]),
                        "{}",
                        a.kind
                    )
                }
                other => assert_eq!(&b.eps, other, "{}", a.kind),
            }
        }
        assert!(
            c.attacks.iter().any(|a| a.eps.is_some()),
            "the ensemble moved"
        );
        assert_eq!((c.models, c.datasets), (m.models, m.datasets));
    }

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
        // the same attack as built in code: the same settings once parsed
        let r = registry();
        assert_eq!(
            r.describe(&m.attacks[0]).expect("fgsm").config,
            r.describe(&AttackSpec::new(
                "fgsm",
                &Fgsm::with_labels(LabelMode::Predicted)
            ))
            .expect("fgsm")
            .config
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
        m.check(&registry()).expect("README matrix is valid");
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
        let r = registry();
        m.check(&r).expect("valid");
        let (_, at, _) = r.describe_defense(&m.models[1].defense).expect("defense");
        assert_eq!(
            (at["eps"].as_f64(), at["ratio"].as_f64()),
            (Some(0.2), Some(1.0))
        );
        assert_eq!(
            r.describe_defense(&m.models[2].defense).expect("ls").0,
            "label-smoothing"
        );
        let fgsm: Fgsm =
            serde_json::from_value(Value::Object(m.attacks[0].params.clone())).expect("fgsm");
        assert_eq!(fgsm.target, Some(TargetRule::Shift(2)));
        // bad values, typos and dangling references name what is wrong
        let bad = |toml: &str| {
            Matrix::from_toml(toml)
                .expect("parse")
                .check(&registry())
                .expect_err("invalid")
                .to_string()
        };
        let e = bad(
            "[[models]]\nname = \"x\"\ndefense = { kind = \"label-smoothing\", alpah = 0.2 }\n",
        );
        assert!(e.contains("alpah") && e.contains('x'), "{e}");
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
        let r = registry();
        m.check(&r).expect("valid");
        let names: Vec<String> = m
            .attacks
            .iter()
            .map(|a| r.describe(a).expect("attack").name)
            .collect();
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
            bad.check(&r)
                .expect_err("ghost")
                .to_string()
                .contains("ghost")
        );
        // without [[attacks]] and without a model named surrogate, the default transfer attack is
        // dropped rather than failing
        let own = Matrix::from_toml("[[models]]\nname = \"solo\"\n").expect("parse");
        own.check(&r).expect("valid");
        assert!(own.attacks.iter().all(|a| a.kind != TRANSFER));
    }

    #[test]
    fn negative_eps_and_unknown_backend_fail_the_check() {
        let m = Matrix {
            eps: vec![0.1, -0.2],
            ..Matrix::default()
        };
        assert!(
            m.check(&registry())
                .expect_err("eps")
                .to_string()
                .contains("eps")
        );
        let m = Matrix {
            backends: vec!["tpu".into()],
            ..Matrix::default()
        };
        let msg = m.check(&registry()).expect_err("backend").to_string();
        assert!(msg.contains("tpu") && msg.contains("available"), "{msg}");
    }
}
