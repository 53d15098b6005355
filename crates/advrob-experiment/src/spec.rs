//! The entries of a matrix that name an attack or a defense by its registered `kind`, with their
//! settings as data: what the matrix file holds and the [`crate::Registry`] parses.

use advrob_attack::{ApgdConfig, FabConfig, Fgsm, FmnConfig, Norm, PgdConfig, SquareConfig};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The kind of the attack that crafts on another model of the matrix: handled by the registry
/// itself, since it refers to the matrix's models.
pub const TRANSFER: &str = "transfer";

/// The kind of an ensemble of attacks run in turn on what is still robust: handled by the
/// registry itself, since its components are entries of their own.
pub const ENSEMBLE: &str = "ensemble";

/// `config`'s fields as an entry's settings: what a TOML table would hold (no nulls, which TOML
/// cannot write; the config types read a missing optional field as `None`).
pub fn params_of<C: Serialize>(config: &C) -> Map<String, Value> {
    fn strip(v: Value) -> Option<Value> {
        match v {
            Value::Null => None,
            Value::Object(m) => Some(Value::Object(
                m.into_iter()
                    .filter_map(|(k, v)| strip(v).map(|v| (k, v)))
                    .collect(),
            )),
            Value::Array(a) => Some(Value::Array(a.into_iter().filter_map(strip).collect())),
            other => Some(other),
        }
    }
    match serde_json::to_value(config).ok().and_then(strip) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// One attack of the matrix: `kind` names a registered attack (or `transfer`), the other keys are
/// its settings. In TOML: `[[attacks]]` with `kind = "pgd"`, `steps = 20`, ...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttackSpec {
    /// The registered kind (`fgsm`, `pgd`, `transfer`, ...).
    pub kind: String,
    /// The budgets this attack runs at, instead of the matrix's grid (an expensive attack at the
    /// budgets that matter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eps: Option<Vec<f64>>,
    /// Its settings, as the kind's config type reads them.
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

impl AttackSpec {
    /// The entry of kind `kind` with `config`'s settings.
    pub fn new<C: Serialize>(kind: &str, config: &C) -> Self {
        Self {
            kind: kind.into(),
            eps: None,
            params: params_of(config),
        }
    }

    /// The same entry, run at the budgets `eps` only.
    pub fn at(mut self, eps: &[f64]) -> Self {
        self.eps = Some(eps.to_vec());
        self
    }

    /// FGSM against the true labels on the cross-entropy.
    pub fn fgsm() -> Self {
        Self::new("fgsm", &Fgsm::new())
    }

    /// PGD (or BIM, MI-FGSM) with `config`.
    pub fn pgd(config: PgdConfig) -> Self {
        Self::new("pgd", &config)
    }

    /// `attacks` run in turn, each on the examples the earlier ones left robust, reported as
    /// `name`.
    pub fn ensemble(name: &str, attacks: Vec<AttackSpec>) -> Self {
        let mut params = Map::new();
        params.insert("name".into(), Value::String(name.into()));
        params.insert(
            "attacks".into(),
            Value::Array(
                attacks
                    .iter()
                    .map(|a| serde_json::to_value(a).unwrap_or(Value::Null))
                    .collect(),
            ),
        );
        Self {
            kind: ENSEMBLE.into(),
            eps: None,
            params,
        }
    }

    /// AutoAttack's standard version (Croce & Hein 2020; fra31/auto-attack,
    /// `version='standard'`), exactly: APGD-CE (100 iterations), APGD-T (targeted DLR on the 9
    /// most likely other classes), FAB-T (9 targets, 100 iterations) and Square (5000 queries),
    /// each with AutoAttack's settings, each on what the earlier ones left robust.
    pub fn autoattack_standard() -> Self {
        Self::ensemble(
            "ensemble(apgd-ce,apgd-t,fab-t,square)",
            vec![
                Self::new("apgd", &ApgdConfig::ce()),
                Self::new("apgd", &ApgdConfig::targeted()),
                Self::new("fab", &FabConfig::targeted(Norm::Linf)),
                Self::new("square", &SquareConfig::default()),
            ],
        )
    }

    /// advrob's earlier ensemble: AutoAttack's standard version with the minimum-norm attack FMN
    /// in FAB-T's place (APGD-CE, APGD-T, FMN, Square), each on what the earlier ones left.
    pub fn fmn_ensemble() -> Self {
        Self::ensemble(
            "ensemble(apgd-ce,apgd-t,fmn,square)",
            vec![
                Self::new("apgd", &ApgdConfig::ce()),
                Self::new("apgd", &ApgdConfig::targeted()),
                Self::new("fmn", &FmnConfig::default()),
                Self::new("square", &SquareConfig::default()),
            ],
        )
    }

    /// The same attack, stronger: twice the iterations (`steps`), twice the restarts (at least
    /// two), twice the queries (`queries`), in every component of an ensemble and in the attack a
    /// transfer crafts with; other settings unchanged (an FGSM stays itself). The convergence run
    /// of the quoted figure ([`advrob_eval::convergence`]) compares an attack with this.
    pub fn stronger(&self) -> AttackSpec {
        let mut out = self.clone();
        for key in ["steps", "queries"] {
            if let Some(n) = out.params.get(key).and_then(Value::as_u64) {
                out.params.insert(key.into(), Value::from(n * 2));
            }
        }
        if let Some(n) = out.params.get("restarts").and_then(Value::as_u64) {
            out.params
                .insert("restarts".into(), Value::from((n * 2).max(2)));
        }
        for key in ["attacks", "attack"] {
            let stronger_entry = |v: &Value| {
                serde_json::from_value::<AttackSpec>(v.clone())
                    .ok()
                    .and_then(|a| serde_json::to_value(a.stronger()).ok())
                    .unwrap_or_else(|| v.clone())
            };
            match out.params.get_mut(key) {
                Some(Value::Array(items)) => {
                    for v in items.iter_mut() {
                        *v = stronger_entry(v);
                    }
                }
                Some(v @ Value::Object(_)) => *v = stronger_entry(v),
                _ => {}
            }
        }
        if let Some(Value::String(name)) = out.params.get("name") {
            let name = format!("{name}-stronger");
            out.params.insert("name".into(), Value::String(name));
        }
        out
    }

    /// `attack` crafted on the matrix's model `surrogate` and evaluated on each model.
    pub fn transfer(surrogate: &str, attack: AttackSpec) -> Self {
        let mut params = Map::new();
        params.insert("surrogate".into(), Value::String(surrogate.into()));
        params.insert(
            "attack".into(),
            serde_json::to_value(&attack).unwrap_or(Value::Null),
        );
        Self {
            kind: TRANSFER.into(),
            eps: None,
            params,
        }
    }
}

/// The defense a model of the matrix is trained with: `kind` names a registered defense, the
/// other keys are its settings. In TOML: `defense = { kind = "...", ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DefenseSpec {
    /// The registered kind (`none`, `adversarial-training`, ...).
    pub kind: String,
    /// Its settings, as the kind's config type reads them.
    #[serde(flatten)]
    pub params: Map<String, Value>,
}

impl Default for DefenseSpec {
    fn default() -> Self {
        Self {
            kind: "none".into(),
            params: Map::new(),
        }
    }
}

impl DefenseSpec {
    /// The entry of kind `kind` with `config`'s settings.
    pub fn new<C: Serialize>(kind: &str, config: &C) -> Self {
        Self {
            kind: kind.into(),
            params: params_of(config),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;
    use advrob_attack::Family;

    #[test]
    fn the_stronger_ensemble_doubles_every_component_and_builds() {
        let aa = AttackSpec::autoattack_standard();
        let strong = aa.stronger();
        let parts = |s: &AttackSpec| -> Vec<AttackSpec> {
            serde_json::from_value(s.params["attacks"].clone()).expect("components")
        };
        for (a, b) in parts(&aa).iter().zip(parts(&strong)) {
            for key in ["steps", "queries"] {
                if let Some(n) = a.params.get(key).and_then(Value::as_u64) {
                    assert_eq!(b.params[key].as_u64(), Some(2 * n), "{} {key}", a.kind);
                }
            }
            let restarts = a.params["restarts"].as_u64().expect("restarts");
            assert_eq!(b.params["restarts"].as_u64(), Some((2 * restarts).max(2)));
        }
        assert_eq!(
            strong.params["name"],
            Value::String("ensemble(apgd-ce,apgd-t,fab-t,square)-stronger".into())
        );
        // the registry builds it, and it is an ensemble of the same four families
        let attack = Registry::default()
            .attack(&strong, &mut |_| unreachable!("no transfer"))
            .expect("builds");
        assert_eq!(attack.info().family, Family::Ensemble);
        assert_eq!(attack.components().len(), 4);
        let first = attack.components()[0].name();
        assert!(first.contains("200"), "{first}");
        // an FGSM stays itself
        assert_eq!(AttackSpec::fgsm().stronger(), AttackSpec::fgsm());
    }
}
