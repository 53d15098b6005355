//! The gradient-masking verdict: the checks of Carlini et al. (2019, "On Evaluating Adversarial
//! Robustness") that can be automated from a run's records and checkpoints, per model. A model that
//! fails any check that ran is marked "robustness not established" with the failing checks named.
//!
//! Every check reads the attacks' typed metadata ([`AttackInfo`]), never their names. Curves are
//! the mean accuracy over seeds per (attack, ε); only attacks that count for robustness
//! (untargeted, within their budget) enter any check.

use std::collections::BTreeMap;

use crate::tables::format_eps;
use advrob_attack::{Access, AttackInfo};
use advrob_eval::Probe;
use advrob_experiment::Record;

/// Accuracy differences smaller than this (absolute, 0.5 points) are treated as equal.
pub const TOLERANCE: f64 = 0.005;

/// How much stronger (absolute accuracy) an adaptive attack may be than the plain one before the
/// difference is called masking.
pub const ADAPTIVE_GAP: f64 = 0.02;

/// Share of test examples with an all-zero or non-finite input gradient above which gradients
/// count as masked.
pub const ZERO_GRADIENT_SHARE: f64 = 0.01;

/// Share of the clean-correct examples an unbounded attack (ε = 1, the whole input space) must
/// break: any model whose gradients can be followed falls to (nearly) nothing.
pub const UNBOUNDED_BROKEN: f64 = 0.99;

/// How much lower (absolute accuracy, 0.2 points) a black-box attack may take robust accuracy
/// than every gradient attack before it, before the difference is called masking.
pub const BLACK_BOX_GAP: f64 = 0.002;

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
    /// The model.
    pub model: String,
    /// The backend it ran on.
    pub backend: String,
    /// The checks, in the order of `verdict.md`'s columns.
    pub checks: Vec<Check>,
    /// Measurements shown beside the checks that decide nothing (the PGD step-doubling
    /// comparison, [`pgd_steps`]).
    pub notes: Vec<String>,
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

    /// Names of the checks that could not run on what the run has.
    pub fn not_run(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.passed.is_none())
            .map(|c| c.name)
            .collect()
    }

    /// `robustness not established (…)` when a check failed; `no masking detected` only when
    /// every check ran and passed; else how many ran.
    pub fn label(&self) -> String {
        let f = self.failing();
        let missing = self.not_run();
        let ran = self.checks.len() - missing.len();
        if !f.is_empty() {
            let why: Vec<&str> = f
                .iter()
                .map(|name| {
                    if *name == BINARIZATION {
                        "attack failed its unit test"
                    } else {
                        name
                    }
                })
                .collect();
            format!("robustness not established ({})", why.join(", "))
        } else if missing.is_empty() {
            "no masking detected".into()
        } else {
            format!(
                "{ran} of {} checks ran, none failed (not run: {})",
                self.checks.len(),
                missing.join(", ")
            )
        }
    }

    /// Whether a check failed: no robust figure of this model should be trusted.
    pub fn unreliable(&self) -> bool {
        !self.failing().is_empty()
    }
}

/// One attack's accuracy curve: its metadata and (ε, mean accuracy over seeds), by ε.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// What the attack is.
    pub info: AttackInfo,
    /// (ε, mean adversarial accuracy over seeds), sorted by ε.
    pub points: Vec<(f64, f64)>,
}

impl Curve {
    fn at(&self, eps: f64) -> Option<f64> {
        self.points
            .iter()
            .find(|(e, _)| (e - eps).abs() < 1e-12)
            .map(|p| p.1)
    }

    fn is_plain(&self) -> bool {
        self.info.access != Access::Transfer && !self.info.adaptive
    }

    fn is_adaptive(&self) -> bool {
        self.info.access != Access::Transfer && self.info.adaptive
    }
}

/// The curves of the attacks that count for robustness, by attack name.
pub type Curves = BTreeMap<String, Curve>;

/// Mean adversarial accuracy over seeds per (attack, ε) of `records`, for the attacks that count
/// for robustness (untargeted, within their budget).
pub fn curves(records: &[&Record]) -> Curves {
    let mut sums: BTreeMap<(String, u64), (f64, f64, usize)> = BTreeMap::new();
    let mut infos: BTreeMap<String, AttackInfo> = BTreeMap::new();
    for r in records.iter().filter(|r| r.info().counts_for_robustness()) {
        infos.insert(r.attack.clone(), r.info().clone());
        let e = sums
            .entry((r.attack.clone(), r.eval.eps.to_bits()))
            .or_insert((r.eval.eps, 0.0, 0));
        e.1 += r.eval.adversarial_accuracy;
        e.2 += 1;
    }
    let mut out: Curves = BTreeMap::new();
    for ((attack, _), (eps, sum, n)) in sums {
        let info = infos[&attack].clone();
        out.entry(attack)
            .or_insert_with(|| Curve {
                info,
                points: Vec::new(),
            })
            .points
            .push((eps, sum / n as f64));
    }
    for c in out.values_mut() {
        c.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

fn not_run(name: &'static str, why: &str) -> Check {
    Check {
        name,
        passed: None,
        detail: format!("not run: {why}"),
    }
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
    groups
        .into_iter()
        .map(|((model, backend), rs)| {
            let c = curves(&rs);
            let probe = probes.get(&(model.clone(), backend.clone()));
            Verdict {
                model,
                backend,
                checks: vec![
                    iterative_beats_single_step(&c),
                    white_box_beats_transfer(&c),
                    falls_with_eps(&c),
                    unbounded_breaks_everything(probe),
                    gradients_present(probe),
                    dlr_gradients_present(probe),
                    adaptive_close_to_plain(&c),
                    converged(probe),
                    attack_passes_binarization(probe),
                    black_box_adds_little(&rs),
                    deterministic_forward(probe),
                    outputs_are_logits(probe),
                ],
                notes: pgd_steps(&c).into_iter().collect(),
            }
        })
        .collect()
}

/// The largest `gap(a, b)` over every ε both curves have, with where it is.
fn worst_gap<'a>(
    pairs: impl Iterator<Item = (&'a String, &'a Curve)>,
    reference: impl Fn(f64) -> Option<(f64, String)>,
    gap: impl Fn(f64, f64) -> f64,
) -> Option<(f64, f64, f64, f64, &'a str, String)> {
    let mut worst: Option<(f64, f64, f64, f64, &str, String)> = None;
    for (name, curve) in pairs {
        for &(eps, acc) in &curve.points {
            if let Some((reference_acc, reference_name)) = reference(eps) {
                let g = gap(acc, reference_acc);
                if worst.as_ref().is_none_or(|w| g > w.0) {
                    worst = Some((g, eps, acc, reference_acc, name.as_str(), reference_name));
                }
            }
        }
    }
    worst
}

/// The lowest accuracy at `eps` among `curves`, with its attack's name.
fn strongest<'a>(curves: &[(&'a String, &'a Curve)], eps: f64) -> Option<(f64, String)> {
    curves
        .iter()
        .filter_map(|(n, c)| c.at(eps).map(|a| (a, (*n).clone())))
        .min_by(|a, b| a.0.total_cmp(&b.0))
}

/// Iterative attacks are at least as strong as single-step ones: a plain iterative white-box
/// attack (PGD, BIM, MI-FGSM) must not leave more than [`TOLERANCE`] more accuracy than the
/// strongest plain single-step attack (FGSM) at any ε. More steps doing worse means the steps are
/// not following a useful gradient.
pub fn iterative_beats_single_step(c: &Curves) -> Check {
    const NAME: &str = "iterative ≥ single-step";
    let single: Vec<_> = c
        .iter()
        .filter(|(_, v)| v.info.is_single_step() && v.is_plain())
        .collect();
    let iterative: Vec<_> = c
        .iter()
        .filter(|(_, v)| v.info.is_iterative() && v.is_plain())
        .collect();
    if single.is_empty() || iterative.is_empty() {
        return not_run(NAME, "needs fgsm and an iterative attack");
    }
    match worst_gap(
        iterative.iter().copied(),
        |eps| strongest(&single, eps),
        |acc, single| acc - single,
    ) {
        Some((gap, eps, acc, _, name, single_name)) => Check {
            name: NAME,
            passed: Some(gap <= TOLERANCE),
            detail: format!(
                "largest excess of {name} over {single_name}: {} at ε {} ({} vs {})",
                pct(gap.max(0.0)),
                format_eps(eps),
                pct(acc),
                pct(acc - gap)
            ),
        },
        None => not_run(NAME, "no common ε"),
    }
}

/// White-box attacks are at least as strong as transfer attacks: a transfer attack (crafted on a
/// surrogate, never touching this model's gradients) must not beat the strongest plain white-box
/// attack by more than [`TOLERANCE`] at any ε. Compared with the plain attacks: the adaptive ones
/// are there to see through masking, this check is to detect it.
pub fn white_box_beats_transfer(c: &Curves) -> Check {
    const NAME: &str = "white-box ≥ transfer";
    let transfers: Vec<_> = c
        .iter()
        .filter(|(_, v)| v.info.access == Access::Transfer)
        .collect();
    let white: Vec<_> = c.iter().filter(|(_, v)| v.is_plain()).collect();
    if transfers.is_empty() || white.is_empty() {
        return not_run(NAME, "no transfer attack in this run");
    }
    match worst_gap(
        transfers.iter().copied(),
        |eps| strongest(&white, eps),
        |transfer, white| white - transfer,
    ) {
        Some((gap, eps, t, w, name, _)) => Check {
            name: NAME,
            passed: Some(gap <= TOLERANCE),
            detail: format!(
                "{name} beats the best plain white-box attack by {} at ε {} ({} vs {})",
                pct(gap.max(0.0)),
                format_eps(eps),
                pct(t),
                pct(w)
            ),
        },
        None => not_run(NAME, "no common ε"),
    }
}

/// Accuracy falls with ε: no attack's accuracy may rise by more than [`TOLERANCE`] from one ε of
/// the grid to the next (a larger ball contains every smaller one).
pub fn falls_with_eps(c: &Curves) -> Check {
    if c.is_empty() {
        return not_run(
            "falls with ε",
            "no untargeted attack within its budget in this run",
        );
    }
    let mut rises: Vec<String> = Vec::new();
    for (name, curve) in c {
        for w in curve.points.windows(2) {
            if w[1].1 > w[0].1 + TOLERANCE {
                rises.push(format!(
                    "{name}: {} at ε {} → {} at ε {}",
                    pct(w[0].1),
                    format_eps(w[0].0),
                    pct(w[1].1),
                    format_eps(w[1].0)
                ));
            }
        }
    }
    let top = c
        .values()
        .filter_map(|v| v.points.last().map(|p| p.0))
        .fold(0.0f64, f64::max);
    Check {
        name: "falls with ε",
        passed: Some(rises.is_empty()),
        detail: if rises.is_empty() {
            format!("non-increasing up to ε {}", format_eps(top))
        } else {
            rises.join("; ")
        },
    }
}

/// An unbounded budget breaks (nearly) everything: plain PGD at ε = 1, the whole input space,
/// must break at least [`UNBOUNDED_BROKEN`] of the examples classified correctly before it; a
/// model whose gradients can be followed cannot keep more (measured on the checkpoint,
/// [`Probe::unbounded_broken`]).
pub fn unbounded_breaks_everything(probe: Option<&Probe>) -> Check {
    const NAME: &str = "unbounded ε breaks all";
    match probe {
        Some(p) if p.unbounded_examples > 0 => Check {
            name: NAME,
            passed: Some(p.unbounded_broken >= UNBOUNDED_BROKEN),
            detail: format!(
                "plain PGD-L∞ (20 steps) at ε 1 breaks {} of the clean-correct examples among the first {} (needed: {}); {} stay robust",
                pct(p.unbounded_broken),
                p.unbounded_examples,
                pct(UNBOUNDED_BROKEN),
                pct(p.unbounded_accuracy)
            ),
        },
        _ => not_run(NAME, "the run holds no probe of this checkpoint"),
    }
}

/// The input gradient exists: at most [`ZERO_GRADIENT_SHARE`] of the test examples may have an
/// all-zero or non-finite cross-entropy input gradient ([`Probe::zero_gradient_share`]).
pub fn gradients_present(probe: Option<&Probe>) -> Check {
    const NAME: &str = "gradients present";
    match probe {
        Some(p) => Check {
            name: NAME,
            passed: Some(p.zero_gradient_share <= ZERO_GRADIENT_SHARE),
            detail: format!(
                "{} of test examples have an all-zero or non-finite input gradient",
                pct(p.zero_gradient_share)
            ),
        },
        None => not_run(NAME, "the run holds no probe of this checkpoint"),
    }
}

/// The DLR loss has a gradient: at most [`ZERO_GRADIENT_SHARE`] of the test examples may have an
/// all-zero or non-finite input gradient of the difference-of-logits ratio
/// ([`Probe::zero_dlr_gradient_share`]), which needs no softmax: zero here means the logits
/// themselves are flat (a non-differentiable input transform), not a saturated softmax.
pub fn dlr_gradients_present(probe: Option<&Probe>) -> Check {
    const NAME: &str = "DLR gradients present";
    match probe.and_then(|p| p.zero_dlr_gradient_share) {
        Some(share) => Check {
            name: NAME,
            passed: Some(share <= ZERO_GRADIENT_SHARE),
            detail: format!(
                "{} of test examples have an all-zero or non-finite DLR input gradient",
                pct(share)
            ),
        },
        None => not_run(
            NAME,
            "the run holds no probe of this checkpoint, or it has fewer than 3 classes",
        ),
    }
}

/// The forward pass is deterministic: two passes on the same images must give the same outputs
/// ([`Probe::random_forward`]); a randomised model needs attacks with expectation over
/// transformation, which this evaluation does not run.
pub fn deterministic_forward(probe: Option<&Probe>) -> Check {
    const NAME: &str = "deterministic forward";
    match probe {
        Some(p) => Check {
            name: NAME,
            passed: Some(!p.random_forward),
            detail: if p.random_forward {
                "two forward passes on the same images differ".into()
            } else {
                "two forward passes on the same images agree".into()
            },
        },
        None => not_run(NAME, "the run holds no probe of this checkpoint"),
    }
}

/// The outputs are logits: a model whose outputs are probabilities (each row in [0, 1], summing
/// to 1, [`Probe::probability_outputs`]) squashes every loss that applies a softmax to them.
pub fn outputs_are_logits(probe: Option<&Probe>) -> Check {
    const NAME: &str = "outputs are logits";
    match probe {
        Some(p) => Check {
            name: NAME,
            passed: Some(!p.probability_outputs),
            detail: if p.probability_outputs {
                "every output row lies in [0, 1] and sums to 1: probabilities, not logits".into()
            } else {
                "the outputs are not probabilities".into()
            },
        },
        None => not_run(NAME, "the run holds no probe of this checkpoint"),
    }
}

/// A black-box attack adds little: in an ensemble, the black-box components (Square), which run
/// after the gradient attacks on what they left robust, may break at most [`BLACK_BOX_GAP`] of
/// the examples at any ε. More means the gradient attacks were held back by the model's
/// gradients: the surest sign of masking.
pub fn black_box_adds_little(records: &[&Record]) -> Check {
    const NAME: &str = "black-box ≤ white-box";
    let mut worst: Option<(f64, f64, String)> = None;
    for r in records {
        let Some(components) = &r.eval.components else {
            continue;
        };
        let white = components.iter().any(|c| c.info.access == Access::WhiteBox);
        let black: usize = components
            .iter()
            .filter(|c| c.info.access == Access::BlackBox)
            .map(|c| c.broken)
            .sum();
        if !white || black == 0 && !components.iter().any(|c| c.info.access == Access::BlackBox) {
            continue;
        }
        let share = black as f64 / r.eval.examples.max(1) as f64;
        if worst.as_ref().is_none_or(|w| share > w.0) {
            worst = Some((share, r.eval.eps, r.attack.clone()));
        }
    }
    match worst {
        Some((share, eps, attack)) => Check {
            name: NAME,
            passed: Some(share <= BLACK_BOX_GAP),
            detail: format!(
                "in {attack}, the black-box attacks broke {} of the test examples that every gradient attack left robust (at ε {}; allowed: {})",
                pct(share),
                format_eps(eps),
                pct(BLACK_BOX_GAP)
            ),
        },
        None => not_run(
            NAME,
            "needs an ensemble with a gradient attack and a black-box attack after it",
        ),
    }
}

/// Adaptive attacks (a loss on the logits, BPDA) are no stronger than the plain one: an adaptive
/// white-box attack may lower accuracy below the strongest plain iterative attack by at most
/// [`ADAPTIVE_GAP`] at any ε. More means the plain attack was held back by the model's gradients.
pub fn adaptive_close_to_plain(c: &Curves) -> Check {
    const NAME: &str = "adaptive ≈ plain";
    let plain: Vec<_> = c
        .iter()
        .filter(|(_, v)| v.info.is_iterative() && v.is_plain())
        .collect();
    let adaptive: Vec<_> = c.iter().filter(|(_, v)| v.is_adaptive()).collect();
    if plain.is_empty() || adaptive.is_empty() {
        return not_run(
            NAME,
            "needs a plain and an adaptive (margin or BPDA) iterative attack",
        );
    }
    match worst_gap(
        adaptive.iter().copied(),
        |eps| strongest(&plain, eps),
        |adaptive, plain| plain - adaptive,
    ) {
        Some((gap, eps, a, p, name, _)) => Check {
            name: NAME,
            passed: Some(gap <= ADAPTIVE_GAP),
            detail: format!(
                "{name} below the plain attack by {} at ε {} ({} vs {})",
                pct(gap.max(0.0)),
                format_eps(eps),
                pct(a),
                pct(p)
            ),
        },
        None => not_run(NAME, "no common ε"),
    }
}

/// The PGD step-doubling comparison, as information: of two runs of the same white-box attack
/// that differ only in their number of steps (one twice the other), how much the accuracy changes
/// at most over their common ε. It says whether *that* attack had converged, not the quoted
/// figure ([`converged`] judges that one).
pub fn pgd_steps(c: &Curves) -> Option<String> {
    for (a, ca) in c.iter().filter(|(_, v)| v.info.is_iterative()) {
        let doubled = ca.info.with_steps(2 * ca.info.steps);
        for (b, cb) in c {
            if cb.info == doubled {
                let gap = ca
                    .points
                    .iter()
                    .filter_map(|&(e, acc)| cb.at(e).map(|bacc| (acc - bacc).abs()))
                    .fold(0.0f64, f64::max);
                return Some(format!(
                    "{a} → {b}: accuracy changes by at most {} (information: the quoted figure's convergence is the converged check)",
                    pct(gap)
                ));
            }
        }
    }
    None
}

/// The figure quoted has converged: the quoted attack (the ensemble) against a stronger setting
/// of itself on a sample ([`advrob_eval::convergence`]: twice the iterations, restarts and
/// queries), which may newly break at most [`advrob_eval::convergence::GAP`] of the sample at
/// every ε.
pub fn converged(probe: Option<&Probe>) -> Check {
    const NAME: &str = "converged";
    let Some(worst) = probe.and_then(|p| {
        p.convergence
            .iter()
            .max_by(|a, b| a.change().total_cmp(&b.change()))
    }) else {
        return not_run(
            NAME,
            "the run holds no convergence run of a quoted attack (an ensemble) on this checkpoint",
        );
    };
    Check {
        name: NAME,
        passed: Some(worst.converged()),
        detail: format!(
            "{} → {} on the first {} test examples at ε {}: {} of the {} robust newly broken ({} of the sample; allowed: {}); robust {} → {}",
            worst.attack,
            worst.stronger,
            worst.examples,
            format_eps(worst.eps),
            worst.newly_broken,
            worst.robust,
            pct(worst.change()),
            pct(advrob_eval::convergence::GAP),
            worst.robust,
            worst.robust_stronger
        ),
    }
}

/// The name of the binarization check: a failure reads "attack failed its unit test".
pub const BINARIZATION: &str = "binarization test";

/// The quoted attack passes its unit test: on the binary classifiers of the binarization test
/// ([`advrob_eval::binarization`], Zimmermann et al. 2022), each with an adversarial example
/// inside the budget by construction, it must find one on at least
/// [`advrob_eval::binarization::PASS_SHARE`] of the valid samples at every ε. Inconclusive (not
/// run) with fewer than [`advrob_eval::binarization::MIN_VALID`] valid samples.
pub fn attack_passes_binarization(probe: Option<&Probe>) -> Check {
    let tests: Vec<_> = probe
        .map(|p| p.binarization.iter().collect())
        .unwrap_or_default();
    if tests.is_empty() {
        return not_run(
            BINARIZATION,
            "the run holds no binarization test of a quoted attack (an ensemble) on this checkpoint, or the model has no readable last layer",
        );
    }
    let describe = |t: &advrob_eval::Binarization| {
        let robust = if t.robust_valid > 0 {
            format!(
                ", {} of {} where it had left the model robust",
                t.robust_solved, t.robust_valid
            )
        } else {
            String::new()
        };
        format!(
            "{} at ε {} solved {} of {} valid samples ({} tested){robust}",
            t.attack,
            format_eps(t.eps),
            t.solved,
            t.valid,
            t.tested
        )
    };
    let details: Vec<String> = tests.iter().map(|t| describe(t)).collect();
    let results: Vec<Option<bool>> = tests.iter().map(|t| t.passed()).collect();
    let passed = if results.contains(&Some(false)) {
        Some(false)
    } else if results.iter().all(Option::is_some) {
        Some(true)
    } else {
        None
    };
    Check {
        name: BINARIZATION,
        passed,
        detail: format!(
            "{} (needed: {} of the valid samples, at least {} valid)",
            details.join("; "),
            pct(advrob_eval::binarization::PASS_SHARE),
            advrob_eval::binarization::MIN_VALID
        ),
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
    let mark = |c: &Check| match c.passed {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "–",
    };
    for v in verdicts {
        t.push_str(&format!("| {} | {} | {} |", v.model, v.backend, v.label()));
        for c in &v.checks {
            t.push_str(&format!(" {} |", mark(c)));
        }
        t.push('\n');
    }
    t.push_str("\n## Details\n\n");
    for v in verdicts {
        t.push_str(&format!("### {} ({})\n\n", v.model, v.backend));
        for c in &v.checks {
            t.push_str(&format!("- {} {}: {}\n", mark(c), c.name, c.detail));
        }
        for n in &v.notes {
            t.push_str(&format!("- ℹ {n}\n"));
        }
        t.push('\n');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rec, set_attack};

    fn with(model: &str, attack: &str, eps: f64, adv: f64) -> Record {
        let mut r = rec(model, 1, eps, 0.95, adv);
        set_attack(&mut r, attack);
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
        let probe = |zero: f64, broken: f64| Probe {
            zero_gradient_share: zero,
            zero_dlr_gradient_share: Some(zero),
            unbounded_accuracy: 0.95 * (1.0 - broken),
            unbounded_broken: broken,
            unbounded_examples: 1000,
            classes: 10,
            random_forward: false,
            probability_outputs: false,
            binarization: Vec::new(),
            convergence: Vec::new(),
        };
        let probes: BTreeMap<(String, String), Probe> = [
            (
                ("honest".to_string(), "ndarray".to_string()),
                probe(0.0, 1.0),
            ),
            (
                ("masked".to_string(), "ndarray".to_string()),
                probe(1.0, 0.05),
            ),
        ]
        .into_iter()
        .collect();
        let v = verdicts(&records, &probes);
        assert_eq!(v[0].model, "honest");
        assert!(v[0].failing().is_empty(), "{:?}", v[0]);
        // no transfer attack, no doubled steps, no ensemble: not every check could run, and the
        // label says so instead of "no masking detected"
        assert_eq!(
            v[0].label(),
            "8 of 12 checks ran, none failed (not run: white-box ≥ transfer, converged, binarization test, black-box ≤ white-box)"
        );
        assert_eq!(
            v[1].failing(),
            [
                "iterative ≥ single-step",
                "falls with ε",
                "unbounded ε breaks all",
                "gradients present",
                "DLR gradients present",
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
        assert!(
            unbounded
                .detail
                .contains("breaks 5.0% of the clean-correct examples among the first 1000"),
            "{unbounded:?}"
        );
        let md = markdown(&v);
        assert!(
            md.contains("| masked | ndarray | robustness not established ("),
            "{md}"
        );
    }

    #[test]
    fn the_unbounded_check_wants_nearly_every_example_broken() {
        // a saturated model that keeps 8.7% of its examples at ε = 1 passed the old "chance + 0.5
        // points" threshold (chance is 10%); 91.3% broken is not "everything"
        let p = |broken: f64| Probe {
            zero_gradient_share: 0.0,
            zero_dlr_gradient_share: Some(0.0),
            unbounded_accuracy: 1.0 - broken,
            unbounded_broken: broken,
            unbounded_examples: 1000,
            classes: 10,
            random_forward: false,
            probability_outputs: false,
            binarization: Vec::new(),
            convergence: Vec::new(),
        };
        assert_eq!(
            unbounded_breaks_everything(Some(&p(0.913))).passed,
            Some(false)
        );
        assert_eq!(
            unbounded_breaks_everything(Some(&p(0.995))).passed,
            Some(true)
        );
        // and the forward-pass checks read the probe
        let random = Probe {
            random_forward: true,
            probability_outputs: true,
            ..p(1.0)
        };
        assert_eq!(deterministic_forward(Some(&random)).passed, Some(false));
        assert_eq!(outputs_are_logits(Some(&random)).passed, Some(false));
    }

    #[test]
    fn square_breaking_what_gradients_left_is_masking() {
        use advrob_attack::{AttackInfo, AttackLoss, Family, Norm};
        use advrob_eval::ComponentResult;
        let component = |family, access, broken| ComponentResult {
            attack: format!("{family:?}"),
            info: AttackInfo {
                access,
                ..AttackInfo::white_box(family, Norm::Linf, AttackLoss::CrossEntropy, 100)
            },
            broken,
            attacked: None,
        };
        let ensemble = |model: &str, square: usize| {
            let mut r = with(model, "fgsm", 0.1, 0.5);
            r.eval.examples = 1000;
            r.eval.components = Some(vec![
                component(Family::Apgd, Access::WhiteBox, 400),
                component(Family::Square, Access::BlackBox, square),
            ]);
            r
        };
        let honest = ensemble("honest", 1);
        let masked = ensemble("masked", 300);
        assert_eq!(black_box_adds_little(&[&honest]).passed, Some(true));
        let c = black_box_adds_little(&[&masked]);
        assert_eq!(c.passed, Some(false), "{c:?}");
        assert!(c.detail.contains("30.0%"), "{}", c.detail);
        assert_eq!(black_box_adds_little(&[]).passed, None);
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
    fn doubled_pgd_steps_are_information_not_a_reason_to_distrust_the_figure() {
        let records = vec![
            with("m", "pgd-linf-10", 0.1, 0.50),
            with("m", "pgd-linf-20", 0.1, 0.45),
        ];
        let v = verdicts(&records, &BTreeMap::new());
        assert_eq!(v[0].notes.len(), 1, "{:?}", v[0].notes);
        assert!(v[0].notes[0].contains("5.0%"), "{}", v[0].notes[0]);
        assert!(!v[0].unreliable(), "{:?}", v[0].failing());
        assert!(markdown(&v).contains("- ℹ pgd-linf-10 → pgd-linf-20"));
    }

    fn probe_with(
        binarization: Vec<advrob_eval::Binarization>,
        convergence: Vec<advrob_eval::Convergence>,
    ) -> Probe {
        Probe {
            zero_gradient_share: 0.0,
            zero_dlr_gradient_share: Some(0.0),
            unbounded_accuracy: 0.0,
            unbounded_broken: 1.0,
            unbounded_examples: 1000,
            classes: 10,
            random_forward: false,
            probability_outputs: false,
            binarization,
            convergence,
        }
    }

    #[test]
    fn the_quoted_figure_converges_when_a_stronger_run_newly_breaks_at_most_one_point() {
        let run = |newly_broken| advrob_eval::Convergence {
            attack: "ensemble".into(),
            stronger: "ensemble-stronger".into(),
            eps: 0.1,
            examples: 200,
            robust: 150,
            robust_stronger: 150 - newly_broken + 1,
            newly_broken,
        };
        // 2 of 200 is 1.0%: converged; 3 is not
        let c = converged(Some(&probe_with(vec![], vec![run(2)])));
        assert_eq!(c.passed, Some(true), "{c:?}");
        let c = converged(Some(&probe_with(vec![], vec![run(0), run(3)])));
        assert_eq!(c.passed, Some(false), "{c:?}");
        assert!(
            c.detail.contains("3 of the 150 robust newly broken"),
            "{}",
            c.detail
        );
        assert_eq!(converged(Some(&probe_with(vec![], vec![]))).passed, None);
    }

    #[test]
    fn an_attack_that_fails_its_unit_test_makes_the_figure_unreliable() {
        let test = |valid, solved| advrob_eval::Binarization {
            attack: "fgsm".into(),
            eps: 0.1,
            tested: 32,
            valid,
            solved,
            robust_valid: valid / 2,
            robust_solved: 0,
        };
        let records = vec![
            with("weak", "fgsm", 0.1, 0.9),
            with("strong", "fgsm", 0.1, 0.1),
        ];
        let probes: BTreeMap<(String, String), Probe> = [
            (
                ("weak".into(), "ndarray".into()),
                probe_with(vec![test(30, 3)], vec![]),
            ),
            (
                ("strong".into(), "ndarray".into()),
                probe_with(vec![test(30, 27)], vec![]),
            ),
        ]
        .into_iter()
        .collect();
        let v = verdicts(&records, &probes);
        assert_eq!(v[1].model, "weak");
        assert!(
            v[1].label().contains("attack failed its unit test"),
            "{}",
            v[1].label()
        );
        let check = |v: &Verdict| {
            v.checks
                .iter()
                .find(|c| c.name == BINARIZATION)
                .cloned()
                .expect("check")
        };
        assert_eq!(check(&v[1]).passed, Some(false));
        assert!(
            check(&v[1]).detail.contains("solved 3 of 30 valid samples"),
            "{}",
            check(&v[1]).detail
        );
        // 27 of 30 is 90%: passes
        assert_eq!(check(&v[0]).passed, Some(true), "{:?}", check(&v[0]));
        // too few valid samples: inconclusive
        let few = attack_passes_binarization(Some(&probe_with(vec![test(4, 0)], vec![])));
        assert_eq!(few.passed, None);
    }
}
