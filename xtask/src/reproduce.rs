//! `cargo xtask reproduce`: the default experiment (or a given matrix) on every compiled-in backend,
//! then the tables.

use std::path::Path;

use bench_runner::cli::{DataArgs, MatrixArgs};
use bench_runner::{RunOptions, run};

pub fn reproduce(
    matrix: &MatrixArgs,
    data: &DataArgs,
    out: &Path,
    reports: &Path,
) -> anyhow::Result<()> {
    let mut m = matrix.matrix()?;
    if matrix.name.is_none() {
        m.name = "reproduce".into();
    }
    if matrix.backends.is_none() {
        m.backends = advrob_model::backend::compiled_backends()
            .into_iter()
            .map(String::from)
            .collect();
    }
    m.check()?;
    log::info!(
        "reproducing {} on {} ({} epochs, {} models, ε grid {:?})",
        m.name,
        m.backends.join(", "),
        m.train.epochs,
        m.models.len(),
        m.eps
    );
    let s = run(
        &m,
        &RunOptions {
            out: out.to_path_buf(),
            data_dir: data.data_dir.clone(),
            mirrors: data.mirrors(),
        },
    )?;
    println!(
        "{}: {} new records, {} already there; {} models trained, {} loaded",
        out.display(),
        s.new_records,
        s.skipped_records,
        s.trained,
        s.loaded
    );
    let summary = crate::aggregate::aggregate(&[out.to_path_buf()], reports)?;
    println!("{summary}");
    Ok(())
}
