//! The report's figures: the lead figure, the curves against ε, the training curves and the
//! example grids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_experiment::Record;
use advrob_experiment::observe::Observations;
use polars::prelude::*;

use crate::error::Result;
use crate::tables::unique_strings;
use crate::{file_safe, grids, plots, stats, verdict};

/// The lead figure, `worst_case_vs_eps.{png,svg}`: per model, the best known robust accuracy
/// (the per-example worst case over every attack of the run) against ε, its band the bootstrap 95%
/// interval over test examples; models the verdict does not trust are labelled so.
pub(crate) fn lead_figure(
    worst: &[stats::Worst],
    intervals: &DataFrame,
    verdicts: &[verdict::Verdict],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let panels = plots::panels(&stats::worst_frame(worst)?, "adversarial_accuracy", true)?;
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    let panels = relabel_untrusted(plots::with_intervals(panels, intervals)?, verdicts);
    plots::curves(
        &panels,
        "best known robust accuracy (95% interval)",
        &reports.join("worst_case_vs_eps"),
    )
}

/// `panels` with every curve of a model that fails the masking verdict named "… (robustness not
/// established)".
fn relabel_untrusted(
    mut panels: Vec<plots::Panel>,
    verdicts: &[verdict::Verdict],
) -> Vec<plots::Panel> {
    let labels: BTreeMap<(String, String), String> = verdicts
        .iter()
        .filter(|v| !v.failing().is_empty())
        .map(|v| {
            (
                (v.model.clone(), v.backend.clone()),
                format!("{} (robustness not established)", v.model),
            )
        })
        .collect();
    for p in &mut panels {
        for (name, _) in &mut p.curves {
            if let Some(l) = labels.get(&(name.clone(), p.backend.clone())) {
                *name = l.clone();
            }
        }
    }
    panels
}

pub(crate) fn curve_figures(
    df: &DataFrame,
    records: &[Record],
    worst: &[stats::Worst],
    verdicts: &[verdict::Verdict],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let relabel = |panels: Vec<plots::Panel>| relabel_untrusted(panels, verdicts);
    let mut figures = Vec::new();
    let mut acc = plots::panels(df, "adversarial_accuracy", true)?;
    acc.extend(plots::panels(
        &stats::worst_frame(worst)?,
        "adversarial_accuracy",
        true,
    )?);
    figures.extend(plots::curves(
        &relabel(acc),
        "accuracy under attack",
        &reports.join("accuracy_vs_eps"),
    )?);
    let sr = relabel(plots::panels(df, "success_rate", false)?);
    if !sr.is_empty() {
        figures.extend(plots::curves(
            &sr,
            "attack success rate",
            &reports.join("success_rate_vs_eps"),
        )?);
    }
    for model in unique_strings(df, "model")? {
        let of_model: Vec<&Record> = records
            .iter()
            .filter(|r| r.model == model && !r.stages.is_empty())
            .collect();
        if of_model.is_empty() {
            continue;
        }
        let path = reports.join(format!("training_{}.png", file_safe(&model)));
        plots::training(&of_model, &model, &path)?;
        figures.push(path);
    }
    Ok(figures)
}

/// `examples_<model>.png` for every model of the first record's dataset, from the images the runs
/// observed.
pub(crate) fn example_figures(
    observations: &[Observations],
    records: &[Record],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let Some(first) = records.first() else {
        return Ok(Vec::new());
    };
    let of_dataset: Vec<Record> = records
        .iter()
        .filter(|r| r.dataset == first.dataset)
        .cloned()
        .collect();
    grids::example_grids(observations, &of_dataset, reports)
}
