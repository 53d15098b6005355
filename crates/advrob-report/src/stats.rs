//! Per-example statistics from the records' `adversarial_correct_examples`: the worst case over
//! attacks per example, bootstrap intervals, and paired (McNemar) comparisons with the baseline.

use std::collections::BTreeMap;

use advrob_data::rng::SplitMix64;
use advrob_eval::Bits;
use advrob_experiment::Record;
use polars::prelude::*;

use crate::tables::format_eps;

/// Bootstrap replicates of every interval.
pub const BOOTSTRAP: usize = 1000;

pub use advrob_experiment::observe::is_study_fgsm;

/// One (model, backend, seed, ε) under the worst attack.
#[derive(Debug, Clone)]
pub struct Worst {
    /// The dataset.
    pub dataset: String,
    /// The model.
    pub model: String,
    /// Its defense.
    pub defense: String,
    /// The backend.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// The budget.
    pub eps: f64,
    /// The attacks it is the worst of.
    pub attacks: usize,
    /// The clean accuracy of the records.
    pub clean_accuracy: f64,
    /// The share of examples that every attack left correctly classified (or, without
    /// per-example results, the lowest accuracy of any attack).
    pub adversarial_accuracy: f64,
    /// Per example: correct under every attack. `None` when a record lacked its per-example
    /// results (older records); the accuracy is then the minimum over attacks, an upper bound.
    pub correct: Option<Bits>,
}

/// The worst case over all attacks that count for robustness — untargeted and within their budget
/// (white-box, adaptive, black-box and transfer) — per example: an example counts as robust at ε
/// only if every such attack left it correctly classified. Targeted attacks measure something
/// else, and an attack that breaks its budget (the seed-004 notebook's cumulative FGSM) never
/// enters: both are read from the records' typed metadata.
pub fn worst_case(records: &[Record]) -> Vec<Worst> {
    // one group per test set too: per-example results of different test sets are never combined
    type Group = (String, String, String, u64, usize, u64);
    let mut groups: BTreeMap<Group, Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.info().counts_for_robustness()) {
        groups
            .entry((
                r.dataset.clone(),
                r.model.clone(),
                r.backend.clone(),
                r.seed,
                r.eval.examples,
                r.eval.eps.to_bits(),
            ))
            .or_default()
            .push(r);
    }
    let mut out = Vec::new();
    for ((dataset, model, backend, seed, _, _), rs) in groups {
        let first = rs[0];
        let n = first.eval.examples;
        let all: Option<Vec<&Bits>> = rs
            .iter()
            .map(|r| {
                r.eval
                    .adversarial_correct_examples
                    .as_ref()
                    .filter(|b| b.0.len() == n)
            })
            .collect();
        let (acc, correct) = match all {
            Some(bits) => {
                let and: Vec<bool> = (0..n).map(|i| bits.iter().all(|b| b.0[i])).collect();
                let b = Bits(and);
                (b.count() as f64 / n.max(1) as f64, Some(b))
            }
            None => (
                rs.iter()
                    .map(|r| r.eval.adversarial_accuracy)
                    .fold(f64::INFINITY, f64::min),
                None,
            ),
        };
        out.push(Worst {
            dataset,
            model,
            defense: first.defense.clone(),
            backend,
            seed,
            eps: first.eval.eps,
            attacks: rs.len(),
            clean_accuracy: first.eval.clean_accuracy,
            adversarial_accuracy: acc,
            correct,
        });
    }
    out
}

/// The rows of [`worst_case`] as a frame with the columns of [`crate::tables::frame`] that the ε tables
/// use; the attack is named `worst case, per example` (or `…, min over attacks` for rows
/// without per-example results).
pub fn worst_frame(rows: &[Worst]) -> PolarsResult<DataFrame> {
    let s = |f: &dyn Fn(&Worst) -> String| rows.iter().map(f).collect::<Vec<_>>();
    DataFrame::new(vec![
        Column::new("dataset".into(), s(&|w| w.dataset.clone())),
        Column::new("model".into(), s(&|w| w.model.clone())),
        Column::new("defense".into(), s(&|w| w.defense.clone())),
        Column::new("attack".into(), s(&worst_name)),
        Column::new("backend".into(), s(&|w| w.backend.clone())),
        Column::new(
            "seed".into(),
            rows.iter().map(|w| w.seed).collect::<Vec<_>>(),
        ),
        Column::new("eps".into(), rows.iter().map(|w| w.eps).collect::<Vec<_>>()),
        Column::new(
            "adversarial_accuracy".into(),
            rows.iter()
                .map(|w| w.adversarial_accuracy)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "clean_accuracy".into(),
            rows.iter().map(|w| w.clean_accuracy).collect::<Vec<_>>(),
        ),
    ])
}

fn worst_name(w: &Worst) -> String {
    if w.correct.is_some() {
        "worst case, per example".to_string()
    } else {
        "worst case, min over attacks".to_string()
    }
}

/// Percentile bootstrap 95% interval of the mean accuracy over seeds, resampling test examples
/// (the same draw for every seed: the seeds are paired on the examples). `per_seed` are the
/// per-example results of each seed, all of one length.
pub fn bootstrap_interval(per_seed: &[&Bits], replicates: usize, seed: u64) -> (f64, f64) {
    let n = per_seed.first().map_or(0, |b| b.0.len());
    if n == 0 || replicates == 0 {
        return (f64::NAN, f64::NAN);
    }
    // per example, how many seeds got it right
    let c: Vec<u32> = (0..n)
        .map(|i| per_seed.iter().map(|b| u32::from(b.0[i])).sum())
        .collect();
    let denom = (n * per_seed.len()) as f64;
    let draws = resamples(n, replicates, seed);
    let mut means: Vec<f64> = draws
        .chunks(n)
        .map(|idx| {
            let sum: u64 = idx.iter().map(|&i| u64::from(c[i as usize])).sum();
            sum as f64 / denom
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (replicates - 1) as f64).round() as usize).min(replicates - 1)];
    (q(0.025), q(0.975))
}

/// The example indices of `replicates` resamples of `n` examples drawn from `seed` (one
/// replicate after another), shared by every interval of that size and seed: a report draws
/// them once instead of once per table cell (drawing was four fifths of a default report's
/// time); the draws, and so the intervals, are the same.
fn resamples(n: usize, replicates: usize, seed: u64) -> std::sync::Arc<Vec<u32>> {
    type Key = (usize, usize, u64);
    static CACHE: std::sync::Mutex<Option<(Key, std::sync::Arc<Vec<u32>>)>> =
        std::sync::Mutex::new(None);
    let key = (n, replicates, seed);
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((k, draws)) = cache.as_ref()
        && *k == key
    {
        return draws.clone();
    }
    let mut rng = SplitMix64::new(seed);
    let draws: std::sync::Arc<Vec<u32>> = std::sync::Arc::new(
        (0..n * replicates)
            .map(|_| rng.below(n as u64) as u32)
            .collect(),
    );
    *cache = Some((key, draws.clone()));
    draws
}

/// Two-sided p-value of McNemar's test on the discordant pairs: `b` examples right for the first
/// model only, `c` for the second only. Exact (binomial) below 25 discordant pairs, else the χ²
/// statistic with continuity correction.
pub fn mcnemar_p(b: usize, c: usize) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    if n < 25 {
        // 2 · P(X ≤ min(b, c)), X ~ Binomial(n, 1/2)
        let k = b.min(c);
        let mut p = 0.0;
        let mut coef = 1.0f64; // C(n, i)
        for i in 0..=k {
            if i > 0 {
                coef = coef * (n - i + 1) as f64 / i as f64;
            }
            p += coef;
        }
        return (2.0 * p / 2f64.powi(n as i32)).min(1.0);
    }
    let d = (b as f64 - c as f64).abs() - 1.0;
    let x = d.max(0.0).powi(2) / n as f64;
    erfc((x / 2.0).sqrt())
}

/// The complementary error function (Numerical Recipes' `erfcc`, relative error below 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

fn pct(x: f64) -> String {
    format!("{:.2}%", 100.0 * x)
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "p<0.001".into()
    } else {
        format!("p={p:.3}")
    }
}

/// `(model, defense, attack, backend)` → ε → seed → (accuracy, per-example results).
type Cells<'a> = BTreeMap<
    (String, String, String, String),
    BTreeMap<u64, BTreeMap<u64, (f64, Option<&'a Bits>)>>,
>;

fn cells<'a>(records: &'a [Record], worst: &'a [Worst]) -> Cells<'a> {
    let mut out: Cells<'a> = BTreeMap::new();
    for r in records {
        out.entry((
            r.model.clone(),
            r.defense.clone(),
            r.attack.clone(),
            r.backend.clone(),
        ))
        .or_default()
        .entry(r.eval.eps.to_bits())
        .or_default()
        .insert(
            r.seed,
            (
                r.eval.adversarial_accuracy,
                r.eval.adversarial_correct_examples.as_ref(),
            ),
        );
    }
    for w in worst {
        out.entry((
            w.model.clone(),
            w.defense.clone(),
            worst_name(w),
            w.backend.clone(),
        ))
        .or_default()
        .entry(w.eps.to_bits())
        .or_default()
        .insert(w.seed, (w.adversarial_accuracy, w.correct.as_ref()));
    }
    out
}

/// `intervals.csv`: per (model, defense, attack, backend, ε) — the attacks of the records and the
/// per-example worst case — the mean accuracy over seeds, its minimum and maximum over seeds and
/// the bootstrap 95% interval over test examples (empty where per-example results are missing).
pub fn intervals(records: &[Record], worst: &[Worst]) -> PolarsResult<DataFrame> {
    let mut cols: (Vec<String>, Vec<String>, Vec<String>, Vec<String>) = Default::default();
    let (mut eps, mut seeds, mut mean, mut min, mut max, mut lo, mut hi) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for ((model, defense, attack, backend), by_eps) in cells(records, worst) {
        for (e, by_seed) in by_eps {
            let accs: Vec<f64> = by_seed.values().map(|v| v.0).collect();
            let bits: Option<Vec<&Bits>> = by_seed.values().map(|v| v.1).collect();
            let (l, h) = match bits {
                Some(b) if b.windows(2).all(|w| w[0].0.len() == w[1].0.len()) => {
                    let (l, h) = bootstrap_interval(&b, BOOTSTRAP, 7);
                    (Some(l), Some(h))
                }
                _ => (None, None),
            };
            cols.0.push(model.clone());
            cols.1.push(defense.clone());
            cols.2.push(attack.clone());
            cols.3.push(backend.clone());
            eps.push(f64::from_bits(e));
            seeds.push(accs.len() as u64);
            mean.push(accs.iter().sum::<f64>() / accs.len().max(1) as f64);
            min.push(accs.iter().copied().fold(f64::INFINITY, f64::min));
            max.push(accs.iter().copied().fold(f64::NEG_INFINITY, f64::max));
            lo.push(l);
            hi.push(h);
        }
    }
    DataFrame::new(vec![
        Column::new("model".into(), cols.0),
        Column::new("defense".into(), cols.1),
        Column::new("attack".into(), cols.2),
        Column::new("backend".into(), cols.3),
        Column::new("eps".into(), eps),
        Column::new("seeds".into(), seeds),
        Column::new("mean".into(), mean),
        Column::new("min".into(), min),
        Column::new("max".into(), max),
        Column::new("ci_low".into(), lo),
        Column::new("ci_high".into(), hi),
    ])
}

/// The per-example worst case as a Markdown table: one row per (model, backend), one column per
/// ε, each cell the mean over seeds with its bootstrap 95% interval (and min–max over seeds when
/// there are several). Undefended models first.
pub fn worst_markdown(worst: &[Worst]) -> String {
    let c = cells(&[], worst);
    let mut grid: Vec<f64> = worst.iter().map(|w| w.eps).collect();
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    let mut out = String::from("| model | defense | attacks | backend | seeds |");
    for e in &grid {
        out.push_str(&format!(" ε={} |", format_eps(*e)));
    }
    out.push_str("\n|---|---|---|---|---:|");
    out.push_str(&"---:|".repeat(grid.len()));
    out.push('\n');
    // how many attacks each cell is the worst of, and how many there are at each ε anywhere: a
    // cell over fewer (records missing) is marked, never silently the worst of less
    let mut count: BTreeMap<(String, String, u64), usize> = BTreeMap::new();
    let mut expected: BTreeMap<u64, usize> = BTreeMap::new();
    for w in worst {
        let n = count
            .entry((w.model.clone(), w.backend.clone(), w.eps.to_bits()))
            .or_default();
        *n = (*n).max(w.attacks);
        let e = expected.entry(w.eps.to_bits()).or_default();
        *e = (*e).max(w.attacks);
    }
    let mut keys: Vec<_> = c.keys().cloned().collect();
    keys.sort_by_key(|k| (k.1 != "none", k.0.clone(), k.3.clone(), k.2.clone()));
    for key in keys {
        let by_eps = &c[&key];
        let n_seeds = by_eps.values().map(BTreeMap::len).max().unwrap_or(0);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {n_seeds} |",
            key.0, key.1, key.2, key.3
        ));
        for e in &grid {
            let Some(by_seed) = by_eps.get(&e.to_bits()) else {
                out.push_str(" – |");
                continue;
            };
            let accs: Vec<f64> = by_seed.values().map(|v| v.0).collect();
            let m = accs.iter().sum::<f64>() / accs.len().max(1) as f64;
            let mut cell = pct(m);
            if let Some(b) = by_seed
                .values()
                .map(|v| v.1)
                .collect::<Option<Vec<&Bits>>>()
            {
                let (l, h) = bootstrap_interval(&b, BOOTSTRAP, 7);
                cell.push_str(&format!(" [{:.1}, {:.1}]", 100.0 * l, 100.0 * h));
            }
            if accs.len() > 1 {
                let lo = accs.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = accs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                cell.push_str(&format!(" ({:.1}–{:.1})", 100.0 * lo, 100.0 * hi));
            }
            let k = count
                .get(&(key.0.clone(), key.3.clone(), e.to_bits()))
                .copied()
                .unwrap_or(0);
            let n = expected.get(&e.to_bits()).copied().unwrap_or(0);
            if k < n {
                cell.push_str(&format!(" (only {k} of {n} attacks)"));
            }
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

/// Paired comparisons of every model with the reference (the first undefended model) on the same
/// test examples, seeds and backend, under FGSM and under the per-example worst case: the
/// difference in accuracy and McNemar's p-value, per ε. Empty when there is no reference or no
/// per-example results.
pub fn mcnemar_markdown(records: &[Record], worst: &[Worst]) -> String {
    let c = cells(records, worst);
    let Some(reference) = c
        .keys()
        .filter(|k| k.1 == "none")
        .map(|k| k.0.clone())
        .min_by_key(|m| (m != "baseline", m.clone()))
    else {
        return String::new();
    };
    let mut grid: Vec<f64> = records
        .iter()
        .map(|r| r.eval.eps)
        .chain(worst.iter().map(|w| w.eps))
        .collect();
    grid.sort_by(f64::total_cmp);
    grid.dedup();
    let mut out = String::new();
    for attack in compared_attacks(records, worst, &c) {
        let table = mcnemar_rows(&c, &reference, &attack, &grid);
        if table.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "### {attack}: each model against {reference}\n\nAccuracy difference with {reference} on the same test examples (and seeds), and the two-sided p-value of McNemar's test on the examples only one of the two gets right.\n\n| model | defense | backend |"
        ));
        for e in &grid {
            out.push_str(&format!(" ε={} |", format_eps(*e)));
        }
        out.push_str("\n|---|---|---|");
        out.push_str(&"---:|".repeat(grid.len()));
        out.push('\n');
        out.push_str(&table);
        out.push('\n');
    }
    out
}

/// The attacks of `c` the paired comparisons are made under: the study's FGSM and the
/// per-example worst case, in name order.
fn compared_attacks(records: &[Record], worst: &[Worst], c: &Cells<'_>) -> Vec<String> {
    let compared: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| is_study_fgsm(r.info()))
        .map(|r| r.attack.clone())
        .chain(worst.iter().filter(|w| w.correct.is_some()).map(worst_name))
        .collect();
    c.keys()
        .map(|k| k.2.clone())
        .filter(|a| compared.contains(a))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// The table rows of the comparisons under `attack`: one per model (other than `reference`)
/// with at least one ε compared, each cell the difference and the p-value.
fn mcnemar_rows(c: &Cells<'_>, reference: &str, attack: &str, grid: &[f64]) -> String {
    let mut table = String::new();
    for ((model, defense, a, backend), by_eps) in c {
        if a != attack || model == reference {
            continue;
        }
        let Some(ref_eps) = c.get(&(
            reference.to_string(),
            "none".to_string(),
            attack.to_string(),
            backend.clone(),
        )) else {
            continue;
        };
        let mut row = format!("| {model} | {defense} | {backend} |");
        let mut any = false;
        for e in grid {
            let cell = match (by_eps.get(&e.to_bits()), ref_eps.get(&e.to_bits())) {
                (Some(mine), Some(theirs)) => paired_cell(mine, theirs),
                _ => None,
            };
            match cell {
                Some(cell) => {
                    any = true;
                    row.push_str(&cell);
                }
                None => row.push_str(" – |"),
            }
        }
        if any {
            table.push_str(&row);
            table.push('\n');
        }
    }
    table
}

/// One cell of a comparison: the accuracy difference and McNemar's p-value, from the discordant
/// pairs summed over the seeds both `mine` and `theirs` have; `None` when they share no example.
fn paired_cell(
    mine: &BTreeMap<u64, (f64, Option<&Bits>)>,
    theirs: &BTreeMap<u64, (f64, Option<&Bits>)>,
) -> Option<String> {
    let (mut b, mut cc, mut n, mut diff) = (0usize, 0usize, 0usize, 0i64);
    for (seed, (_, bits)) in mine {
        let (Some(x), Some((_, Some(y)))) = (bits, theirs.get(seed)) else {
            continue;
        };
        if x.0.len() != y.0.len() {
            continue;
        }
        for (p, q) in x.0.iter().zip(&y.0) {
            b += usize::from(*p && !*q);
            cc += usize::from(!*p && *q);
        }
        n += x.0.len();
        diff += x.count() as i64 - y.count() as i64;
    }
    if n == 0 {
        return None;
    }
    Some(format!(
        " {:+.1} pts, {} |",
        100.0 * diff as f64 / n as f64,
        p_text(mcnemar_p(b, cc))
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rec, set_attack};

    fn with_bits(model: &str, attack: &str, eps: f64, bits: &[bool]) -> Record {
        let mut r = rec(model, 1, eps, 1.0, 0.0);
        set_attack(&mut r, attack);
        if model != "baseline" {
            r.defense = "d".into();
        }
        r.eval.examples = bits.len();
        r.eval.adversarial_correct = bits.iter().filter(|b| **b).count();
        r.eval.adversarial_accuracy = r.eval.adversarial_correct as f64 / bits.len() as f64;
        r.eval.adversarial_correct_examples = Some(Bits(bits.to_vec()));
        r
    }

    #[test]
    fn the_worst_case_is_taken_per_example_not_per_attack() {
        // each attack alone leaves 2 of 4 correct, but not the same two
        let records = vec![
            with_bits("m", "fgsm", 0.1, &[true, true, false, false]),
            with_bits("m", "pgd-linf-10", 0.1, &[false, true, true, false]),
        ];
        let w = worst_case(&records);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].attacks, 2);
        assert!((w[0].adversarial_accuracy - 0.25).abs() < 1e-12, "{w:?}");
        // without per-example results: the minimum over attacks, named as such
        let mut old = records.clone();
        old[1].eval.adversarial_correct_examples = None;
        let w = worst_case(&old);
        assert!((w[0].adversarial_accuracy - 0.5).abs() < 1e-12, "{w:?}");
        assert_eq!(worst_name(&w[0]), "worst case, min over attacks");
    }

    #[test]
    fn an_attack_that_breaks_its_budget_never_enters_a_robust_figure() {
        // the seed-004 notebook's cumulative FGSM: its perturbation at ε is ε₁ + … + ε_k, so the
        // examples it breaks say nothing about robustness at ε
        let records = vec![
            with_bits("m", "fgsm", 0.1, &[true, true, true, false]),
            with_bits("m", "fgsm-cumulative", 0.1, &[false, false, false, false]),
            with_bits(
                "m",
                "fgsm-targeted-shift2",
                0.1,
                &[false, true, false, false],
            ),
        ];
        assert!(!records[1].info().bounded && records[2].info().targeted);
        let w = worst_case(&records);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].attacks, 1, "only the bounded untargeted attack: {w:?}");
        assert!((w[0].adversarial_accuracy - 0.75).abs() < 1e-12, "{w:?}");
        // nor a verdict curve
        let refs: Vec<&Record> = records.iter().collect();
        assert_eq!(
            crate::verdict::curves(&refs).keys().collect::<Vec<_>>(),
            ["fgsm"]
        );
    }

    #[test]
    fn several_seeds_give_a_mean_an_interval_and_a_min_max() {
        let mut second = with_bits("m", "fgsm", 0.1, &[true, false, false, false]);
        second.seed = 2;
        second.model_key = "m-2".into();
        second.key = "m-2/fgsm/0.1".into();
        let records = vec![
            with_bits("m", "fgsm", 0.1, &[true, true, true, false]),
            second,
        ];
        let worst = worst_case(&records);
        assert_eq!(worst.len(), 2, "one row per seed");
        let md = worst_markdown(&worst);
        // mean of 75% and 25%; min–max 25–75
        assert!(md.contains("| 2 | 50.00% ["), "{md}");
        assert!(md.contains("(25.0–75.0) |"), "{md}");
        let df = intervals(&records, &worst).expect("intervals");
        let mean = df.column("mean").expect("mean").f64().expect("f64").get(0);
        assert_eq!(mean, Some(0.5));
    }

    #[test]
    fn bootstrap_interval_brackets_the_mean_and_shrinks_with_n() {
        let make = |n: usize| Bits((0..n).map(|i| i % 4 != 0).collect()); // 75%
        let small = make(40);
        let large = make(4000);
        let (l1, h1) = bootstrap_interval(&[&small], 1000, 1);
        let (l2, h2) = bootstrap_interval(&[&large], 1000, 1);
        assert!(l1 < 0.75 && 0.75 < h1, "{l1} {h1}");
        assert!(l2 < 0.75 && 0.75 < h2, "{l2} {h2}");
        assert!(h2 - l2 < (h1 - l1) / 5.0, "{l1} {h1} / {l2} {h2}");
        // binomial standard error at n = 4000: 0.0068, so the 95% interval is about ±1.3 points
        assert!((h2 - l2 - 2.0 * 1.96 * 0.006_85).abs() < 0.004, "{l2} {h2}");
        // all right: no spread
        let all = Bits(vec![true; 50]);
        assert_eq!(bootstrap_interval(&[&all], 100, 1), (1.0, 1.0));
    }

    #[test]
    fn mcnemar_p_values_match_the_textbook() {
        assert_eq!(mcnemar_p(0, 0), 1.0);
        // exact: b = 0, c = 6 → 2 · 0.5^6 = 0.03125
        assert!((mcnemar_p(0, 6) - 0.031_25).abs() < 1e-12);
        // symmetric
        assert_eq!(mcnemar_p(3, 9), mcnemar_p(9, 3));
        // χ² with correction: b = 40, c = 20 → (20 − 1)² / 60 = 6.0167 → p = 0.01418
        assert!(
            (mcnemar_p(40, 20) - 0.014_18).abs() < 1e-4,
            "{}",
            mcnemar_p(40, 20)
        );
        assert!(mcnemar_p(500, 100) < 1e-6);
        assert!((erfc(0.0) - 1.0).abs() < 1e-7 && (erfc(-1.0) - 1.842_700_79).abs() < 1e-6);
    }

    #[test]
    fn mcnemar_table_compares_each_model_with_the_baseline() {
        let records = vec![
            with_bits("baseline", "fgsm", 0.1, &[true, false, false, false]),
            with_bits("robust", "fgsm", 0.1, &[true, true, true, false]),
        ];
        let md = mcnemar_markdown(&records, &worst_case(&records));
        assert!(md.contains("### fgsm: each model against baseline"), "{md}");
        // +50 points, b = 2, c = 0: exact p = 2 · 0.25 = 0.5
        assert!(
            md.contains("| robust | d | ndarray | +50.0 pts, p=0.500 |"),
            "{md}"
        );
        assert!(!md.contains("| baseline |"), "{md}");
        let worst = worst_markdown(&worst_case(&records));
        assert!(
            worst.contains("| baseline | none | worst case, per example |"),
            "{worst}"
        );
    }
}
