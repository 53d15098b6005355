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

/// `certified_vs_eps.{png,svg}`: per model, robust accuracy on the verifier's images as a band
/// from the certified lower bound (the share proven robust) up to the best attack's upper bound
/// (the line: the share every attack left robust); the truth lies inside the band. One panel per
/// dataset and backend; none when no bracket has both sides.
pub(crate) fn certified_figure(
    brackets: &[crate::bounds::Bracket],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let seeds: BTreeMap<&str, std::collections::BTreeSet<u64>> =
        brackets.iter().fold(BTreeMap::new(), |mut m, b| {
            m.entry(b.model.as_str()).or_default().insert(b.seed);
            m
        });
    let mut curves: BTreeMap<(String, String), BTreeMap<String, Vec<plots::Point>>> =
        BTreeMap::new();
    for b in brackets {
        let Some(attacked) = b.attacked else {
            continue;
        };
        let name = if seeds.get(b.model.as_str()).is_some_and(|s| s.len() > 1) {
            format!("{} (seed {})", b.model, b.seed)
        } else {
            b.model.clone()
        };
        curves
            .entry((b.dataset.clone(), b.backend.clone()))
            .or_default()
            .entry(name)
            .or_default()
            .push(plots::Point {
                eps: b.eps,
                mean: attacked,
                min: b.certified.min(attacked),
                max: attacked,
                seeds: 1,
                attacked: true,
            });
    }
    let panels: Vec<plots::Panel> = curves
        .into_iter()
        .map(|((dataset, backend), models)| plots::Panel {
            dataset,
            backend,
            attack: "certified (band floor) to best attack (line)".into(),
            curves: models
                .into_iter()
                .map(|(m, mut pts)| {
                    pts.sort_by(|a, b| a.eps.total_cmp(&b.eps));
                    (m, pts)
                })
                .collect(),
        })
        .collect();
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    plots::curves(
        &panels,
        "robust accuracy: proven (floor) .. attacked (line)",
        &reports.join("certified_vs_eps"),
    )
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

/// The staircase of robust accuracy against the passes spent per example, from a record's costs:
/// the clean accuracy at 1 pass, a step down at every cost at which an example first broke, flat
/// to the most any example had.
pub(crate) fn cost_staircase(r: &Record) -> Option<Vec<(f64, f64)>> {
    let c = r.eval.costs.as_ref()?;
    let at = |b: u64| c.robust_at(b, r.eval.clean_correct, r.eval.examples);
    let mut pts = vec![(1.0, at(0))];
    let mut distinct: Vec<u64> = c.first_success.clone();
    distinct.dedup();
    for cost in distinct {
        let x = cost.max(1) as f64;
        let before = pts.last().map_or(at(0), |p| p.1);
        pts.push((x, before));
        pts.push((x, at(cost)));
    }
    let end = c
        .most
        .max(c.first_success.last().copied().unwrap_or(1))
        .max(1);
    pts.push((end as f64, at(end)));
    Some(pts)
}

/// `cost_curves.{png,svg}`: per (dataset, backend, attack, ε) of the records that kept their
/// costs (an ensemble's), each model's robust accuracy against the passes spent per example —
/// where the curve has gone flat, more of the same attack would not lower the figure. Models the
/// verdict does not trust are labelled so; nothing is drawn when no record kept costs.
pub(crate) fn cost_figure(
    records: &[Record],
    verdicts: &[verdict::Verdict],
    reports: &Path,
) -> Result<Vec<PathBuf>> {
    let seeds: BTreeMap<&str, std::collections::BTreeSet<u64>> =
        records.iter().fold(BTreeMap::new(), |mut m, r| {
            m.entry(r.model.as_str()).or_default().insert(r.seed);
            m
        });
    // per (dataset, backend, attack, ε bits): each model's staircase
    type Staircases = Vec<(String, Vec<(f64, f64)>)>;
    let mut panels: BTreeMap<(String, String, String, u64), Staircases> = BTreeMap::new();
    for r in records {
        let Some(pts) = cost_staircase(r) else {
            continue;
        };
        let untrusted = verdicts
            .iter()
            .any(|v| v.model == r.model && v.backend == r.backend && v.unreliable());
        let mut label = r.model.clone();
        if seeds.get(r.model.as_str()).is_some_and(|s| s.len() > 1) {
            label.push_str(&format!(" s{}", r.seed));
        }
        if untrusted {
            label.push_str(" (robustness not established)");
        }
        panels
            .entry((
                r.dataset.clone(),
                r.backend.clone(),
                r.attack.clone(),
                r.eval.eps.to_bits(),
            ))
            .or_default()
            .push((label, pts));
    }
    if panels.is_empty() {
        return Ok(Vec::new());
    }
    let panels: Vec<plots::CostPanel> = panels
        .into_iter()
        .map(|((dataset, backend, attack, eps), mut curves)| {
            curves.sort_by(|a, b| a.0.cmp(&b.0));
            plots::CostPanel {
                title: format!(
                    "{attack} at ε {} — {backend}, {dataset}",
                    crate::tables::format_eps(f64::from_bits(eps))
                ),
                curves,
            }
        })
        .collect();
    plots::cost_curves(&panels, &reports.join("cost_curves"))
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
