//! Running a matrix: load (or download) the data, train or load each model, attack it over the ε
//! grid, and write the records, skipping whatever an earlier invocation already finished.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use advrob_attack::{Attack, Fgsm};
use advrob_data::{Dataset, DatasetKind, Mirror, sha256_hex};
use advrob_eval::evaluate;
use advrob_model::{MlpConfig, Plain, TrainConfig, TrainRecord, backend, checkpoint, train};
use anyhow::Context;

use crate::matrix::{AttackSpec, Matrix, ModelSpec};
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

/// The attack an [`AttackSpec`] describes.
pub fn build_attack(spec: &AttackSpec) -> Box<dyn Attack> {
    match spec {
        AttackSpec::Fgsm { labels } => Box::new(Fgsm::with_labels(*labels)),
    }
}

/// The configs a model of the matrix is built and trained with.
pub fn model_configs(spec: &ModelSpec, matrix: &Matrix, seed: u64) -> (MlpConfig, TrainConfig) {
    let mlp = MlpConfig::new()
        .with_hidden(spec.hidden.clone())
        .with_dropout(spec.dropout)
        .with_seed(seed);
    let train = TrainConfig::new()
        .with_epochs(matrix.train.epochs)
        .with_batch_size(matrix.train.batch_size)
        .with_lr(matrix.train.lr)
        .with_loss(matrix.train.loss)
        .with_seed(seed);
    (mlp, train)
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
        run_dataset(
            matrix,
            opts,
            &ds,
            &ds_name,
            &records_path,
            &mut records,
            &mut summary,
        )?;
    }
    Ok(summary)
}

/// Every backend, seed and model of `matrix` on one dataset.
fn run_dataset(
    matrix: &Matrix,
    opts: &RunOptions,
    ds: &Dataset,
    ds_name: &str,
    records_path: &Path,
    records: &mut BTreeMap<String, Record>,
    summary: &mut RunSummary,
) -> anyhow::Result<()> {
    let train_split = match matrix.train.train_limit {
        Some(n) => ds.train.take(n),
        None => ds.train.clone(),
    };
    let test_split = match matrix.eval.test_limit {
        Some(n) => ds.test.take(n),
        None => ds.test.clone(),
    };
    let attacks: Vec<Box<dyn Attack>> = matrix.attacks.iter().map(build_attack).collect();
    for backend_name in &matrix.backends {
        let device = backend::device(backend_name)?;
        for &seed in &matrix.seeds {
            for spec in &matrix.models {
                let (mlp_cfg, train_cfg) = model_configs(spec, matrix, seed);
                let model_key = sha256_hex(
                    serde_json::to_string(&(
                        json(&mlp_cfg)?,
                        json(&train_cfg)?,
                        ds.fingerprint(),
                        train_split.len(),
                        backend_name,
                        "none",
                    ))?
                    .as_bytes(),
                )[..16]
                    .to_string();
                let todo: Vec<(usize, Vec<f64>)> = attacks
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let eps: Vec<f64> = matrix
                            .eps
                            .iter()
                            .copied()
                            .filter(|&e| {
                                !records.contains_key(&record_key(&model_key, &a.name(), e))
                            })
                            .collect();
                        (i, eps)
                    })
                    .filter(|(_, eps)| !eps.is_empty())
                    .collect();
                let done = attacks.len() * matrix.eps.len()
                    - todo.iter().map(|(_, e)| e.len()).sum::<usize>();
                summary.skipped_records += done;
                if todo.is_empty() {
                    log::info!(
                        "{} on {backend_name}, seed {seed}: all records present",
                        spec.name
                    );
                    continue;
                }
                let ckpt = opts
                    .out
                    .join("models")
                    .join(format!("{}-{backend_name}-s{seed}-{model_key}", spec.name));
                let (model, ckpt_sha, train_seconds, from_cache) = if checkpoint::exists(&ckpt) {
                    let (model, _, sha) = checkpoint::load(&ckpt, &device)?;
                    summary.loaded += 1;
                    (model, sha, 0.0, true)
                } else {
                    let model = mlp_cfg.init(&device)?;
                    let batches = train_split.len().div_ceil(train_cfg.batch_size) as u64;
                    let mut phase = Phase::new(
                        format!("train {} ({backend_name}, seed {seed})", spec.name),
                        batches * train_cfg.epochs as u64,
                    );
                    let (model, rec) = train(
                        model,
                        &train_split,
                        &train_cfg,
                        &device,
                        &mut Plain,
                        &mut |p| {
                            let pos = (p.epoch as u64 - 1) * p.batches as u64 + p.batch as u64;
                            phase.set(pos, Some(&format!("epoch {}/{}", p.epoch, p.epochs)));
                        },
                    )?;
                    let last = rec
                        .epochs
                        .last()
                        .map(|e| (e.loss, e.accuracy))
                        .unwrap_or_default();
                    phase.finish(&format!(
                        "done in {:.1}s, loss {:.4}, train accuracy {:.4}",
                        rec.seconds, last.0, last.1
                    ));
                    write_json(&ckpt.join("train.json"), &(&train_cfg, &rec))?;
                    checkpoint::export_safetensors(&model, &ckpt.join("model.safetensors"))?;
                    // the weights go last: a checkpoint is complete once they exist
                    let sha = checkpoint::save(&model, &mlp_cfg, &ckpt)?;
                    summary.trained += 1;
                    (model, sha, rec.seconds, false)
                };
                for (ai, eps) in todo {
                    let attack = &attacks[ai];
                    let batches = test_split.len().div_ceil(matrix.eval.batch_size) as u64;
                    let mut phase = Phase::new(
                        format!("{} vs {} ({backend_name})", spec.name, attack.name()),
                        batches,
                    );
                    let evals = evaluate(
                        &model,
                        attack.as_ref(),
                        &test_split,
                        &eps,
                        matrix.eval.batch_size,
                        &device,
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
                        records.insert(
                            key.clone(),
                            Record {
                                key,
                                run: matrix.name.clone(),
                                model: spec.name.clone(),
                                defense: "none".into(),
                                attack: attack.name(),
                                backend: backend_name.clone(),
                                device: format!("{device:?}"),
                                seed,
                                dataset: ds_name.to_string(),
                                dataset_verified: ds.verified.is_some(),
                                dataset_files: ds.files.clone(),
                                model_config: json(&mlp_cfg)?,
                                train_config: json(&train_cfg)?,
                                train_examples: train_split.len(),
                                checkpoint_sha256: ckpt_sha.clone(),
                                train_seconds,
                                from_cache,
                                eval: ev,
                                versions: Versions::current(),
                                unix_time,
                            },
                        );
                        summary.new_records += 1;
                    }
                    // after every (model, attack): a kill loses at most the evaluation under way
                    write_records(records_path, records)?;
                }
            }
        }
    }
    Ok(())
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> anyhow::Result<()> {
    advrob_data::atomic_write(path, serde_json::to_string_pretty(v)?.as_bytes())?;
    Ok(())
}

/// The training record kept beside a checkpoint by [`run`].
pub fn read_train_record(ckpt: &Path) -> anyhow::Result<(TrainConfig, TrainRecord)> {
    let p = ckpt.join("train.json");
    let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
    serde_json::from_str(&text).with_context(|| p.display().to_string())
}
