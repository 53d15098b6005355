//! Randomized smoothing's L2 certificates (`advrob_experiment::smoothed`), in a table of their
//! own: the certified accuracy of each model's *smoothed* classifier against the L2 radius. It is
//! another classifier, another norm and a probabilistic guarantee (each certificate wrong with
//! probability at most α), so nothing here is merged with the L∞ tables.

use std::path::{Path, PathBuf};

use advrob_experiment::Record;
use advrob_experiment::smoothed::{SmoothedRun, THREAT_MODEL};

use crate::error::Result;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// One smoothed checkpoint as the report names it: the dataset and the model's name from its
/// records (matched on the model's key, backend and seed, as the bounds are).
#[derive(Debug, Clone)]
pub struct Row<'a> {
    /// The dataset.
    pub dataset: String,
    /// The model, as the other tables name it.
    pub model: String,
    /// What the certifier found.
    pub run: &'a SmoothedRun,
}

/// The rows of every smoothing file (of the L2 threat model) whose model has records in
/// `records`; a file of no recorded model (a checkpoint since replaced) is left out.
pub fn rows<'a>(runs: &'a [SmoothedRun], records: &[Record]) -> Vec<Row<'a>> {
    let mut out: Vec<Row<'a>> = runs
        .iter()
        .filter(|r| r.threat_model == THREAT_MODEL)
        .filter_map(|run| {
            records
                .iter()
                .find(|r| {
                    r.model_key() == run.model_key && r.backend == run.backend && r.seed == run.seed
                })
                .map(|r| Row {
                    dataset: r.dataset.clone(),
                    model: r.model.clone(),
                    run,
                })
        })
        .collect();
    out.sort_by(|a, b| {
        (&a.dataset, &a.model, &a.run.backend, a.run.seed).cmp(&(
            &b.dataset,
            &b.model,
            &b.run.backend,
            b.run.seed,
        ))
    });
    out
}

/// `smoothing.md`: one row per smoothed checkpoint, one column per radius (every radius any row
/// has; `–` where a row lacks it).
pub fn markdown(rows: &[Row<'_>]) -> String {
    let mut md = String::from(
        "# Randomized smoothing: certified L2 accuracy of the smoothed classifier\n\nA threat model of its own — never compare these figures with the L∞ tables. For a model `f` and noise σ, the smoothed classifier `g(x) = argmax_c P(f(x + δ) = c)`, `δ ~ N(0, σ²I)` on pixels in [0, 1], is certified at an image when `n0` noisy copies choose a class, `n` more estimate its probability, and the one-sided Clopper–Pearson bound `p̲` at level 1 − α exceeds 1/2; its L2 radius is `σ·Φ⁻¹(p̲)` (Cohen, Rosenfeld and Kolter 2019, `CERTIFY`). Certified accuracy at radius r: the share of the images where `g` predicts the true label with a radius of at least r (abstentions count as errors); each certificate is wrong with probability at most α. With n copies no radius exceeds `σ·Φ⁻¹(α^{1/n})` (the `max radius` column).\n\n",
    );
    if rows.is_empty() {
        md.push_str("No model of these runs was smoothed.\n");
        return md;
    }
    let mut radii: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.run.accuracy.iter().map(|a| a.radius))
        .collect();
    radii.sort_by(f64::total_cmp);
    radii.dedup();
    md.push_str("| dataset | model | backend | seed | σ | images | n | α | noise seed |");
    for r in &radii {
        md.push_str(&format!(" r = {r} |"));
    }
    md.push_str(" abstained | max radius | seconds |\n|---|---|---|---:|---:|---:|---:|---:|---:|");
    md.push_str(&"---:|".repeat(radii.len()));
    md.push_str("---:|---:|---:|\n");
    for row in rows {
        let (run, s) = (row.run, &row.run.settings);
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.dataset,
            row.model,
            run.backend,
            run.seed,
            s.sigma,
            run.test_examples,
            s.n,
            s.alpha,
            s.seed
        ));
        for r in &radii {
            let cell = run
                .accuracy
                .iter()
                .find(|a| a.radius == *r)
                .map_or_else(|| "–".into(), |a| pct(a.accuracy));
            md.push_str(&format!(" {cell} |"));
        }
        md.push_str(&format!(
            " {} | {:.3} | {:.0} |\n",
            pct(run.abstained as f64 / run.test_examples.max(1) as f64),
            s.max_radius(),
            run.seconds
        ));
    }
    md
}

/// Writes `smoothing.md` and `smoothing.csv` (one line per checkpoint and radius) into
/// `reports`.
pub fn write(rows: &[Row<'_>], reports: &Path) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(rows);
    let md_path = reports.join("smoothing.md");
    advrob_data::atomic_write(&md_path, md.as_bytes())?;
    let mut csv = String::from(
        "dataset,model,backend,seed,sigma,examples,n,alpha,noise_seed,radius,certified_accuracy,abstained_images,seconds\n",
    );
    for row in rows {
        let (run, s) = (row.run, &row.run.settings);
        for a in &run.accuracy {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
                crate::csv_field(&row.dataset),
                crate::csv_field(&row.model),
                crate::csv_field(&run.backend),
                run.seed,
                s.sigma,
                run.test_examples,
                s.n,
                s.alpha,
                s.seed,
                a.radius,
                a.accuracy,
                run.abstained,
                run.seconds
            ));
        }
    }
    let csv_path = reports.join("smoothing.csv");
    advrob_data::atomic_write(&csv_path, csv.as_bytes())?;
    Ok((md, vec![md_path, csv_path]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use advrob_experiment::smoothed::AtL2Radius;
    use advrob_verify::SmoothingSettings;

    fn run(model: &str, threat_model: &str) -> SmoothedRun {
        SmoothedRun {
            threat_model: threat_model.into(),
            model: model.into(),
            model_key: "k".into(),
            backend: "ndarray".into(),
            seed: 42,
            checkpoint_sha256: "c".into(),
            test_examples: 4,
            settings: SmoothingSettings::default(),
            seconds: 3.0,
            abstained: 1,
            accuracy: vec![
                AtL2Radius {
                    radius: 0.0,
                    accuracy: 0.75,
                },
                AtL2Radius {
                    radius: 0.5,
                    accuracy: 0.25,
                },
            ],
            radii_correct: vec![0.7, 0.1, 0.2, -1.0],
        }
    }

    #[test]
    fn the_table_has_a_column_per_radius_and_only_l2_files() {
        let (a, b) = (run("noise", THREAT_MODEL), run("other", "linf"));
        let table = [
            Row {
                dataset: "mnist".into(),
                model: "noise".into(),
                run: &a,
            },
            Row {
                dataset: "mnist".into(),
                model: "other".into(),
                run: &b,
            },
        ];
        let md = markdown(&table[..1]);
        assert!(
            md.contains("| mnist | noise | ndarray | 42 | 0.25 | 4 | 100000 | 0.001 | 0 | 75.0% | 25.0% | 25.0% | 0.953 | 3 |"),
            "{md}"
        );
        assert!(md.contains("r = 0.5"), "{md}");
        // files of another threat model never become rows; no records, no rows
        assert!(rows(&[a.clone(), b.clone()], &[]).is_empty());
        assert!(markdown(&[]).contains("No model of these runs was smoothed"));
    }
}
