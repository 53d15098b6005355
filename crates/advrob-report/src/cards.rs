//! Model cards, in the spirit of RobustBench's `model_info`: per model and backend, what a
//! researcher would quote — clean accuracy, robust accuracy under the ensemble per ε, the best
//! known robust accuracy (the per-example worst case over everything the run tried), the median
//! smallest adversarial perturbation, the verdict and whether it makes the figures unreliable, and
//! what the evaluation cost.

use std::collections::{BTreeMap, BTreeSet};

use advrob_attack::Family;
use advrob_experiment::Record;
use serde::Serialize;

use crate::stats::Worst;
use crate::tables::format_eps;
use crate::verdict::Verdict;

/// One model's card (means over seeds where there are several).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Card {
    /// The model.
    pub model: String,
    /// Its defense.
    pub defense: String,
    /// The backend it ran on.
    pub backend: String,
    /// The dataset.
    pub dataset: String,
    /// Seeds averaged over.
    pub seeds: Vec<u64>,
    /// Test examples evaluated.
    pub test_examples: usize,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// Per ensemble attack of the run: robust accuracy per ε (ε as written in tables).
    pub ensemble: BTreeMap<String, BTreeMap<String, f64>>,
    /// Per ε: the share of test examples every attack that counts for robustness left correctly
    /// classified (the per-example worst case): the best known robust accuracy.
    pub best_known: BTreeMap<String, f64>,
    /// The median smallest L∞ perturbation that flips a clean-correct example, from the
    /// minimum-norm attack (`None` when none ran, or when at least half were never flipped).
    pub median_min_norm: Option<f64>,
    /// The verdict's label.
    pub verdict: String,
    /// The checks that failed.
    pub failing: Vec<String>,
    /// The checks that could not run.
    pub not_run: Vec<String>,
    /// Whether any masking check failed: no robust figure of this model should be quoted.
    pub unreliable: bool,
    /// Examples passed through the model by every evaluation of the run (each grid once).
    pub forward_passes: u64,
    /// Of those, the passes that also took an input gradient.
    pub gradient_passes: u64,
    /// The attacks run.
    pub attacks: Vec<String>,
    /// Per ensemble record that kept its costs: what more effort bought ([`Effort`]).
    pub effort: Vec<Effort>,
    /// Per ε (as tables write it): robust accuracy between what the verifier proved and what
    /// every attack left, on the verifier's images (`crate::bounds`); empty when the run
    /// verified nothing.
    pub certified: BTreeMap<String, crate::bounds::Interval>,
}

/// An ensemble's figure against the effort behind it (from the record's costs, means over seeds):
/// robust accuracy had every example been given 1% and 10% of the passes the attack spent at most
/// on one example, and with all of them (the figure). Close values mean the curve had gone flat
/// long before the attack stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Effort {
    /// The ensemble.
    pub attack: String,
    /// ε as written in tables.
    pub eps: String,
    /// The most passes spent on one example (the largest over seeds).
    pub most_passes: u64,
    /// Robust accuracy at 1% of those passes.
    pub at_1_percent: f64,
    /// At 10%.
    pub at_10_percent: f64,
    /// With all of them: the ensemble's robust accuracy.
    pub at_all: f64,
}

/// The [`Effort`] of every ensemble record of `rs` that kept its costs, per (attack, ε).
fn efforts(rs: &[&Record]) -> Vec<Effort> {
    let mut by: BTreeMap<(String, u64), Vec<&Record>> = BTreeMap::new();
    for r in rs.iter().filter(|r| r.eval.costs.is_some()) {
        by.entry((r.attack.clone(), r.eval.eps.to_bits()))
            .or_default()
            .push(r);
    }
    by.into_iter()
        .map(|((attack, eps), rs)| {
            let at = |share: f64| {
                mean(
                    &rs.iter()
                        .filter_map(|r| {
                            let c = r.eval.costs.as_ref()?;
                            let budget = (c.most as f64 * share).floor() as u64;
                            Some(c.robust_at(budget, r.eval.clean_correct, r.eval.examples))
                        })
                        .collect::<Vec<_>>(),
                )
            };
            Effort {
                attack,
                eps: format_eps(f64::from_bits(eps)),
                most_passes: rs
                    .iter()
                    .filter_map(|r| r.eval.costs.as_ref().map(|c| c.most))
                    .max()
                    .unwrap_or(0),
                at_1_percent: at(0.01),
                at_10_percent: at(0.1),
                at_all: at(1.0),
            }
        })
        .collect()
}

/// The card of every (model, backend) of `records`.
pub fn cards(records: &[Record], worst: &[Worst], verdicts: &[Verdict]) -> Vec<Card> {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.model.clone(), r.backend.clone()))
            .or_default()
            .push(r);
    }
    groups
        .into_iter()
        .map(|((model, backend), rs)| {
            let verdict = verdicts
                .iter()
                .find(|v| v.model == model && v.backend == backend);
            card(model, backend, &rs, worst, verdict)
        })
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

fn card(
    model: String,
    backend: String,
    rs: &[&Record],
    worst: &[Worst],
    verdict: Option<&Verdict>,
) -> Card {
    let first = rs[0];
    let seeds: BTreeSet<u64> = rs.iter().map(|r| r.seed).collect();
    let mut ensemble: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut medians = Vec::new();
    let (mut forward, mut gradient) = (0u64, 0u64);
    let mut grids = BTreeSet::new();
    for r in rs {
        if r.info().family == Family::Ensemble {
            ensemble
                .entry(r.attack.clone())
                .or_default()
                .entry(format_eps(r.eval.eps))
                .or_default()
                .push(r.eval.adversarial_accuracy);
        }
        if let Some(m) = &r.eval.min_norm {
            medians.push(m.median);
        }
        // every record of one grid carries the grid's passes: count each grid once
        if let Some(p) = r.eval.passes
            && grids.insert((r.attack.clone(), r.seed))
        {
            forward += p.forward;
            gradient += p.backward;
        }
    }
    let mut best_known: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for w in worst
        .iter()
        .filter(|w| w.model == model && w.backend == backend)
    {
        best_known
            .entry(format_eps(w.eps))
            .or_default()
            .push(w.adversarial_accuracy);
    }
    let median_min_norm = if medians.iter().all(Option::is_some) && !medians.is_empty() {
        Some(mean(&medians.iter().flatten().copied().collect::<Vec<_>>()))
    } else {
        None
    };
    let attacks: BTreeSet<String> = rs.iter().map(|r| r.attack.clone()).collect();
    Card {
        defense: first.defense.clone(),
        dataset: first.dataset.clone(),
        seeds: seeds.into_iter().collect(),
        test_examples: first.eval.examples,
        clean_accuracy: mean(&rs.iter().map(|r| r.eval.clean_accuracy).collect::<Vec<_>>()),
        ensemble: ensemble
            .into_iter()
            .map(|(a, by)| (a, by.into_iter().map(|(e, v)| (e, mean(&v))).collect()))
            .collect(),
        best_known: best_known.into_iter().map(|(e, v)| (e, mean(&v))).collect(),
        median_min_norm,
        verdict: verdict.map_or_else(|| "no verdict".into(), Verdict::label),
        failing: verdict.map_or_else(Vec::new, |v| {
            v.failing().iter().map(|s| s.to_string()).collect()
        }),
        not_run: verdict.map_or_else(Vec::new, |v| {
            v.not_run().iter().map(|s| s.to_string()).collect()
        }),
        unreliable: verdict.is_some_and(Verdict::unreliable),
        forward_passes: forward,
        gradient_passes: gradient,
        attacks: attacks.into_iter().collect(),
        effort: efforts(rs),
        certified: BTreeMap::new(),
        model,
        backend,
    }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

/// `cards.md`: one row per model (clean, ensemble and best known robust accuracy at each ε,
/// median ε*, reliability), undefended models first.
pub fn markdown(cards: &[Card]) -> String {
    let mut grid: BTreeSet<(u64, String)> = BTreeSet::new();
    for c in cards {
        for e in c
            .best_known
            .keys()
            .chain(c.ensemble.values().flat_map(|m| m.keys()))
        {
            let v: f64 = parse_eps(e);
            grid.insert((v.to_bits(), e.clone()));
        }
    }
    let mut grid: Vec<(f64, String)> = grid
        .into_iter()
        .map(|(b, e)| (f64::from_bits(b), e))
        .filter(|(v, _)| *v > 0.0)
        .collect();
    grid.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = String::from(
        "# Model cards\n\nPer model: clean accuracy; robust accuracy under the ensemble (each attack on what the earlier ones left robust); the best known robust accuracy (the per-example worst case over every attack of the run); the median smallest L∞ perturbation that flips a clean-correct example (FMN); whether the masking verdict makes these figures unreliable; the ensemble's robust accuracy had every example been given 1% and 10% of the most passes it spent on one (close to the figure: the attack had long converged; `cost_curves.png` draws the whole curve); and robust accuracy bracketed between the share of images the verifier proved robust and the share every attack left robust, on the verifier's images (`bounds.md`). The JSON cards beside this file hold the same and the evaluation's cost.\n\n| model | defense | backend | clean |",
    );
    for (_, e) in &grid {
        out.push_str(&format!(" ensemble ε={e} | best known ε={e} |"));
    }
    out.push_str(
        " median ε* | reliable | ensemble effort | [certified, attacked] |\n|---|---|---|---:|",
    );
    out.push_str(&"---:|---:|".repeat(grid.len()));
    out.push_str("---:|---|---|---|\n");
    let mut ordered: Vec<&Card> = cards.iter().collect();
    ordered.sort_by_key(|c| (c.defense != "none", c.model.clone(), c.backend.clone()));
    for c in ordered {
        out.push_str(&format!(
            "| {} | {} | {} | {} |",
            c.model,
            c.defense,
            c.backend,
            pct(c.clean_accuracy)
        ));
        for (_, e) in &grid {
            let ens = c
                .ensemble
                .values()
                .find_map(|m| m.get(e).copied())
                .map_or_else(|| "–".to_string(), pct);
            let best = c
                .best_known
                .get(e)
                .copied()
                .map_or_else(|| "–".to_string(), pct);
            out.push_str(&format!(" {ens} | {best} |"));
        }
        let median = c
            .median_min_norm
            .map_or_else(|| "–".to_string(), |m| format!("{m:.3}"));
        let reliable = if c.unreliable {
            format!("no: {}", c.failing.join(", "))
        } else if c.not_run.is_empty() {
            "yes".to_string()
        } else {
            format!("no failure ({} checks not run)", c.not_run.len())
        };
        let effort = c
            .effort
            .iter()
            .map(|e| {
                format!(
                    "ε {}: {} / {} / {} at 1% / 10% / all of {} passes",
                    e.eps,
                    pct(e.at_1_percent),
                    pct(e.at_10_percent),
                    pct(e.at_all),
                    e.most_passes
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let effort = if effort.is_empty() {
            "–".to_string()
        } else {
            effort
        };
        let certified = c
            .certified
            .iter()
            .map(|(e, i)| {
                format!(
                    "ε {e}: [{}, {}]",
                    pct(i.certified),
                    i.attacked.map_or_else(|| "–".to_string(), pct)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        let certified = match c.certified.values().next() {
            Some(i) => format!("{certified} ({} images)", i.examples),
            None => "–".to_string(),
        };
        out.push_str(&format!(
            " {median} | {reliable} | {effort} | {certified} |\n"
        ));
    }
    out
}

/// ε back from its table form (`0.1`, `10/255`).
fn parse_eps(e: &str) -> f64 {
    match e.split_once('/') {
        Some((a, b)) => a.parse::<f64>().unwrap_or(0.0) / b.parse::<f64>().unwrap_or(1.0),
        None => e.parse().unwrap_or(0.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rec, set_attack};
    use advrob_eval::{MinNorm, Passes};

    #[test]
    fn a_card_holds_the_ensemble_the_worst_case_and_the_median() {
        let mut fgsm = rec("m", 1, 0.1, 0.9, 0.6);
        fgsm.eval.passes = Some(Passes {
            forward: 300,
            backward: 100,
        });
        let mut fmn = rec("m", 1, 0.1, 0.9, 0.5);
        set_attack(&mut fmn, "fmn-linf-100");
        fmn.eval.min_norm = Some(MinNorm {
            found: 90,
            attacked: 90,
            median: Some(0.07),
        });
        let mut ens = rec("m", 1, 0.1, 0.9, 0.4);
        set_attack(&mut ens, "ensemble");
        let records = vec![fgsm, fmn, ens];
        let worst = crate::stats::worst_case(&records);
        let c = &cards(&records, &worst, &[])[0];
        assert_eq!(
            c.ensemble.values().next().and_then(|m| m.get("0.1")),
            Some(&0.4)
        );
        // without per-example results the worst case is the minimum over attacks
        assert_eq!(c.best_known.get("0.1"), Some(&0.4));
        assert_eq!(c.median_min_norm, Some(0.07));
        assert_eq!((c.forward_passes, c.gradient_passes), (300, 100));
        let md = markdown(&cards(&records, &worst, &[]));
        assert!(
            md.contains("| m | none | ndarray | 90.00% | 40.00% | 40.00% | 0.070 |"),
            "{md}"
        );
        assert_eq!(parse_eps("10/255"), 10.0 / 255.0);
        // no ensemble here kept costs
        assert!(c.effort.is_empty());
    }

    /// An ensemble whose record kept its costs: the card says what 1% and 10% of the effort
    /// would have left, and the report draws the curve.
    #[test]
    fn the_effort_behind_an_ensemble_figure_is_on_its_card_and_drawn() {
        // 90 clean-correct of 100, 40 robust: 50 breaks, 40 of them within 5 passes, 9 at 50,
        // the last at 900 of the 1000 spent at most
        let mut ens = rec("m", 1, 0.1, 0.9, 0.4);
        set_attack(&mut ens, "ensemble");
        let mut first_success = vec![5u64; 40];
        first_success.extend([50u64; 9]);
        first_success.push(900);
        ens.eval.costs = Some(advrob_eval::Costs {
            first_success,
            most: 1000,
        });
        let records = vec![ens];
        let worst = crate::stats::worst_case(&records);
        let c = &cards(&records, &worst, &[])[0];
        let e = &c.effort[0];
        assert_eq!((e.eps.as_str(), e.most_passes), ("0.1", 1000));
        // 1% = 10 passes: the 40 cheap breaks; 10% = 100: 49; all: 50
        assert!((e.at_1_percent - 0.5).abs() < 1e-12, "{e:?}");
        assert!((e.at_10_percent - 0.41).abs() < 1e-12, "{e:?}");
        assert!((e.at_all - 0.4).abs() < 1e-12, "{e:?}");
        assert!(
            markdown(&cards(&records, &worst, &[]))
                .contains("ε 0.1: 50.00% / 41.00% / 40.00% at 1% / 10% / all of 1000 passes"),
        );
        let dir = tempfile::tempdir().expect("tmp");
        let drawn = crate::figures::cost_figure(&records, &[], dir.path()).expect("figure");
        assert!(drawn.iter().all(|p| p.is_file()), "{drawn:?}");
        assert_eq!(drawn.len(), 2);
        let stairs = crate::figures::cost_staircase(&records[0]).expect("costs");
        assert_eq!(stairs.first(), Some(&(1.0, 0.9)));
        assert_eq!(stairs.last(), Some(&(1000.0, 0.4)));
        // without costs: nothing drawn
        let plain = vec![rec("m", 1, 0.1, 0.9, 0.4)];
        assert!(
            crate::figures::cost_figure(&plain, &[], dir.path())
                .expect("none")
                .is_empty()
        );
    }
}
