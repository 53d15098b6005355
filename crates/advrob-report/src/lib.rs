#![doc = include_str!("../README.md")]

pub mod agreement;
pub mod cards;
mod error;
pub mod grids;
pub mod html;
pub mod identity;
pub mod plots;
pub mod stats;
pub mod tables;
#[cfg(test)]
mod testing;
pub mod verdict;

pub use error::{ReportError, Result};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use advrob_eval::Probe;
use advrob_experiment::record::eps_text;
use advrob_experiment::{Record, Registry, RunDir, read_run};
use polars::prelude::*;

use crate::tables::{frame, unique_strings, write_atomic};

/// One run directory and every record it holds.
#[derive(Debug, Clone)]
pub struct Run {
    /// The directory.
    pub dir: RunDir,
    /// Its records, as read.
    pub records: Vec<Record>,
    /// Its logs that end in a cut-short line (a writer killed, or one still writing): a record
    /// missing from the report.
    pub torn: Vec<PathBuf>,
    /// Its log lines that are not used (not a valid record, or a copy of a key whose copies
    /// disagree), each with its reason.
    pub quarantined: Vec<advrob_experiment::Quarantined>,
    /// What the run's matrices ask for and no record holds, one line per model (or model and
    /// attack), as [`missing`] words it.
    pub missing: Vec<String>,
}

/// What the matrices of `run` (`matrix.toml` and `matrices/`) ask for that `records` do not hold:
/// a model with no record at all, or the budgets of an attack a model lacks, one line each. The
/// records are matched by model, attack, ε, backend and seed.
pub fn missing(run: &RunDir, records: &[Record], registry: &Registry) -> Vec<String> {
    let mut files = vec![run.matrix()];
    if let Ok(entries) = std::fs::read_dir(run.matrices()) {
        let mut more: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    // attacks by their full settings: two entries of one name are two attacks
    let have: BTreeSet<(String, String, String, String, u64)> = records
        .iter()
        .map(|r| {
            (
                r.model.clone(),
                r.attack_config.to_string(),
                eps_text(r.eval.eps),
                r.backend.clone(),
                r.seed,
            )
        })
        .collect();
    // per model, every (attack name, its settings, ε, backend, seed) its matrices ask for
    type Want = BTreeMap<String, BTreeSet<(String, String, String, String, u64)>>;
    let mut want: Want = BTreeMap::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let m = match advrob_experiment::Matrix::from_toml(&text) {
            Ok(m) => m,
            Err(e) => {
                log::warn!(
                    "{}: not a matrix, not checked for missing results: {e}",
                    file.display()
                );
                continue;
            }
        };
        for model in &m.models {
            for a in &m.attacks {
                let Ok(d) = registry.describe(a) else {
                    continue;
                };
                for &e in a.eps.as_ref().unwrap_or(&m.eps) {
                    for b in &m.backends {
                        for &seed in &m.seeds {
                            want.entry(model.name.clone()).or_default().insert((
                                d.name.clone(),
                                d.config.to_string(),
                                eps_text(e),
                                b.clone(),
                                seed,
                            ));
                        }
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for (model, cells) in want {
        let n = cells.len();
        // an attack whose name several entries share is told apart by its settings' digest
        let mut configs: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for (attack, config, ..) in &cells {
            configs.entry(attack).or_default().insert(config);
        }
        let mut gaps: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (attack, config, eps, backend, seed) in &cells {
            if !have.contains(&(
                model.clone(),
                config.clone(),
                eps.clone(),
                backend.clone(),
                *seed,
            )) {
                let shown = if configs[attack.as_str()].len() > 1 {
                    format!(
                        "{attack} [{}]",
                        &advrob_data::sha256_hex(config.as_bytes())[..8]
                    )
                } else {
                    attack.clone()
                };
                gaps.entry(shown)
                    .or_default()
                    .push(format!("ε {eps} on {backend}, seed {seed}"));
            }
        }
        if gaps.is_empty() {
            continue;
        }
        if !records.iter().any(|r| r.model == model) {
            out.push(format!(
                "model `{model}`: none of its {n} results (never evaluated)"
            ));
            continue;
        }
        for (attack, cells) in gaps {
            out.push(format!(
                "model `{model}` under `{attack}`: {}",
                cells.join("; ")
            ));
        }
    }
    out
}

/// What a report read and wrote.
#[derive(Debug)]
pub struct Summary {
    /// Records reported (each key once).
    pub records: usize,
    /// Records seen again in another run directory and not counted twice.
    pub duplicates: usize,
    /// The files written.
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

/// Reads every run directory's records once. Returns the runs, the records of all of them with
/// each key once (a record whose key was already seen — the same model, attack and ε from another
/// directory — is a duplicate, counted and not used twice), and the number of duplicates.
pub fn collect(runs: &[PathBuf], registry: &Registry) -> Result<(Vec<Run>, Vec<Record>, usize)> {
    let mut by_key: BTreeMap<String, Record> = BTreeMap::new();
    let mut duplicates = 0;
    let mut out = Vec::new();
    for root in runs {
        let dir = RunDir::new(root);
        if advrob_experiment::store::logs(&dir)?.is_empty() {
            return Err(ReportError::Records(format!(
                "{}: no records here",
                dir.root().display()
            )));
        }
        let read = read_run(&dir)?;
        duplicates += read.duplicates;
        for r in &read.records {
            if by_key.contains_key(&r.key) {
                duplicates += 1;
                log::warn!(
                    "{}: duplicate record {} ignored",
                    dir.root().display(),
                    r.key
                );
            } else {
                by_key.insert(r.key.clone(), r.clone());
            }
        }
        out.push(Run {
            missing: missing(&dir, &read.records, registry),
            dir,
            records: read.records,
            torn: read.torn,
            quarantined: read.quarantined,
        });
    }
    Ok((out, by_key.into_values().collect(), duplicates))
}

/// [`report_with`] and the attacks and defenses of advrob.
pub fn report(runs: &[PathBuf], reports: &Path) -> Result<Summary> {
    report_with(runs, reports, &Registry::default())
}

/// Reads the runs and writes the report into `reports`: `results.csv`, `results.parquet`,
/// `results.md` (accuracy × ε per dataset), `summary.md` (one table per preset with the mean
/// success rate and norms, and the paired comparisons), `verdict.md` (the masking verdict and the
/// per-example worst case), `intervals.csv`, `accuracy_vs_eps.{png,svg}`,
/// `success_rate_vs_eps.{png,svg}`, `training_<model>.png`, `examples_<model>.png`,
/// `agreement.{csv,md}` (when a run holds the agreement of `agree`) and `index.html`, which holds
/// all of it in one self-contained page.
///
/// The report is a function of the run directories alone: the records, the observations the run
/// made of each checkpoint (the probes of the verdict, the example images) and the agreement rows.
/// It reads no dataset and no checkpoint. `registry` reads the matrices, to name what they ask for
/// and no record holds.
pub fn report_with(runs: &[PathBuf], reports: &Path, registry: &Registry) -> Result<Summary> {
    let (mut runs, records, duplicates) = collect(runs, registry)?;
    if records.is_empty() {
        let quarantined: Vec<String> = runs
            .iter()
            .flat_map(|r| r.quarantined.iter().map(ToString::to_string))
            .collect();
        return Err(ReportError::Records(format!(
            "no records in {:?}{}",
            runs.iter().map(|r| r.dir.root()).collect::<Vec<_>>(),
            if quarantined.is_empty() {
                String::new()
            } else {
                format!(" that can be used; quarantined: {}", quarantined.join("; "))
            }
        )));
    }
    // from here on, a name stands for one row identity: results that share a name but not
    // their settings are renamed apart, so that nothing below averages them
    let distinct = identity::distinguish(&records);
    let records = distinct.apply(&records);
    for run in &mut runs {
        run.records = distinct.apply(&run.records);
    }
    let top = format!("{}{}", incomplete_note(&runs), distinct.note());
    let mut df = frame(&records)?;
    std::fs::create_dir_all(reports).map_err(|e| ReportError::io(reports, e))?;
    let mut written = write_results(&mut df, reports, &top)?;

    let summary = format!("{top}{}", tables::summary_markdown(&df)?);
    let summary_path = reports.join("summary.md");
    advrob_data::atomic_write(&summary_path, summary.as_bytes())?;
    written.push(summary_path.clone());

    let observations = runs
        .iter()
        .map(|run| advrob_experiment::observe::read_all(&run.dir))
        .collect::<std::result::Result<Vec<_>, _>>()?
        .concat();
    let mut figures = example_figures(&observations, &records, reports)?;
    let mut probes = BTreeMap::new();
    for run in &runs {
        for (k, v) in run_probes(run, &observations) {
            probes.entry(k).or_insert(v);
        }
    }
    // from here on, per-example results of different test sets must never meet: a model
    // evaluated on several is a row per test set
    let (records, original) = distinguish_parts(records);
    let probes = probes_of_parts(probes, &records, &original);
    let verdicts = verdict::verdicts(&records, &probes);
    let worst = stats::worst_case(&records);
    let verdict_body = verdict_markdown(&verdicts, &worst);
    let verdict_md = format!("{top}{verdict_body}");
    let mut intervals = stats::intervals(&records, &worst)?;
    let intervals_path = reports.join("intervals.csv");
    write_atomic(&intervals_path, |f| {
        Ok(CsvWriter::new(f).finish(&mut intervals)?)
    })?;
    written.push(intervals_path);
    let paired = stats::mcnemar_markdown(&records, &worst);
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
    let (cards_md, card_files) = write_cards(&records, &worst, &verdicts, reports)?;
    written.extend(card_files);
    let lead = lead_figure(&worst, &intervals, &verdicts, reports)?;
    figures.extend(curve_figures(
        &frame(&records)?,
        &records,
        &worst,
        &verdicts,
        reports,
    )?);
    // the cross-backend agreement `bench-runner agree` (or reproduce) kept in the runs
    let rows = runs
        .iter()
        .map(|run| agreement::read(&run.dir))
        .collect::<Result<Vec<_>>>()?
        .concat();
    let agreement = if rows.is_empty() {
        String::new()
    } else {
        let md = agreement::write_tables(&rows, reports)?;
        written.extend(["agreement.csv", "agreement.md"].map(|f| reports.join(f)));
        md
    };
    // the page opens on the model cards and the lead figure (the notes at the top once, before
    // them), then the verdict, then the full tables
    let summary_body = summary.strip_prefix(top.as_str()).unwrap_or(&summary);
    let page = html::html(
        "advrob report",
        &html::Sections {
            lead_md: &format!(
                "{top}{}",
                cards_md.replacen("# Model cards", "## Model cards", 1)
            ),
            lead_figures: &lead,
            rest_md: &format!("{verdict_body}\n{summary_body}\n{agreement}"),
            figures: &figures,
        },
        &records,
    )?;
    figures.extend(lead);
    let index = reports.join("index.html");
    advrob_data::atomic_write(&index, page.as_bytes())?;
    written.extend(figures);
    written.push(index);
    Ok(Summary {
        records: records.len(),
        duplicates,
        written,
    })
}

/// `records` with each model named after its dataset and test-set size too (`m (mnist, 200 test
/// examples)`) when the records come from more than one; each new name with the model's own.
fn distinguish_parts(mut records: Vec<Record>) -> (Vec<Record>, BTreeMap<String, String>) {
    let datasets: BTreeSet<&str> = records.iter().map(|r| r.dataset.as_str()).collect();
    let sizes: BTreeSet<usize> = records.iter().map(|r| r.eval.examples).collect();
    let (several_datasets, several_sizes) = (datasets.len() > 1, sizes.len() > 1);
    let mut original = BTreeMap::new();
    for r in &mut records {
        let mut part = Vec::new();
        if several_datasets {
            part.push(r.dataset.clone());
        }
        if several_sizes {
            part.push(format!("{} test examples", r.eval.examples));
        }
        let name = if part.is_empty() {
            r.model.clone()
        } else {
            format!("{} ({})", r.model, part.join(", "))
        };
        original.insert(name.clone(), r.model.clone());
        r.model = name;
    }
    (records, original)
}

/// The checkpoint probes (measured per model) under the names of [`distinguish_parts`].
fn probes_of_parts(
    probes: BTreeMap<(String, String), Probe>,
    records: &[Record],
    original: &BTreeMap<String, String>,
) -> BTreeMap<(String, String), Probe> {
    let mut out = BTreeMap::new();
    for r in records {
        let own = (original[&r.model].clone(), r.backend.clone());
        if let Some(p) = probes.get(&own) {
            out.entry((r.model.clone(), r.backend.clone()))
                .or_insert(*p);
        }
    }
    out
}

/// `name` as a file name: characters other than letters, digits, `.`, `_` and `-` become `_`.
pub(crate) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The warning that heads the summary and the verdict when a log ends in a cut-short record: the
/// tables lack that record (it is redone by the next `run` of the matrix). Empty otherwise.
fn incomplete_note(runs: &[Run]) -> String {
    let torn: Vec<String> = runs
        .iter()
        .flat_map(|r| r.torn.iter().map(|p| format!("`{}`", p.display())))
        .collect();
    let mut out = String::new();
    if !torn.is_empty() {
        out.push_str(&format!(
            "> **Incomplete run.** {} {} in a cut-short record (a writer was killed, or is still \
             running): that result is missing from every table below. Run the matrix again to redo \
             it, then report again.\n\n",
            torn.join(", "),
            if torn.len() == 1 { "ends" } else { "end" }
        ));
    }
    let missing: Vec<String> = runs.iter().flat_map(|r| r.missing.clone()).collect();
    out.push_str(&note(
        "Missing results.",
        "The run's matrix asks for results that no record holds (the run was stopped, a shard or task did not finish, or it is still running): they are absent from every table below.",
        &missing,
    ));
    let quarantined: Vec<String> = runs
        .iter()
        .flat_map(|r| r.quarantined.iter().map(|q| format!("`{q}`")))
        .collect();
    out.push_str(&note(
        "Quarantined records.",
        &format!(
            "{} record {} not used in any table below:",
            quarantined.len(),
            if quarantined.len() == 1 {
                "line is"
            } else {
                "lines are"
            }
        ),
        &quarantined,
    ));
    out
}

/// A note for the top of a report: `**title** text` and a list of `items`, as a Markdown quote;
/// nothing when there are no items.
pub(crate) fn note(title: &str, text: &str, items: &[String]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let list: Vec<String> = items.iter().map(|i| format!("> - {i}")).collect();
    format!("> **{title}** {text}\n>\n{}\n\n", list.join("\n"))
}

/// `results.csv`, `results.parquet` and `results.md` (accuracy × ε per dataset, and the targeted
/// attacks' success where there are any).
fn write_results(df: &mut DataFrame, reports: &Path, top: &str) -> Result<Vec<PathBuf>> {
    let csv = reports.join("results.csv");
    write_atomic(&csv, |f| Ok(CsvWriter::new(f).finish(df)?))?;
    let parquet = reports.join("results.parquet");
    write_atomic(&parquet, |f| {
        ParquetWriter::new(f).finish(df)?;
        Ok(())
    })?;
    let md = reports.join("results.md");
    let mut text = String::from(
        "# advrob results\n\nRobust accuracy (share of all test examples classified correctly both before and under the attack), mean over the seeds listed; `clean` is the accuracy without attack.\n\n",
    );
    text.push_str(top);
    for (heading, part) in tables::parts(df)? {
        text.push_str(&format!("## {heading}\n\n"));
        text.push_str(&tables::accuracy_table(&part)?);
        text.push('\n');
        let targeted = tables::eps_table(&part, "targeted_success", &[])?;
        if targeted.lines().count() > 2 {
            text.push_str("Targeted attacks: share of all test examples classified as the attack's target.\n\n");
            text.push_str(&targeted);
            text.push('\n');
        }
    }
    advrob_data::atomic_write(&md, text.as_bytes())?;
    Ok(vec![csv, parquet, md])
}

/// `cards.md` and `cards/<model>-<backend>.json`; returns the Markdown and the files written.
fn write_cards(
    records: &[Record],
    worst: &[stats::Worst],
    verdicts: &[verdict::Verdict],
    reports: &Path,
) -> Result<(String, Vec<PathBuf>)> {
    let cards = cards::cards(records, worst, verdicts);
    let md = cards::markdown(&cards);
    let dir = reports.join("cards");
    std::fs::create_dir_all(&dir).map_err(|e| ReportError::io(&dir, e))?;
    let mut written = vec![reports.join("cards.md")];
    advrob_data::atomic_write(&written[0], md.as_bytes())?;
    for c in &cards {
        let path = dir.join(format!("{}-{}.json", file_safe(&c.model), c.backend));
        let json = serde_json::to_string_pretty(c).map_err(|e| ReportError::figure(&path, e))?;
        advrob_data::atomic_write(&path, json.as_bytes())?;
        written.push(path);
    }
    Ok((md, written))
}

/// `verdict.md`: the verdict table and its details, then the per-example worst case.
fn verdict_markdown(verdicts: &[verdict::Verdict], worst: &[stats::Worst]) -> String {
    let mut md = verdict::markdown(verdicts);
    md.push_str("## Robust accuracy: the worst case over all attacks, per example\n\nThe share of test examples classified correctly before any attack and left correctly classified by every attack of the run that counts for robustness (untargeted and within its budget: white-box, adaptive, black-box, transfer and the ensemble), per ε; in brackets the bootstrap 95% interval over test examples (and min–max over seeds when there are several). A cell marked `only k of n attacks` lacks records of some attacks that ran at that ε elsewhere. A row marked `min over attacks` comes from records without per-example results: the lowest accuracy of any one attack, an upper bound.\n\n");
    if worst.is_empty() {
        md.push_str("No attack of this run counts for robustness (every one is targeted or breaks its budget), so there is no robust accuracy to report.\n");
    } else {
        md.push_str(&stats::worst_markdown(worst));
    }
    md
}

/// The accuracy and success-rate curves (one panel per attack and one for the per-example worst
/// case; models whose robustness is not established are marked in the legends) and the training
/// curves of every model with recorded stages.
/// The lead figure, `worst_case_vs_eps.{png,svg}`: per model, the best known robust accuracy
/// (the per-example worst case over every attack of the run) against ε, its band the bootstrap 95%
/// interval over test examples; models the verdict does not trust are labelled so.
fn lead_figure(
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

fn curve_figures(
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
fn example_figures(
    observations: &[advrob_experiment::observe::Observations],
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

/// Per (model, backend) of `run`, the probe the run observed on the checkpoint of the model's
/// first record there ([`advrob_eval::probe`]), on the examples the run evaluated.
fn run_probes(
    run: &Run,
    observations: &[advrob_experiment::observe::Observations],
) -> BTreeMap<(String, String), Probe> {
    let mut first: BTreeMap<(String, String), &Record> = BTreeMap::new();
    for r in &run.records {
        first
            .entry((r.model.clone(), r.backend.clone()))
            .or_insert(r);
    }
    first
        .into_iter()
        .filter_map(|(key, r)| {
            let o = observations.iter().find(|o| {
                o.checkpoint_sha256 == r.checkpoint_sha256
                    && o.backend == r.backend
                    && o.test_examples == r.eval.examples
            })?;
            Some((key, o.probe))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rec;

    fn write(dir: &Path, rs: &[&Record]) {
        let records: Vec<Record> = rs.iter().map(|r| (*r).clone()).collect();
        advrob_experiment::RecordLog::new(&RunDir::new(dir))
            .append(&records)
            .expect("write");
    }

    #[test]
    fn duplicates_across_run_directories_count_once() {
        let a = tempfile::tempdir().expect("temp");
        let b = tempfile::tempdir().expect("temp");
        let r1 = rec("a", 1, 0.0, 0.9, 0.9);
        let r2 = rec("a", 1, 0.1, 0.9, 0.5);
        write(a.path(), &[&r1, &r2]);
        write(b.path(), &[&r2]);
        let (_, records, dups) = collect(
            &[a.path().to_path_buf(), b.path().to_path_buf()],
            &Registry::default(),
        )
        .expect("collect");
        assert_eq!((records.len(), dups), (2, 1));
        let out = tempfile::tempdir().expect("temp");
        let s = report(
            &[a.path().to_path_buf(), b.path().to_path_buf()],
            out.path(),
        )
        .expect("report");
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
    #[cfg(feature = "browser")]
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

    /// Needs a headless Chromium: runs with the `browser` feature only (CI turns it on).
    #[cfg(feature = "browser")]
    #[test]
    fn index_html_has_the_tables_and_images_in_headless_chromium() {
        let run = tempfile::tempdir().expect("temp");
        let records = [
            rec("a", 1, 0.0, 0.9, 0.9),
            rec("a", 1, 0.1, 0.9, 0.5),
            rec("b", 1, 0.0, 0.7, 0.7),
            rec("b", 1, 0.1, 0.7, 0.6),
        ];
        write(run.path(), &records.iter().collect::<Vec<_>>());
        let out = tempfile::tempdir().expect("temp");
        report(&[run.path().to_path_buf()], out.path()).expect("report");
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
