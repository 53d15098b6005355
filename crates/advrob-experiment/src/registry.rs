//! The one place that names every concrete attack and defense: a map from the `kind` a matrix
//! writes (`kind = "pgd"`) to the config type that parses, checks and builds it.
//!
//! Adding an attack is one file in `advrob-attack` (the attack and its config, implementing
//! [`AttackConfig`]) plus one `.with_attack::<…>("kind")` line in [`Registry::default`]; adding a
//! defense is one crate (implementing [`DefenseConfig`]) plus one `.with_defense` line. A program
//! can register its own kinds on top of the defaults without touching this crate.

use std::collections::BTreeMap;
use std::marker::PhantomData;

use advrob_attack::{
    Access, ApgdConfig, Attack, AttackConfig, AttackInfo, Ensemble, FabConfig, Fgsm, FmnConfig,
    PgdConfig, SquareConfig, Transfer,
};
use advrob_defense_adversarial_training::{AdversarialTrainingConfig, RetrainingConfig};
use advrob_defense_distillation::DistillationConfig;
use advrob_defense_gaussian_noise::GaussianNoiseConfig;
use advrob_defense_gradient_masking::GradientMaskingConfig;
use advrob_defense_label_smoothing::LabelSmoothingConfig;
use advrob_model::{Defense, DefenseConfig, Deployed, NoDefense, TeacherUse};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{ExperimentError, Result};
use crate::spec::{AttackSpec, DefenseSpec};
pub use crate::spec::{ENSEMBLE, TRANSFER};

/// What a matrix entry describes, known before any model exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Described {
    /// The attack's name (`pgd-linf-10`), for tables.
    pub name: String,
    /// The attack's typed metadata.
    pub info: AttackInfo,
    /// Its settings with every field, as records store them (`{"kind": "pgd", "steps": 10, …}`).
    pub config: Value,
}

trait AttackKind: Send + Sync {
    fn build(&self, kind: &str, params: &Map<String, Value>) -> Result<(Box<dyn Attack>, Value)>;
}

trait DefenseKind: Send + Sync {
    fn parse(&self, kind: &str, params: &Map<String, Value>) -> Result<ParsedDefense>;
}

/// Builds a parsed defense once its teacher (if any) is trained.
type BuildDefense = Box<dyn FnOnce(Option<Deployed>) -> advrob_model::Result<Box<dyn Defense>>>;

struct ParsedDefense {
    name: String,
    teacher_use: TeacherUse,
    config: Value,
    build: BuildDefense,
}

struct Typed<C>(PhantomData<fn() -> C>);

fn parse<C: serde::de::DeserializeOwned>(
    what: &'static str,
    kind: &str,
    params: &Map<String, Value>,
) -> Result<C> {
    serde_json::from_value(Value::Object(params.clone())).map_err(|e| ExperimentError::Settings {
        what,
        kind: kind.to_string(),
        reason: e.to_string(),
    })
}

/// `{"kind": kind}` followed by the fields of `config`.
fn tagged<C: Serialize>(kind: &str, config: &C) -> Result<Value> {
    let mut map = Map::new();
    map.insert("kind".into(), Value::String(kind.into()));
    match serde_json::to_value(config) {
        Ok(Value::Object(fields)) => map.extend(fields),
        Ok(other) => {
            return Err(ExperimentError::invalid(
                kind,
                format!("settings serialise as {other}, not as a table"),
            ));
        }
        Err(e) => return Err(ExperimentError::invalid(kind, e.to_string())),
    }
    Ok(Value::Object(map))
}

impl<C: AttackConfig> AttackKind for Typed<C> {
    fn build(&self, kind: &str, params: &Map<String, Value>) -> Result<(Box<dyn Attack>, Value)> {
        let config: C = parse("attack", kind, params)?;
        // the attack's own check names the field; this names the attack
        let attack = config.build().map_err(|e| ExperimentError::Settings {
            what: "attack",
            kind: kind.to_string(),
            reason: e.to_string(),
        })?;
        Ok((attack, tagged(kind, &config)?))
    }
}

impl<C: DefenseConfig> DefenseKind for Typed<C> {
    fn parse(&self, kind: &str, params: &Map<String, Value>) -> Result<ParsedDefense> {
        let config: C = parse("defense", kind, params)?;
        config.validate()?;
        Ok(ParsedDefense {
            name: config.defense_name(),
            teacher_use: config.teacher_use(),
            config: tagged(kind, &config)?,
            build: Box::new(move |teacher| config.build(teacher)),
        })
    }
}

/// The settings of an ensemble: its name in tables and its attacks, in the order they run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnsembleSpec {
    name: String,
    attacks: Vec<AttackSpec>,
}

/// The settings of a transfer attack: `attack` crafted on the matrix's model `surrogate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferSpec {
    surrogate: String,
    attack: AttackSpec,
}

/// Maps attack and defense kinds to their config types.
pub struct Registry {
    attacks: BTreeMap<String, Box<dyn AttackKind>>,
    defenses: BTreeMap<String, Box<dyn DefenseKind>>,
}

impl Default for Registry {
    /// Every attack and defense of advrob.
    fn default() -> Self {
        Self::empty()
            .with_attack::<Fgsm>("fgsm")
            .with_attack::<PgdConfig>("pgd")
            .with_attack::<ApgdConfig>("apgd")
            .with_attack::<SquareConfig>("square")
            .with_attack::<FmnConfig>("fmn")
            .with_attack::<FabConfig>("fab")
            .with_defense::<NoDefense>("none")
            .with_defense::<AdversarialTrainingConfig>("adversarial-training")
            .with_defense::<RetrainingConfig>("adversarial-retraining")
            .with_defense::<GradientMaskingConfig>("gradient-masking")
            .with_defense::<LabelSmoothingConfig>("label-smoothing")
            .with_defense::<DistillationConfig>("distillation")
            .with_defense::<GaussianNoiseConfig>(advrob_defense_gaussian_noise::KIND)
    }
}

impl Registry {
    /// A registry with no kinds but `transfer`.
    pub fn empty() -> Self {
        Self {
            attacks: BTreeMap::new(),
            defenses: BTreeMap::new(),
        }
    }

    /// Registers `C` as the attack of `kind = "<kind>"`.
    pub fn with_attack<C: AttackConfig>(mut self, kind: &str) -> Self {
        self.attacks
            .insert(kind.to_string(), Box::new(Typed::<C>(PhantomData)));
        self
    }

    /// Registers `C` as the defense of `kind = "<kind>"`.
    pub fn with_defense<C: DefenseConfig>(mut self, kind: &str) -> Self {
        self.defenses
            .insert(kind.to_string(), Box::new(Typed::<C>(PhantomData)));
        self
    }

    fn unknown(&self, what: &'static str, kind: &str) -> ExperimentError {
        let mut available: Vec<&str> = match what {
            "attack" => self.attacks.keys().map(String::as_str).collect(),
            _ => self.defenses.keys().map(String::as_str).collect(),
        };
        if what == "attack" {
            available.extend([TRANSFER, ENSEMBLE]);
            available.sort_unstable();
        }
        ExperimentError::UnknownKind {
            what,
            kind: kind.to_string(),
            available: available.join(", "),
        }
    }

    fn transfer_spec(spec: &AttackSpec) -> Result<TransferSpec> {
        parse("attack", TRANSFER, &spec.params)
    }

    /// An ensemble entry's components, built (they need no model: transfer attacks are refused).
    fn ensemble(&self, spec: &AttackSpec) -> Result<(Ensemble, Value)> {
        let e: EnsembleSpec = parse("attack", ENSEMBLE, &spec.params)?;
        let mut attacks = Vec::new();
        let mut configs = Vec::new();
        for a in &e.attacks {
            if a.kind == TRANSFER || a.kind == ENSEMBLE {
                return Err(ExperimentError::invalid(
                    "attacks",
                    format!("an ensemble of {} attacks", a.kind),
                ));
            }
            configs.push(self.describe(a)?.config);
            attacks.push(self.attack(a, &mut |name| {
                Err(ExperimentError::invalid(
                    "attacks",
                    format!("{name}: no model here"),
                ))
            })?);
        }
        let mut config = Map::new();
        config.insert("kind".into(), Value::String(ENSEMBLE.into()));
        config.insert("name".into(), Value::String(e.name.clone()));
        config.insert("attacks".into(), Value::Array(configs));
        Ok((Ensemble::new(e.name, attacks)?, Value::Object(config)))
    }

    /// Name, metadata and full settings of an attack entry, without any model: the settings
    /// are checked here.
    pub fn describe(&self, spec: &AttackSpec) -> Result<Described> {
        if spec.kind == ENSEMBLE {
            let (e, config) = self.ensemble(spec)?;
            return Ok(Described {
                name: e.name(),
                info: e.info(),
                config,
            });
        }
        if spec.kind == TRANSFER {
            let t = Self::transfer_spec(spec)?;
            if t.attack.kind == TRANSFER {
                return Err(ExperimentError::invalid(
                    "attacks",
                    "a transfer attack of a transfer attack",
                ));
            }
            let inner = self.describe(&t.attack)?;
            let mut config = Map::new();
            config.insert("kind".into(), Value::String(TRANSFER.into()));
            config.insert("surrogate".into(), Value::String(t.surrogate.clone()));
            config.insert("attack".into(), inner.config);
            return Ok(Described {
                name: format!("transfer-{}-from-{}", inner.name, t.surrogate),
                info: AttackInfo {
                    access: Access::Transfer,
                    ..inner.info
                },
                config: Value::Object(config),
            });
        }
        let kind = self
            .attacks
            .get(&spec.kind)
            .ok_or_else(|| self.unknown("attack", &spec.kind))?;
        let (attack, config) = kind.build(&spec.kind, &spec.params)?;
        Ok(Described {
            name: attack.name(),
            info: attack.info(),
            config,
        })
    }

    /// The model of the matrix a transfer entry crafts on (`None` for other attacks).
    pub fn surrogate_of(&self, spec: &AttackSpec) -> Result<Option<String>> {
        if spec.kind != TRANSFER {
            return Ok(None);
        }
        Ok(Some(Self::transfer_spec(spec)?.surrogate))
    }

    /// The attack an entry describes; `surrogate` gives the trained model a transfer entry names.
    pub fn attack(
        &self,
        spec: &AttackSpec,
        surrogate: &mut dyn FnMut(&str) -> Result<Deployed>,
    ) -> Result<Box<dyn Attack>> {
        if spec.kind == ENSEMBLE {
            return Ok(Box::new(self.ensemble(spec)?.0));
        }
        if spec.kind == TRANSFER {
            let t = Self::transfer_spec(spec)?;
            return Ok(Box::new(Transfer {
                surrogate_name: t.surrogate.clone(),
                surrogate: Box::new(surrogate(&t.surrogate)?),
                attack: self.attack(&t.attack, surrogate)?,
            }));
        }
        let kind = self
            .attacks
            .get(&spec.kind)
            .ok_or_else(|| self.unknown("attack", &spec.kind))?;
        Ok(kind.build(&spec.kind, &spec.params)?.0)
    }

    fn parse_defense(&self, spec: &DefenseSpec) -> Result<ParsedDefense> {
        self.defenses
            .get(&spec.kind)
            .ok_or_else(|| self.unknown("defense", &spec.kind))?
            .parse(&spec.kind, &spec.params)
    }

    /// The name recorded for models the entry trains (`gradient-masking-quantize`), its full
    /// settings and whether it learns from a teacher; the settings are checked here.
    pub fn describe_defense(&self, spec: &DefenseSpec) -> Result<(String, Value, TeacherUse)> {
        let p = self.parse_defense(spec)?;
        Ok((p.name, p.config, p.teacher_use))
    }

    /// The defense an entry describes; `teacher` is the trained model the entry's model names.
    pub fn defense(
        &self,
        spec: &DefenseSpec,
        teacher: Option<Deployed>,
    ) -> Result<Box<dyn Defense>> {
        Ok((self.parse_defense(spec)?.build)(teacher)?)
    }
}
