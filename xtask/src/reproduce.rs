//! `cargo xtask reproduce`: the default experiment (or a given matrix) on every compiled-in backend,
//! then the tables.

use std::path::{Path, PathBuf};

use advrob_experiment::{Registry, RunDir, RunOptions};
use bench_runner::cli::{DataArgs, JobsArgs, MatrixArgs, backends_or_compiled};
use bench_runner::progress::run_with_bars;

/// Runs the matrix and writes its tables. Without `--out`/`--reports`, the default preset goes to
/// `runs/reproduce` and `reports/`, any other preset to `runs/<preset>` and `reports/<preset>/`.
pub fn reproduce(
    matrix: &MatrixArgs,
    data: &DataArgs,
    jobs: &JobsArgs,
    out: Option<&Path>,
    reports: Option<&Path>,
) -> anyhow::Result<()> {
    let registry = Registry::default();
    let mut m = matrix.matrix(&registry)?;
    let default_preset = m.preset == "default";
    if matrix.name.is_none() {
        m.name = if default_preset {
            "reproduce".into()
        } else {
            m.preset.clone()
        };
    }
    let out: PathBuf = match out {
        Some(p) => p.to_path_buf(),
        None if default_preset => "runs/reproduce".into(),
        None => Path::new("runs").join(&m.preset),
    };
    let reports: PathBuf = match reports {
        Some(p) => p.to_path_buf(),
        None if default_preset => "reports".into(),
        None => Path::new("reports").join(&m.preset),
    };
    let (out, reports) = (out.as_path(), reports.as_path());
    if matrix.backends.is_none() {
        m.backends = backends_or_compiled(Vec::new());
    }
    m.check(&registry)?;
    let jobs = jobs.jobs(&m, true);
    log::info!(
        "reproducing {} (preset {}) on {} ({} epochs, {} models, ε grid {:?}, {jobs} jobs)",
        m.name,
        m.preset,
        m.backends.join(", "),
        m.train.epochs,
        m.models.len(),
        m.eps
    );
    let mut options = RunOptions::new(out.to_path_buf(), data.data_dir.clone(), data.mirrors());
    options.extend = matrix.extend;
    let s = run_with_bars(&m, &options, &registry, jobs)?;
    println!(
        "{}: {} new records, {} already there; {} models trained, {} loaded",
        out.display(),
        s.new_records,
        s.skipped_records,
        s.trained,
        s.loaded
    );
    // every compiled-in backend against the one the models were trained on, whichever backends
    // the matrix itself ran on
    let compiled = backends_or_compiled(Vec::new());
    if compiled.len() > 1
        && let Some(md) = advrob_report::agreement::write(
            &RunDir::new(out),
            &data.data_dir,
            &compiled,
            reports,
            &registry,
        )?
    {
        print!("{md}");
    }
    let summary = advrob_report::report_with(&[out.to_path_buf()], reports, &registry)?;
    println!("{summary}");
    Ok(())
}
