//! `bench-runner`: trains, attacks and evaluates an experiment matrix, writes JSON Lines records,
//! and reports on them. Glue: the science is in the advrob libraries.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use advrob_experiment::{Matrix, Registry, RunDir, RunOptions, Shard, run, train_models};
use bench_runner::cli::{
    DataArgs, EvaluateArgs, EvaluateMatrixArgs, JobsArgs, MatrixArgs, backends_or_compiled,
};
use bench_runner::progress::{Bars, run_with_bars};
use bench_runner::slurm::SlurmArgs;
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "bench-runner", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a matrix; records go to `<out>/records/`, finished work is skipped on a rerun.
    Run {
        #[command(flatten)]
        matrix: Box<MatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Run directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Do only shard i of n of the evaluations (`i/n`), or `slurm` for the array task's own
        /// (`SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT`).
        #[arg(long)]
        shard: Option<String>,
        #[command(flatten)]
        jobs: JobsArgs,
    },
    /// Train (or find trained) models of a matrix without evaluating them.
    Train {
        #[command(flatten)]
        matrix: Box<MatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Run directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The models, comma-separated (default: all).
        #[arg(long, value_delimiter = ',', conflicts_with = "stage")]
        models: Option<Vec<String>>,
        /// A training stage (models whose dependencies are in earlier stages) ...
        #[arg(long, requires = "task")]
        stage: Option<usize>,
        /// ... and the model of it to train, by index (`$SLURM_ARRAY_TASK_ID`).
        #[arg(long, requires = "stage")]
        task: Option<usize>,
    },
    /// Submit a matrix to Slurm as job arrays (training stages, evaluation shards, report).
    Slurm {
        #[command(flatten)]
        matrix: Box<MatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Run directory, on a filesystem every node sees.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        slurm: bench_runner::slurm::SlurmArgs,
    },
    /// Evaluate a model trained elsewhere (an ONNX file, or PyTorch weights saved as safetensors)
    /// with the default attacks, and write the same report as a matrix run: `bench-runner
    /// evaluate --onnx model.onnx --dataset mnist`.
    Evaluate {
        #[command(flatten)]
        model: EvaluateArgs,
        #[command(flatten)]
        matrix: Box<EvaluateMatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Run directory (default: runs/evaluate-<model>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the report goes (default: reports/evaluate-<model>).
        #[arg(long)]
        reports: Option<PathBuf>,
    },
    /// Report on one or more run directories: tables, plots, the masking verdict, the per-example
    /// worst case and index.html. Reads the run directories only (records, observations,
    /// agreement): neither the data nor the checkpoints.
    Report {
        /// Run directories (each holding records/ and observations/).
        #[arg(long = "run", default_value = "runs/reproduce")]
        runs: Vec<PathBuf>,
        /// Where the tables go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// Upgrade the records of run directories written by an earlier advrob, once (their attacks'
    /// typed metadata, which reading a run no longer derives).
    Migrate {
        /// Run directories.
        #[arg(long = "run", required = true)]
        runs: Vec<PathBuf>,
    },
    /// Cross-backend agreement: each model of a run loaded on every other backend given, clean
    /// logits and FGSM compared example by example; keeps the rows in the run directory
    /// (agreement.json, which the report reads) and writes agreement.{csv,md}.
    Agree {
        /// The run directory (records/ and models/).
        #[arg(long = "run", default_value = "runs/reproduce")]
        run: PathBuf,
        /// Backends to compare with, comma-separated (default: every compiled-in one).
        #[arg(long, value_delimiter = ',')]
        backends: Vec<String>,
        /// Where the run's dataset was downloaded (nothing is downloaded here).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Where the tables go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
    /// The certified side of robust accuracy for one saved model: per ε, the test images verified
    /// robust (a proof: IBP, CROWN, α-CROWN, branch and bound with β-CROWN), attacked (a checked
    /// counterexample), misclassified or unknown; robust accuracy lies between the verified share
    /// and the verified plus unknown share.
    Verify {
        #[command(flatten)]
        args: bench_runner::verify::VerifyArgs,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Randomized smoothing (Cohen et al. 2019) for one saved model: the smoothed classifier's
    /// certified L2 radius on each test image (Monte-Carlo noise, a Clopper–Pearson bound) and its
    /// certified accuracy against the radius — its own threat model, never an L∞ figure.
    Smooth {
        #[command(flatten)]
        args: bench_runner::smooth::SmoothArgs,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Download and verify a dataset into the data directory.
    Download {
        /// mnist, fashion-mnist or cifar10.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List the backends compiled into this build.
    Backends,
}

fn main() -> ExitCode {
    // wgpu's adapter search also tries OpenGL, whose EGL logs an error on machines without a display
    // even when Vulkan is used; RUST_LOG overrides this
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,wgpu_hal::gles::egl=off"),
    )
    .init();
    match real_main(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", bench_runner::error_message(&e));
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let registry = Registry::default();
    match cli.cmd {
        Cmd::Run {
            matrix,
            data,
            out,
            shard,
            jobs,
        } => run_cmd(&matrix, &data, out, shard, &jobs, &registry),
        Cmd::Train {
            matrix,
            data,
            out,
            models,
            stage,
            task,
        } => train_cmd(&matrix, &data, out, models, stage, task, &registry),
        Cmd::Slurm {
            matrix,
            data,
            out,
            slurm,
        } => slurm_cmd(&matrix, &data, &out, &slurm, &registry),
        Cmd::Evaluate {
            model,
            matrix,
            data,
            out,
            reports,
        } => evaluate_cmd(
            &model,
            &matrix.matrix_args(),
            &data,
            out,
            reports,
            &registry,
        ),
        Cmd::Report { runs, reports } => report_cmd(&runs, &reports, &registry),
        Cmd::Migrate { runs } => migrate_cmd(&runs, &registry),
        Cmd::Agree {
            run,
            backends,
            data_dir,
            reports,
        } => agree_cmd(run, backends, &data_dir, &reports, &registry),
        Cmd::Verify { args, data } => bench_runner::verify::run(&args, &data),
        Cmd::Smooth { args, data } => bench_runner::smooth::run(&args, &data),
        Cmd::Download { dataset, data } => download_cmd(&dataset, &data),
        Cmd::Backends => {
            backends_cmd();
            Ok(())
        }
    }
}

/// The run directory: `--out`, else `runs/<matrix name>`.
fn out_dir(out: Option<PathBuf>, m: &Matrix) -> PathBuf {
    out.unwrap_or_else(|| PathBuf::from("runs").join(&m.name))
}

/// `run`: runs a matrix (or one shard of its evaluations) and prints what was done.
fn run_cmd(
    matrix: &MatrixArgs,
    data: &DataArgs,
    out: Option<PathBuf>,
    shard: Option<String>,
    jobs: &JobsArgs,
    registry: &Registry,
) -> anyhow::Result<()> {
    let m = matrix.matrix(registry)?;
    let out = out_dir(out, &m);
    let mut options = RunOptions::new(out.clone(), data.data_dir.clone(), data.mirrors());
    options.extend = matrix.extend;
    options.shard = match shard.as_deref() {
        None => None,
        Some("slurm") => {
            let (index, count) = bench_runner::slurm::array_task()?;
            Some(Shard::parse(&format!("{index}/{count}"))?)
        }
        Some(s) => Some(Shard::parse(s)?),
    };
    let s = run_with_bars(&m, &options, registry, jobs.jobs(&m, false))?;
    println!(
        "{}: {} new records, {} already there; {} models trained, {} loaded",
        RunDir::new(&out).record_logs().display(),
        s.new_records,
        s.skipped_records,
        s.trained,
        s.loaded
    );
    Ok(())
}

/// `train`: trains (or finds trained) the models asked for, without evaluating them.
fn train_cmd(
    matrix: &MatrixArgs,
    data: &DataArgs,
    out: Option<PathBuf>,
    models: Option<Vec<String>>,
    stage: Option<usize>,
    task: Option<usize>,
    registry: &Registry,
) -> anyhow::Result<()> {
    let m = matrix.matrix(registry)?;
    let out = out_dir(out, &m);
    let names = model_names(&m, models, stage, task)?;
    let mut options = RunOptions::new(out.clone(), data.data_dir.clone(), data.mirrors());
    options.extend = matrix.extend;
    let s = train_models(&m, &options, registry, &names, &mut Bars::default())?;
    println!(
        "{}: {} models trained, {} loaded",
        out.display(),
        s.trained,
        s.loaded
    );
    Ok(())
}

/// The models `train` trains: those named, the one of a stage's task, or all of the matrix's.
fn model_names(
    m: &Matrix,
    models: Option<Vec<String>>,
    stage: Option<usize>,
    task: Option<usize>,
) -> anyhow::Result<Vec<String>> {
    Ok(match (models, stage, task) {
        (Some(v), _, _) => v,
        (None, Some(k), Some(t)) => {
            let stages = m.training_stages();
            let of = stages.get(k).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --stage {k}: the matrix has {} stages",
                    stages.len()
                )
            })?;
            vec![of.get(t).cloned().ok_or_else(|| {
                anyhow::anyhow!("invalid --task {t}: stage {k} has {} models", of.len())
            })?]
        }
        _ => m.models.iter().map(|x| x.name.clone()).collect(),
    })
}

/// `slurm`: submits a matrix as job arrays and prints the job ids.
fn slurm_cmd(
    matrix: &MatrixArgs,
    data: &DataArgs,
    out: &Path,
    slurm: &SlurmArgs,
    registry: &Registry,
) -> anyhow::Result<()> {
    let m = matrix.matrix(registry)?;
    let ids = bench_runner::slurm::submit(&m, out, data, slurm, matrix.extend, registry)?;
    for (name, id) in ids {
        println!("{name}: job {id}");
    }
    Ok(())
}

/// `evaluate`: runs the default attacks on a model trained elsewhere and writes the report.
fn evaluate_cmd(
    model: &EvaluateArgs,
    matrix: &MatrixArgs,
    data: &DataArgs,
    out: Option<PathBuf>,
    reports: Option<PathBuf>,
    registry: &Registry,
) -> anyhow::Result<()> {
    let m = model.matrix(matrix, registry)?;
    let out = out_dir(out, &m);
    let reports = reports.unwrap_or_else(|| PathBuf::from("reports").join(&m.name));
    let mut options = RunOptions::new(out.clone(), data.data_dir.clone(), data.mirrors());
    options.extend = matrix.extend;
    let s = run(&m, &options, registry, &mut Bars::default())?;
    println!(
        "{}: {} new records, {} already there",
        out.display(),
        s.new_records,
        s.skipped_records
    );
    let summary = advrob_report::report_with(&[out], &reports, registry)?;
    println!("{summary}");
    println!("report: {}", reports.join("index.html").display());
    Ok(())
}

/// `report`: reports on run directories and prints the summary.
fn report_cmd(runs: &[PathBuf], reports: &Path, registry: &Registry) -> anyhow::Result<()> {
    let s = advrob_report::report_with(runs, reports, registry)?;
    println!("{s}");
    Ok(())
}

/// `migrate`: upgrades each run directory's records once and says what it did.
fn migrate_cmd(runs: &[PathBuf], registry: &Registry) -> anyhow::Result<()> {
    for run in runs {
        let m = advrob_experiment::migrate(&RunDir::new(run), registry)?;
        if m.records == 0 {
            println!("{}: nothing to migrate", run.display());
        } else {
            println!(
                "{}: {} records given their attack metadata, in {} logs",
                run.display(),
                m.records,
                m.files.len()
            );
        }
    }
    Ok(())
}

/// `agree`: compares a run's models across backends and prints the agreement table.
fn agree_cmd(
    run: PathBuf,
    backends: Vec<String>,
    data_dir: &Path,
    reports: &Path,
    registry: &Registry,
) -> anyhow::Result<()> {
    let backends = backends_or_compiled(backends);
    let dir = RunDir::new(run);
    match advrob_report::agreement::write(&dir, data_dir, &backends, reports, registry)? {
        Some(md) => print!("{md}"),
        None => println!(
            "nothing to compare: the run's models were trained on the only backend given ({})",
            backends.join(", ")
        ),
    }
    Ok(())
}

/// `download`: fetches and verifies a dataset and prints what was fetched.
fn download_cmd(dataset: &str, data: &DataArgs) -> anyhow::Result<()> {
    let kind = advrob_data::DatasetKind::from_name(dataset)?;
    let r = advrob_experiment::fetch_dataset(kind, &data.data_dir, &data.mirrors())?;
    println!(
        "{}: {} files verified ({} fetched, {} already there)",
        r.dir.display(),
        r.cached.len() + r.fetched.len(),
        r.fetched.len(),
        r.cached.len()
    );
    Ok(())
}

/// `backends`: prints the backends compiled into this build.
fn backends_cmd() {
    for b in advrob_model::backend::compiled_backends() {
        match advrob_model::backend::threading(b) {
            Some(t) => println!("{b}\t{t}"),
            None => println!("{b}"),
        }
    }
}
