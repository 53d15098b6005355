//! Running a matrix: load (or download) the data, train or load each model, attack it over the ε
//! grid, and write the records, skipping whatever an earlier invocation already finished. The
//! runner prints nothing: it reports where it is to an [`Observer`] and logs through `log`.

use std::path::PathBuf;

use advrob_data::{Dataset, Mirror, Split};
use advrob_model::backend;
use burn::tensor::Device;

use crate::data::{DataSource, load_data};
use crate::error::{ExperimentError, Result};
use crate::layout::RunDir;
use crate::matrix::Matrix;
use crate::registry::{Described, Registry};
use crate::store::{RecordLog, read_run};

mod evaluate;
mod events;
mod matrix_file;
mod models;
mod shard;

pub use events::{Event, Observer, Quiet, RunSummary};
pub use matrix_file::{check_matrix, matrix_file, write_matrix};
pub use models::{TrainFile, model_configs, read_train_file};
pub use shard::Shard;

use evaluate::EvalContext;
use matrix_file::refuse_old_records;
use models::{Models, warn_slow_convolutions};

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

pub(super) fn json<T: serde::Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| ExperimentError::invalid("settings", e.to_string()))
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

/// One (dataset, backend, seed) cell of a matrix: what its models train on, where they compute.
pub(super) struct Cell<'a> {
    /// The cell's place in the matrix's order (datasets, then backends, then seeds).
    pub(super) index: usize,
    /// The dataset's place among the matrix's datasets.
    pub(super) dataset: usize,
    pub(super) ds: &'a Dataset,
    pub(super) ds_name: &'a str,
    pub(super) train_split: &'a Split,
    pub(super) backend: &'a str,
    pub(super) device: &'a Device,
    pub(super) seed: u64,
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
pub(super) fn train_models_awake(
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::store::read_records;

    /// Two models (the second fine-tuned from the first) under two attacks at two ε, on a small
    /// synthetic dataset written into `dir`; the run goes to `dir/<out>`.
    fn small(dir: &Path, out: &str) -> (Matrix, RunOptions) {
        let ds = dir.join("ds");
        if !ds.exists() {
            advrob_data::synthetic::write_dataset(&ds, 120, 40, 3).expect("dataset");
        }
        let mut m = Matrix::from_toml(
            r#"
name = "small"
eps = [0.0, 0.2]
backends = ["ndarray"]
[train]
epochs = 1
batch_size = 20
[[models]]
name = "base"
hidden = [8]
[[models]]
name = "tuned"
from = "base"
defense = { kind = "adversarial-training", eps = 0.1 }
[[attacks]]
kind = "fgsm"
[[attacks]]
kind = "pgd"
steps = 3
"#,
        )
        .expect("matrix");
        m.dataset_dir = Some(ds);
        (
            m,
            RunOptions::new(dir.join(out), dir.join("data"), Vec::new()),
        )
    }

    fn keys(opts: &RunOptions) -> BTreeSet<String> {
        read_records(&RunDir::new(&opts.out))
            .expect("records")
            .into_iter()
            .map(|r| r.key)
            .collect()
    }

    /// The records of a run with what differs between invocations (times) left out.
    fn results(opts: &RunOptions) -> Vec<(String, u64, u64)> {
        let mut out: Vec<_> = read_records(&RunDir::new(&opts.out))
            .expect("records")
            .into_iter()
            .map(|r| {
                (
                    r.key,
                    r.eval.adversarial_accuracy.to_bits(),
                    r.eval.clean_accuracy.to_bits(),
                )
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_run_resumes_where_it_stopped_and_a_finished_one_does_nothing() {
        let dir = tempfile::tempdir().expect("temp");
        let (m, opts) = small(dir.path(), "out");
        let reg = Registry::default();
        let first = run(&m, &opts, &reg, &mut Quiet).expect("run");
        // 2 models × 2 attacks × 2 ε
        assert_eq!((first.new_records, first.trained), (8, 2));
        let whole = results(&opts);
        let again = run(&m, &opts, &reg, &mut Quiet).expect("again");
        assert_eq!(
            again,
            RunSummary {
                new_records: 0,
                skipped_records: 8,
                trained: 0,
                loaded: 0
            }
        );
        // killed after the first model's records: only the rest is done, from the checkpoints
        let run_dir = RunDir::new(&opts.out);
        let logs = crate::store::logs(&run_dir).expect("logs");
        let text = std::fs::read_to_string(&logs[0]).expect("log");
        let kept: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"model\":\"base\""))
            .collect();
        assert_eq!(kept.len(), 4);
        std::fs::write(&logs[0], kept.join("\n") + "\n").expect("cut");
        std::fs::remove_dir_all(run_dir.observations()).expect("observations");
        let resumed = run(&m, &opts, &reg, &mut Quiet).expect("resume");
        assert_eq!(
            (
                resumed.new_records,
                resumed.skipped_records,
                resumed.trained
            ),
            (4, 4, 0)
        );
        assert_eq!(results(&opts), whole, "the same numbers as the whole run");
        // and the observations of both checkpoints, redone
        let observed = crate::observe::read_all(&run_dir).expect("observations");
        assert_eq!(observed.len(), 2);
    }

    #[test]
    fn shards_cover_every_unit_once_and_give_the_records_of_one_run() {
        let dir = tempfile::tempdir().expect("temp");
        let reg = Registry::default();
        let (m, whole) = small(dir.path(), "whole");
        run(&m, &whole, &reg, &mut Quiet).expect("whole");
        let (_, mut sharded) = small(dir.path(), "sharded");
        let mut parts = Vec::new();
        for i in 0..3 {
            sharded.shard = Some(Shard { index: i, count: 3 });
            let s = run(&m, &sharded, &reg, &mut Quiet).expect("shard");
            parts.push(s.new_records);
        }
        // 4 units (model, attack) of 2 ε each over 3 shards: 2, 1, 1 units
        assert_eq!(parts, [4, 2, 2]);
        assert_eq!(keys(&sharded), keys(&whole));
        assert_eq!(results(&sharded), results(&whole));
    }

    #[test]
    fn jobs_split_the_work_and_write_what_one_job_writes() {
        let dir = tempfile::tempdir().expect("temp");
        let reg = Registry::default();
        let (m, one) = small(dir.path(), "one");
        run(&m, &one, &reg, &mut Quiet).expect("one job");
        let (_, two) = small(dir.path(), "two");
        let (mut a, mut b) = (Quiet, Quiet);
        let s = run_jobs(&m, &two, &reg, &mut [&mut a, &mut b]).expect("two jobs");
        assert_eq!(
            (s.new_records, s.trained),
            (8, 2),
            "no record or model twice"
        );
        assert_eq!(results(&two), results(&one));
        // two logs, one per job, whichever job did what
        assert!(
            !crate::store::logs(&RunDir::new(&two.out))
                .expect("logs")
                .is_empty()
        );
    }
}
