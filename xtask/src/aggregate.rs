//! `cargo xtask aggregate`: the records of one or more runs as polars tables — CSV, Parquet and a
//! Markdown table of accuracy × ε per model, attack and backend.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use bench_runner::record::{Record, read_records};
use bench_runner::run::RECORDS_FILE;
use polars::prelude::*;

/// What an aggregation read and wrote.
#[derive(Debug)]
pub struct Summary {
    pub records: usize,
    pub duplicates: usize,
    pub written: Vec<PathBuf>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "aggregated {} records ({} duplicates ignored) into {}",
            self.records,
            self.duplicates,
            self.written
                .iter()
                .map(|p| p
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().to_string()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Reads every run directory's records; a record whose key was already seen (the same model,
/// attack and ε from another directory) is counted as a duplicate and not used twice.
pub fn collect(runs: &[PathBuf]) -> anyhow::Result<(Vec<Record>, usize)> {
    let mut by_key: BTreeMap<String, Record> = BTreeMap::new();
    let mut duplicates = 0;
    for dir in runs {
        let path = dir.join(RECORDS_FILE);
        anyhow::ensure!(path.is_file(), "{}: no records here", path.display());
        for r in read_records(&path)? {
            if by_key.contains_key(&r.key) {
                duplicates += 1;
                log::warn!("{}: duplicate record {} ignored", path.display(), r.key);
            } else {
                by_key.insert(r.key.clone(), r);
            }
        }
    }
    Ok((by_key.into_values().collect(), duplicates))
}

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
        s("burn", &|r| r.versions.burn.clone()),
    ])?;
    df.sort(
        ["model", "attack", "backend", "seed", "eps"],
        SortMultipleOptions::default(),
    )
}

/// The row keys of the ε tables.
const KEYS: [&str; 4] = ["model", "defense", "attack", "backend"];

/// Accuracy × ε: one row per (model, defense, attack, backend), the mean over seeds, clean
/// accuracy first.
pub fn accuracy_table(df: &DataFrame) -> anyhow::Result<String> {
    eps_table(df, "adversarial_accuracy", &[])
}

/// The summary of one preset: [`accuracy_table`] followed by the mean over the attacked budgets
/// (ε > 0) of the success rate and of the perturbation norms.
pub fn summary_table(df: &DataFrame) -> anyhow::Result<String> {
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
pub fn eps_table(
    df: &DataFrame,
    value: &str,
    extra: &[(&str, &str, bool)],
) -> anyhow::Result<String> {
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
    let clean = df.group_by(KEYS)?.select(["clean_accuracy"]).mean()?;
    let seeds = df.group_by(KEYS)?.select(["seed"]).n_unique()?;
    let attacked = df.filter(&df.column("eps")?.f64()?.gt(0.0))?;
    let extras: Vec<DataFrame> = extra
        .iter()
        .map(|(_, col, _)| Ok(attacked.group_by(KEYS)?.select([*col]).mean()?))
        .collect::<anyhow::Result<_>>()?;
    let key_of = |t: &DataFrame, i: usize| -> Vec<Option<String>> {
        KEYS.iter()
            .map(|k| {
                t.column(k)
                    .ok()
                    .and_then(|c| c.str().ok())
                    .and_then(|c| c.get(i))
                    .map(String::from)
            })
            .collect()
    };
    let lookup = |t: &DataFrame,
                  col: &str,
                  key: &[Option<String>]|
     -> anyhow::Result<Option<AnyValue<'static>>> {
        for i in 0..t.height() {
            if key_of(t, i).as_slice() == key {
                return Ok(Some(t.column(col)?.get(i)?.into_static()));
            }
        }
        Ok(None)
    };
    let mut eps_cols: Vec<(f64, String)> = wide
        .get_column_names()
        .into_iter()
        .filter(|n| !KEYS.contains(&n.as_str()))
        .filter_map(|n| n.parse::<f64>().ok().map(|v| (v, n.to_string())))
        .collect();
    eps_cols.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut out = String::from("| model | defense | attack | backend | seeds | clean |");
    for (e, _) in &eps_cols {
        out.push_str(&format!(" ε={} |", format_eps(*e)));
    }
    for (header, _, _) in extra {
        out.push_str(&format!(" {header} |"));
    }
    out.push_str("\n|---|---|---|---|---:|---:|");
    out.push_str(&"---:|".repeat(eps_cols.len() + extra.len()));
    out.push('\n');
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
            .collect::<anyhow::Result<_>>()?;
        if cells.iter().all(Option::is_none) {
            continue;
        }
        let n_seeds = lookup(&seeds, "seed_n_unique", &key)?
            .and_then(|v| v.extract::<u64>())
            .unwrap_or(0);
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

fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    write(tmp.as_file_mut())?;
    tmp.persist(path)?;
    Ok(())
}

/// Reads the runs and writes the report into `reports`: `results.csv`, `results.parquet`,
/// `results.md` (accuracy × ε per dataset), `summary.md` (one table per preset with the mean
/// success rate and norms), `accuracy_vs_eps.{png,svg}`, `success_rate_vs_eps.{png,svg}`,
/// `training_<model>.png`, `examples_<model>.png` (when the test set is found under `data_dir` and
/// the checkpoints in the runs) and `index.html`, which holds all of it in one self-contained page.
pub fn aggregate(
    runs: &[PathBuf],
    reports: &Path,
    data_dir: Option<&Path>,
) -> anyhow::Result<Summary> {
    let (records, duplicates) = collect(runs)?;
    anyhow::ensure!(!records.is_empty(), "no records in {runs:?}");
    let mut df = frame(&records)?;
    std::fs::create_dir_all(reports)?;
    let mut written = Vec::new();
    let csv = reports.join("results.csv");
    write_atomic(&csv, |f| Ok(CsvWriter::new(f).finish(&mut df)?))?;
    let parquet = reports.join("results.parquet");
    write_atomic(&parquet, |f| {
        ParquetWriter::new(f).finish(&mut df)?;
        Ok(())
    })?;
    let md = reports.join("results.md");
    let mut text = String::from(
        "# advrob results\n\nAdversarial accuracy (share of all test examples classified correctly under attack), mean over seeds; `clean` is the accuracy without attack.\n\n",
    );
    for dataset in unique_strings(&df, "dataset")? {
        let part = df.filter(&df.column("dataset")?.str()?.equal(dataset.as_str()))?;
        let examples = part.column("examples")?.u64()?.max().unwrap_or(0);
        text.push_str(&format!("## {dataset} ({examples} test examples)\n\n"));
        text.push_str(&accuracy_table(&part)?);
        text.push('\n');
        let targeted = eps_table(&part, "targeted_success", &[])?;
        if targeted.lines().count() > 2 {
            text.push_str("Targeted attacks: share of all test examples classified as the attack's target.\n\n");
            text.push_str(&targeted);
            text.push('\n');
        }
    }
    advrob_data::atomic_write(&md, text.as_bytes())?;
    written.extend([csv, parquet, md]);

    let summary = summary_markdown(&df)?;
    let summary_path = reports.join("summary.md");
    advrob_data::atomic_write(&summary_path, summary.as_bytes())?;
    written.push(summary_path.clone());

    let test = data_dir.and_then(|d| local_test_set(&records, d));
    let mut probes = BTreeMap::new();
    let mut figures = Vec::new();
    if let Some(ds) = &test {
        figures.extend(example_figures(runs, &records, &ds.test, reports)?);
        for run in runs {
            let of_run = read_records(&run.join(RECORDS_FILE))?;
            for (k, v) in crate::report::probes(run, &of_run, &ds.test)? {
                probes.entry(k).or_insert(v);
            }
        }
    }
    let verdicts = crate::verdict::verdicts(&records, &probes);
    let mut verdict_md = crate::verdict::markdown(&verdicts);
    let worst = crate::stats::worst_case(&records);
    verdict_md.push_str("## Robust accuracy: the worst case over all attacks, per example\n\nThe share of test examples that every untargeted attack of the run (white-box, adaptive and transfer) left correctly classified, per ε; in brackets the bootstrap 95% interval over test examples (and min–max over seeds when there are several). A row marked `min over attacks` comes from records without per-example results: the lowest accuracy of any one attack, an upper bound.\n\n");
    verdict_md.push_str(&crate::stats::worst_markdown(&worst));
    let mut intervals = crate::stats::intervals(&records, &worst)?;
    let intervals_path = reports.join("intervals.csv");
    write_atomic(&intervals_path, |f| {
        Ok(CsvWriter::new(f).finish(&mut intervals)?)
    })?;
    written.push(intervals_path);
    let paired = crate::stats::mcnemar_markdown(&records, &worst);
    let summary = if paired.is_empty() {
        summary
    } else {
        let s = format!("{summary}## Paired comparisons (McNemar)\n\n{paired}");
        advrob_data::atomic_write(&summary_path, s.as_bytes())?;
        s
    };
    let verdict_path = reports.join("verdict.md");
    advrob_data::atomic_write(&verdict_path, verdict_md.as_bytes())?;
    written.push(verdict_path);
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
    let relabel = |mut panels: Vec<crate::plots::Panel>| {
        for p in &mut panels {
            for (name, _) in &mut p.curves {
                if let Some(l) = labels.get(&(name.clone(), p.backend.clone())) {
                    *name = l.clone();
                }
            }
        }
        panels
    };
    // one panel per attack, and one for the per-example worst case over all of them
    let mut acc = crate::plots::panels(&df, "adversarial_accuracy", true)?;
    acc.extend(crate::plots::panels(
        &crate::stats::worst_frame(&worst)?,
        "adversarial_accuracy",
        true,
    )?);
    let acc = relabel(acc);
    figures.extend(crate::plots::curves(
        &acc,
        "accuracy under attack",
        &reports.join("accuracy_vs_eps"),
    )?);
    let sr = relabel(crate::plots::panels(&df, "success_rate", false)?);
    if !sr.is_empty() {
        figures.extend(crate::plots::curves(
            &sr,
            "attack success rate",
            &reports.join("success_rate_vs_eps"),
        )?);
    }
    for model in unique_strings(&df, "model")? {
        let of_model: Vec<&Record> = records
            .iter()
            .filter(|r| r.model == model && !r.stages.is_empty())
            .collect();
        if of_model.is_empty() {
            continue;
        }
        let path = reports.join(format!("training_{model}.png"));
        crate::plots::training(&of_model, &model, &path)?;
        figures.push(path);
    }
    // the cross-backend agreement `cargo xtask agree` (or reproduce) left here
    let agreement = std::fs::read_to_string(reports.join("agreement.md")).unwrap_or_default();
    let page_md = format!("{summary}\n{verdict_md}\n{agreement}");
    let html = crate::report::html("advrob report", &page_md, &figures, &records)?;
    let index = reports.join("index.html");
    advrob_data::atomic_write(&index, html.as_bytes())?;
    written.extend(figures);
    written.push(index);
    Ok(Summary {
        records: records.len(),
        duplicates,
        written,
    })
}

/// `summary.md`: one section per (preset, dataset) with [`summary_table`].
pub fn summary_markdown(df: &DataFrame) -> anyhow::Result<String> {
    let mut text = String::from(
        "# advrob summary\n\nPer preset: clean accuracy, accuracy under each attack at each ε (share of all test examples), and the means over ε > 0 of the attack success rate (among clean-correct examples) and of the perturbation norms actually applied.\n\n",
    );
    for preset in unique_strings(df, "preset")? {
        let of_preset = df.filter(&df.column("preset")?.str()?.equal(preset.as_str()))?;
        for dataset in unique_strings(&of_preset, "dataset")? {
            let part =
                of_preset.filter(&of_preset.column("dataset")?.str()?.equal(dataset.as_str()))?;
            let examples = part.column("examples")?.u64()?.max().unwrap_or(0);
            let name = if preset.is_empty() {
                "(no preset)"
            } else {
                &preset
            };
            text.push_str(&format!(
                "## {name} — {dataset} ({examples} test examples)\n\n"
            ));
            text.push_str(&summary_table(&part)?);
            text.push('\n');
        }
    }
    Ok(text)
}

/// The test set of the first record's dataset, if it is under `data_dir` (or is a directory
/// itself): verified as it loads, never downloaded here.
pub fn local_test_set(records: &[Record], data_dir: &Path) -> Option<advrob_data::Dataset> {
    let first = records.first()?;
    let dir = match advrob_data::DatasetKind::from_name(&first.dataset) {
        Ok(kind) => data_dir.join(kind.name()),
        Err(_) => PathBuf::from(&first.dataset),
    };
    match advrob_data::Dataset::load_dir(&dir) {
        Ok(ds) => Some(ds),
        Err(e) => {
            log::warn!("no example grids or gradient check: {e}");
            None
        }
    }
}

fn example_figures(
    runs: &[PathBuf],
    records: &[Record],
    test: &advrob_data::Split,
    reports: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let Some(first) = records.first() else {
        return Ok(Vec::new());
    };
    let mut done = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for run in runs {
        let of_run: Vec<Record> = read_records(&run.join(RECORDS_FILE))?
            .into_iter()
            .filter(|r| r.dataset == first.dataset && !done.contains(&r.model))
            .collect();
        out.extend(crate::report::example_grids(run, &of_run, test, reports)?);
        done.extend(of_run.into_iter().map(|r| r.model));
    }
    Ok(out)
}

fn unique_strings(df: &DataFrame, col: &str) -> anyhow::Result<Vec<String>> {
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
pub(crate) mod tests {
    use super::*;
    use advrob_eval::EvalRecord;
    use bench_runner::record::Versions;

    pub(crate) fn rec(model: &str, seed: u64, eps: f64, clean: f64, adv: f64) -> Record {
        Record {
            key: format!("{model}-{seed}/fgsm/{eps}"),
            run: "t".into(),
            preset: "default".into(),
            model: model.into(),
            defense: "none".into(),
            defense_config: serde_json::Value::Null,
            fine_tuned_from: None,
            teacher: None,
            deploy_config: serde_json::Value::Null,
            attack: "fgsm".into(),
            attack_config: serde_json::Value::Null,
            attack_labels: "true".into(),
            loss: "cross-entropy".into(),
            backend: "ndarray".into(),
            device: "cpu".into(),
            seed,
            dataset: "mnist".into(),
            dataset_verified: true,
            dataset_files: vec![],
            model_config: serde_json::Value::Null,
            train_config: serde_json::Value::Null,
            train_examples: 10,
            checkpoint_sha256: "00".into(),
            train_seconds: 1.0,
            from_cache: false,
            stages: vec![],
            eval: EvalRecord {
                eps,
                examples: 100,
                clean_correct: (clean * 100.0) as usize,
                adversarial_correct: (adv * 100.0) as usize,
                clean_accuracy: clean,
                adversarial_accuracy: adv,
                success_rate: Some(1.0 - adv / clean),
                targeted_success: None,
                mean_linf: eps,
                mean_l2: eps,
                mean_confidence: 0.9,
                seconds: 0.1,
                adversarial_correct_examples: None,
            },
            versions: Versions::current(),
            unix_time: 0,
        }
    }

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
            "| a | none | fgsm | ndarray | 2 | 85.00% | 85.00% | 40.00% |"
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
        pgd.attack = "pgd-linf-10".into();
        pgd.key = "a-1/pgd/0.1".into();
        let mut targeted = rec("a", 1, 0.1, 0.9, 0.05);
        targeted.attack = "fgsm-targeted-shift2".into();
        targeted.key = "a-1/t/0.1".into();
        let records = [rec("a", 1, 0.1, 0.9, 0.5), pgd, targeted];
        let worst = crate::stats::worst_frame(&crate::stats::worst_case(&records)).expect("worst");
        let table = eps_table(&worst, "adversarial_accuracy", &[]).expect("table");
        // min(0.5, 0.2) without per-example results; the targeted attack's accuracy is not a
        // robustness bound
        assert_eq!(
            table.lines().nth(2).expect("row"),
            "| a | none | worst of 2 attacks, min over attacks | ndarray | 1 | 90.00% | 20.00% |"
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

    #[test]
    fn duplicates_across_run_directories_count_once() {
        let a = tempfile::tempdir().expect("temp");
        let b = tempfile::tempdir().expect("temp");
        let r1 = rec("a", 1, 0.0, 0.9, 0.9);
        let r2 = rec("a", 1, 0.1, 0.9, 0.5);
        let write = |dir: &Path, rs: &[&Record]| {
            let map: BTreeMap<String, Record> =
                rs.iter().map(|r| (r.key.clone(), (*r).clone())).collect();
            bench_runner::record::write_records(&dir.join(RECORDS_FILE), &map).expect("write");
        };
        write(a.path(), &[&r1, &r2]);
        write(b.path(), &[&r2]);
        let (records, dups) =
            collect(&[a.path().to_path_buf(), b.path().to_path_buf()]).expect("collect");
        assert_eq!((records.len(), dups), (2, 1));
        let out = tempfile::tempdir().expect("temp");
        let s = aggregate(
            &[a.path().to_path_buf(), b.path().to_path_buf()],
            out.path(),
            None,
        )
        .expect("aggregate");
        assert_eq!(s.records, 2);
        for f in [
            "results.csv",
            "results.parquet",
            "results.md",
            "summary.md",
            "accuracy_vs_eps.png",
            "accuracy_vs_eps.svg",
            "success_rate_vs_eps.png",
            "index.html",
        ] {
            assert!(
                out.path().join(f).metadata().expect("exists").len() > 0,
                "{f}"
            );
        }
        let csv = std::fs::read_to_string(out.path().join("results.csv")).expect("csv");
        assert_eq!(csv.lines().count(), 3, "header and two rows:\n{csv}");
    }

    /// The headless browser the report test uses: `ADVROB_CHROMIUM`, else `chromium` or
    /// `chromium-browser` on the PATH.
    fn chromium() -> String {
        if let Ok(c) = std::env::var("ADVROB_CHROMIUM") {
            return c;
        }
        for c in ["chromium", "chromium-browser", "google-chrome"] {
            let found = std::process::Command::new("sh")
                .args(["-c", &format!("command -v {c}")])
                .output()
                .is_ok_and(|o| o.status.success());
            if found {
                return c.to_string();
            }
        }
        panic!(
            "the report test needs a headless Chromium: install Debian's `chromium` \
             (apt-get install chromium) or point ADVROB_CHROMIUM at one"
        );
    }

    #[test]
    fn index_html_has_the_tables_and_images_in_headless_chromium() {
        let run = tempfile::tempdir().expect("temp");
        let records: BTreeMap<String, Record> = [
            rec("a", 1, 0.0, 0.9, 0.9),
            rec("a", 1, 0.1, 0.9, 0.5),
            rec("b", 1, 0.0, 0.7, 0.7),
            rec("b", 1, 0.1, 0.7, 0.6),
        ]
        .into_iter()
        .map(|r| (r.key.clone(), r))
        .collect();
        bench_runner::record::write_records(&run.path().join(RECORDS_FILE), &records)
            .expect("write");
        let out = tempfile::tempdir().expect("temp");
        aggregate(&[run.path().to_path_buf()], out.path(), None).expect("aggregate");
        let page = out.path().join("index.html");
        let html = std::fs::read_to_string(&page).expect("html");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "no network"
        );
        let o = std::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--virtual-time-budget=5000",
                "--dump-dom",
            ])
            .arg(format!("file://{}", page.display()))
            .output()
            .expect("chromium runs");
        let dom = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // the summary table and the provenance table, with the models in them
        assert!(dom.matches("<table").count() >= 2, "{dom:.2000}");
        assert!(
            dom.contains("<td>a</td>") && dom.contains("<td>b</td>"),
            "{dom:.2000}"
        );
        // accuracy, success rate and no training curves (these records have no stages): two
        // images, both decoded by the browser
        assert!(
            dom.contains("data-images=\"2\"") && dom.contains("data-decoded=\"2\""),
            "{}",
            dom.lines()
                .find(|l| l.contains("<body"))
                .unwrap_or_default()
        );
    }
}
