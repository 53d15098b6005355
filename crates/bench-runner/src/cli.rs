//! Command-line arguments shared by `bench-runner` and `cargo xtask`.

use std::path::PathBuf;

use advrob_attack::{Fgsm, LabelMode};
use advrob_data::Mirror;
use advrob_experiment::registry::TRANSFER;
use advrob_experiment::{Arch, AttackSpec, Matrix, ModelSpec, Registry};
use advrob_model::LossKind;
use clap::Args;

/// Where the data comes from.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// Directory that downloads go to (`<data-dir>/<dataset>/`).
    #[arg(long, default_value = "data")]
    pub data_dir: PathBuf,
    /// Mirror to fetch from instead of the public ones: a local directory holding the `.gz` files
    /// or a base URL. Repeat or separate by commas to try several in order.
    #[arg(long, env = "ADVROB_MIRROR", value_delimiter = ',')]
    pub mirror: Vec<String>,
}

impl DataArgs {
    /// The mirrors as parsed (an empty entry, such as an empty `ADVROB_MIRROR`, is none).
    pub fn mirrors(&self) -> Vec<Mirror> {
        self.mirror
            .iter()
            .map(|m| m.trim())
            .filter(|m| !m.is_empty())
            .map(Mirror::parse)
            .collect()
    }
}

/// How many jobs run the matrix at once.
#[derive(Debug, Clone, Args)]
pub struct JobsArgs {
    /// Jobs at once in this process, each taking the next model that no other job holds (the
    /// records are the same as with one job). burn-ndarray runs these small models on about one
    /// core, so one job per core is what fills a CPU; default: one per core for `reproduce` on
    /// ndarray, 1 otherwise (flex and wgpu spread one job over the cores or the GPU themselves).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub jobs: Option<u64>,
}

impl JobsArgs {
    /// The jobs asked for, else one per core when every backend of `m` is ndarray and
    /// `per_core` (else 1), never more than `m` has models.
    pub fn jobs(&self, m: &Matrix, per_core: bool) -> usize {
        let ndarray_only = m.backends.iter().all(|b| b == "ndarray");
        let default = if per_core && ndarray_only {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            1
        };
        match self.jobs {
            Some(n) => n as usize,
            None => default.min(m.models.len().max(1)),
        }
    }
}

/// What to run: a TOML matrix, overridden by flags.
#[derive(Debug, Clone, Args)]
pub struct MatrixArgs {
    /// TOML file describing the matrix (datasets, models, attacks, ε grid, seeds, backends).
    #[arg(long, conflicts_with = "preset")]
    pub config: Option<PathBuf>,
    /// A named matrix: default, seed-000-notebook, seed-004-notebook (see EXPERIMENTS.md).
    #[arg(long)]
    pub preset: Option<String>,
    /// Run this matrix into an --out that holds another one (a run directory keeps the matrix
    /// it was started with; this adds one beside it, and the records stay apart by their keys).
    #[arg(long)]
    pub extend: bool,
    /// Reproduce the seed-004 notebook's bug: over the ε grid, each FGSM step starts from the
    /// previous ε's adversarial image, so perturbations accumulate (records say `-cumulative`).
    #[arg(long)]
    pub cumulative_eps: bool,
    /// Run name.
    #[arg(long)]
    pub name: Option<String>,
    /// Datasets, comma-separated: mnist, fashion-mnist, cifar10.
    #[arg(long, value_delimiter = ',')]
    pub dataset: Option<Vec<String>>,
    /// Load the four IDX files, or CIFAR-10's cifar-10-binary.tar.gz, from this directory as they
    /// are (no download, no canonical checksum).
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// Backends, comma-separated, among those compiled in.
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Seeds, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Number of seeds: the matrix's first seed and the ones after it (`--num-seeds 3`: 42, 43,
    /// 44), for the statistics over seeds.
    #[arg(long, conflicts_with = "seeds")]
    pub num_seeds: Option<u64>,
    /// ε grid, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub eps: Option<Vec<f64>>,
    /// Training epochs of every model (replaces per-model epochs too).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Training loss: cross-entropy or mse.
    #[arg(long, value_parser = parse_loss)]
    pub loss: Option<LossKind>,
    /// Train on the first N training examples only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Evaluate on the first N test examples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Sample images per side (broken, left robust) of the quoted attack's binarization test;
    /// 0 runs none (default 16).
    #[arg(long)]
    pub binarization_samples: Option<usize>,
    /// Test examples of the quoted attack's convergence run against twice its effort; 0 runs
    /// none (default 200).
    #[arg(long)]
    pub convergence_examples: Option<usize>,
    /// Certified bounds: branch and bound's budget of domains per image; 0 runs α-CROWN and the
    /// margin PGD only (default 50).
    #[arg(long)]
    pub verify_domains: Option<usize>,
    /// Certified bounds on the first N test examples (default 1000).
    #[arg(long)]
    pub verify_limit: Option<usize>,
    /// No certified bounds.
    #[arg(long)]
    pub no_verify: bool,
    /// Hidden widths of a single model named `baseline`, comma-separated (replaces the models).
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Labels of the FGSM attack: true or predicted (replaces the attacks).
    #[arg(long, value_parser = parse_labels)]
    pub attack_labels: Option<LabelMode>,
}

fn parse_loss(s: &str) -> Result<LossKind, String> {
    match s {
        "cross-entropy" => Ok(LossKind::CrossEntropy),
        "mse" => Ok(LossKind::Mse),
        _ => Err(format!("unknown loss {s:?}: cross-entropy or mse")),
    }
}

fn parse_labels(s: &str) -> Result<LabelMode, String> {
    match s {
        "true" => Ok(LabelMode::True),
        "predicted" => Ok(LabelMode::Predicted),
        _ => Err(format!("unknown label mode {s:?}: true or predicted")),
    }
}

impl MatrixArgs {
    /// The matrix: the TOML file (or the default experiment), then each flag given; checked
    /// against `registry`.
    pub fn matrix(&self, registry: &Registry) -> anyhow::Result<Matrix> {
        let mut m = match &self.config {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                Matrix::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => {
                advrob_experiment::presets::preset(self.preset.as_deref().unwrap_or("default"))?
            }
        };
        if let Some(v) = &self.name {
            m.name = v.clone();
        }
        if let Some(v) = &self.dataset {
            m.datasets = v.clone();
        }
        if let Some(v) = &self.dataset_dir {
            m.dataset_dir = Some(v.clone());
        }
        if let Some(v) = &self.backends {
            m.backends = v.clone();
        }
        if let Some(v) = &self.seeds {
            m.seeds = v.clone();
        }
        if let Some(n) = self.num_seeds {
            anyhow::ensure!(n >= 1, "invalid --num-seeds: must be at least 1");
            anyhow::ensure!(n <= 10_000, "invalid --num-seeds: {n} is more than 10000");
            let first = m.seeds.first().copied().unwrap_or(42);
            m.seeds = (0..n)
                .map(|i| first.checked_add(i))
                .collect::<Option<_>>()
                .ok_or_else(|| {
                    anyhow::anyhow!("invalid --num-seeds: {first} + {n} seeds overflow")
                })?;
        }
        // a preset on CIFAR-10 alone: the field's budgets, not MNIST's (a matrix file keeps its own)
        let cifar = match &m.dataset_dir {
            Some(d) => d.join(advrob_data::cifar::ARCHIVE).is_file(),
            None => m.datasets == ["cifar10"],
        };
        if cifar && self.config.is_none() {
            m = m.with_cifar10_budgets();
        }
        if let Some(v) = &self.eps {
            m.eps = v.clone();
        }
        if let Some(v) = self.epochs {
            m.train.epochs = v;
            for model in &mut m.models {
                model.epochs = None;
            }
        }
        if let Some(v) = self.batch_size {
            m.train.batch_size = v;
        }
        if let Some(v) = self.loss {
            m.train.loss = v;
        }
        if let Some(v) = self.train_limit {
            m.train.train_limit = Some(v);
        }
        if let Some(v) = self.test_limit {
            m.eval.test_limit = Some(v);
        }
        if let Some(v) = self.binarization_samples {
            m.eval.binarization_samples = v;
        }
        if let Some(v) = self.verify_domains {
            m.verify.max_domains = v;
        }
        if let Some(v) = self.verify_limit {
            m.verify.test_limit = Some(v);
        }
        if self.no_verify {
            m.verify.enabled = false;
        }
        if let Some(v) = self.convergence_examples {
            m.eval.convergence_examples = v;
        }
        if let Some(v) = &self.hidden {
            m.models = vec![ModelSpec {
                hidden: v.clone(),
                ..ModelSpec::default()
            }];
            // a transfer attack's surrogate went with the other models
            m.attacks.retain(|a| a.kind != TRANSFER);
        }
        if let Some(v) = self.attack_labels {
            m.attacks = vec![AttackSpec::new("fgsm", &Fgsm::with_labels(v))];
        }
        if self.cumulative_eps {
            for a in m.attacks.iter_mut().filter(|a| a.kind == "fgsm") {
                a.params
                    .insert("cumulative".into(), serde_json::Value::Bool(true));
            }
        }
        m.check(registry)?;
        Ok(m)
    }
}

/// `backends`, or every backend compiled into this build when none is given.
pub fn backends_or_compiled(backends: Vec<String>) -> Vec<String> {
    if backends.is_empty() {
        advrob_model::backend::compiled_backends()
            .into_iter()
            .map(String::from)
            .collect()
    } else {
        backends
    }
}

/// What `evaluate` takes of a matrix: the attacks and their ε grid, the data, the backends and
/// seeds of one foreign model (no presets, no training settings: nothing is trained).
#[derive(Debug, Clone, Args)]
pub struct EvaluateMatrixArgs {
    /// TOML matrix whose attacks, ε grid, seeds and evaluation settings to use (its models are
    /// ignored: the model is the one given by --weights). Default: the default experiment's.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Evaluate into an --out that holds another matrix (for instance the same model on another
    /// backend): the records stay apart by their keys.
    #[arg(long)]
    pub extend: bool,
    /// Run name (default: evaluate-<model>).
    #[arg(long)]
    pub name: Option<String>,
    /// Datasets, comma-separated: mnist, fashion-mnist, cifar10.
    #[arg(long, value_delimiter = ',')]
    pub dataset: Option<Vec<String>>,
    /// Load the four IDX files, or CIFAR-10's cifar-10-binary.tar.gz, from this directory as they
    /// are (no download, no canonical checksum).
    #[arg(long)]
    pub dataset_dir: Option<PathBuf>,
    /// Backends, comma-separated, among those compiled in.
    #[arg(long, value_delimiter = ',')]
    pub backends: Option<Vec<String>>,
    /// Seeds of the attacks' random draws, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub seeds: Option<Vec<u64>>,
    /// Number of seeds, from the first (`--num-seeds 3`: 42, 43, 44).
    #[arg(long, conflicts_with = "seeds")]
    pub num_seeds: Option<u64>,
    /// ε grid, comma-separated.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    pub eps: Option<Vec<f64>>,
    /// Evaluate on the first N test examples only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Sample images per side (broken, left robust) of the quoted attack's binarization test;
    /// 0 runs none (default 16).
    #[arg(long)]
    pub binarization_samples: Option<usize>,
    /// Test examples of the quoted attack's convergence run against twice its effort; 0 runs
    /// none (default 200).
    #[arg(long)]
    pub convergence_examples: Option<usize>,
    /// The hidden widths of an MLP (--arch mlp), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// FGSM alone, against the true or the predicted labels (replaces the attacks).
    #[arg(long, value_parser = parse_labels)]
    pub attack_labels: Option<LabelMode>,
}

impl EvaluateMatrixArgs {
    /// As the matrix arguments of a run, the training settings left at the matrix's own.
    pub fn matrix_args(&self) -> MatrixArgs {
        MatrixArgs {
            config: self.config.clone(),
            preset: None,
            extend: self.extend,
            cumulative_eps: false,
            name: self.name.clone(),
            dataset: self.dataset.clone(),
            dataset_dir: self.dataset_dir.clone(),
            backends: self.backends.clone(),
            seeds: self.seeds.clone(),
            num_seeds: self.num_seeds,
            eps: self.eps.clone(),
            epochs: None,
            batch_size: None,
            loss: None,
            train_limit: None,
            test_limit: self.test_limit,
            binarization_samples: self.binarization_samples,
            convergence_examples: self.convergence_examples,
            verify_domains: None,
            verify_limit: None,
            no_verify: false,
            hidden: self.hidden.clone(),
            attack_labels: self.attack_labels,
        }
    }
}

/// `bench-runner evaluate`: someone's trained model, from an ONNX file or PyTorch weights.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    /// The model as an ONNX file (`torch.onnx.export(model, x, "model.onnx")`): any architecture
    /// of the supported operators, images in [0, 1] as its input.
    #[arg(long, conflicts_with_all = ["weights", "arch", "names", "spec"], required_unless_present = "weights")]
    pub onnx: Option<PathBuf>,
    /// The weights: a PyTorch `state_dict` saved with `safetensors.torch.save_file`, for one of
    /// the architectures of --arch.
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// A TOML file describing the model (`arch`, `hidden`, `[names]`, `[normalize]`); the flags
    /// below override it.
    #[arg(long)]
    pub spec: Option<PathBuf>,
    /// The architecture: mlp (its widths with --hidden), lenet, fgsm-tutorial, madry-cnn.
    #[arg(long, value_parser = parse_arch)]
    pub arch: Option<Arch>,
    /// advrob's module names mapped to PyTorch's where they differ: `layers.0=fc1,layers.1=fc2`.
    #[arg(long, value_delimiter = ',', value_parser = parse_pair)]
    pub names: Option<Vec<(String, String)>>,
    /// The standardisation the model was trained with, `mean,std` (MNIST's usual: 0.1307,0.3081),
    /// applied inside the model: attacks still work on images in [0, 1].
    #[arg(long, value_delimiter = ',', num_args = 1)]
    pub normalize: Option<Vec<f64>>,
    /// The input quantisation the model is deployed with: each pixel rounded to one of this many
    /// levels in [0, 1] before the network (as advrob's `gm-quantize` model).
    #[arg(long)]
    pub quantize: Option<u32>,
    /// The factor the model's logits are multiplied by at deployment (as advrob's
    /// `gm-saturated-logits` model).
    #[arg(long)]
    pub logit_scale: Option<f64>,
    /// Name of the model in tables (default: the weights file's stem).
    #[arg(long)]
    pub model_name: Option<String>,
}

/// What `evaluate --spec` reads.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The architecture.
    #[serde(default)]
    pub arch: Option<Arch>,
    /// Hidden widths of an MLP.
    #[serde(default)]
    pub hidden: Option<Vec<usize>>,
    /// advrob's module names → PyTorch's.
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
    /// The standardisation.
    #[serde(default)]
    pub normalize: Option<advrob_model::Normalize>,
    /// Input quantisation levels at deployment.
    #[serde(default)]
    pub quantize: Option<u32>,
    /// Logit factor at deployment.
    #[serde(default)]
    pub logit_scale: Option<f64>,
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    serde_json::from_value(serde_json::Value::String(s.into()))
        .map_err(|_| format!("unknown architecture {s:?}: mlp, lenet, fgsm-tutorial or madry-cnn"))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(a, b)| (a.trim().to_string(), b.trim().to_string()))
        .ok_or_else(|| format!("{s:?} is not advrob_name=pytorch_name"))
}

impl EvaluateArgs {
    /// The model to evaluate, from the spec file and the flags (`hidden`: an MLP's widths).
    pub fn model(&self, hidden: Option<Vec<usize>>) -> anyhow::Result<ModelSpec> {
        let mut file = match &self.spec {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
                toml::from_str::<ModelFile>(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?
            }
            None => ModelFile::default(),
        };
        if let Some(pairs) = &self.names {
            let mut given = std::collections::BTreeSet::new();
            for (k, _) in pairs {
                anyhow::ensure!(
                    given.insert(k.as_str()),
                    "invalid --names: {k} is mapped twice"
                );
            }
            file.names.extend(pairs.iter().cloned());
        }
        let normalize = match self.normalize.as_deref() {
            Some([mean, std]) => Some(advrob_model::Normalize {
                mean: *mean,
                std: *std,
            }),
            Some(other) => anyhow::bail!(
                "invalid --normalize: {other:?}: give mean,std (MNIST's usual: 0.1307,0.3081)"
            ),
            None => file.normalize,
        };
        let file_path = self
            .onnx
            .as_ref()
            .or(self.weights.as_ref())
            .ok_or_else(|| anyhow::anyhow!("give the model: --onnx FILE or --weights FILE"))?;
        let stem = file_path
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_else(|| "model".into());
        let arch = if self.onnx.is_some() {
            Arch::Onnx
        } else {
            self.arch.or(file.arch).ok_or_else(|| {
                anyhow::anyhow!("which architecture? give --arch (mlp, lenet, fgsm-tutorial, madry-cnn) or arch in --spec, or the model as --onnx FILE")
            })?
        };
        Ok(ModelSpec {
            name: self.model_name.clone().unwrap_or(stem),
            arch,
            hidden: hidden.or(file.hidden).unwrap_or_else(|| vec![128]),
            weights: Some(file_path.clone()),
            names: file.names,
            normalize,
            quantize: self.quantize.or(file.quantize),
            logit_scale: self.logit_scale.or(file.logit_scale),
            ..ModelSpec::default()
        })
    }
}

impl EvaluateArgs {
    /// The matrix that evaluates the model: `matrix`'s data, grid, limits and backends, its
    /// attacks without the transfer attack (there is no surrogate), this one model.
    pub fn matrix(&self, args: &MatrixArgs, registry: &Registry) -> anyhow::Result<Matrix> {
        let mut m = args.matrix(registry)?;
        let model = self.model(args.hidden.clone())?;
        m.name = args
            .name
            .clone()
            .unwrap_or_else(|| format!("evaluate-{}", model.name));
        m.preset = "evaluate".into();
        m.models = vec![model];
        m.attacks.retain(|a| a.kind != TRANSFER);
        m.check(registry)?;
        Ok(m)
    }
}
