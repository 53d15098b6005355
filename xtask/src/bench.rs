//! `cargo xtask bench`: throughput of the default model per backend, printed and kept in reports/.

use std::path::{Path, PathBuf};

use advrob_experiment::bench::{BenchResult, bench as run_bench, format_table};
use advrob_experiment::{DataSource, load_data};
use bench_runner::cli::{DataArgs, backends_or_compiled};

pub fn bench(
    backends: &[String],
    dataset_dir: Option<PathBuf>,
    data: &DataArgs,
    train_limit: Option<usize>,
    reports: &Path,
) -> anyhow::Result<()> {
    let backends = backends_or_compiled(backends.to_vec());
    for b in &backends {
        advrob_model::backend::device(b)?;
    }
    let source = DataSource::dir_or_mnist(dataset_dir);
    let (mut ds, name) = load_data(&source, &data.data_dir, &data.mirrors())?;
    if let Some(n) = train_limit {
        ds.train = ds.train.take(n);
    }
    let mut results: Vec<BenchResult> = Vec::new();
    for b in &backends {
        log::info!("bench on {b} ({name})");
        results.push(run_bench(&ds, b)?);
    }
    let table = format_table(&results);
    print!("{table}");
    std::fs::create_dir_all(reports)?;
    advrob_data::atomic_write(&reports.join("bench.md"), table.as_bytes())?;
    advrob_data::atomic_write(
        &reports.join("bench.json"),
        serde_json::to_string_pretty(&results)?.as_bytes(),
    )?;
    Ok(())
}
