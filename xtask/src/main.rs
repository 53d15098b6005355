//! `cargo xtask`: the project's tasks. One file per task.

mod aggregate;
mod agree;
mod bench;
mod plots;
mod report;
mod reproduce;
mod stats;
mod verdict;

use std::path::PathBuf;
use std::process::ExitCode;

use bench_runner::cli::{DataArgs, MatrixArgs};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "advrob project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Download and verify MNIST (or --dataset fashion-mnist) into data/.
    Download {
        /// mnist or fashion-mnist.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Download MNIST (verified), run the experiment matrix (the default experiment: the baseline
    /// and every defense; or --preset seed-000-notebook / seed-004-notebook) on every compiled-in
    /// backend and write tables to reports/.
    Reproduce {
        #[command(flatten)]
        matrix: Box<MatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Where the run's records and models go (default: runs/reproduce, or runs/<preset>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Where the tables go (default: reports/, or reports/<preset>/).
        #[arg(long)]
        reports: Option<PathBuf>,
    },
    /// Aggregate the records of one or more run directories into tables in reports/.
    Aggregate {
        /// Run directories (each holding records.jsonl).
        #[arg(long = "run", default_value = "runs/reproduce")]
        runs: Vec<PathBuf>,
        /// Where the tables go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
        /// Where datasets were downloaded (for the example grids; nothing is downloaded here).
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Cross-backend agreement: each model of a run loaded on every other backend given, clean
    /// logits and FGSM compared example by example; writes agreement.{csv,md} to reports/.
    Agree {
        /// The run directory (records.jsonl and models/).
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
    /// Time training, FGSM and inference of the default model on each backend given.
    Bench {
        /// Backends, comma-separated (default: every compiled-in one).
        #[arg(long, value_delimiter = ',')]
        backend: Vec<String>,
        /// Load IDX files from this directory instead of the verified MNIST download.
        #[arg(long)]
        dataset_dir: Option<PathBuf>,
        #[command(flatten)]
        data: DataArgs,
        /// Time the training epoch on the first N training images only (for slow backends such as
        /// wgpu on a software driver; the throughputs stay comparable).
        #[arg(long)]
        train_limit: Option<usize>,
        /// Where bench.md and bench.json go.
        #[arg(long, default_value = "reports")]
        reports: PathBuf,
    },
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Download { dataset, data } => {
            let kind = advrob_data::DatasetKind::from_name(&dataset)?;
            let r = bench_runner::run::fetch_dataset(kind, &data.data_dir, &data.mirrors())?;
            println!(
                "{}: 4 files verified ({} fetched, {} already there)",
                r.dir.display(),
                r.fetched.len(),
                r.cached.len()
            );
            Ok(())
        }
        Task::Reproduce {
            matrix,
            data,
            out,
            reports,
        } => reproduce::reproduce(&matrix, &data, out.as_deref(), reports.as_deref()),
        Task::Aggregate {
            runs,
            reports,
            data_dir,
        } => {
            let s = aggregate::aggregate(&runs, &reports, Some(&data_dir))?;
            println!("{s}");
            Ok(())
        }
        Task::Agree {
            run,
            backends,
            data_dir,
            reports,
        } => {
            let backends = if backends.is_empty() {
                advrob_model::backend::compiled_backends()
                    .into_iter()
                    .map(String::from)
                    .collect()
            } else {
                backends
            };
            match agree::write(&run, &data_dir, &backends, &reports)? {
                Some(md) => print!("{md}"),
                None => println!(
                    "nothing to compare: the run's models were trained on the only backend given ({})",
                    backends.join(", ")
                ),
            }
            Ok(())
        }
        Task::Bench {
            backend,
            dataset_dir,
            data,
            train_limit,
            reports,
        } => bench::bench(&backend, dataset_dir, &data, train_limit, &reports),
    }
}
