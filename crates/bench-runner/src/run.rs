//! Running a matrix: load (or download) the data, train or load each model, attack it over the ε
//! grid, and write the records, skipping whatever an earlier invocation already finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use advrob_attack::{Attack, Transfer};
use advrob_data::{Dataset, DatasetKind, Mirror, Split, sha256_hex};
use advrob_defense_adversarial_training::{AdversarialRetraining, AdversarialTraining};
use advrob_defense_distillation::Distillation;
use advrob_defense_gradient_masking::GradientMasking;
use advrob_defense_label_smoothing::LabelSmoothing;
use advrob_eval::evaluate;
use advrob_model::{
    Defense, Deployed, MlpConfig, Stage, TrainConfig, TrainSetup, Undefended, backend, checkpoint,
};
use anyhow::Context;
use burn::tensor::Device;

use crate::matrix::{AttackSpec, DefenseSpec, Matrix, ModelSpec};
use crate::progress::Phase;
use crate::record::{Record, Versions, read_records, record_key, write_records};

/// Where a run reads its data from and writes its results to.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run directory: `records.jsonl`, `matrix.toml` and `models/`.
    pub out: PathBuf,
    /// Where datasets are downloaded to (`<data_dir>/<dataset>/`).
    pub data_dir: PathBuf,
    /// Mirrors to fetch from; empty means the public ones.
    pub mirrors: Vec<Mirror>,
}

/// Name of the records file inside a run directory.
pub const RECORDS_FILE: &str = "records.jsonl";

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunSummary {
    /// Records written by this invocation.
    pub new_records: usize,
    /// Records already present and skipped.
    pub skipped_records: usize,
    /// Models trained by this invocation.
    pub trained: usize,
    /// Models loaded from checkpoints.
    pub loaded: usize,
}

/// Where one dataset of a matrix comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataSource {
    /// A known dataset, fetched and verified into the data directory.
    Named(String),
    /// IDX files loaded from a directory as they are.
    Dir(PathBuf),
}

impl DataSource {
    /// `dir` if given, else verified MNIST: the data of a benchmark.
    pub fn dir_or_mnist(dir: Option<PathBuf>) -> DataSource {
        dir.map_or_else(|| DataSource::Named("mnist".into()), DataSource::Dir)
    }

    /// The sources of a matrix: its `dataset_dir` if set, else each of its `datasets`.
    pub fn of(matrix: &Matrix) -> Vec<DataSource> {
        match &matrix.dataset_dir {
            Some(d) => vec![DataSource::Dir(d.clone())],
            None => matrix
                .datasets
                .iter()
                .cloned()
                .map(DataSource::Named)
                .collect(),
        }
    }
}

/// Loads one dataset: from a directory as it is, or fetched and verified into `data_dir` (from
/// `mirrors`, the public ones when empty). Returns it with its name for records.
pub fn load_data(
    source: &DataSource,
    data_dir: &Path,
    mirrors: &[Mirror],
) -> anyhow::Result<(Dataset, String)> {
    let name = match source {
        DataSource::Dir(dir) => {
            let ds = Dataset::load_dir(dir)?;
            return Ok((ds, dir.display().to_string()));
        }
        DataSource::Named(n) => n,
    };
    let kind = DatasetKind::from_name(name)?;
    let report = fetch_dataset(kind, data_dir, mirrors)?;
    for (file, from) in &report.fetched {
        log::info!("fetched {file} from {from} (SHA-256 verified)");
    }
    let ds = Dataset::load_dir(&report.dir)?;
    anyhow::ensure!(
        ds.verified == Some(kind),
        "{}: files changed after verification",
        report.dir.display()
    );
    Ok((ds, kind.name().to_string()))
}

/// [`advrob_data::fetch`] with a hint for the user when no mirror could be reached.
pub fn fetch_dataset(
    kind: DatasetKind,
    data_dir: &Path,
    mirrors: &[Mirror],
) -> anyhow::Result<advrob_data::FetchReport> {
    advrob_data::fetch(kind, data_dir, mirrors).map_err(|e| match e {
        advrob_data::DataError::AllMirrorsFailed { .. } => anyhow::anyhow!(
            "{e}\nhint: point --mirror (or ADVROB_MIRROR) at a directory or URL holding the {} .gz files",
            kind.name()
        ),
        other => other.into(),
    })
}

/// The attack an [`AttackSpec`] describes; `surrogate` gives the trained model a transfer attack
/// names (an error for a transfer attack without one).
pub fn build_attack(
    spec: &AttackSpec,
    surrogate: &mut dyn FnMut(&str) -> anyhow::Result<Deployed>,
) -> anyhow::Result<Box<dyn Attack>> {
    Ok(match spec {
        AttackSpec::Fgsm(f) => Box::new(*f),
        AttackSpec::Pgd(p) => Box::new(*p),
        AttackSpec::Transfer {
            surrogate: name,
            attack,
        } => Box::new(Transfer {
            surrogate_name: name.clone(),
            surrogate: Box::new(surrogate(name)?),
            attack: build_attack(attack, surrogate)?,
        }),
    })
}

/// The defense a model of the matrix is trained with; `teacher` is the trained model its spec
/// names as `teacher` (distillation, adversarial retraining).
pub fn build_defense(
    spec: &ModelSpec,
    teacher: Option<Deployed>,
) -> anyhow::Result<Box<dyn Defense>> {
    Ok(match &spec.defense {
        DefenseSpec::None => Box::new(Undefended),
        DefenseSpec::AdversarialTraining(c) => Box::new(AdversarialTraining::new(c.clone())),
        DefenseSpec::GradientMasking(c) => Box::new(GradientMasking::new(c.clone())),
        DefenseSpec::LabelSmoothing(c) => Box::new(LabelSmoothing::new(c.clone())),
        DefenseSpec::Distillation(c) => {
            let d = Distillation::new(c.clone());
            Box::new(match teacher {
                Some(t) => d.with_teacher(t.mlp),
                None => d,
            })
        }
        DefenseSpec::AdversarialRetraining(c) => Box::new(AdversarialRetraining {
            config: c.clone(),
            source: teacher.ok_or_else(|| {
                anyhow::anyhow!(
                    "model {}: adversarial retraining needs a teacher",
                    spec.name
                )
            })?,
        }),
    })
}

/// The configs a model of the matrix is built and trained with: the matrix's training settings
/// with the model's own overrides.
pub fn model_configs(spec: &ModelSpec, matrix: &Matrix, seed: u64) -> (MlpConfig, TrainConfig) {
    let mlp = MlpConfig::new()
        .with_hidden(spec.hidden.clone())
        .with_dropout(spec.dropout)
        .with_seed(seed);
    let train = TrainConfig::new()
        .with_epochs(spec.epochs.unwrap_or(matrix.train.epochs))
        .with_batch_size(spec.batch_size.unwrap_or(matrix.train.batch_size))
        .with_lr(matrix.train.lr)
        .with_loss(spec.loss.unwrap_or(matrix.train.loss))
        .with_seed(seed.wrapping_add(spec.seed_offset));
    (mlp.with_seed(seed.wrapping_add(spec.seed_offset)), train)
}

fn json<T: serde::Serialize>(v: &T) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(v)?)
}

/// Runs `matrix`, resuming from whatever `opts.out` already holds.
pub fn run(matrix: &Matrix, opts: &RunOptions) -> anyhow::Result<RunSummary> {
    matrix.check()?;
    std::fs::create_dir_all(&opts.out).with_context(|| format!("{}", opts.out.display()))?;
    advrob_data::atomic_write(
        &opts.out.join("matrix.toml"),
        toml::to_string_pretty(matrix)?.as_bytes(),
    )?;
    let records_path = opts.out.join(RECORDS_FILE);
    let mut records: BTreeMap<String, Record> = read_records(&records_path)?
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
    let mut summary = RunSummary::default();
    for source in DataSource::of(matrix) {
        let (ds, ds_name) = load_data(&source, &opts.data_dir, &opts.mirrors)?;
        let train_split = match matrix.train.train_limit {
            Some(n) => ds.train.take(n),
            None => ds.train.clone(),
        };
        let test_split = match matrix.eval.test_limit {
            Some(n) => ds.test.take(n),
            None => ds.test.clone(),
        };
        for backend_name in &matrix.backends {
            let device = backend::device(backend_name)?;
            for &seed in &matrix.seeds {
                let mut models =
                    Models::new(matrix, opts, &ds, &train_split, backend_name, &device, seed)?;
                let mut ctx = EvalContext {
                    matrix,
                    ds: &ds,
                    ds_name: &ds_name,
                    test_split: &test_split,
                    records_path: &records_path,
                    records: &mut records,
                    summary: &mut summary,
                };
                for i in 0..matrix.models.len() {
                    ctx.evaluate_model(&mut models, i)?;
                }
                ctx.summary.trained += models.trained;
                ctx.summary.loaded += models.loaded;
            }
        }
    }
    Ok(summary)
}

/// What is known of a trained model besides its weights.
#[derive(Debug, Clone)]
struct ModelInfo {
    checkpoint_sha256: String,
    train_seconds: f64,
    from_cache: bool,
    stages: Vec<Stage>,
}

/// What `run` keeps beside a checkpoint: how the model was trained.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainFile {
    /// The architecture.
    pub model_config: MlpConfig,
    /// The training settings.
    pub train_config: TrainConfig,
    /// The defense, as the matrix gave it.
    pub defense: DefenseSpec,
    /// The model it was fine-tuned from, if any.
    pub from: Option<String>,
    /// The teacher (or attack source) it learned from, if any.
    pub teacher: Option<String>,
    /// Every training stage with its per-epoch statistics.
    pub stages: Vec<Stage>,
}

/// The models of a matrix for one (dataset, backend, seed): their cache keys and checkpoints,
/// trained or loaded on demand, each at most once.
struct Models<'a> {
    matrix: &'a Matrix,
    train_split: &'a Split,
    backend: &'a str,
    device: &'a Device,
    seed: u64,
    /// Per model: cache key, checkpoint directory, architecture, training settings.
    plans: Vec<(String, PathBuf, MlpConfig, TrainConfig)>,
    ready: BTreeMap<usize, (Deployed, ModelInfo)>,
    trained: usize,
    loaded: usize,
}

impl<'a> Models<'a> {
    fn new(
        matrix: &'a Matrix,
        opts: &RunOptions,
        ds: &Dataset,
        train_split: &'a Split,
        backend: &'a str,
        device: &'a Device,
        seed: u64,
    ) -> anyhow::Result<Self> {
        let mut plans: Vec<(String, PathBuf, MlpConfig, TrainConfig)> = Vec::new();
        for spec in &matrix.models {
            let (mut mlp_cfg, train_cfg) = model_configs(spec, matrix, seed);
            let dep = |name: &Option<String>| -> Option<usize> {
                name.as_ref()
                    .and_then(|n| matrix.models.iter().position(|m| &m.name == n))
            };
            let (from, teacher) = (dep(&spec.from), dep(&spec.teacher));
            if let Some(f) = from {
                // a fine-tuned model keeps the architecture of the one it starts from
                let base = &plans[f].2;
                mlp_cfg.hidden = base.hidden.clone();
                mlp_cfg.dropout = base.dropout;
            }
            let key = sha256_hex(
                serde_json::to_string(&(
                    json(&mlp_cfg)?,
                    json(&train_cfg)?,
                    json(&spec.defense)?,
                    from.map(|i| plans[i].0.clone()),
                    teacher.map(|i| plans[i].0.clone()),
                    ds.fingerprint(),
                    train_split.len(),
                    backend,
                ))?
                .as_bytes(),
            )[..16]
                .to_string();
            let dir = opts
                .out
                .join("models")
                .join(format!("{}-{backend}-s{seed}-{key}", spec.name));
            plans.push((key, dir, mlp_cfg, train_cfg));
        }
        Ok(Self {
            matrix,
            train_split,
            backend,
            device,
            seed,
            plans,
            ready: BTreeMap::new(),
            trained: 0,
            loaded: 0,
        })
    }

    fn index(&self, name: &str) -> anyhow::Result<usize> {
        self.matrix
            .models
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| anyhow::anyhow!("no model named {name}"))
    }

    /// Model `i`, from memory, its checkpoint, or trained now (with what it builds on first).
    fn get(&mut self, i: usize) -> anyhow::Result<(Deployed, ModelInfo)> {
        if let Some(m) = self.ready.get(&i) {
            return Ok(m.clone());
        }
        let spec = &self.matrix.models[i];
        let (_, dir, mlp_cfg, train_cfg) = self.plans[i].clone();
        let got = if checkpoint::exists(&dir) {
            let (model, _, sha) = checkpoint::load_deployed(&dir, self.device)?;
            let stages = read_train_file(&dir).map(|t| t.stages).unwrap_or_default();
            self.loaded += 1;
            (
                model,
                ModelInfo {
                    checkpoint_sha256: sha,
                    train_seconds: 0.0,
                    from_cache: true,
                    stages,
                },
            )
        } else {
            let init = match &spec.from {
                Some(f) => Some(self.get(self.index(f)?)?.0.mlp),
                None => None,
            };
            let teacher = match &spec.teacher {
                Some(t) => Some(self.get(self.index(t)?)?.0),
                None => None,
            };
            let defense = build_defense(spec, teacher)?;
            let mut setup = TrainSetup::new(
                mlp_cfg.clone(),
                train_cfg.clone(),
                self.train_split,
                self.device,
            );
            if let Some(m) = init {
                setup = setup.with_init(m);
            }
            let label = format!("train {} ({}, seed {})", spec.name, self.backend, self.seed);
            let mut phase: Option<(String, Phase)> = None;
            let trained = defense.fit(&setup, &mut |stage, p| {
                if phase.as_ref().is_none_or(|(s, _)| s != stage) {
                    if let Some((_, old)) = phase.take() {
                        old.finish("done");
                    }
                    let name = if stage == "train" {
                        label.clone()
                    } else {
                        format!("{label} {stage}")
                    };
                    phase = Some((
                        stage.to_string(),
                        Phase::new(name, (p.batches * p.epochs) as u64),
                    ));
                }
                if let Some((_, ph)) = phase.as_mut() {
                    let pos = (p.epoch as u64 - 1) * p.batches as u64 + p.batch as u64;
                    ph.set(pos, Some(&format!("epoch {}/{}", p.epoch, p.epochs)));
                }
            })?;
            let seconds: f64 = trained.stages.iter().map(|s| s.record.seconds).sum();
            if let Some((_, ph)) = phase {
                let last = trained
                    .stages
                    .last()
                    .and_then(|s| s.record.epochs.last())
                    .map(|e| (e.loss, e.accuracy))
                    .unwrap_or_default();
                ph.finish(&format!(
                    "done in {seconds:.1}s, loss {:.4}, train accuracy {:.4}",
                    last.0, last.1
                ));
            }
            write_json(
                &dir.join(TRAIN_FILE),
                &TrainFile {
                    model_config: mlp_cfg.clone(),
                    train_config: train_cfg,
                    defense: spec.defense.clone(),
                    from: spec.from.clone(),
                    teacher: spec.teacher.clone(),
                    stages: trained.stages.clone(),
                },
            )?;
            checkpoint::export_safetensors(&trained.model.mlp, &dir.join("model.safetensors"))?;
            // the weights go last: a checkpoint is complete once they exist
            let sha = checkpoint::save_deployed(&trained.model, &mlp_cfg, &dir)?;
            self.trained += 1;
            (
                trained.model,
                ModelInfo {
                    checkpoint_sha256: sha,
                    train_seconds: seconds,
                    from_cache: false,
                    stages: trained.stages,
                },
            )
        };
        self.ready.insert(i, got.clone());
        Ok(got)
    }
}

/// Where the records of one dataset go.
struct EvalContext<'a> {
    matrix: &'a Matrix,
    ds: &'a Dataset,
    ds_name: &'a str,
    test_split: &'a Split,
    records_path: &'a Path,
    records: &'a mut BTreeMap<String, Record>,
    summary: &'a mut RunSummary,
}

impl EvalContext<'_> {
    /// Every attack and ε of model `i` that has no record yet.
    fn evaluate_model(&mut self, models: &mut Models<'_>, i: usize) -> anyhow::Result<()> {
        let matrix = self.matrix;
        let spec = &matrix.models[i];
        let (model_key, _, mlp_cfg, train_cfg) = models.plans[i].clone();
        let (backend_name, seed, device) = (models.backend, models.seed, models.device);
        let names: Vec<String> = matrix.attacks.iter().map(AttackSpec::name).collect();
        let todo: Vec<(usize, Vec<f64>)> = names
            .iter()
            .enumerate()
            .map(|(ai, a)| {
                let eps: Vec<f64> = matrix
                    .eps
                    .iter()
                    .copied()
                    .filter(|&e| !self.records.contains_key(&record_key(&model_key, a, e)))
                    .collect();
                (ai, eps)
            })
            .filter(|(_, eps)| !eps.is_empty())
            .collect();
        let done =
            names.len() * matrix.eps.len() - todo.iter().map(|(_, e)| e.len()).sum::<usize>();
        self.summary.skipped_records += done;
        if todo.is_empty() {
            log::info!(
                "{} on {backend_name}, seed {seed}: all records present",
                spec.name
            );
            return Ok(());
        }
        let (model, info) = models.get(i)?;
        for (ai, eps) in todo {
            let attack = build_attack(&matrix.attacks[ai], &mut |name| {
                let i = models.index(name)?;
                Ok(models.get(i)?.0)
            })?;
            let batches = self.test_split.len().div_ceil(matrix.eval.batch_size) as u64;
            let mut phase = Phase::new(
                format!("{} vs {} ({backend_name})", spec.name, attack.name()),
                batches,
            );
            let evals = evaluate(
                &model,
                attack.as_ref(),
                self.test_split,
                &eps,
                matrix.eval.batch_size,
                device,
                &mut |done, _| phase.set(done as u64, None),
            )?;
            let unix_time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let clean = evals.first().map(|e| e.clean_accuracy).unwrap_or(0.0);
            phase.finish(&format!("clean accuracy {clean:.4}"));
            for ev in evals {
                let key = record_key(&model_key, &attack.name(), ev.eps);
                self.records.insert(
                    key.clone(),
                    Record {
                        key,
                        run: matrix.name.clone(),
                        preset: matrix.preset.clone(),
                        model: spec.name.clone(),
                        defense: spec.defense.kind(),
                        defense_config: json(&spec.defense)?,
                        fine_tuned_from: spec.from.clone(),
                        teacher: spec.teacher.clone(),
                        deploy_config: json(&model.config)?,
                        attack: attack.name(),
                        attack_config: json(&matrix.attacks[ai])?,
                        attack_labels: json(&matrix.attacks[ai].labels())?
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        loss: json(&train_cfg.loss)?
                            .as_str()
                            .unwrap_or_default()
                            .to_string(),
                        backend: backend_name.to_string(),
                        device: format!("{device:?}"),
                        seed,
                        dataset: self.ds_name.to_string(),
                        dataset_verified: self.ds.verified.is_some(),
                        dataset_files: self.ds.files.clone(),
                        model_config: json(&mlp_cfg)?,
                        train_config: json(&train_cfg)?,
                        train_examples: models.train_split.len(),
                        checkpoint_sha256: info.checkpoint_sha256.clone(),
                        train_seconds: info.train_seconds,
                        from_cache: info.from_cache,
                        stages: info.stages.clone(),
                        eval: ev,
                        versions: Versions::current(),
                        unix_time,
                    },
                );
                self.summary.new_records += 1;
            }
            // after every (model, attack): a kill loses at most the evaluation under way
            write_records(self.records_path, self.records)?;
        }
        Ok(())
    }
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    advrob_data::atomic_write(path, serde_json::to_string_pretty(v)?.as_bytes())?;
    Ok(())
}

/// File name of the training record kept beside each checkpoint.
pub const TRAIN_FILE: &str = "train.json";

/// The training record kept beside a checkpoint by [`run`].
pub fn read_train_file(ckpt: &Path) -> anyhow::Result<TrainFile> {
    let p = ckpt.join(TRAIN_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| p.display().to_string())
}
