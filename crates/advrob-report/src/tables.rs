//! The records of one or more runs as polars tables — CSV, Parquet and Markdown tables of
//! accuracy × ε per model, attack and backend.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use advrob_experiment::Record;
use polars::prelude::*;

use crate::error::Result;

/// One row per record, sorted by model, attack, backend, seed and ε.
pub fn frame(records: &[Record]) -> PolarsResult<DataFrame> {
    let s = |name: &str, f: &dyn Fn(&Record) -> String| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<String>>())
    };
    let x = |name: &str, f: &dyn Fn(&Record) -> f64| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<f64>>())
    };
    let u = |name: &str, f: &dyn Fn(&Record) -> u64| {
        Column::new(name.into(), records.iter().map(f).collect::<Vec<u64>>())
    };
    let df = DataFrame::new(vec![
        s("run", &|r| r.run.clone()),
        s("dataset", &|r| r.dataset.clone()),
        s("preset", &|r| r.preset.clone()),
        s("model", &|r| r.model.clone()),
        s("defense", &|r| r.defense.clone()),
        s("loss", &|r| r.loss.clone()),
        s("attack", &|r| r.attack.clone()),
        s("attack_labels", &|r| r.attack_labels.clone()),
        s("backend", &|r| r.backend.clone()),
        u("seed", &|r| r.seed),
        x("eps", &|r| r.eval.eps),
        u("examples", &|r| r.eval.examples as u64),
        x("clean_accuracy", &|r| r.eval.clean_accuracy),
        x("adversarial_accuracy", &|r| r.eval.adversarial_accuracy),
        Column::new(
            "success_rate".into(),
            records
                .iter()
                .map(|r| r.eval.success_rate)
                .collect::<Vec<Option<f64>>>(),
        ),
        Column::new(
            "targeted_success".into(),
            records
                .iter()
                .map(|r| r.eval.targeted_success)
                .collect::<Vec<Option<f64>>>(),
        ),
        x("mean_linf", &|r| r.eval.mean_linf),
        x("mean_l2", &|r| r.eval.mean_l2),
        x("mean_confidence", &|r| r.eval.mean_confidence),
        x("eval_seconds", &|r| r.eval.seconds),
        x("train_seconds", &|r| r.train_seconds),
        s("checkpoint_sha256", &|r| r.checkpoint_sha256.clone()),
        Column::new(
            "dataset_verified".into(),
            records
                .iter()
                .map(|r| r.dataset_verified)
                .collect::<Vec<bool>>(),
        ),
        s("burn", &|r| r.versions.burn.clone()),
    ])?;
    df.sort(
        ["model", "attack", "backend", "seed", "eps"],
        SortMultipleOptions::default(),
    )
}

/// The row keys of the ε tables.
const KEYS: [&str; 4] = ["model", "defense", "attack", "backend"];

/// Accuracy × ε: one row per (model, defense, attack, backend), the mean over seeds (the `seeds`
/// column lists them), clean accuracy first. Records that share these names but not their
/// settings must have been renamed apart first ([`crate::identity::distinguish`]).
pub fn accuracy_table(df: &DataFrame) -> Result<String> {
    eps_table(df, "adversarial_accuracy", &[])
}

/// The summary of one preset: [`accuracy_table`] followed by the mean over the attacked budgets
/// (ε > 0) of the success rate and of the perturbation norms.
pub fn summary_table(df: &DataFrame) -> Result<String> {
    eps_table(
        df,
        "adversarial_accuracy",
        &[
            ("mean success rate", "success_rate", true),
            ("mean L∞", "mean_linf", false),
            ("mean L2", "mean_l2", false),
        ],
    )
}

/// `value` × ε, as [`accuracy_table`]: the mean over seeds of `value` per key and ε, pivoted to one
/// column per ε, undefended models first. Rows where `value` is missing everywhere are left out.
/// Each of `extra` (header, column, as a percentage) adds a column with that column's mean over
/// the records with ε > 0.
// polars deprecates eager group-by aggregations in favour of `lazy`, which with `parquet` pulls in
// an HTTP/cloud stack (+11 minutes of build on 2 cores); the eager ones are still correct.
#[allow(deprecated)]
pub fn eps_table(df: &DataFrame, value: &str, extra: &[(&str, &str, bool)]) -> Result<String> {
    let wide = pivot_by_eps(df, value)?;
    let clean = df.group_by(KEYS)?.select(["clean_accuracy"]).mean()?;
    let seeds = seeds_of(df)?;
    let attacked = df.filter(&df.column("eps")?.f64()?.gt(0.0))?;
    let extras: Vec<DataFrame> = extra
        .iter()
        .map(|(_, col, _)| Ok(attacked.group_by(KEYS)?.select([*col]).mean()?))
        .collect::<Result<_>>()?;
    let eps_cols = eps_columns(&wide);
    let mut out = eps_header(&eps_cols, extra);
    let value_of = |v: Option<AnyValue>| v.and_then(|v| v.extract::<f64>());
    let pct = |v: Option<f64>| match v {
        Some(x) => format!("{:.2}%", 100.0 * x),
        None => "–".to_string(),
    };
    for i in 0..wide.height() {
        let key = key_of(&wide, i);
        let cells: Vec<Option<f64>> = eps_cols
            .iter()
            .map(|(_, name)| Ok(value_of(Some(wide.column(name)?.get(i)?))))
            .collect::<Result<_>>()?;
        if cells.iter().all(Option::is_none) {
            continue;
        }
        let n_seeds = seeds.get(&key).map_or_else(String::new, |s| {
            s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        });
        out.push_str("| ");
        for k in &key {
            out.push_str(k.as_deref().unwrap_or(""));
            out.push_str(" | ");
        }
        out.push_str(&format!(
            "{n_seeds} | {} |",
            pct(value_of(lookup(&clean, "clean_accuracy_mean", &key)?))
        ));
        for c in cells {
            out.push_str(&format!(" {} |", pct(c)));
        }
        for ((_, col, as_pct), t) in extra.iter().zip(&extras) {
            let v = value_of(lookup(t, &format!("{col}_mean"), &key)?);
            out.push_str(&match (v, as_pct) {
                (Some(x), false) => format!(" {x:.4} |"),
                (v, _) => format!(" {} |", pct(v)),
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// The mean over seeds of `value` per key and ε, pivoted to one column per ε (named by it), one
/// row per key, undefended models first.
#[allow(deprecated)]
fn pivot_by_eps(df: &DataFrame, value: &str) -> Result<DataFrame> {
    let mut group: Vec<&str> = KEYS.to_vec();
    group.push("eps");
    let means = df.group_by(group)?.select([value]).mean()?;
    let mean_col = format!("{value}_mean");
    let wide = polars_ops::frame::pivot::pivot(
        &means,
        ["eps"],
        Some(KEYS),
        Some([mean_col.as_str()]),
        false,
        None,
        None,
    )?;
    let undefended_last = wide
        .column("defense")?
        .str()?
        .not_equal("none")
        .into_series()
        .with_name("undefended_last".into());
    let mut wide = wide;
    wide.with_column(undefended_last)?;
    let mut order: Vec<&str> = vec!["undefended_last"];
    order.extend(KEYS);
    let wide = wide.sort(order, SortMultipleOptions::default())?;
    Ok(wide)
}

/// The seeds each row key of `df` averages over.
fn seeds_of(df: &DataFrame) -> Result<BTreeMap<Vec<Option<String>>, BTreeSet<u64>>> {
    let seed = df.column("seed")?.u64()?;
    let mut out: BTreeMap<Vec<Option<String>>, BTreeSet<u64>> = BTreeMap::new();
    for i in 0..df.height() {
        if let Some(s) = seed.get(i) {
            out.entry(key_of(df, i)).or_default().insert(s);
        }
    }
    Ok(out)
}

/// The row key (model, defense, attack, backend) of row `i` of `t`.
fn key_of(t: &DataFrame, i: usize) -> Vec<Option<String>> {
    KEYS.iter()
        .map(|k| {
            t.column(k)
                .ok()
                .and_then(|c| c.str().ok())
                .and_then(|c| c.get(i))
                .map(String::from)
        })
        .collect()
}

/// The value of column `col` of `t` in the first row whose key is `key`; none when no row has it.
fn lookup(t: &DataFrame, col: &str, key: &[Option<String>]) -> Result<Option<AnyValue<'static>>> {
    for i in 0..t.height() {
        if key_of(t, i).as_slice() == key {
            return Ok(Some(t.column(col)?.get(i)?.into_static()));
        }
    }
    Ok(None)
}

/// The ε columns of the pivoted table `wide`, each with its budget, in increasing ε.
fn eps_columns(wide: &DataFrame) -> Vec<(f64, String)> {
    let mut eps_cols: Vec<(f64, String)> = wide
        .get_column_names()
        .into_iter()
        .filter(|n| !KEYS.contains(&n.as_str()))
        .filter_map(|n| n.parse::<f64>().ok().map(|v| (v, n.to_string())))
        .collect();
    eps_cols.sort_by(|a, b| a.0.total_cmp(&b.0));
    eps_cols
}

/// The header and separator lines of an ε table with the columns `eps_cols` and `extra`.
fn eps_header(eps_cols: &[(f64, String)], extra: &[(&str, &str, bool)]) -> String {
    let mut out = String::from("| model | defense | attack | backend | seeds | clean |");
    for (e, _) in eps_cols {
        out.push_str(&format!(" ε={} |", format_eps(*e)));
    }
    for (header, _, _) in extra {
        out.push_str(&format!(" {header} |"));
    }
    out.push_str("\n|---|---|---|---|---:|---:|");
    out.push_str(&"---:|".repeat(eps_cols.len() + extra.len()));
    out.push('\n');
    out
}

/// ε as a reader wants it: `0.1`, or `10/255` for the seed-004 notebook's grid.
pub fn format_eps(e: f64) -> String {
    let k = e * 255.0;
    let short = format!("{e}");
    if short.len() > 6 && (k - k.round()).abs() < 1e-9 {
        format!("{}/255", k.round())
    } else {
        short
    }
}

/// Writes `path` through `write` atomically, with the permissions the umask gives
/// ([`advrob_data::atomic_write_with`]).
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> Result<()>,
) -> Result<()> {
    advrob_data::atomic_write_with(path, write)
}

/// The parts of `df` to report separately: one per (dataset, number of test examples), so that
/// results on different test sets never share a row; each with its heading (`mnist (10000 test
/// examples)`, marked when the data was not verified against the canonical checksums).
pub fn parts(df: &DataFrame) -> Result<Vec<(String, DataFrame)>> {
    let mut out = Vec::new();
    for dataset in unique_strings(df, "dataset")? {
        let of_dataset = df.filter(&df.column("dataset")?.str()?.equal(dataset.as_str()))?;
        let mut sizes: Vec<u64> = of_dataset
            .column("examples")?
            .u64()?
            .into_iter()
            .flatten()
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        for n in sizes {
            let part = of_dataset.filter(&of_dataset.column("examples")?.u64()?.equal(n))?;
            let unverified = part
                .column("dataset_verified")?
                .bool()?
                .into_iter()
                .any(|v| v == Some(false));
            let mark = if unverified {
                ", unverified data: loaded from a directory, not checked against the canonical checksums"
            } else {
                ""
            };
            out.push((format!("{dataset} ({n} test examples{mark})"), part));
        }
    }
    Ok(out)
}

/// `summary.md`: one section per (preset, dataset, test set) with [`summary_table`].
pub fn summary_markdown(df: &DataFrame) -> Result<String> {
    let mut text = String::from(
        "# advrob summary\n\nPer preset: clean accuracy, robust accuracy under each attack at each ε (share of all test examples classified correctly before and after the attack), and the means over ε > 0 of the attack success rate (among clean-correct examples) and of the perturbation norms actually applied.\n\n",
    );
    for preset in unique_strings(df, "preset")? {
        let of_preset = df.filter(&df.column("preset")?.str()?.equal(preset.as_str()))?;
        let name = if preset.is_empty() {
            "(no preset)"
        } else {
            &preset
        };
        for (heading, part) in parts(&of_preset)? {
            text.push_str(&format!("## {name} — {heading}\n\n"));
            text.push_str(&summary_table(&part)?);
            text.push('\n');
        }
    }
    Ok(text)
}

pub(crate) fn unique_strings(df: &DataFrame, col: &str) -> Result<Vec<String>> {
    let mut v: Vec<String> = df
        .column(col)?
        .str()?
        .into_iter()
        .flatten()
        .map(String::from)
        .collect();
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rec, set_attack};

    #[test]
    fn pivot_gives_means_over_seeds_per_eps() {
        let records = vec![
            rec("a", 1, 0.0, 0.9, 0.9),
            rec("a", 1, 0.1, 0.9, 0.5),
            rec("a", 2, 0.0, 0.8, 0.8),
            rec("a", 2, 0.1, 0.8, 0.3),
            rec("b", 1, 0.0, 0.7, 0.7),
            rec("b", 1, 0.1, 0.7, 0.6),
        ];
        let df = frame(&records).expect("frame");
        let table = accuracy_table(&df).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "| model | defense | attack | backend | seeds | clean | ε=0 | ε=0.1 |"
        );
        // model a: clean mean 0.85, ε=0.1 mean (0.5 + 0.3) / 2 = 0.4, two seeds
        assert_eq!(
            lines[2],
            "| a | none | fgsm | ndarray | 1, 2 | 85.00% | 85.00% | 40.00% |"
        );
        assert_eq!(
            lines[3],
            "| b | none | fgsm | ndarray | 1 | 70.00% | 70.00% | 60.00% |"
        );
        // no targeted attack: no row has a targeted success
        assert_eq!(
            eps_table(&df, "targeted_success", &[])
                .expect("table")
                .lines()
                .count(),
            2
        );
        // the summary adds the means over ε > 0: for a, success 1 − 0.5/0.9 and 1 − 0.3/0.8
        let summary = summary_table(&df).expect("summary");
        let a = summary.lines().nth(2).expect("row a");
        let want = 100.0 * ((1.0 - 0.5 / 0.9) + (1.0 - 0.3 / 0.8)) / 2.0;
        assert!(
            a.ends_with(&format!(" {want:.2}% | 0.1000 | 0.1000 |")),
            "{a}"
        );
    }

    #[test]
    fn worst_case_takes_the_lowest_untargeted_accuracy() {
        let mut pgd = rec("a", 1, 0.1, 0.9, 0.2);
        set_attack(&mut pgd, "pgd-linf-10");
        let mut targeted = rec("a", 1, 0.1, 0.9, 0.05);
        set_attack(&mut targeted, "fgsm-targeted-shift2");
        let records = [rec("a", 1, 0.1, 0.9, 0.5), pgd, targeted];
        let worst = crate::stats::worst_frame(&crate::stats::worst_case(&records)).expect("worst");
        let table = eps_table(&worst, "adversarial_accuracy", &[]).expect("table");
        // min(0.5, 0.2) without per-example results; the targeted attack's accuracy is not a
        // robustness bound
        assert_eq!(
            table.lines().nth(2).expect("row"),
            "| a | none | worst case, min over attacks | ndarray | 1 | 90.00% | 20.00% |"
        );
    }

    #[test]
    fn undefended_models_come_first_and_seed_004_eps_reads_as_fractions_of_255() {
        let mut defended = rec("a-defended", 1, 10.0 / 255.0, 0.9, 0.8);
        defended.defense = "label-smoothing".into();
        let records = vec![defended, rec("z-plain", 1, 10.0 / 255.0, 0.9, 0.5)];
        let table = accuracy_table(&frame(&records).expect("frame")).expect("table");
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("ε=10/255 |"), "{}", lines[0]);
        assert!(lines[2].starts_with("| z-plain | none |"), "{table}");
        assert!(
            lines[3].starts_with("| a-defended | label-smoothing |"),
            "{table}"
        );
        assert_eq!(format_eps(0.1), "0.1");
    }
}
