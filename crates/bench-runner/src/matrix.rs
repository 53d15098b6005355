//! The experiment matrix: what to train, attack and evaluate, from a TOML file or from flags.

use std::path::PathBuf;

use advrob_attack::LabelMode;
use advrob_model::LossKind;
use serde::{Deserialize, Serialize};

/// The ε grid of the default experiment.
pub const DEFAULT_EPS: [f64; 8] = [0.0, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4];

/// One model of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Name in records and tables.
    pub name: String,
    /// Hidden layer widths.
    #[serde(default = "default_hidden")]
    pub hidden: Vec<usize>,
    /// Dropout after each hidden layer.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
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
        }
    }
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

/// One attack of the matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "kebab-case")]
pub enum AttackSpec {
    /// Fast Gradient Sign Method.
    Fgsm {
        /// Labels the attack's loss uses.
        #[serde(default)]
        labels: LabelMode,
    },
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
    /// Models.
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
            datasets: vec!["mnist".into()],
            dataset_dir: None,
            backends: vec!["ndarray".into()],
            seeds: vec![42],
            eps: DEFAULT_EPS.to_vec(),
            models: vec![ModelSpec::default()],
            train: TrainSpec::default(),
            attacks: vec![AttackSpec::Fgsm {
                labels: LabelMode::True,
            }],
            eval: EvalSpec::default(),
        }
    }
}

impl Matrix {
    /// Parses a TOML matrix; unknown keys are errors (a typo must not silently run the default).
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks everything that can be checked before any work: ε values, sizes, names.
    pub fn check(&self) -> anyhow::Result<()> {
        for &e in &self.eps {
            advrob_attack::check_eps(e)?;
        }
        anyhow::ensure!(!self.eps.is_empty(), "invalid eps: the grid is empty");
        anyhow::ensure!(!self.models.is_empty(), "invalid models: none given");
        anyhow::ensure!(!self.attacks.is_empty(), "invalid attacks: none given");
        anyhow::ensure!(!self.seeds.is_empty(), "invalid seeds: none given");
        anyhow::ensure!(!self.backends.is_empty(), "invalid backends: none given");
        anyhow::ensure!(
            self.eval.batch_size > 0,
            "invalid eval.batch_size: must be at least 1"
        );
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        names.sort();
        names.dedup();
        anyhow::ensure!(
            names.len() == self.models.len(),
            "invalid models: two models share a name"
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
            AttackSpec::Fgsm {
                labels: LabelMode::Predicted
            }
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
        m.check().expect("README matrix is valid");
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
