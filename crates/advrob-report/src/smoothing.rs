//! Randomized smoothing's L2 certificates (`advrob_experiment::smoothed`), in a table of their
//! own: the certified accuracy of each model's *smoothed* classifier against the L2 radius. It is
//! another classifier, another norm and a probabilistic guarantee (each certificate wrong with
//! probability at most α), so nothing here is merged with the L∞ tables.

use std::path::{Path, PathBuf};

use advrob_experiment::smoothed::{SmoothedRun, THREAT_MODEL};

use crate::error::Result;

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// `smoothing.md`: one row per smoothed checkpoint, one column per radius (every radius any file
/// has; `–` where a file lacks it).
pub fn markdown(runs: &[SmoothedRun]) -> String {
    let mut md = String::from(
        "# Randomized smoothing: certified L2 accuracy of the smoothed classifier\n\nA threat model of its own — never compare these figures with the L∞ tables. For a model `f` and noise σ, the smoothed classifier `g(x) = argmax_c P(f(x + δ) = c)`, `δ ~ N(0, σ²I)` on pixels in [0, 1], is certified at an image when `n0` noisy copies choose a class, `n` more estimate its probability, and the one-sided Clopper–Pearson bound `p̲` at level 1 − α exceeds 1/2; its L2 radius is `σ·Φ⁻¹(p̲)` (Cohen, Rosenfeld and Kolter 2019, `CERTIFY`). Certified accuracy at radius r: the share of the images where `g` predicts the true label with a radius of at least r (abstentions count as errors); each certificate is wrong with probability at most α. With n copies no radius exceeds `σ·Φ⁻¹(α^{1/n})` (about 3.8σ at n = 100 000, α = 0.001): σ = 0.25 cannot certify 1.0.\n\n",
    );
    let runs: Vec<&SmoothedRun> = runs
        .iter()
        .filter(|r| r.threat_model == THREAT_MODEL)
        .collect();
    if runs.is_empty() {
        md.push_str("No model of these runs was smoothed.\n");
        return md;
    }
    let mut radii: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.accuracy.iter().map(|a| a.radius))
        .collect();
    radii.sort_by(f64::total_cmp);
    radii.dedup();
    md.push_str("| model | backend | seed | σ | images | n | α |");
    for r in &radii {
        md.push_str(&format!(" r = {r} |"));
    }
    md.push_str(" abstained | seconds |\n|---|---|---:|---:|---:|---:|---:|");
    md.push_str(&"---:|".repeat(radii.len()));
    md.push_str("---:|---:|\n");
    for run in runs {
        let s = &run.settings;
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            run.model, run.backend, run.seed, s.sigma, run.test_examples, s.n, s.alpha
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
            " {} | {:.0} |\n",
            pct(run.abstained as f64 / run.test_examples.max(1) as f64),
            run.seconds
        ));
    }
    md
}

/// Writes `smoothing.md` and `smoothing.csv` (one row per checkpoint and radius) into `reports`.
pub fn write(runs: &[SmoothedRun], reports: &Path) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(runs);
    let md_path = reports.join("smoothing.md");
    advrob_data::atomic_write(&md_path, md.as_bytes())?;
    let mut csv = String::from(
        "model,backend,seed,sigma,examples,n,alpha,radius,certified_accuracy,abstained,seconds\n",
    );
    for run in runs.iter().filter(|r| r.threat_model == THREAT_MODEL) {
        let s = &run.settings;
        for a in &run.accuracy {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                run.model.replace(',', ";"),
                run.backend,
                run.seed,
                s.sigma,
                run.test_examples,
                s.n,
                s.alpha,
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
        let md = markdown(&[run("noise", THREAT_MODEL), run("other", "linf")]);
        assert!(
            md.contains(
                "| noise | ndarray | 42 | 0.25 | 4 | 100000 | 0.001 | 75.0% | 25.0% | 25.0% | 3 |"
            ),
            "{md}"
        );
        assert!(md.contains("r = 0.5"), "{md}");
        assert!(!md.contains("| other |"), "{md}");
        assert!(markdown(&[]).contains("No model of these runs was smoothed"));
    }
}
