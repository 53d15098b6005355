//! Which records form one row of the report. A row is one model under one attack: everything
//! that changes a record's number — the model (architecture, training, defense, deployment, the
//! weights of an imported model), the data, the attack's full settings, the evaluation, the
//! backend — except the seed and ε. Records that differ in any of these are never averaged:
//! averaging happens over seeds only.
//!
//! Display names (`model`, `attack`) can collide while identities differ: the same model name
//! retrained into one run directory, two PGD entries that differ only in their step size, two runs
//! whose test sets differ. [`distinguish`] renames colliding rows by what tells them apart
//! (`pgd-linf-10 [step_size=0.02]`, `m [hidden=[32]]`, or a short key where nothing simpler
//! does), so that every table, interval, card and figure built on the names keeps them apart.

use std::collections::{BTreeMap, BTreeSet};

use advrob_experiment::Record;
use serde_json::{Value, json};

/// Settings flattened to `path → value`.
type Flat = BTreeMap<String, String>;

/// Where a name is shown: dataset, test examples, backend, and the names around it.
type Shown = (String, usize, String, String, String);

/// Settings of the attack (with `evaluation`, see [`attack_side`]).
const ATTACK_FIELDS: [&str; 2] = ["attack_config", "attack_labels"];

/// A config without its `seed` (the seed is what rows average over).
fn without_seed(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("seed");
    }
    v
}

/// Everything a row's number depends on except the seed and ε, as JSON.
pub fn identity(r: &Record) -> Value {
    let data: Vec<&str> = r.dataset_files.iter().map(|f| f.sha256.as_str()).collect();
    let data = advrob_data::sha256_hex(data.join(",").as_bytes());
    json!({
        "dataset": r.dataset,
        "data": &data[..12],
        "examples": r.eval.examples,
        "train_examples": r.train_examples,
        "model": r.model,
        "defense": r.defense,
        "defense_config": r.defense_config,
        "deploy_config": r.deploy_config,
        "fine_tuned_from": r.fine_tuned_from,
        "teacher": r.teacher,
        "loss": r.loss,
        "model_config": without_seed(&r.model_config),
        "train_config": without_seed(&r.train_config),
        "attack": r.attack,
        "attack_config": r.attack_config,
        "attack_labels": r.attack_labels,
        "backend": r.backend,
        // the evaluation's digest (attack settings, grid, data, test examples, batch size); a
        // record read from a run always has one, a hand-made one may not
        "evaluation": r.eval_key().unwrap_or_default(),
    })
}

/// `identity` flattened to `path = value` leaves (`attack_config.step_size = 0.02`).
fn leaves(v: &Value, path: &str, out: &mut Flat) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                leaves(x, &p, out);
            }
        }
        other => {
            out.insert(path.to_string(), other.to_string());
        }
    }
}

/// How a record is shown after [`distinguish`].
#[derive(Debug, Clone, PartialEq)]
pub struct Names {
    /// The model's row name.
    pub model: String,
    /// The attack's row name.
    pub attack: String,
}

/// What [`distinguish`] renamed.
#[derive(Debug, Clone, Default)]
pub struct Distinct {
    /// Per record key, its names in the report.
    pub names: BTreeMap<String, Names>,
    /// One line per renamed row: `name` → `new name` and why.
    pub renamed: Vec<String>,
}

impl Distinct {
    /// `records` with their report names.
    pub fn apply(&self, records: &[Record]) -> Vec<Record> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                if let Some(n) = self.names.get(&r.key) {
                    r.model = n.model.clone();
                    r.attack = n.attack.clone();
                }
                r
            })
            .collect()
    }

    /// The note at the top of a report that renamed rows; empty when none was.
    pub fn note(&self) -> String {
        crate::runs::note(
            "Rows told apart.",
            "Some results share a name but not their settings, so they are reported as separate rows, never averaged (rows average over seeds only):",
            &self.renamed,
        )
    }
}

/// Settings of the attack's side of a row: a difference in these renames the attack, any other
/// the model.
fn attack_side(path: &str) -> bool {
    path == "attack" || ATTACK_FIELDS.iter().any(|f| path.starts_with(f)) || path == "evaluation"
}

/// `id` flattened, split into its model side and its attack side.
fn sides(id: &Value) -> (Flat, Flat) {
    let mut all = BTreeMap::new();
    leaves(id, "", &mut all);
    all.into_iter().partition(|(p, _)| !attack_side(p))
}

/// For each of `group` (flattened settings, several sharing one name): the tag that tells it
/// apart from the others (`[step_size=0.05]`), or a short key where no one or two settings do.
fn tags(group: &[&Flat]) -> Vec<String> {
    let paths: BTreeSet<&String> = group.iter().flat_map(|m| m.keys()).collect();
    let mut differ: Vec<&String> = paths
        .into_iter()
        .filter(|p| {
            let first = group[0].get(*p);
            group.iter().any(|m| m.get(*p) != first)
        })
        .collect();
    // the evaluation's digest follows the attack's settings and the data: named only when
    // nothing else differs (another grid or batch size)
    if differ.len() > 1 {
        differ.retain(|p| p.as_str() != "evaluation");
    }
    group
        .iter()
        .map(|m| {
            let mut parts: Vec<String> = differ
                .iter()
                .map(|p| {
                    let short = p.rsplit('.').next().unwrap_or(p);
                    let v = match m.get(*p).map(String::as_str) {
                        None | Some("null") => "default",
                        Some(v) => v.trim_matches('"'),
                    };
                    format!("{short}={v}")
                })
                .collect();
            if parts.is_empty() || parts.len() > 2 || parts.iter().any(|p| p.len() > 40) {
                let text = serde_json::to_string(m).unwrap_or_default();
                parts = vec![advrob_data::sha256_hex(text.as_bytes())[..8].to_string()];
            }
            format!(" [{}]", parts.join(", "))
        })
        .collect()
}

/// The members of `group` (settings that share the shown name `name`) with their names: `name`
/// itself when it is alone, else `name` with the tag that tells it apart ([`tags`]).
fn named<'a>(name: &str, group: &BTreeSet<&'a Flat>) -> Vec<(&'a Flat, String)> {
    let group: Vec<&Flat> = group.iter().copied().collect();
    let names: Vec<String> = if group.len() < 2 {
        vec![name.to_string()]
    } else {
        tags(&group)
            .into_iter()
            .map(|t| format!("{name}{t}"))
            .collect()
    };
    group.into_iter().zip(names).collect()
}

/// Gives every row identity of `records` names of its own (see the module doc): first the models
/// that share a name but not their settings (their model-side settings tell them apart), then,
/// per model, the attacks that share a name (their attack-side settings). One identity holding
/// two models of the same seed (imported weights replaced under the same name) is split by its
/// model key. Parts the report already keeps apart (dataset name, number of test examples) are
/// not renamed here.
pub fn distinguish(records: &[Record]) -> Distinct {
    // identity → its model keys per seed
    let mut seeds_of: BTreeMap<String, BTreeMap<u64, BTreeSet<&str>>> = BTreeMap::new();
    for r in records {
        seeds_of
            .entry(identity(r).to_string())
            .or_default()
            .entry(r.seed)
            .or_default()
            .insert(r.model_key());
    }
    // the identity of each record, with its model key where the seed does not tell its models
    // apart
    let ids: Vec<Value> = records
        .iter()
        .map(|r| {
            let mut id = identity(r);
            let split = seeds_of
                .get(&id.to_string())
                .is_some_and(|seeds| seeds.values().any(|keys| keys.len() > 1));
            if split {
                id["model key"] = Value::String(r.model_key().to_string());
            }
            id
        })
        .collect();
    let split: Vec<_> = ids.iter().map(sides).collect();
    let mut renamed = Vec::new();
    // models: per shown name, its distinct model-side settings
    let mut model_groups: BTreeMap<Shown, BTreeSet<&Flat>> = BTreeMap::new();
    for (r, (m, _)) in records.iter().zip(&split) {
        model_groups
            .entry((
                r.dataset.clone(),
                r.eval.examples,
                r.backend.clone(),
                r.model.clone(),
                r.defense.clone(),
            ))
            .or_default()
            .insert(m);
    }
    let mut model_names: BTreeMap<(&Flat, String), String> = BTreeMap::new();
    for ((_, _, backend, model, _), group) in &model_groups {
        for (m, n) in named(model, group) {
            if &n != model {
                renamed.push(format!("model `{model}` on {backend} → `{n}`"));
            }
            model_names.insert((m, model.clone()), n);
        }
    }
    let model_of = |i: usize| model_names[&(&split[i].0, records[i].model.clone())].clone();
    // attacks: per model (as renamed) and shown attack name, its distinct attack-side settings
    let mut attack_groups: BTreeMap<Shown, BTreeSet<&Flat>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        attack_groups
            .entry((
                r.dataset.clone(),
                r.eval.examples,
                r.backend.clone(),
                model_of(i),
                r.attack.clone(),
            ))
            .or_default()
            .insert(&split[i].1);
    }
    type AttackOf<'a> = (String, usize, String, String, &'a Flat);
    let mut attack_names: BTreeMap<AttackOf<'_>, String> = BTreeMap::new();
    for ((dataset, examples, backend, model, attack), group) in &attack_groups {
        for (a, n) in named(attack, group) {
            if &n != attack {
                renamed.push(format!("`{attack}` on `{model}` ({backend}) → `{n}`"));
            }
            attack_names.insert(
                (
                    dataset.clone(),
                    *examples,
                    backend.clone(),
                    model.clone(),
                    a,
                ),
                n,
            );
        }
    }
    renamed.sort();
    renamed.dedup();
    let names = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let model = model_of(i);
            let attack = attack_names[&(
                r.dataset.clone(),
                r.eval.examples,
                r.backend.clone(),
                model.clone(),
                &split[i].1,
            )]
                .clone();
            (r.key.clone(), Names { model, attack })
        })
        .collect();
    Distinct { names, renamed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{rec, set_attack};

    /// Model `model` of seed `seed` with the cache key `model_key`, under 10-step PGD at ε 0.1.
    fn pgd(model_key: &str, seed: u64, adv: f64) -> Record {
        let mut r = rec("m", seed, 0.1, 0.9, adv);
        r.model_key = model_key.into();
        set_attack(&mut r, "pgd-linf-10");
        r.key = format!("{model_key}/{}/e/0.1", r.attack);
        r
    }

    #[test]
    fn seeds_share_a_row_and_other_settings_never_do() {
        let a = pgd("k0", 0, 0.5);
        let b = pgd("k1", 1, 0.3);
        let d = distinguish(&[a.clone(), b.clone()]);
        assert!(d.renamed.is_empty(), "{:?}", d.renamed);
        assert_eq!(d.names[&a.key].model, "m");
        assert_eq!(d.names[&b.key].model, "m");
        assert!(d.note().is_empty());
        // the same name, another step size: two attack rows of one model
        let mut c = pgd("k0", 0, 0.02);
        c.attack_config["step_size"] = json!(0.5);
        c.key = "k0/pgd-linf-10/f/0.1".into();
        let d = distinguish(&[a.clone(), c.clone()]);
        assert_eq!(d.names[&a.key].model, "m");
        assert_eq!(d.names[&c.key].model, "m");
        assert_ne!(d.names[&a.key].attack, d.names[&c.key].attack);
        assert!(
            d.names[&c.key].attack.contains("step_size=0.5"),
            "{:?}",
            d.names
        );
        assert!(d.note().contains("Rows told apart"));
        // the same name, another width: two model rows
        let mut w = pgd("k9", 0, 0.1);
        w.model_config["hidden"] = json!([32]);
        let d = distinguish(&[a.clone(), w.clone()]);
        assert!(d.names[&w.key].model.contains("hidden"), "{:?}", d.names);
        assert_ne!(d.names[&a.key].model, d.names[&w.key].model);
        // the same settings and seed, other weights (imported weights replaced): split by key
        let x = pgd("kx", 0, 0.1);
        let d = distinguish(&[a.clone(), x.clone()]);
        assert_ne!(d.names[&a.key].model, d.names[&x.key].model);
        assert!(d.names[&x.key].model.contains("kx"), "{:?}", d.names);
        // other data under the same path
        let mut y = pgd("ky", 0, 0.1);
        y.dataset_files = vec![advrob_data::FileDigest {
            name: "t10k".into(),
            sha256: "ff".into(),
        }];
        let d = distinguish(&[a.clone(), y.clone()]);
        assert!(d.names[&y.key].model.contains("data="), "{:?}", d.names);
        let renamed = d.apply(&[a, y]);
        assert_ne!(renamed[0].model, renamed[1].model);
    }
}
