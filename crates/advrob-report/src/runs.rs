//! Reading run directories for a report: their records (each key once across directories), what
//! their logs leave out (cut-short and quarantined lines) and what their matrices ask for that no
//! record holds, said at the top of every table.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use advrob_experiment::record::eps_text;
use advrob_experiment::{Record, Registry, RunDir, read_run};

use crate::error::{ReportError, Result};

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
    files.extend(run.matrix_files());
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

/// The warning that heads the summary and the verdict when a log ends in a cut-short record: the
/// tables lack that record (it is redone by the next `run` of the matrix). Empty otherwise.
pub(crate) fn incomplete_note(runs: &[Run]) -> String {
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
