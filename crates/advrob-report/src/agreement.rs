//! Cross-backend agreement of a run's models. Each model's checkpoint (trained
//! on one backend) is loaded on every other compiled-in backend, and the clean logits and FGSM at
//! every ε of the run are compared example by example (`advrob_eval::agreement`). The weights are
//! the same on both sides, so the table measures the backends' numerics, not training noise.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_attack::Attack;
use advrob_eval::{Agreement, OnBackend, agreement};
use advrob_experiment::{AttackSpec, Record, Registry, RunDir, read_records};
use advrob_model::{backend, checkpoint};
use polars::prelude::*;

use crate::error::{ReportError, Result};

/// Tolerances of the table's "agrees" column: the largest clean logit difference and the largest
/// accuracy difference at any ε, in points.
pub const MAX_LOGIT_DIFF: f64 = 1e-3;
/// See [`MAX_LOGIT_DIFF`].
pub const MAX_ACCURACY_POINTS: f64 = 0.5;

/// One row: one model, one pair of backends, one ε.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Row {
    /// The model.
    pub model: String,
    /// Its defense.
    pub defense: String,
    /// The backend it was trained on.
    pub backend_a: String,
    /// The backend it was loaded on.
    pub backend_b: String,
    /// What runs `backend_b` (CPU threads, GPU adapter).
    pub adapter_b: String,
    /// Test examples compared.
    pub examples: usize,
    /// Largest clean logit difference.
    pub max_logit_diff: f64,
    /// Mean clean logit difference.
    pub mean_logit_diff: f64,
    /// Largest clean logit, for scale.
    pub max_abs_logit: f64,
    /// The budget.
    pub eps: f64,
    /// Accuracy under the attack on `backend_a`.
    pub accuracy_a: f64,
    /// Accuracy under the attack on `backend_b`.
    pub accuracy_b: f64,
    /// Examples whose adversarial prediction differs between the backends.
    pub prediction_differs: usize,
    /// Examples whose adversarial input differs between the backends.
    pub input_differs: usize,
}

/// Compares every model of `run` between the backend it was trained on and each of `backends`
/// (other than that one) on the run's test set, found under `data_dir`.
pub fn agree(
    run: &RunDir,
    data_dir: &Path,
    backends: &[String],
    registry: &Registry,
) -> Result<Vec<Row>> {
    let records = read_records(run)?;
    // one row per model identity, as in the report: models that share a name are compared apart
    let records = crate::identity::distinguish(&records).apply(&records);
    if records.is_empty() {
        return Err(ReportError::Records(format!(
            "{}: no records",
            run.root().display()
        )));
    }
    let ds = local_test_set(&records, data_dir).ok_or_else(|| {
        ReportError::Records(format!(
            "{}: the run's test set is not there (download it first)",
            data_dir.display()
        ))
    })?;
    let models: Vec<(&str, &Record)> = crate::grids::reference_records(&records)
        .into_iter()
        .collect();
    // the models are independent: one worker per core takes the next model (on CPU backends each
    // comparison keeps about one core busy), the rows come back in the models' order
    let workers = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(models.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, Result<Vec<Row>>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&(model, r)) = models.get(i) else {
                            break;
                        };
                        let rows = compare_model(run, &records, registry, &ds, backends, model, r);
                        out.push((i, rows));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| match h.join() {
                Ok(out) => out,
                Err(panic) => std::panic::resume_unwind(panic),
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let mut rows = Vec::new();
    for (_, r) in done {
        rows.extend(r?);
    }
    Ok(rows)
}

/// The test set of the first record's dataset, if it is under `data_dir` (or is a directory
/// itself): verified as it loads, never downloaded here.
fn local_test_set(records: &[Record], data_dir: &Path) -> Option<advrob_data::Dataset> {
    let first = records.first()?;
    let dir = match advrob_data::DatasetKind::from_name(&first.dataset) {
        Ok(kind) => data_dir.join(kind.name()),
        Err(_) => PathBuf::from(&first.dataset),
    };
    match advrob_data::Dataset::load_dir(&dir) {
        Ok(ds) => Some(ds),
        Err(e) => {
            log::warn!("no agreement: {e}");
            None
        }
    }
}

/// The rows of `model` (its reference record `r`) against each of `backends` other than its own;
/// none when its checkpoint is gone.
fn compare_model(
    run: &RunDir,
    records: &[Record],
    registry: &Registry,
    ds: &advrob_data::Dataset,
    backends: &[String],
    model: &str,
    r: &Record,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let dir = run.checkpoint_of(r);
    if !checkpoint::exists(&dir) {
        log::warn!("{}: no checkpoint, {model} not compared", dir.display());
        return Ok(rows);
    }
    let eps = run_eps(records, r);
    let attack = rebuild_attack(registry, r)?;
    // the examples the run evaluated (a `--test-limit` run: the first N)
    let test = ds.test.take(r.eval.examples);
    let device_a = backend::device(&r.backend)?;
    let (model_a, _, _) = checkpoint::load(&dir, &device_a)?;
    for b in backends.iter().filter(|b| **b != r.backend) {
        log::info!("agreement of {model}: {} vs {b}", r.backend);
        let device_b = backend::device(b)?;
        let (model_b, _, _) = checkpoint::load(&dir, &device_b)?;
        let a = agreement(
            OnBackend {
                model: &model_a,
                device: &device_a,
            },
            OnBackend {
                model: &model_b,
                device: &device_b,
            },
            attack.as_ref(),
            &test,
            &eps,
            1000,
        )?;
        let adapter_b = backend::describe(b)?;
        rows.extend(rows_of(model, r, b, &adapter_b, &a));
    }
    Ok(rows)
}

/// The budgets the run evaluated `r`'s model under `r`'s attack, in increasing order.
fn run_eps(records: &[Record], r: &Record) -> Vec<f64> {
    let mut eps: Vec<f64> = records
        .iter()
        .filter(|x| x.model == r.model && x.attack == r.attack)
        .map(|x| x.eval.eps)
        .collect();
    eps.sort_by(f64::total_cmp);
    eps.dedup();
    eps
}

/// The attack of record `r`, rebuilt from its recorded config (a transfer attack is refused).
fn rebuild_attack(registry: &Registry, r: &Record) -> Result<Box<dyn Attack>> {
    let spec: AttackSpec = serde_json::from_value(r.attack_config.clone())
        .map_err(|e| ReportError::Records(format!("record {}: attack_config: {e}", r.key)))?;
    Ok(registry.attack(&spec, &mut |name| {
        Err(advrob_experiment::ExperimentError::invalid(
            "attack",
            format!("{name}: transfer attacks are not compared"),
        ))
    })?)
}

/// The rows of one comparison `a` of `model` (record `r`) with backend `b`, one per ε.
fn rows_of(model: &str, r: &Record, b: &str, adapter_b: &str, a: &Agreement) -> Vec<Row> {
    a.eps
        .iter()
        .map(|e| Row {
            model: model.to_string(),
            defense: r.defense.clone(),
            backend_a: r.backend.clone(),
            backend_b: b.to_string(),
            adapter_b: adapter_b.to_string(),
            examples: a.examples,
            max_logit_diff: a.max_logit_diff,
            mean_logit_diff: a.mean_logit_diff,
            max_abs_logit: a.max_abs_logit,
            eps: e.eps,
            accuracy_a: e.accuracy_a,
            accuracy_b: e.accuracy_b,
            prediction_differs: e.prediction_differs,
            input_differs: e.input_differs,
        })
        .collect()
}

/// The rows as a polars frame, one row per (model, backend pair, ε).
pub fn frame(rows: &[Row]) -> PolarsResult<DataFrame> {
    let s = |f: &dyn Fn(&Row) -> String| rows.iter().map(f).collect::<Vec<_>>();
    let f = |f: &dyn Fn(&Row) -> f64| rows.iter().map(f).collect::<Vec<_>>();
    let u = |f: &dyn Fn(&Row) -> u64| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(vec![
        Column::new("model".into(), s(&|r| r.model.clone())),
        Column::new("defense".into(), s(&|r| r.defense.clone())),
        Column::new("backend_a".into(), s(&|r| r.backend_a.clone())),
        Column::new("backend_b".into(), s(&|r| r.backend_b.clone())),
        Column::new("adapter_b".into(), s(&|r| r.adapter_b.clone())),
        Column::new("examples".into(), u(&|r| r.examples as u64)),
        Column::new("max_logit_diff".into(), f(&|r| r.max_logit_diff)),
        Column::new("mean_logit_diff".into(), f(&|r| r.mean_logit_diff)),
        Column::new("max_abs_logit".into(), f(&|r| r.max_abs_logit)),
        Column::new("eps".into(), f(&|r| r.eps)),
        Column::new("accuracy_a".into(), f(&|r| r.accuracy_a)),
        Column::new("accuracy_b".into(), f(&|r| r.accuracy_b)),
        Column::new(
            "prediction_differs".into(),
            u(&|r| r.prediction_differs as u64),
        ),
        Column::new("input_differs".into(), u(&|r| r.input_differs as u64)),
    ])
}

/// One line per (model, backend pair): the largest logit difference, the clean and worst-ε
/// prediction disagreement, the largest accuracy difference over ε and whether that is within
/// [`MAX_LOGIT_DIFF`] and [`MAX_ACCURACY_POINTS`].
pub fn markdown(rows: &[Row]) -> String {
    let mut groups: BTreeMap<(String, String, String), Vec<&Row>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.model.clone(), r.backend_a.clone(), r.backend_b.clone()))
            .or_default()
            .push(r);
    }
    let mut out = format!(
        "## Cross-backend agreement\n\nThe same weights (trained on the first backend) loaded on the other; each backend crafts FGSM from its own gradients at every ε of the run. \"agrees\": largest clean logit difference below {MAX_LOGIT_DIFF:e} and accuracies within {MAX_ACCURACY_POINTS} points at every ε. Disagreement counts are shares of all test examples.\n\n| model | backends | adapter | examples | max \\|Δlogit\\| (of max \\|logit\\|) | clean pred. differ | adv. pred. differ (worst ε) | adv. inputs differ (worst ε) | max \\|Δacc\\| (pts) at ε | agrees |\n|---|---|---|---:|---:|---:|---:|---:|---:|---|\n"
    );
    for ((model, a, b), rs) in groups {
        let Some(first) = rs.first() else { continue };
        let n = first.examples.max(1) as f64;
        let clean = rs
            .iter()
            .find(|r| r.eps == 0.0)
            .map_or(0, |r| r.prediction_differs);
        let worst_pred = rs.iter().map(|r| r.prediction_differs).max().unwrap_or(0);
        let worst_input = rs.iter().map(|r| r.input_differs).max().unwrap_or(0);
        let (dacc, at) = rs
            .iter()
            .map(|r| ((r.accuracy_a - r.accuracy_b).abs() * 100.0, r.eps))
            .fold((0.0f64, 0.0f64), |m, x| if x.0 > m.0 { x } else { m });
        let ok = first.max_logit_diff < MAX_LOGIT_DIFF && dacc <= MAX_ACCURACY_POINTS;
        out.push_str(&format!(
            "| {model} | {a} → {b} | {} | {} | {:.2e} (of {:.0}) | {:.2}% | {:.2}% | {:.2}% | {dacc:.2} at {} | {} |\n",
            first.adapter_b,
            first.examples,
            first.max_logit_diff,
            first.max_abs_logit,
            100.0 * clean as f64 / n,
            100.0 * worst_pred as f64 / n,
            100.0 * worst_input as f64 / n,
            crate::tables::format_eps(at),
            if ok { "✓" } else { "✗" }
        ));
    }
    out
}

/// Name of the file in a run directory that keeps its agreement rows.
pub const AGREEMENT_FILE: &str = "agreement.json";

/// Runs [`agree`] over `run`, keeps the rows in the run directory ([`AGREEMENT_FILE`], where the
/// report reads them) and writes `agreement.csv` and `agreement.md` into `reports`; returns the
/// Markdown. Nothing is written when there is nothing to compare (one backend).
pub fn write(
    run: &RunDir,
    data_dir: &Path,
    backends: &[String],
    reports: &Path,
    registry: &Registry,
) -> Result<Option<String>> {
    let rows = agree(run, data_dir, backends, registry)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let json = serde_json::to_string_pretty(&rows)
        .map_err(|e| ReportError::Records(format!("agreement rows: {e}")))?;
    advrob_data::atomic_write(&run.root().join(AGREEMENT_FILE), json.as_bytes())?;
    write_tables(&rows, reports).map(Some)
}

/// The agreement rows `run` keeps ([`write`]); none when it has no [`AGREEMENT_FILE`].
pub fn read(run: &RunDir) -> Result<Vec<Row>> {
    let path = run.root().join(AGREEMENT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).map_err(|e| {
            ReportError::Records(format!("{}: not agreement rows: {e}", path.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(ReportError::io(&path, e)),
    }
}

/// Writes `agreement.csv` and `agreement.md` of `rows` into `reports`; returns the Markdown.
pub fn write_tables(rows: &[Row], reports: &Path) -> Result<String> {
    std::fs::create_dir_all(reports).map_err(|e| ReportError::io(reports, e))?;
    let mut df = frame(rows)?;
    let csv: PathBuf = reports.join("agreement.csv");
    let mut buf = Vec::new();
    CsvWriter::new(&mut buf).finish(&mut df)?;
    advrob_data::atomic_write(&csv, &buf)?;
    let md = markdown(rows);
    advrob_data::atomic_write(&reports.join("agreement.md"), md.as_bytes())?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(model: &str, eps: f64, acc_a: f64, acc_b: f64, logit: f64) -> Row {
        Row {
            model: model.into(),
            defense: "none".into(),
            backend_a: "ndarray".into(),
            backend_b: "wgpu".into(),
            adapter_b: "llvmpipe, Cpu, Vulkan".into(),
            examples: 1000,
            max_logit_diff: logit,
            mean_logit_diff: logit / 10.0,
            max_abs_logit: 20.0,
            eps,
            accuracy_a: acc_a,
            accuracy_b: acc_b,
            prediction_differs: if acc_a == acc_b { 0 } else { 7 },
            input_differs: if eps == 0.0 { 0 } else { 20 },
        }
    }

    #[test]
    fn markdown_marks_disagreement_beyond_the_tolerances() {
        let rows = vec![
            row("baseline", 0.0, 0.97, 0.97, 2e-6),
            row("baseline", 0.1, 0.215, 0.216, 2e-6),
            row("wide", 0.0, 0.97, 0.97, 2e-6),
            row("wide", 0.1, 0.20, 0.21, 2e-6),
            row("hot", 0.0, 0.97, 0.97, 5e-3),
        ];
        let md = markdown(&rows);
        let line = |m: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {m} |")))
                .unwrap_or_default()
                .to_string()
        };
        assert!(line("baseline").ends_with("| ✓ |"), "{md}");
        assert!(line("baseline").contains("0.10 at 0.1"), "{md}");
        // one point apart at ε = 0.1
        assert!(
            line("wide").ends_with("| ✗ |") && line("wide").contains("1.00 at 0.1"),
            "{md}"
        );
        // logits too far apart
        assert!(line("hot").ends_with("| ✗ |"), "{md}");
        assert!(line("wide").contains("| 0.70% |"), "{md}");
        let df = frame(&rows).expect("frame");
        assert_eq!(df.height(), 5);
    }
}
