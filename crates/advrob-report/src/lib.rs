#![doc = include_str!("../README.md")]

pub mod agreement;
pub mod bounds;
pub mod cards;
mod error;
mod figures;
pub mod grids;
pub mod html;
pub mod identity;
pub mod plots;
mod runs;
pub mod smoothing;
pub mod stats;
pub mod tables;
#[cfg(test)]
mod testing;
pub mod verdict;

pub use error::{ReportError, Result};
pub use runs::{Run, collect, missing};

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use advrob_eval::Probe;
use advrob_experiment::{Record, Registry};
use polars::prelude::*;

use crate::tables::{frame, write_atomic};

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
    let top = format!("{}{}", runs::incomplete_note(&runs), distinct.note());
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
    let mut figures = figures::example_figures(&observations, &records, reports)?;
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
    // the certified side: what the verifier proved, beside what the attacks left
    let certified = runs
        .iter()
        .map(|run| advrob_experiment::certified::read_all(&run.dir))
        .collect::<std::result::Result<Vec<_>, _>>()?
        .concat();
    let (brackets, refused) = bounds::brackets(&certified, &records, &worst);
    let bounds_md = if brackets.is_empty() && refused.is_empty() {
        String::new()
    } else {
        let (md, files) = bounds::write(&brackets, &refused, reports)?;
        written.extend(files);
        md
    };
    // randomized smoothing: another classifier and norm, in a table of its own
    let smoothed = runs
        .iter()
        .map(|run| advrob_experiment::smoothed::read_all(&run.dir))
        .collect::<std::result::Result<Vec<_>, _>>()?
        .concat();
    let smoothed_rows = smoothing::rows(&smoothed, &records);
    let smoothing_md = if smoothed_rows.is_empty() {
        String::new()
    } else {
        let (md, files) = smoothing::write(&smoothed_rows, reports)?;
        written.extend(files);
        md
    };
    let (cards_md, card_files) = write_cards(&records, &worst, &verdicts, &brackets, reports)?;
    written.extend(card_files);
    let lead = figures::lead_figure(&worst, &intervals, &verdicts, reports)?;
    figures.extend(figures::curve_figures(
        &frame(&records)?,
        &records,
        &worst,
        &verdicts,
        reports,
    )?);
    figures.extend(figures::cost_figure(&records, &verdicts, reports)?);
    figures.extend(figures::certified_figure(&brackets, reports)?);
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
            lead_md: &format!("{top}{cards_md}"),
            lead_figures: &lead,
            rest_md: &format!(
                "{verdict_body}\n{bounds_md}\n{smoothing_md}\n{summary_body}\n{agreement}"
            ),
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
                .or_insert_with(|| p.clone());
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

/// `s` as one CSV field: quoted (with its quotes doubled) when it holds a comma, a quote or a
/// line break.
pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
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
    brackets: &[bounds::Bracket],
    reports: &Path,
) -> Result<(String, Vec<PathBuf>)> {
    let mut cards = cards::cards(records, worst, verdicts);
    let intervals = bounds::per_model(brackets);
    for c in &mut cards {
        if let Some(i) = intervals.get(&(c.model.clone(), c.backend.clone())) {
            c.certified = i.clone();
        }
    }
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
            Some((key, o.probe.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::rec;

    fn write(dir: &Path, rs: &[&Record]) {
        let records: Vec<Record> = rs.iter().map(|r| (*r).clone()).collect();
        advrob_experiment::RecordLog::new(&advrob_experiment::RunDir::new(dir))
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
        // the page opens on the model cards and the lead figure, the full tables below
        let at = |needle: &str| dom.find(needle).unwrap_or_else(|| panic!("no {needle}"));
        assert!(at("<h2>Model cards</h2>") < at("worst_case_vs_eps.png"));
        assert!(at("worst_case_vs_eps.png") < at("<h2>Gradient-masking verdict</h2>"));
        assert!(at("<h2>Gradient-masking verdict</h2>") < at("accuracy_vs_eps.png"));
        // the lead figure, accuracy and success rate, no training curves (these records have no
        // stages): three images, all decoded by the browser
        assert!(
            dom.contains("data-images=\"3\"") && dom.contains("data-decoded=\"3\""),
            "{}",
            dom.lines()
                .find(|l| l.contains("<body"))
                .unwrap_or_default()
        );
    }
}
