//! The gradient-masking verdict: the checks of Carlini et al. (2019, "On Evaluating Adversarial
//! Robustness") that can be automated from a run's records and checkpoints, per model. A model that
//! fails any check that ran is marked "robustness not established" with the failing checks named.

use std::collections::BTreeMap;

use bench_runner::record::Record;

/// Accuracy differences smaller than this (absolute, 0.5 points) are treated as equal.
pub const TOLERANCE: f64 = 0.005;

/// How much stronger (absolute accuracy) an adaptive attack may be than the plain one before the
/// difference is called masking.
pub const ADAPTIVE_GAP: f64 = 0.02;

/// Share of test examples with an all-zero or non-finite input gradient above which gradients
/// count as masked.
pub const ZERO_GRADIENT_SHARE: f64 = 0.01;

/// What was measured on a model's checkpoint (not in the records): see
/// [`crate::report::probes`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Probe {
    /// Share of test examples whose cross-entropy input gradient is all zero or not finite.
    pub zero_gradient_share: f64,
    /// Accuracy under plain L∞ PGD at ε = 1 (the whole input space), on `unbounded_examples`.
    pub unbounded_accuracy: f64,
    /// Examples of the unbounded attack.
    pub unbounded_examples: usize,
    /// Classes of the model: chance accuracy is 1 / classes.
    pub classes: usize,
}

/// One check on one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// Short name (the column of `verdict.md`).
    pub name: &'static str,
    /// `None` when the run has what the check needs only in part or not at all.
    pub passed: Option<bool>,
    /// The numbers behind it.
    pub detail: String,
}

/// Every check of one (model, backend).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub model: String,
    pub backend: String,
    pub checks: Vec<Check>,
}

impl Verdict {
    /// Names of the checks that ran and failed.
    pub fn failing(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.passed == Some(false))
            .map(|c| c.name)
            .collect()
    }

    /// `robust accuracy not established (…)` or `no masking detected`.
    pub fn label(&self) -> String {
        let f = self.failing();
        if f.is_empty() {
            "no masking detected".into()
        } else {
            format!("robustness not established ({})", f.join(", "))
        }
    }
}

fn is_iterative(attack: &str) -> bool {
    ["pgd", "bim", "mi-fgsm"]
        .iter()
        .any(|p| attack.starts_with(p))
}

fn is_transfer(attack: &str) -> bool {
    attack.starts_with("transfer-")
}

fn is_adaptive(attack: &str) -> bool {
    !is_transfer(attack) && (attack.contains("-margin") || attack.contains("-bpda"))
}

fn is_targeted(attack: &str) -> bool {
    attack.contains("targeted")
}

/// Mean adversarial accuracy over seeds per (attack, ε) of the given records.
fn curves(records: &[&Record]) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut sums: BTreeMap<(String, u64), (f64, f64, usize)> = BTreeMap::new();
    for r in records {
        let e = sums
            .entry((r.attack.clone(), r.eval.eps.to_bits()))
            .or_insert((r.eval.eps, 0.0, 0));
        e.1 += r.eval.adversarial_accuracy;
        e.2 += 1;
    }
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for ((attack, _), (eps, sum, n)) in sums {
        out.entry(attack).or_default().push((eps, sum / n as f64));
    }
    for v in out.values_mut() {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn at(curve: &[(f64, f64)], eps: f64) -> Option<f64> {
    curve
        .iter()
        .find(|(e, _)| (e - eps).abs() < 1e-12)
        .map(|p| p.1)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// The verdict of every (model, backend) of `records`. `probes` gives, per (model, backend), what
/// was measured on its checkpoint, where it could be.
pub fn verdicts(records: &[Record], probes: &BTreeMap<(String, String), Probe>) -> Vec<Verdict> {
    let mut groups: BTreeMap<(String, String), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups
            .entry((r.model.clone(), r.backend.clone()))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((model, backend), rs) in groups {
        let c = curves(&rs);
        let untargeted: Vec<(&String, &Vec<(f64, f64)>)> =
            c.iter().filter(|(a, _)| !is_targeted(a)).collect();
        let mut checks = Vec::new();

        // 1. iterative attacks at least as strong as single-step ones
        let single = c.get("fgsm");
        let iterative: Vec<_> = untargeted
            .iter()
            .filter(|(a, _)| is_iterative(a) && !is_adaptive(a))
            .collect();
        // (transfer attacks are not white-box: is_iterative is false for them by their prefix)
        checks.push(match (single, iterative.is_empty()) {
            (Some(f), false) => {
                let mut worst: Option<(f64, f64, f64, &str)> = None;
                for (name, curve) in &iterative {
                    for &(eps, acc) in curve.iter() {
                        if let Some(fa) = at(f, eps) {
                            let gap = acc - fa;
                            if worst.is_none_or(|w| gap > w.0) {
                                worst = Some((gap, eps, acc, name.as_str()));
                            }
                        }
                    }
                }
                match worst {
                    Some((gap, eps, acc, name)) => Check {
                        name: "iterative ≥ single-step",
                        passed: Some(gap <= TOLERANCE),
                        detail: format!(
                            "largest excess of {name} over fgsm: {} at ε {eps} ({} vs {})",
                            pct(gap.max(0.0)),
                            pct(acc),
                            pct(acc - gap)
                        ),
                    },
                    None => not_run("iterative ≥ single-step", "no common ε"),
                }
            }
            _ => not_run(
                "iterative ≥ single-step",
                "needs fgsm and an iterative attack",
            ),
        });

        // 2. white-box at least as strong as transfer
        let transfers: Vec<_> = untargeted.iter().filter(|(a, _)| is_transfer(a)).collect();
        // against the plain white-box attacks: the adaptive ones are there to see through masking,
        // this check is to detect it
        let white: Vec<_> = untargeted
            .iter()
            .filter(|(a, _)| !is_transfer(a) && !is_adaptive(a))
            .collect();
        checks.push(if transfers.is_empty() || white.is_empty() {
            not_run("white-box ≥ transfer", "no transfer attack in this run")
        } else {
            let mut worst: Option<(f64, f64, f64, f64, &str)> = None;
            for (tname, tcurve) in &transfers {
                for &(eps, tacc) in tcurve.iter() {
                    let best_white = white
                        .iter()
                        .filter_map(|(_, c)| at(c, eps))
                        .fold(f64::INFINITY, f64::min);
                    if best_white.is_finite() {
                        let gap = best_white - tacc;
                        if worst.is_none_or(|w| gap > w.0) {
                            worst = Some((gap, eps, best_white, tacc, tname.as_str()));
                        }
                    }
                }
            }
            match worst {
                Some((gap, eps, w, t, name)) => Check {
                    name: "white-box ≥ transfer",
                    passed: Some(gap <= TOLERANCE),
                    detail: format!(
                        "{name} beats the best plain white-box attack by {} at ε {eps} ({} vs {})",
                        pct(gap.max(0.0)),
                        pct(t),
                        pct(w)
                    ),
                },
                None => not_run("white-box ≥ transfer", "no common ε"),
            }
        });

        // 3. accuracy falls monotonically with ε
        let mut rises: Vec<String> = Vec::new();
        for (name, curve) in &untargeted {
            for w in curve.windows(2) {
                if w[1].1 > w[0].1 + TOLERANCE {
                    rises.push(format!(
                        "{name}: {} at ε {} → {} at ε {}",
                        pct(w[0].1),
                        w[0].0,
                        pct(w[1].1),
                        w[1].0
                    ));
                }
            }
        }
        let top = untargeted
            .iter()
            .filter_map(|(_, c)| c.last().map(|p| p.0))
            .fold(0.0f64, f64::max);
        checks.push(Check {
            name: "falls with ε",
            passed: Some(rises.is_empty()),
            detail: if rises.is_empty() {
                format!("non-increasing up to ε {top}")
            } else {
                rises.join("; ")
            },
        });
        // … and an unbounded budget leaves no more than chance
        let probe = probes.get(&(model.clone(), backend.clone()));
        checks.push(match probe {
            Some(p) if p.unbounded_examples > 0 => {
                let chance = 1.0 / p.classes.max(1) as f64;
                Check {
                    name: "unbounded ε → chance",
                    passed: Some(p.unbounded_accuracy <= chance + TOLERANCE),
                    detail: format!(
                        "plain PGD-L∞ (20 steps) at ε 1 leaves {} of {} examples correct (chance {})",
                        pct(p.unbounded_accuracy),
                        p.unbounded_examples,
                        pct(chance)
                    ),
                }
            }
            _ => not_run("unbounded ε → chance", "checkpoint or test set not found"),
        });

        // 4. the input gradient exists
        checks.push(match probe {
            Some(p) => Check {
                name: "gradients present",
                passed: Some(p.zero_gradient_share <= ZERO_GRADIENT_SHARE),
                detail: format!(
                    "{} of test examples have an all-zero or non-finite input gradient",
                    pct(p.zero_gradient_share)
                ),
            },
            None => not_run("gradients present", "checkpoint or test set not found"),
        });

        // 5. adaptive attacks (logits, BPDA) no stronger than the plain one
        let plain: Vec<_> = untargeted
            .iter()
            .filter(|(a, _)| is_iterative(a) && !is_adaptive(a))
            .collect();
        let adaptive: Vec<_> = untargeted.iter().filter(|(a, _)| is_adaptive(a)).collect();
        checks.push(if plain.is_empty() || adaptive.is_empty() {
            not_run(
                "adaptive ≈ plain",
                "needs a plain and an adaptive (margin or BPDA) iterative attack",
            )
        } else {
            let mut worst: Option<(f64, f64, f64, f64, &str)> = None;
            for (aname, acurve) in &adaptive {
                for &(eps, aacc) in acurve.iter() {
                    let best_plain = plain
                        .iter()
                        .filter_map(|(_, c)| at(c, eps))
                        .fold(f64::INFINITY, f64::min);
                    if best_plain.is_finite() {
                        let gap = best_plain - aacc;
                        if worst.is_none_or(|w| gap > w.0) {
                            worst = Some((gap, eps, best_plain, aacc, aname.as_str()));
                        }
                    }
                }
            }
            match worst {
                Some((gap, eps, p, a, name)) => Check {
                    name: "adaptive ≈ plain",
                    passed: Some(gap <= ADAPTIVE_GAP),
                    detail: format!(
                        "{name} below the plain attack by {} at ε {eps} ({} vs {})",
                        pct(gap.max(0.0)),
                        pct(a),
                        pct(p)
                    ),
                },
                None => not_run("adaptive ≈ plain", "no common ε"),
            }
        });

        // 6. convergence: doubling steps changes little
        checks.push(convergence(&untargeted));
        out.push(Verdict {
            model,
            backend,
            checks,
        });
    }
    out
}

/// Two runs of the same iterative attack differing only in steps (`pgd-linf-10`, `pgd-linf-20`):
/// doubling must change accuracy by less than [`ADAPTIVE_GAP`].
fn convergence(untargeted: &[(&String, &Vec<(f64, f64)>)]) -> Check {
    let steps_of = |name: &str| -> Option<(String, usize)> {
        let mut parts: Vec<&str> = name.split('-').collect();
        let i = parts.iter().position(|p| p.parse::<usize>().is_ok())?;
        let n = parts[i].parse().ok()?;
        parts[i] = "N";
        Some((parts.join("-"), n))
    };
    for (a, ca) in untargeted {
        let Some((fa, na)) = steps_of(a) else {
            continue;
        };
        for (b, cb) in untargeted {
            let Some((fb, nb)) = steps_of(b) else {
                continue;
            };
            if fa == fb && nb == 2 * na {
                let gap = ca
                    .iter()
                    .filter_map(|&(e, acc)| at(cb, e).map(|bacc| (acc - bacc).abs()))
                    .fold(0.0f64, f64::max);
                return Check {
                    name: "converged",
                    passed: Some(gap < ADAPTIVE_GAP),
                    detail: format!("{a} → {b}: accuracy changes by at most {}", pct(gap)),
                };
            }
        }
    }
    not_run("converged", "no attack was run with doubled steps")
}

fn not_run(name: &'static str, why: &str) -> Check {
    Check {
        name,
        passed: None,
        detail: format!("not run: {why}"),
    }
}

/// `verdict.md`: one row per (model, backend), one column per check (✓ passed, ✗ failed, – not
/// run), then the numbers behind every check.
pub fn markdown(verdicts: &[Verdict]) -> String {
    let mut t = String::from(
        "# Gradient-masking verdict\n\nThe automatable checks of Carlini et al. (2019), per model: ✓ passed, ✗ failed, – not run (see the details). A model failing any check that ran is marked *robustness not established*.\n\n",
    );
    let Some(first) = verdicts.first() else {
        return t;
    };
    t.push_str("| model | backend | verdict |");
    for c in &first.checks {
        t.push_str(&format!(" {} |", c.name));
    }
    t.push_str("\n|---|---|---|");
    t.push_str(&"---|".repeat(first.checks.len()));
    t.push('\n');
    for v in verdicts {
        t.push_str(&format!("| {} | {} | {} |", v.model, v.backend, v.label()));
        for c in &v.checks {
            t.push_str(match c.passed {
                Some(true) => " ✓ |",
                Some(false) => " ✗ |",
                None => " – |",
            });
        }
        t.push('\n');
    }
    t.push_str("\n## Details\n\n");
    for v in verdicts {
        t.push_str(&format!("### {} ({})\n\n", v.model, v.backend));
        for c in &v.checks {
            let mark = match c.passed {
                Some(true) => "✓",
                Some(false) => "✗",
                None => "–",
            };
            t.push_str(&format!("- {mark} {}: {}\n", c.name, c.detail));
        }
        t.push('\n');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::tests::rec;

    fn with(model: &str, attack: &str, eps: f64, adv: f64) -> Record {
        let mut r = rec(model, 1, eps, 0.95, adv);
        r.attack = attack.into();
        r.key = format!("{model}/{attack}/{eps}");
        r
    }

    #[test]
    fn a_masked_model_fails_and_an_honest_one_passes() {
        let records = vec![
            // honest: PGD below FGSM, adaptive close to plain, falls with ε
            with("honest", "fgsm", 0.1, 0.60),
            with("honest", "fgsm", 0.2, 0.30),
            with("honest", "pgd-linf-10", 0.1, 0.50),
            with("honest", "pgd-linf-10", 0.2, 0.20),
            with("honest", "pgd-linf-10-margin-bpda", 0.1, 0.49),
            with("honest", "pgd-linf-10-margin-bpda", 0.2, 0.20),
            // masked: FGSM and PGD do nothing, the adaptive attack breaks it
            with("masked", "fgsm", 0.1, 0.95),
            with("masked", "fgsm", 0.2, 0.95),
            with("masked", "pgd-linf-10", 0.1, 0.95),
            with("masked", "pgd-linf-10", 0.2, 0.96),
            with("masked", "pgd-linf-10-margin-bpda", 0.1, 0.10),
            with("masked", "pgd-linf-10-margin-bpda", 0.2, 0.00),
        ];
        let probe = |zero: f64, unbounded: f64| Probe {
            zero_gradient_share: zero,
            unbounded_accuracy: unbounded,
            unbounded_examples: 1000,
            classes: 10,
        };
        let probes: BTreeMap<(String, String), Probe> = [
            (
                ("honest".to_string(), "ndarray".to_string()),
                probe(0.0, 0.0),
            ),
            (
                ("masked".to_string(), "ndarray".to_string()),
                probe(1.0, 0.95),
            ),
        ]
        .into_iter()
        .collect();
        let v = verdicts(&records, &probes);
        assert_eq!(v[0].model, "honest");
        assert!(v[0].failing().is_empty(), "{:?}", v[0]);
        assert_eq!(v[0].label(), "no masking detected");
        assert_eq!(
            v[1].failing(),
            [
                "iterative ≥ single-step",
                "falls with ε",
                "unbounded ε → chance",
                "gradients present",
                "adaptive ≈ plain"
            ]
        );
        // PGD 0.96 vs FGSM 0.95 at ε 0.2 is over the tolerance too
        let mut masked = records.clone();
        masked.retain(|r| r.model == "masked");
        let v = verdicts(&masked, &BTreeMap::new());
        let iterative = &v[0].checks[0];
        assert_eq!(iterative.passed, Some(false), "{iterative:?}");
        assert!(iterative.detail.contains("1.0%"), "{}", iterative.detail);
        assert!(
            v[0].checks[3].passed.is_none() && v[0].checks[4].passed.is_none(),
            "no checkpoint measurement given"
        );
        let unbounded = &verdicts(&records, &probes)[1].checks[3];
        assert!(unbounded.detail.contains("95.0% of 1000"), "{unbounded:?}");
        let md = markdown(&v);
        assert!(
            md.contains("| masked | ndarray | robustness not established ("),
            "{md}"
        );
    }

    #[test]
    fn a_transfer_attack_stronger_than_white_box_is_masking() {
        let records = vec![
            with("m", "fgsm", 0.1, 0.90),
            with("m", "transfer-pgd-linf-10-from-s", 0.1, 0.40),
            with("h", "fgsm", 0.1, 0.30),
            with("h", "transfer-pgd-linf-10-from-s", 0.1, 0.60),
        ];
        let v = verdicts(&records, &BTreeMap::new());
        let check = |i: usize| {
            v[i].checks
                .iter()
                .find(|c| c.name == "white-box ≥ transfer")
                .cloned()
                .expect("check")
        };
        assert_eq!(check(0).passed, Some(true), "{:?}", check(0));
        assert_eq!(check(1).passed, Some(false), "{:?}", check(1));
        assert!(check(1).detail.contains("50.0%"), "{}", check(1).detail);
    }

    #[test]
    fn doubled_steps_are_recognised_for_convergence() {
        let records = vec![
            with("m", "pgd-linf-10", 0.1, 0.50),
            with("m", "pgd-linf-20", 0.1, 0.45),
        ];
        let v = verdicts(&records, &BTreeMap::new());
        let c = v[0]
            .checks
            .iter()
            .find(|c| c.name == "converged")
            .expect("check");
        assert_eq!(c.passed, Some(false), "{c:?}");
    }
}
