//! The JSON Lines records a run writes: one per (model, attack, ε), each with its provenance and
//! the attack's typed metadata.

use std::collections::BTreeMap;
use std::path::Path;

use advrob_attack::AttackInfo;
use advrob_data::FileDigest;
use advrob_eval::EvalRecord;
use serde::{Deserialize, Serialize};

use crate::error::{ExperimentError, Result};
use crate::registry::Registry;

/// Versions of what produced a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// advrob (every crate of the workspace shares it).
    pub advrob: String,
    /// burn, from the lock file.
    pub burn: String,
}

impl Versions {
    /// The versions of this build.
    pub fn current() -> Self {
        Self {
            advrob: env!("CARGO_PKG_VERSION").to_string(),
            burn: env!("ADVROB_BURN_VERSION").to_string(),
        }
    }
}

/// One result: a model, an attack, an ε, the metrics and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Identity of this record within its run: model key, attack and ε.
    pub key: String,
    /// Run name.
    pub run: String,
    /// Preset the matrix started from (`default`, `seed-000-notebook`, ...).
    #[serde(default)]
    pub preset: String,
    /// Model name in the matrix.
    pub model: String,
    /// The cache key of the trained model (its checkpoint directory is
    /// [`RunDir::checkpoint`](crate::RunDir::checkpoint) of it). Older records keep it as the
    /// first part of [`key`](Record::key) only: read it with [`Record::model_key`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_key: String,
    /// Defense applied in training (`none` for plain training).
    pub defense: String,
    /// The defense's settings as the matrix gave them.
    #[serde(default)]
    pub defense_config: serde_json::Value,
    /// The model whose weights this one was fine-tuned from.
    #[serde(default)]
    pub fine_tuned_from: Option<String>,
    /// The model this one learned from (distillation teacher, retraining's attack source).
    #[serde(default)]
    pub teacher: Option<String>,
    /// What wraps the network at deployment (input quantisation, logit scale).
    #[serde(default)]
    pub deploy_config: serde_json::Value,
    /// Attack name (`fgsm`, `fgsm-pred`, `fgsm-mse`, `fgsm-targeted-shift2`, ...), for tables.
    pub attack: String,
    /// The attack's settings, `{"kind": ..., <every field>}`.
    #[serde(default)]
    pub attack_config: serde_json::Value,
    /// What the attack is. Records written before it existed lack it: [`read_records`] fills it
    /// in from `attack_config` (never from the name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attack_info: Option<AttackInfo>,
    /// Labels the attack's loss used: `true` or `predicted`.
    #[serde(default)]
    pub attack_labels: String,
    /// The training loss (`cross-entropy`, `mse`).
    #[serde(default)]
    pub loss: String,
    /// Backend name.
    pub backend: String,
    /// Device as burn describes it.
    pub device: String,
    /// Seed of the model's initialisation and training.
    pub seed: u64,
    /// Dataset name (or the directory it was loaded from).
    pub dataset: String,
    /// Whether the dataset's checksums are the canonical ones.
    pub dataset_verified: bool,
    /// SHA-256 of each dataset file (decompressed).
    pub dataset_files: Vec<FileDigest>,
    /// Architecture config (JSON of `MlpConfig`).
    pub model_config: serde_json::Value,
    /// Training config (JSON of `TrainConfig`).
    pub train_config: serde_json::Value,
    /// Training examples used.
    pub train_examples: usize,
    /// SHA-256 of the checkpoint's weights file.
    pub checkpoint_sha256: String,
    /// Wall time of training (0 when the model came from the cache of an earlier run).
    pub train_seconds: f64,
    /// Whether the model was loaded from a checkpoint rather than trained in this invocation.
    pub from_cache: bool,
    /// The model's training stages with per-epoch loss and accuracy.
    #[serde(default)]
    pub stages: Vec<advrob_model::Stage>,
    /// The metrics.
    #[serde(flatten)]
    pub eval: EvalRecord,
    /// Versions of advrob and burn.
    pub versions: Versions,
    /// Unix time the record was written.
    pub unix_time: u64,
}

impl Record {
    /// The cache key of the model this record was evaluated on.
    pub fn model_key(&self) -> &str {
        if self.model_key.is_empty() {
            self.key.split('/').next().unwrap_or_default()
        } else {
            &self.model_key
        }
    }

    /// The attack's metadata ([`read_records`] guarantees it is there).
    ///
    /// # Panics
    ///
    /// Never for records read by [`read_records`]; a record built by hand must set it.
    pub fn info(&self) -> &AttackInfo {
        self.attack_info
            .as_ref()
            .expect("read_records fills in the attack's metadata")
    }
}

/// The key of a (model, attack, ε) result.
pub fn record_key(model_key: &str, attack: &str, eps: f64) -> String {
    format!("{model_key}/{attack}/{eps}")
}

/// Reads the records of a run (none when the file does not exist). A line that does not parse
/// (which atomic writes should make impossible) is reported and skipped rather than losing the
/// rest. Records without typed attack metadata get it from their attack's settings through
/// `registry`; one whose settings no longer describe an attack is an error naming the line.
pub fn read_records(path: &Path, registry: &Registry) -> Result<Vec<Record>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ExperimentError::io(path, e)),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Record>(line) {
            Ok(mut r) => {
                if r.attack_info.is_none() {
                    let spec = serde_json::from_value(r.attack_config.clone())
                        .map_err(|e| ExperimentError::file(path, format!("line {}: {e}", i + 1)))?;
                    let described = registry.describe(&spec).map_err(|e| {
                        ExperimentError::file(path, format!("line {}: attack_config: {e}", i + 1))
                    })?;
                    r.attack_info = Some(described.info);
                }
                out.push(r)
            }
            Err(e) => log::warn!(
                "{}:{}: skipping unreadable record: {e}",
                path.display(),
                i + 1
            ),
        }
    }
    Ok(out)
}

/// Writes all `records` to `path` atomically (temporary file, then rename).
pub fn write_records(path: &Path, records: &BTreeMap<String, Record>) -> Result<()> {
    let mut text = String::new();
    for r in records.values() {
        text.push_str(&serde_json::to_string(r).map_err(|e| ExperimentError::file(path, e))?);
        text.push('\n');
    }
    advrob_data::atomic_write(path, text.as_bytes())?;
    Ok(())
}
