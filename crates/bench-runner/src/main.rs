//! `bench-runner`: trains, attacks and evaluates an experiment matrix and writes JSON Lines records.

use std::path::PathBuf;
use std::process::ExitCode;

use bench_runner::cli::{DataArgs, MatrixArgs};
use bench_runner::run::{DataSource, load_data};
use bench_runner::{RunOptions, bench, run};
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
    /// Run a matrix; records go to `<out>/records.jsonl`, finished work is skipped on a rerun.
    Run {
        #[command(flatten)]
        matrix: Box<MatrixArgs>,
        #[command(flatten)]
        data: DataArgs,
        /// Run directory (default: runs/<name>).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Download and verify a dataset into the data directory.
    Download {
        /// mnist or fashion-mnist.
        #[arg(long, default_value = "mnist")]
        dataset: String,
        #[command(flatten)]
        data: DataArgs,
    },
    /// Time training, FGSM and inference of the default model on one backend.
    Bench {
        /// Backend.
        #[arg(long, default_value = "ndarray")]
        backend: String,
        /// Load IDX files from this directory instead of the verified MNIST download.
        #[arg(long)]
        dataset_dir: Option<PathBuf>,
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Run { matrix, data, out } => {
            let m = matrix.matrix()?;
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&m.name));
            let s = run(
                &m,
                &RunOptions {
                    out: out.clone(),
                    data_dir: data.data_dir.clone(),
                    mirrors: data.mirrors(),
                },
            )?;
            println!(
                "{}: {} new records, {} already there; {} models trained, {} loaded",
                out.join(bench_runner::run::RECORDS_FILE).display(),
                s.new_records,
                s.skipped_records,
                s.trained,
                s.loaded
            );
        }
        Cmd::Download { dataset, data } => {
            let kind = advrob_data::DatasetKind::from_name(&dataset)?;
            let r = bench_runner::run::fetch_dataset(kind, &data.data_dir, &data.mirrors())?;
            println!(
                "{}: {} files verified ({} fetched, {} already there)",
                r.dir.display(),
                r.cached.len() + r.fetched.len(),
                r.fetched.len(),
                r.cached.len()
            );
        }
        Cmd::Bench {
            backend,
            dataset_dir,
            data,
        } => {
            let source = DataSource::dir_or_mnist(dataset_dir);
            let (ds, _) = load_data(&source, &data.data_dir, &data.mirrors())?;
            let r = bench::bench(&ds, &backend)?;
            print!("{}", bench::format_table(std::slice::from_ref(&r)));
            println!("{}", serde_json::to_string(&r)?);
        }
        Cmd::Backends => {
            for b in advrob_model::backend::compiled_backends() {
                println!("{b}");
            }
        }
    }
    Ok(())
}
