//! Running a matrix: load (or download) the data, train or load each model, attack it over the ε
//! grid, and write the records, skipping whatever an earlier invocation already finished. The
//! runner prints nothing: it reports where it is to an [`Observer`] and logs through `log`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use advrob_data::{Dataset, Mirror, Split, sha256_hex};
use advrob_eval::{EvalRequest, evaluate};
use advrob_model::{
    DeployConfig, Deployed, FgsmTutorialConfig, LenetConfig, MadryCnnConfig, MlpConfig, NetConfig,
    Stage, TrainConfig, TrainSetup, backend, checkpoint,
};
use burn::tensor::Device;

use crate::data::{DataSource, load_data};
use crate::error::{ExperimentError, Result};
use crate::layout::{RunDir, TRAIN_FILE};
use crate::matrix::{Arch, DefenseSpec, Matrix, ModelSpec};
use crate::observe;
use crate::record::{EvalKey, Record, SCHEMA, Versions, record_key};
use crate::registry::{Described, Registry};
use crate::store::{Lock, RecordLog, read_run};

/// Where a run reads its data from and writes its results to.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run directory: `matrix.toml`, `records/` and `models/`.
    pub out: PathBuf,
    /// Where datasets are downloaded to (`<data_dir>/<dataset>/`).
    pub data_dir: PathBuf,
    /// Mirrors to fetch from; empty means the public ones.
    pub mirrors: Vec<Mirror>,
    /// Do only this share of the evaluations (a task of a job array); `None`: all of them.
    pub shard: Option<Shard>,
    /// Run the matrix into a directory that already holds another one ([`check_matrix`]).
    pub extend: bool,
    /// The examples of transfer attacks, crafted once and handed to every target model (shared
    /// by the jobs of [`run_jobs`]; the records are those of crafting them each time).
    pub transfer_cache: std::sync::Arc<advrob_attack::TransferCache>,
}

impl RunOptions {
    /// Every evaluation of the matrix, into `out`, with data from `data_dir` (and `mirrors`).
    pub fn new(
        out: impl Into<PathBuf>,
        data_dir: impl Into<PathBuf>,
        mirrors: Vec<Mirror>,
    ) -> Self {
        Self {
            out: out.into(),
            data_dir: data_dir.into(),
            mirrors,
            shard: None,
            extend: false,
            transfer_cache: Default::default(),
        }
    }
}

/// A deterministic share of a matrix's evaluations: the units of work — one (dataset, backend,
/// seed, model, attack) with its whole ε grid — are numbered in the matrix's order, and shard
/// `index` of `count` takes those whose number is `index` modulo `count`. Every run of the same
/// matrix gives every shard the same units; together the shards cover each unit exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: usize,
    /// How many shards there are.
    pub count: usize,
}

impl Shard {
    /// Parses `i/n` (0 ≤ i < n).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || ExperimentError::invalid("shard", format!("{s:?} is not i/n with 0 ≤ i < n"));
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse::<usize>().map_err(|_| bad())?,
            n.trim().parse::<usize>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }

    /// Whether unit `unit` is this shard's.
    pub fn owns(&self, unit: usize) -> bool {
        unit % self.count == self.index
    }
}

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

/// What a run is doing, for a progress display. Labels are ready to show.
#[derive(Debug, Clone, PartialEq)]
pub enum Event<'a> {
    /// A training stage of a model begins: `total` batches in all.
    StageStarted {
        /// `train baseline (ndarray, seed 42)`, with the stage's name when it is not `train`.
        label: &'a str,
        /// Batches of the stage, all epochs.
        total: u64,
    },
    /// A batch of the current stage is done.
    StageProgress {
        /// Batches done in the stage.
        done: u64,
        /// 1-based epoch.
        epoch: usize,
        /// Epochs of the stage.
        epochs: usize,
    },
    /// The model's training is done.
    TrainFinished {
        /// Wall time of all its stages.
        seconds: f64,
        /// Mean loss of the last epoch of the last stage.
        loss: f64,
        /// Training accuracy of that epoch.
        accuracy: f64,
    },
    /// The evaluation of a model under an attack begins.
    EvalStarted {
        /// `baseline vs fgsm (ndarray)`.
        label: &'a str,
        /// Batches of test examples.
        batches: u64,
    },
    /// A batch of the evaluation is done.
    EvalProgress {
        /// Batches done.
        done: u64,
    },
    /// The evaluation is done.
    EvalFinished {
        /// The model's clean accuracy on the evaluated examples.
        clean_accuracy: f64,
    },
}

/// Receives the [`Event`]s of a run, from the thread of the rayon pool the run computes on (see
/// [`run`]), hence `Send`.
pub trait Observer: Send {
    /// One event.
    fn event(&mut self, event: Event<'_>);
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn event(&mut self, _: Event<'_>) {}
}

/// The configs a model of the matrix is built and trained with: its architecture for images of
/// `image` pixels (the data decides), and the matrix's training settings with the model's own
/// overrides.
pub fn model_configs(
    spec: &ModelSpec,
    matrix: &Matrix,
    seed: u64,
    image: [usize; 2],
) -> (NetConfig, TrainConfig) {
    let seed = seed.wrapping_add(spec.seed_offset);
    let net = match spec.arch {
        Arch::Mlp => NetConfig::Mlp(
            MlpConfig::new()
                .with_input(image[0] * image[1])
                .with_hidden(spec.hidden.clone())
                .with_dropout(spec.dropout)
                .with_seed(seed),
        ),
        Arch::Lenet => NetConfig::Lenet(LenetConfig::new().with_image(image).with_seed(seed)),
        Arch::FgsmTutorial => NetConfig::FgsmTutorial(
            FgsmTutorialConfig::new()
                .with_image(image)
                .with_dropout(spec.dropout)
                .with_seed(seed),
        ),
        Arch::MadryCnn => {
            NetConfig::MadryCnn(MadryCnnConfig::new().with_image(image).with_seed(seed))
        }
    };
    let train = TrainConfig::new()
        .with_epochs(spec.epochs.unwrap_or(matrix.train.epochs))
        .with_batch_size(spec.batch_size.unwrap_or(matrix.train.batch_size))
        .with_lr(matrix.train.lr)
        .with_loss(spec.loss.unwrap_or(matrix.train.loss))
        .with_seed(seed);
    (net, train)
}

fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ExperimentError::invalid("settings", e.to_string()))
}

/// Refuses to add records to a run directory that holds records of an older schema: their keys
/// leave out what changes the numbers, so they could be reused silently.
fn refuse_old_records(dir: &RunDir, records: &[Record]) -> Result<()> {
    if let Some(old) = records
        .iter()
        .map(|r| r.schema)
        .filter(|&s| s < SCHEMA)
        .min()
    {
        return Err(ExperimentError::OlderRecords {
            run: dir.root().to_path_buf(),
            schema: old,
            current: SCHEMA,
        });
    }
    Ok(())
}

/// `matrix` as the TOML a run directory keeps, and its digest.
fn matrix_toml(dir: &RunDir, matrix: &Matrix) -> Result<(String, String)> {
    let toml =
        toml::to_string_pretty(matrix).map_err(|e| ExperimentError::file(dir.matrix(), e))?;
    let digest = sha256_hex(toml.as_bytes())[..16].to_string();
    Ok((toml, digest))
}

/// A run directory's matrix is written once: refuses `matrix` when the directory already holds
/// another one (`matrix.toml`, or one of `matrices/` that an earlier `--extend` or a Slurm
/// submission added), unless `extend` says to add it. Writes nothing.
pub fn check_matrix(dir: &RunDir, matrix: &Matrix, extend: bool) -> Result<()> {
    let path = dir.matrix();
    let old = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExperimentError::io(&path, e)),
    };
    let (toml, _) = matrix_toml(dir, matrix)?;
    let mut want = matrix.clone();
    want.adopt_parent_arch();
    // the same matrix as one the directory holds (read leniently: a file of an older advrob)
    let holds = |text: &str| {
        text == toml
            || toml::from_str::<Matrix>(text).is_ok_and(|mut m| {
                m.adopt_parent_arch();
                m == want
            })
    };
    let mut held = vec![old];
    if let Ok(entries) = std::fs::read_dir(dir.matrices()) {
        held.extend(
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok()),
        );
    }
    if extend || held.iter().any(|t| holds(t)) {
        return Ok(());
    }
    Err(ExperimentError::OtherMatrix { path })
}

/// The file under `matrices/` that holds `matrix` once [`write_matrix`] wrote it.
pub fn matrix_file(dir: &RunDir, matrix: &Matrix) -> Result<PathBuf> {
    let (_, digest) = matrix_toml(dir, matrix)?;
    Ok(own_file(dir, &digest))
}

fn own_file(dir: &RunDir, digest: &str) -> PathBuf {
    dir.matrices().join(format!("{digest}.toml"))
}

/// Writes `matrix.toml` when the directory has none, and the matrix under `matrices/<digest>.toml`
/// (a run with nothing to do writes nothing, so a read-only run directory can be re-read).
/// [`check_matrix`] decides whether it may.
pub fn write_matrix(dir: &RunDir, matrix: &Matrix) -> Result<()> {
    let (toml, digest) = matrix_toml(dir, matrix)?;
    for path in [dir.matrix(), own_file(dir, &digest)] {
        if !path.is_file() {
            advrob_data::atomic_write(&path, toml.as_bytes())?;
        }
    }
    Ok(())
}

/// Runs `matrix` with the attacks and defenses of `registry`, resuming from whatever
/// `opts.out` already holds; `observer` hears where it is. Several runs may write into one
/// directory at once (see [`crate::store`]): they split the models between them and lose nothing.
///
/// The run computes on a thread of the current rayon pool with the pool kept awake
/// ([`backend::keep_awake`]): with two threads or more, one of them spins for work while the run's
/// products are not splitting, instead of sleeping and waking late.
pub fn run(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    backend::keep_awake(|| run_awake(matrix, opts, registry, observer))
}

/// [`run`], on the thread it computes on.
fn run_awake(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    matrix.check(registry)?;
    let dir = RunDir::new(&opts.out);
    check_matrix(&dir, matrix, opts.extend)?;
    let existing = read_run(&dir)?;
    refuse_old_records(&dir, &existing.records)?;
    let attacks: Vec<Described> = matrix
        .attacks
        .iter()
        .map(|a| registry.describe(a))
        .collect::<Result<_>>()?;
    let mut records = existing.settled();
    let mut log = RecordLog::new(&dir);
    let mut summary = RunSummary::default();
    // the test split of the dataset the cells are on, made once per dataset
    let mut test: Option<(usize, Split)> = None;
    for_each_cell(matrix, opts, |cell| {
        if test.as_ref().map(|(d, _)| *d) != Some(cell.dataset) {
            let split = limited(
                &cell.ds.test,
                matrix.eval.test_limit,
                "eval.test_limit",
                cell.ds_name,
            )?;
            test = Some((cell.dataset, split));
        }
        let test_split = test.as_ref().map(|(_, t)| t).expect("made above");
        let mut models = Models::new(matrix, &dir, registry, cell)?;
        let mut ctx = EvalContext {
            matrix,
            registry,
            shard: opts.shard,
            transfer_cache: &opts.transfer_cache,
            cell: cell.index,
            attacks: &attacks,
            ds: cell.ds,
            ds_name: cell.ds_name,
            test_split,
            run: &dir,
            log: &mut log,
            records: &mut records,
            summary: &mut summary,
        };
        ctx.evaluate_cell(&mut models, observer)?;
        ctx.summary.trained += models.trained;
        ctx.summary.loaded += models.loaded;
        Ok(())
    })?;
    Ok(summary)
}

/// The model a record is about: its place in the matrix, its deployed form and where it came from.
#[derive(Clone, Copy)]
struct Evaluated<'m> {
    i: usize,
    model: &'m Deployed,
    info: &'m ModelInfo,
}

/// One (dataset, backend, seed) cell of a matrix: what its models train on, where they compute.
struct Cell<'a> {
    /// The cell's place in the matrix's order (datasets, then backends, then seeds).
    index: usize,
    /// The dataset's place among the matrix's datasets.
    dataset: usize,
    ds: &'a Dataset,
    ds_name: &'a str,
    train_split: &'a Split,
    backend: &'a str,
    device: &'a Device,
    seed: u64,
}

/// Calls `f` on every cell of `matrix` in order, each dataset loaded (and verified) once: the loop
/// [`run`] and [`train_models`] share.
fn for_each_cell(
    matrix: &Matrix,
    opts: &RunOptions,
    mut f: impl FnMut(&Cell<'_>) -> Result<()>,
) -> Result<()> {
    let mut index = 0usize;
    for (dataset, source) in DataSource::of(matrix).into_iter().enumerate() {
        let (ds, ds_name) = load_data(&source, &opts.data_dir, &opts.mirrors)?;
        let train_split = limited(
            &ds.train,
            matrix.train.train_limit,
            "train.train_limit",
            &ds_name,
        )?;
        for backend_name in &matrix.backends {
            let device = backend::device(backend_name)?;
            warn_slow_convolutions(matrix, backend_name);
            for &seed in &matrix.seeds {
                f(&Cell {
                    index,
                    dataset,
                    ds: &ds,
                    ds_name: &ds_name,
                    train_split: &train_split,
                    backend: backend_name,
                    device: &device,
                    seed,
                })?;
                index += 1;
            }
        }
    }
    Ok(())
}

/// Runs `matrix` like [`run`] with one job per observer, each a thread of this process writing
/// its own record log into `opts.out`, the way separate processes would (see [`crate::store`]):
/// the jobs split the models between them through the same locks, so the records, and the tables
/// made from them, are the ones a single job writes; only the order of the log lines differs.
/// Worth it when the backend leaves cores idle (burn-ndarray runs these small models on about one
/// core). The first error of any job is returned once every job has stopped; a job's panic is
/// carried on with its message, as in a single job.
///
/// In the summary `new_records` and `trained` are summed over the jobs (no model is trained twice,
/// no record written twice); `skipped_records` counts what was there before the run (each job
/// either writes or skips every record of the matrix, so a job's own two counts add up to the
/// matrix, less what the others wrote); `loaded` is summed, so a model one job trained and
/// another job then needed counts in both `trained` and `loaded`.
pub fn run_jobs(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    observers: &mut [&mut dyn Observer],
) -> Result<RunSummary> {
    if let [only] = observers {
        return run(matrix, opts, registry, *only);
    }
    // each job computes in a rayon pool of its own, cores ÷ jobs threads (burn-flex's kernels and
    // the host path's products run there), so that the jobs together never ask for more threads
    // than the machine has cores: with one shared pool the jobs' threads wait on each other's work
    // (the default matrix at 1000 images: 53 s -> 59-60 s with 2 jobs on 2 cores)
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = (cores / observers.len()).max(1);
    let results: Vec<Result<RunSummary>> = std::thread::scope(|scope| {
        let handles: Vec<_> = observers
            .iter_mut()
            .map(|observer| {
                scope.spawn(move || {
                    match rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .thread_name(|i| format!("advrob-job-{i}"))
                        .build()
                    {
                        Ok(pool) => pool.install(|| run(matrix, opts, registry, *observer)),
                        // no pool to be had: the job computes on the global one
                        Err(_) => run(matrix, opts, registry, *observer),
                    }
                })
            })
            .collect();
        // a job's panic goes on as it would in a single job, with its own message
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let summaries = results.into_iter().collect::<Result<Vec<_>>>()?;
    let new_records: usize = summaries.iter().map(|s| s.new_records).sum();
    Ok(RunSummary {
        new_records,
        skipped_records: summaries.first().map_or(0, |s| {
            (s.new_records + s.skipped_records).saturating_sub(new_records)
        }),
        trained: summaries.iter().map(|s| s.trained).sum(),
        loaded: summaries.iter().map(|s| s.loaded).sum(),
    })
}

/// Trains (or finds trained) the models of `matrix` named in `names`, and the models they build
/// on, for every dataset, backend and seed, evaluating nothing: the training stage of a job array.
/// Computes as [`run`] does, with the pool kept awake.
pub fn train_models(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    names: &[String],
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    backend::keep_awake(|| train_models_awake(matrix, opts, registry, names, observer))
}

/// [`train_models`], on the thread it computes on.
fn train_models_awake(
    matrix: &Matrix,
    opts: &RunOptions,
    registry: &Registry,
    names: &[String],
    observer: &mut dyn Observer,
) -> Result<RunSummary> {
    matrix.check(registry)?;
    for n in names {
        ensure_model(matrix, n)?;
    }
    let dir = RunDir::new(&opts.out);
    check_matrix(&dir, matrix, opts.extend)?;
    write_matrix(&dir, matrix)?;
    let mut summary = RunSummary::default();
    for_each_cell(matrix, opts, |cell| {
        let mut models = Models::new(matrix, &dir, registry, cell)?;
        for n in names {
            let i = models.index(n)?;
            models.get(i, observer)?;
        }
        summary.trained += models.trained;
        summary.loaded += models.loaded;
        Ok(())
    })?;
    Ok(summary)
}

fn ensure_model(matrix: &Matrix, name: &str) -> Result<()> {
    if matrix.models.iter().any(|m| m.name == name) {
        Ok(())
    } else {
        Err(ExperimentError::invalid(
            "models",
            format!(
                "no model named {name}; the matrix has {}",
                matrix
                    .models
                    .iter()
                    .map(|m| m.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    }
}

/// The first `limit` examples of `split` (all without a limit); none is an error.
fn limited(split: &Split, limit: Option<usize>, field: &str, dataset: &str) -> Result<Split> {
    let s = match limit {
        Some(n) => split.take(n),
        None => split.clone(),
    };
    if split.is_empty() {
        return Err(ExperimentError::invalid(
            "data",
            format!("{dataset} holds no {} examples", field_split(field)),
        ));
    }
    if s.is_empty() {
        return Err(ExperimentError::invalid(
            field,
            format!("no examples of {dataset} to use"),
        ));
    }
    Ok(s)
}

/// `train` or `test`: the split a limit field (`train.train_limit`, `eval.test_limit`) cuts.
fn field_split(field: &str) -> &'static str {
    if field.contains("train") {
        "training"
    } else {
        "test"
    }
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
    pub model_config: NetConfig,
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
    /// The model's name in the matrix it was trained for (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model's cache key (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl TrainFile {
    /// Refuses a checkpoint directory that does not hold model `name` of key `plan.key`: a
    /// directory moved or swapped under `models/` (its own manifest still verifies its files).
    /// Older checkpoints without a name and key are compared by their settings.
    fn check_holds(&self, dir: &Path, name: &str, plan: &Plan) -> Result<()> {
        let holds = match (&self.name, &self.key) {
            (Some(n), Some(k)) => (n.as_str(), k.as_str()) == (name, plan.key.as_str()),
            _ => {
                json(&self.model_config)? == json(&plan.net)?
                    && json(&self.train_config)? == json(&plan.train)?
            }
        };
        if holds {
            return Ok(());
        }
        Err(ExperimentError::file(
            dir,
            format!(
                "holds model {} (key {}), not {name} (key {}): a checkpoint directory was moved or swapped; move it back, or delete it to train {name} again",
                self.name.as_deref().unwrap_or("of other settings"),
                self.key.as_deref().unwrap_or("unknown"),
                plan.key
            ),
        ))
    }
}

/// How one model of the matrix is made, for one (dataset, backend, seed).
#[derive(Debug, Clone)]
struct Plan {
    key: String,
    dir: PathBuf,
    net: NetConfig,
    train: TrainConfig,
    defense_name: String,
    defense_config: serde_json::Value,
}

/// The models of a matrix for one (dataset, backend, seed): their cache keys and checkpoints,
/// trained or loaded on demand, each at most once.
struct Models<'a> {
    matrix: &'a Matrix,
    run: RunDir,
    registry: &'a Registry,
    train_split: &'a Split,
    backend: &'a str,
    device: &'a Device,
    seed: u64,
    plans: Vec<Plan>,
    ready: BTreeMap<usize, (Deployed, ModelInfo)>,
    trained: usize,
    loaded: usize,
}

impl<'a> Models<'a> {
    /// The models of `matrix` for one cell, trained or loaded when first asked for.
    fn new(
        matrix: &'a Matrix,
        dir: &RunDir,
        registry: &'a Registry,
        cell: &Cell<'a>,
    ) -> Result<Self> {
        let Cell {
            ds,
            train_split,
            backend,
            device,
            seed,
            ..
        } = *cell;
        let mut plans: Vec<Plan> = Vec::new();
        for spec in &matrix.models {
            let image = [ds.train.images.rows, ds.train.images.cols];
            let (mut net, train) = model_configs(spec, matrix, seed, image);
            let dep = |name: &Option<String>| -> Option<usize> {
                name.as_ref()
                    .and_then(|n| matrix.models.iter().position(|m| &m.name == n))
            };
            let (from, teacher) = (dep(&spec.from), dep(&spec.teacher));
            if let Some(f) = from {
                // a fine-tuned model keeps the architecture of the one it starts from
                net = plans[f].net.clone().with_seed(net.seed());
            }
            let imported = match &spec.weights {
                Some(w) => Some(imported_digest(w, spec)?),
                None => None,
            };
            let (defense_name, defense_config, _) = registry
                .describe_defense(&spec.defense)
                .map_err(|e| e.in_model(&spec.name))?;
            let key = sha256_hex(
                serde_json::to_string(&(
                    net.key_json(),
                    json(&train)?,
                    &defense_config,
                    from.map(|i| plans[i].key.clone()),
                    teacher.map(|i| plans[i].key.clone()),
                    ds.fingerprint(),
                    train_split.len(),
                    backend::numerics(backend),
                    imported,
                ))
                .map_err(|e| ExperimentError::invalid("settings", e.to_string()))?
                .as_bytes(),
            )[..16]
                .to_string();
            plans.push(Plan {
                dir: dir.checkpoint(&spec.name, backend, seed, &key),
                key,
                net,
                train,
                defense_name,
                defense_config,
            });
        }
        Ok(Self {
            matrix,
            run: dir.clone(),
            registry,
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

    fn index(&self, name: &str) -> Result<usize> {
        self.matrix
            .models
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| ExperimentError::invalid("models", format!("no model named {name}")))
    }

    /// Model `i`, from memory, its checkpoint, or trained now (with what it builds on first).
    fn get(&mut self, i: usize, observer: &mut dyn Observer) -> Result<(Deployed, ModelInfo)> {
        if let Some(m) = self.ready.get(&i) {
            return Ok(m.clone());
        }
        // another writer may be training it: wait, then load what it wrote
        let _lock = Lock::wait(&self.run.lock(&self.plans[i].dir, "train"))?;
        let got = if checkpoint::exists(&self.plans[i].dir) {
            let dir = &self.plans[i].dir;
            // its files verified against its manifest first, then what it holds
            let (model, _, sha) = checkpoint::load(dir, self.device)?;
            let train_file = read_train_file(dir)?;
            train_file.check_holds(dir, &self.matrix.models[i].name, &self.plans[i])?;
            let stages = train_file.stages;
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
            self.train(i, observer)?
        };
        self.ready.insert(i, got.clone());
        Ok(got)
    }

    /// Trains model `i` (loading or training what it builds on first) and writes its checkpoint;
    /// a model of imported weights is imported instead.
    fn train(&mut self, i: usize, observer: &mut dyn Observer) -> Result<(Deployed, ModelInfo)> {
        let spec = &self.matrix.models[i];
        if let Some(weights) = &spec.weights {
            return self.import(i, weights);
        }
        let init = match &spec.from {
            Some(f) => Some(self.get(self.index(f)?, observer)?.0.net),
            None => None,
        };
        let teacher = match &spec.teacher {
            Some(t) => Some(self.get(self.index(t)?, observer)?.0),
            None => None,
        };
        let defense = self
            .registry
            .defense(&spec.defense, teacher)
            .map_err(|e| e.in_model(&spec.name))?;
        let plan = self.plans[i].clone();
        let mut setup = TrainSetup::new(
            plan.net.clone(),
            plan.train.clone(),
            self.train_split,
            self.device,
        );
        if let Some(m) = init {
            setup = setup.with_init(m);
        }
        let label = format!("train {} ({}, seed {})", spec.name, self.backend, self.seed);
        let mut stage_now: Option<String> = None;
        let trained = defense.fit(&setup, &mut |stage, p| {
            let total = (p.batches * p.epochs) as u64;
            if stage_now.as_deref() != Some(stage) {
                stage_now = Some(stage.to_string());
                let name = if stage == "train" {
                    label.clone()
                } else {
                    format!("{label} {stage}")
                };
                observer.event(Event::StageStarted {
                    label: &name,
                    total,
                });
            }
            observer.event(Event::StageProgress {
                done: (p.epoch as u64 - 1) * p.batches as u64 + p.batch as u64,
                epoch: p.epoch,
                epochs: p.epochs,
            });
        })?;
        let seconds: f64 = trained.stages.iter().map(|s| s.record.seconds).sum();
        let (loss, accuracy) = trained
            .stages
            .last()
            .and_then(|s| s.record.epochs.last())
            .map(|e| (e.loss, e.accuracy))
            .unwrap_or_default();
        observer.event(Event::TrainFinished {
            seconds,
            loss,
            accuracy,
        });
        let sha = self.save(i, &trained.model, &trained.stages)?;
        self.trained += 1;
        Ok((
            trained.model,
            ModelInfo {
                checkpoint_sha256: sha,
                train_seconds: seconds,
                from_cache: false,
                stages: trained.stages,
            },
        ))
    }
}

impl Models<'_> {
    /// Writes model `i`'s training record and checkpoint (its manifest last: the checkpoint is
    /// complete once it exists); returns the weights' digest.
    fn save(&self, i: usize, model: &Deployed, stages: &[Stage]) -> Result<String> {
        let spec = &self.matrix.models[i];
        let plan = &self.plans[i];
        write_json(
            &plan.dir.join(TRAIN_FILE),
            &TrainFile {
                model_config: plan.net.clone(),
                train_config: plan.train.clone(),
                defense: spec.defense.clone(),
                from: spec.from.clone(),
                teacher: spec.teacher.clone(),
                stages: stages.to_vec(),
                name: Some(spec.name.clone()),
                key: Some(plan.key.clone()),
            },
        )?;
        Ok(checkpoint::save(model, &plan.net, &plan.dir)?)
    }

    /// Model `i` from the PyTorch weights `weights`, saved as a checkpoint like a trained one.
    fn import(&mut self, i: usize, weights: &Path) -> Result<(Deployed, ModelInfo)> {
        let spec = &self.matrix.models[i];
        let plan = self.plans[i].clone();
        let net = checkpoint::import_pytorch(weights, &plan.net, &spec.names, self.device)
            .map_err(|e| ExperimentError::from(e).in_model(&spec.name))?;
        let model = Deployed {
            net,
            config: DeployConfig::new().with_normalize(spec.normalize),
        };
        let sha = self.save(i, &model, &[])?;
        self.trained += 1;
        Ok((
            model,
            ModelInfo {
                checkpoint_sha256: sha,
                train_seconds: 0.0,
                from_cache: false,
                stages: Vec::new(),
            },
        ))
    }
}

/// The digest of an imported model's weights file, names and standardisation: part of its key.
fn imported_digest(weights: &Path, spec: &ModelSpec) -> Result<String> {
    let bytes =
        std::fs::read(weights).map_err(|e| ExperimentError::io(weights, e).in_model(&spec.name))?;
    Ok(sha256_hex(
        format!(
            "{}{:?}{:?}",
            sha256_hex(&bytes),
            spec.names,
            spec.normalize.map(|n| (n.mean.to_bits(), n.std.to_bits()))
        )
        .as_bytes(),
    ))
}

/// Says so when a matrix trains the FGSM tutorial's network on burn-ndarray: its channel dropout
/// keeps its training in burn's graph, where a convolution is an im2col product on one thread (a
/// LeNet epoch of 60,000 images took 37 s that way and 18 s on burn-flex, 2026-12-06). LeNet and
/// Madry et al.'s CNN train on the host there instead (`advrob_model`'s host training), faster
/// than on burn-flex: a LeNet epoch on 10,000 images at 22–23k samples/s against flex's 4.5k.
fn warn_slow_convolutions(matrix: &Matrix, backend_name: &str) {
    let cnns = cnns_trained_slowly(matrix, backend_name);
    if !cnns.is_empty() {
        log::warn!(
            "{} on ndarray: the FGSM tutorial's network trains in burn's graph there (its channel dropout), about twice burn-flex's time; the flex backend trains it faster",
            cnns.join(", ")
        );
    }
}

/// The CNNs `matrix` trains on `backend_name` through burn's graph where that is burn-ndarray
/// (the FGSM tutorial's network); imported weights are only evaluated, and the other CNNs train
/// on the host.
fn cnns_trained_slowly<'m>(matrix: &'m Matrix, backend_name: &str) -> Vec<&'m str> {
    if backend_name != "ndarray" {
        return Vec::new();
    }
    matrix
        .models
        .iter()
        .filter(|m| m.arch == Arch::FgsmTutorial && m.weights.is_none())
        .map(|m| m.name.as_str())
        .collect()
}

/// Where the records of one dataset go.
struct EvalContext<'a> {
    matrix: &'a Matrix,
    registry: &'a Registry,
    /// The share of the units this run does.
    shard: Option<Shard>,
    transfer_cache: &'a std::sync::Arc<advrob_attack::TransferCache>,
    /// The (dataset, backend, seed) cell, counted in the matrix's order.
    cell: usize,
    attacks: &'a [Described],
    ds: &'a Dataset,
    ds_name: &'a str,
    test_split: &'a Split,
    run: &'a RunDir,
    log: &'a mut RecordLog,
    /// The keys already settled ([`crate::RunRecords::settled`]).
    records: &'a mut BTreeSet<String>,
    summary: &'a mut RunSummary,
}

impl EvalContext<'_> {
    /// The key of the evaluation of attack `ai` (everything but the model and ε).
    fn eval_key(&self, ai: usize) -> String {
        let a = &self.attacks[ai];
        let grid_dependent = a.info.family == advrob_attack::Family::Ensemble || !a.info.bounded;
        EvalKey {
            attack: &a.config,
            grid: grid_dependent.then(|| grid(self.matrix, ai)),
            data: &self.ds.fingerprint(),
            test_examples: self.test_split.len(),
            batch_size: self.matrix.eval.batch_size,
        }
        .digest()
    }

    /// The attacks of model `i` this run does: all, or its shard's.
    fn owned(&self, i: usize) -> Vec<usize> {
        let (n_models, n_attacks) = (self.matrix.models.len(), self.attacks.len());
        (0..n_attacks)
            .filter(|ai| {
                let unit = (self.cell * n_models + i) * n_attacks + ai;
                self.shard.is_none_or(|s| s.owns(unit))
            })
            .collect()
    }

    /// Per attack this run does, the budgets of model `i` without a record yet.
    fn todo(&self, models: &Models<'_>, i: usize) -> Vec<(usize, Vec<f64>)> {
        let model_key = &models.plans[i].key;
        self.owned(i)
            .into_iter()
            .map(|ai| {
                let key = self.eval_key(ai);
                let eps: Vec<f64> = grid(self.matrix, ai)
                    .iter()
                    .copied()
                    .filter(|&e| {
                        !self.records.contains(&record_key(
                            model_key,
                            &self.attacks[ai].name,
                            &key,
                            e,
                        ))
                    })
                    .collect();
                (ai, eps)
            })
            .filter(|(_, eps)| !eps.is_empty())
            .collect()
    }

    /// Whether model `i` has records left to write, or its checkpoint has no observations yet
    /// ([`crate::observe`]: a run killed after its last record redoes them).
    fn has_work(&self, models: &Models<'_>, i: usize) -> bool {
        !self.todo(models, i).is_empty() || !self.observed(models, i)
    }

    /// Whether model `i`'s checkpoint has its observations.
    fn observed(&self, models: &Models<'_>, i: usize) -> bool {
        self.run.observations_of(&models.plans[i].dir).exists()
    }

    /// Measures model `i` for the report ([`crate::observe`]): the probe on the run's test
    /// examples and the example grid under the matrix's [`observe::grid_attack`].
    fn observe(
        &self,
        models: &Models<'_>,
        i: usize,
        model: &Deployed,
        info: &ModelInfo,
    ) -> Result<()> {
        let plan = &models.plans[i];
        let probe = advrob_eval::probe(model, plan.net.classes(), self.test_split, models.device)?;
        let grid = match observe::grid_attack(self.attacks.iter().map(|a| &a.info)) {
            Some(ai) => {
                let attack = self
                    .registry
                    .attack(&self.matrix.attacks[ai], &mut |name| {
                        Err(ExperimentError::invalid(
                            "attack",
                            format!("{name}: a transfer attack draws no example grid"),
                        ))
                    })?;
                Some(observe::example_grid(
                    model,
                    (&self.attacks[ai].name, attack.as_ref()),
                    self.test_split,
                    grid(self.matrix, ai),
                    models.device,
                )?)
            }
            None => None,
        };
        let obs = observe::Observations {
            model: self.matrix.models[i].name.clone(),
            model_key: plan.key.clone(),
            backend: models.backend.to_string(),
            seed: models.seed,
            checkpoint_sha256: info.checkpoint_sha256.clone(),
            test_examples: self.test_split.len(),
            probe,
            grid,
        };
        observe::write(self.run, &plan.dir, &obs)
    }

    /// Counts model `i`'s records (of this run's share) as already there.
    fn skip(&mut self, models: &Models<'_>, i: usize) {
        self.summary.skipped_records += self
            .owned(i)
            .into_iter()
            .map(|ai| grid(self.matrix, ai).len())
            .sum::<usize>();
        log::info!(
            "{} on {}, seed {}: all records present",
            self.matrix.models[i].name,
            models.backend,
            models.seed
        );
    }

    /// Re-reads the run's records: another writer may have added some.
    fn refresh(&mut self) -> Result<()> {
        self.records.extend(read_run(self.run)?.settled());
        Ok(())
    }

    /// Evaluates every model of the cell that has work left; a model another writer is
    /// evaluating is waited for at the end, and then evaluated only if that writer left work.
    fn evaluate_cell(
        &mut self,
        models: &mut Models<'_>,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let (matrix, dir) = (self.matrix, self.run);
        let mut deferred = Vec::new();
        for i in 0..matrix.models.len() {
            if !self.has_work(models, i) {
                self.skip(models, i);
                continue;
            }
            // another writer evaluating this model: come back to it at the end
            match Lock::try_take(&dir.lock(&models.plans[i].dir, "eval"))? {
                Some(lock) => self.evaluate_what_is_left(models, i, lock, observer)?,
                None => deferred.push(i),
            }
        }
        for i in deferred {
            let lock = Lock::wait(&dir.lock(&models.plans[i].dir, "eval"))?;
            self.evaluate_what_is_left(models, i, lock, observer)?;
        }
        Ok(())
    }

    /// With model `i`'s evaluation lock held: re-reads the records (another writer may have
    /// evaluated the model since this one read them) and evaluates what no writer has.
    fn evaluate_what_is_left(
        &mut self,
        models: &mut Models<'_>,
        i: usize,
        lock: Lock,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        self.refresh()?;
        if self.has_work(models, i) {
            self.evaluate_model(models, i, lock, observer)
        } else {
            self.skip(models, i);
            Ok(())
        }
    }

    /// Every attack and ε of model `i` that has no record yet; `_lock` (the model's evaluation
    /// lock) is held until it returns.
    fn evaluate_model(
        &mut self,
        models: &mut Models<'_>,
        i: usize,
        _lock: Lock,
        observer: &mut dyn Observer,
    ) -> Result<()> {
        let matrix = self.matrix;
        let spec = &matrix.models[i];
        let (backend_name, seed) = (models.backend, models.seed);
        let todo = self.todo(models, i);
        self.summary.skipped_records += self
            .owned(i)
            .into_iter()
            .map(|ai| grid(matrix, ai).len())
            .sum::<usize>()
            - todo.iter().map(|(_, e)| e.len()).sum::<usize>();
        let (model, info) = models.get(i, observer)?;
        // the matrix is kept once its first model is there (a run refused before, or with
        // nothing to do, writes nothing)
        write_matrix(self.run, matrix)?;
        for (ai, eps) in todo {
            let spec_ai = &matrix.attacks[ai];
            let mut attack = self.registry.attack(spec_ai, &mut |name| {
                let i = models.index(name)?;
                Ok(models.get(i, observer)?.0)
            })?;
            // a transfer attack's examples do not depend on the target: crafted once per
            // surrogate (its weights' digest), attack, batch, budgets and seed for every model
            if let Some(name) = self.registry.surrogate_of(spec_ai)? {
                let surrogate = models.index(&name)?;
                let digest = models.get(surrogate, observer)?.1.checkpoint_sha256;
                let key = format!("{digest}/{}", self.attacks[ai].config);
                attack = match advrob_attack::Cached::new(attack, key, self.transfer_cache.clone())
                {
                    Ok(cached) => Box::new(cached),
                    Err(attack) => attack,
                };
            }
            let described = &self.attacks[ai];
            let batches = self.test_split.len().div_ceil(matrix.eval.batch_size) as u64;
            let label = format!("{} vs {} ({backend_name})", spec.name, described.name);
            observer.event(Event::EvalStarted {
                label: &label,
                batches,
            });
            let evals = evaluate(
                &model,
                attack.as_ref(),
                &EvalRequest {
                    data: self.test_split,
                    eps: &eps,
                    batch_size: matrix.eval.batch_size,
                    seed,
                    device: models.device,
                },
                &mut |done, _| observer.event(Event::EvalProgress { done: done as u64 }),
            )?;
            let clean_accuracy = evals.first().map(|e| e.clean_accuracy).unwrap_or(0.0);
            observer.event(Event::EvalFinished { clean_accuracy });
            let key = self.eval_key(ai);
            let mut new = Vec::new();
            for ev in evals {
                let evaluated = Evaluated {
                    i,
                    model: &model,
                    info: &info,
                };
                new.push(self.record(models, &evaluated, described, &key, ev)?);
            }
            // after every (model, attack): a kill loses at most the evaluation under way
            self.log.append(&new)?;
            for r in new {
                self.records.insert(r.key);
                self.summary.new_records += 1;
            }
        }
        if !self.observed(models, i) {
            self.observe(models, i, &model, &info)?;
        }
        Ok(())
    }

    /// The record of the evaluated model under `attack` for one ε's metrics.
    fn record(
        &self,
        models: &Models<'_>,
        evaluated: &Evaluated<'_>,
        attack: &Described,
        eval_key: &str,
        eval: advrob_eval::EvalRecord,
    ) -> Result<Record> {
        let Evaluated { i, model, info } = *evaluated;
        let spec = &self.matrix.models[i];
        let plan = &models.plans[i];
        let unix_time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let as_str = |v: serde_json::Value| v.as_str().unwrap_or_default().to_string();
        Ok(Record {
            schema: SCHEMA,
            key: record_key(&plan.key, &attack.name, eval_key, eval.eps),
            run: self.matrix.name.clone(),
            preset: self.matrix.preset.clone(),
            model: spec.name.clone(),
            model_key: plan.key.clone(),
            defense: plan.defense_name.clone(),
            defense_config: plan.defense_config.clone(),
            fine_tuned_from: spec.from.clone(),
            teacher: spec.teacher.clone(),
            deploy_config: json(&model.config)?,
            attack: attack.name.clone(),
            attack_config: attack.config.clone(),
            attack_info: Some(attack.info.clone()),
            attack_labels: as_str(json(&attack.info.labels)?),
            loss: as_str(json(&plan.train.loss)?),
            backend: models.backend.to_string(),
            device: format!("{:?}", models.device),
            seed: models.seed,
            dataset: self.ds_name.to_string(),
            dataset_verified: self.ds.verified.is_some(),
            dataset_files: self.ds.files.clone(),
            model_config: json(&plan.net)?,
            train_config: json(&plan.train)?,
            train_examples: models.train_split.len(),
            checkpoint_sha256: info.checkpoint_sha256.clone(),
            train_seconds: info.train_seconds,
            from_cache: info.from_cache,
            stages: info.stages.clone(),
            eval,
            versions: Versions::current(),
            unix_time,
        })
    }
}

/// The ε grid of attack `ai`: its own budgets, else the matrix's.
fn grid(matrix: &Matrix, ai: usize) -> &[f64] {
    matrix.attacks[ai].eps.as_deref().unwrap_or(&matrix.eps)
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| ExperimentError::file(path, e))?;
    advrob_data::atomic_write(path, text.as_bytes())?;
    Ok(())
}

/// The training record kept beside a checkpoint by [`run`]; a damaged one is an error that says
/// how to recover.
pub fn read_train_file(ckpt: &Path) -> Result<TrainFile> {
    let p = ckpt.join(TRAIN_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| ExperimentError::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| {
        ExperimentError::file(
            &p,
            format!("{e}: delete {} to train it again", ckpt.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cnns_trained_in_burns_graph_on_ndarray_are_warned_about() {
        // LeNet and the Madry CNN train on the host on ndarray: no warning
        let mut cnn = crate::presets::cnn();
        assert!(cnns_trained_slowly(&cnn, "ndarray").is_empty());
        for m in &mut cnn.models {
            m.arch = Arch::FgsmTutorial;
        }
        let trained = cnns_trained_slowly(&cnn, "ndarray").len();
        assert!(trained > 0 && trained == cnn.models.len());
        assert!(cnns_trained_slowly(&cnn, "flex").is_empty());
        assert!(cnns_trained_slowly(&crate::presets::default_experiment(), "ndarray").is_empty());
        // a CNN imported from PyTorch weights is evaluated, not trained
        cnn.models[0].weights = Some(std::path::PathBuf::from("tutorial.safetensors"));
        assert_eq!(cnns_trained_slowly(&cnn, "ndarray").len(), trained - 1);
    }
}
