//! `cargo xtask`: the project's chores — reproduce the study into reports/, and time it. Everything
//! a user runs on their own data is `bench-runner`; this calls the same libraries.

mod bench;
mod reproduce;

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
    /// Download MNIST (verified), run the experiment matrix (the default experiment: the baseline
    /// and every defense; or --preset seed-000-notebook / seed-004-notebook) on every compiled-in
    /// backend, compare backends and write the report to reports/.
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
        #[command(flatten)]
        jobs: bench_runner::cli::JobsArgs,
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
        /// Time the PyTorch peer (`../shared/peers/torch_bench.py`) too, interleaved with advrob in
        /// every round, and write both and their ratios: the Python to run it with (one with torch)
        #[arg(long, num_args = 0..=1, default_missing_value = "python3")]
        peer: Option<String>,
        /// The peer's script.
        #[arg(long, default_value = "../shared/peers/torch_bench.py")]
        peer_script: PathBuf,
        /// Rounds: each times every backend, then the peer; the table gives the range over rounds.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// Also time one LeNet-5 training epoch on every backend (and, with --peer, in PyTorch),
        /// on the first N training images (no N: all of them; ndarray's convolutions take minutes
        /// for all 60,000).
        #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "0")]
        lenet: Option<usize>,
        /// The peer's LeNet script.
        #[arg(long, default_value = "peers/torch_lenet_bench.py")]
        lenet_script: PathBuf,
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
            eprintln!("error: {}", bench_runner::error_message(&e));
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.task {
        Task::Reproduce {
            matrix,
            data,
            out,
            reports,
            jobs,
        } => reproduce::reproduce(&matrix, &data, &jobs, out.as_deref(), reports.as_deref()),
        Task::Bench {
            backend,
            dataset_dir,
            data,
            train_limit,
            reports,
            peer,
            peer_script,
            rounds,
            lenet,
            lenet_script,
        } => bench::bench(
            &bench::BenchArgs {
                backends: backend,
                dataset_dir,
                train_limit,
                peer: peer.map(|python| bench::Peer {
                    python,
                    script: peer_script,
                }),
                rounds,
                // 0, the flag alone: the whole training set
                lenet: lenet.map(|n| (n > 0).then_some(n)),
                lenet_script,
            },
            &data,
            &reports,
        ),
    }
}
