//! Certified lower bounds beside the attacks' upper bounds: per model, backend, seed and ε, the
//! share of test images the verifier proved robust (`advrob_experiment::certified`), the share
//! every attack of the run left robust on the same images (the per-example worst case), and the
//! gap between them, which no attack and no proof has decided.
//!
//! The report also checks the two against each other: an image proven robust that an attack of
//! the run broke would be a wrong certificate. Every such image is listed at the top of
//! `bounds.md` as a soundness failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_experiment::Record;
use advrob_experiment::certified::{Certified, Side};
use serde::Serialize;

use crate::error::Result;
use crate::stats::Worst;
use crate::tables::format_eps;

/// One (model, backend, seed, ε): robust accuracy between a proof and an attack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bracket {
    /// The dataset.
    pub dataset: String,
    /// The model (as the report names it).
    pub model: String,
    /// The backend.
    pub backend: String,
    /// The seed.
    pub seed: u64,
    /// The radius.
    pub eps: f64,
    /// Test images verified (the first of the test set).
    pub examples: usize,
    /// Lower bound: the share proven robust.
    pub certified: f64,
    /// Upper bound: the share every attack of the run left robust, on the same images (`None`:
    /// no attack that counts for robustness ran at this ε with per-example results).
    pub attacked: Option<f64>,
    /// The verifier's wall time at this radius.
    pub seconds: f64,
    /// Whether nothing was computed (a smaller radius verified no image).
    pub implied: bool,
    /// Images the verifier ran on (those the next smaller radius verified).
    pub tried: usize,
    /// Images proven robust that an attack of the run broke: wrong certificates. Always empty
    /// unless the verifier has a bug.
    pub violations: Vec<usize>,
}

impl Bracket {
    /// The share neither proven nor broken (upper − lower), when both are known.
    pub fn unknown(&self) -> Option<f64> {
        self.attacked.map(|a| (a - self.certified).max(0.0))
    }
}

/// The brackets of every bounds file whose model has records in `records`, and the models the
/// verifier refused with its reason.
pub fn brackets(
    certified: &[Certified],
    records: &[Record],
    worst: &[Worst],
) -> (Vec<Bracket>, Vec<(String, String)>) {
    let mut out = Vec::new();
    let mut refused = Vec::new();
    for c in certified.iter().filter(|c| c.side == Side::Lower) {
        let Some(r) = records
            .iter()
            .find(|r| r.model_key() == c.model_key && r.backend == c.backend && r.seed == c.seed)
        else {
            continue;
        };
        if let Some(why) = &c.refused {
            refused.push((r.model.clone(), why.clone()));
            continue;
        }
        let n = c.test_examples;
        for at in &c.radii {
            let w = worst.iter().find(|w| {
                w.dataset == r.dataset
                    && w.model == r.model
                    && w.backend == r.backend
                    && w.seed == r.seed
                    && w.eps == at.eps
            });
            let correct = w
                .and_then(|w| w.correct.as_ref())
                .filter(|b| b.0.len() >= n);
            let attacked =
                correct.map(|b| b.0[..n].iter().filter(|&&x| x).count() as f64 / n.max(1) as f64);
            let violations = correct.map_or_else(Vec::new, |b| {
                (0..n).filter(|&i| at.is_verified(i) && !b.0[i]).collect()
            });
            out.push(Bracket {
                dataset: r.dataset.clone(),
                model: r.model.clone(),
                backend: r.backend.clone(),
                seed: r.seed,
                eps: at.eps,
                examples: n,
                certified: at.verified as f64 / n.max(1) as f64,
                attacked,
                seconds: at.seconds,
                implied: at.tried == 0,
                tried: at.tried,
                violations,
            });
        }
    }
    out.sort_by(|a, b| {
        (&a.dataset, &a.model, &a.backend, a.seed)
            .cmp(&(&b.dataset, &b.model, &b.backend, b.seed))
            .then(a.eps.total_cmp(&b.eps))
    });
    (out, refused)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}

/// `bounds.md`: the soundness check, then one row per computed bracket.
pub fn markdown(brackets: &[Bracket], refused: &[(String, String)]) -> String {
    let mut md = String::from(
        "# Certified robust accuracy beside the attacked one\n\nEvery robust accuracy an attack reports is an upper bound. Here the other side: the share of test images **proven** robust on the L∞ ball of radius ε cut to [0, 1] (advrob-verify: α-CROWN, then branch and bound with β-CROWN's split constraints within a budget of domains per image), beside the share every attack of the run left robust on the same images. The truth lies in between; `unknown` is the gap. At each radius the verifier tries only the images the next smaller radius verified (a counterexample there lies in this ball too; an image left unknown there is not tried again), so a radius after one that verified nothing costs nothing and is listed as implied.\n\n",
    );
    let violations: Vec<String> = brackets
        .iter()
        .filter(|b| !b.violations.is_empty())
        .map(|b| {
            format!(
                "- **{} ({}, seed {}) at ε {}: images {:?} proven robust, yet broken by an attack of the run**",
                b.model,
                b.backend,
                b.seed,
                format_eps(b.eps),
                b.violations
            )
        })
        .collect();
    if brackets.is_empty() && refused.is_empty() {
        md.push_str("No model of these runs was verified.\n");
        return md;
    }
    if violations.is_empty() {
        md.push_str("Soundness check: no image proven robust was broken by any attack of the run (every model, every ε).\n\n");
    } else {
        md.push_str("## SOUNDNESS FAILURE: wrong certificates\n\n");
        md.push_str(&violations.join("\n"));
        md.push_str("\n\n");
    }
    md.push_str("| model | backend | seed | ε | images | certified (lower) | best attack (upper) | unknown | verifier s |\n|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for b in brackets.iter().filter(|b| !b.implied) {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |\n",
            b.model,
            b.backend,
            b.seed,
            format_eps(b.eps),
            b.examples,
            pct(b.certified),
            b.attacked.map_or_else(|| "–".into(), pct),
            b.unknown().map_or_else(|| "–".into(), pct),
            b.seconds
        ));
    }
    let implied: Vec<String> = brackets
        .iter()
        .filter(|b| b.implied)
        .map(|b| format!("{} ({}) ε {}", b.model, b.backend, format_eps(b.eps)))
        .collect();
    if !implied.is_empty() {
        md.push_str(&format!(
            "\nImplied, 0% certified (a smaller radius verified no image; `bounds.csv` has their rows): {}.\n",
            implied.join(", ")
        ));
    }
    if !refused.is_empty() {
        md.push_str("\nNot verified:\n\n");
        for (m, why) in refused {
            md.push_str(&format!("- {m}: {why}\n"));
        }
    }
    md
}

/// Per model and backend (means over seeds), per computed ε as tables write it: (certified, best
/// attack, images), for the cards.
pub fn per_model(brackets: &[Bracket]) -> BTreeMap<(String, String), BTreeMap<String, Interval>> {
    let mut acc: BTreeMap<(String, String), BTreeMap<String, Vec<&Bracket>>> = BTreeMap::new();
    for b in brackets.iter().filter(|b| !b.implied) {
        acc.entry((b.model.clone(), b.backend.clone()))
            .or_default()
            .entry(format_eps(b.eps))
            .or_default()
            .push(b);
    }
    acc.into_iter()
        .map(|(k, by_eps)| {
            let v = by_eps
                .into_iter()
                .map(|(e, bs)| {
                    let n = bs.len() as f64;
                    let attacked: Option<Vec<f64>> = bs.iter().map(|b| b.attacked).collect();
                    (
                        e,
                        Interval {
                            certified: bs.iter().map(|b| b.certified).sum::<f64>() / n,
                            attacked: attacked.map(|a| a.iter().sum::<f64>() / n),
                            examples: bs[0].examples,
                        },
                    )
                })
                .collect();
            (k, v)
        })
        .collect()
}

/// Robust accuracy between a proof and an attack, on a card.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Interval {
    /// Proven robust (lower bound).
    pub certified: f64,
    /// Left robust by every attack, on the same images (upper bound).
    pub attacked: Option<f64>,
    /// The images (the first of the test set).
    pub examples: usize,
}

/// Writes `bounds.md` and `bounds.csv` into `reports`; returns the markdown and the files.
pub fn write(
    brackets: &[Bracket],
    refused: &[(String, String)],
    reports: &Path,
) -> Result<(String, Vec<PathBuf>)> {
    let md = markdown(brackets, refused);
    let md_path = reports.join("bounds.md");
    advrob_data::atomic_write(&md_path, md.as_bytes())?;
    let mut csv = String::from(
        "dataset,model,backend,seed,eps,examples,certified,attacked,unknown,seconds,implied,violations\n",
    );
    for b in brackets {
        let opt = |x: Option<f64>| x.map_or_else(String::new, |v| format!("{v}"));
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{}\n",
            crate::csv_field(&b.dataset),
            crate::csv_field(&b.model),
            crate::csv_field(&b.backend),
            b.seed,
            b.eps,
            b.examples,
            b.certified,
            opt(b.attacked),
            opt(b.unknown()),
            b.seconds,
            b.implied,
            b.violations.len()
        ));
    }
    let csv_path = reports.join("bounds.csv");
    advrob_data::atomic_write(&csv_path, csv.as_bytes())?;
    Ok((md, vec![md_path, csv_path]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::worst_case;
    use crate::testing::{rec, set_attack};
    use advrob_eval::Bits;
    use advrob_experiment::certified::AtRadius;

    /// A bounds file of model `m` (seed 1) at ε 0.1 over its first 4 images.
    fn certified(m: &str, statuses: &str) -> Certified {
        let count = |c: char| statuses.chars().filter(|&s| s == c).count();
        Certified {
            side: Side::Lower,
            model: m.into(),
            model_key: format!("{m}-1"),
            backend: "ndarray".into(),
            seed: 1,
            checkpoint_sha256: String::new(),
            test_examples: statuses.len(),
            settings: advrob_verify::VerifySettings::default(),
            refused: None,
            radii: vec![AtRadius {
                eps: 0.1,
                verified: count('v'),
                attacked: count('a'),
                misclassified: count('m'),
                unknown: count('u'),
                seconds: 1.5,
                tried: statuses.len(),
                statuses: statuses.into(),
            }],
            verifier: advrob_experiment::certified::VERIFIER.into(),
        }
    }

    #[test]
    fn a_bracket_compares_the_proof_with_the_attacks_on_the_same_images() {
        // 100 examples; the attack leaves 0, 1, 2 robust and breaks 3 onwards
        let mut r = rec("m", 1, 0.1, 0.9, 0.03);
        set_attack(&mut r, "fgsm");
        r.eval.adversarial_correct_examples = Some(Bits((0..100).map(|i| i < 3).collect()));
        let worst = worst_case(std::slice::from_ref(&r));
        // proven: 0 and 1 of the first 4; 2 unknown, 3 attacked
        let (b, refused) = brackets(&[certified("m", "vvua")], &[r.clone()], &worst);
        assert!(refused.is_empty());
        assert_eq!(b.len(), 1);
        assert_eq!((b[0].certified, b[0].attacked), (0.5, Some(0.75)));
        assert_eq!(b[0].unknown(), Some(0.25));
        assert!(b[0].violations.is_empty());
        assert!(markdown(&b, &refused).contains("Soundness check: no image proven robust"));

        // image 3 proven robust, yet the attack broke it: a wrong certificate, said loudly
        let (b, _) = brackets(&[certified("m", "vvuv")], &[r], &worst);
        assert_eq!(b[0].violations, [3]);
        let md = markdown(&b, &[]);
        assert!(
            md.contains("SOUNDNESS FAILURE") && md.contains("[3]"),
            "{md}"
        );
    }

    #[test]
    fn a_refused_model_is_named_with_its_reason() {
        let mut r = rec("cnn", 1, 0.1, 0.9, 0.5);
        set_attack(&mut r, "fgsm");
        let mut c = certified("cnn", "");
        c.refused = Some("convolutional blocks".into());
        c.radii.clear();
        let (b, refused) = brackets(&[c], &[r], &[]);
        assert!(b.is_empty());
        assert!(markdown(&b, &refused).contains("- cnn: convolutional blocks"));
    }
}
