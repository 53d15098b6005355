//! The JSON Lines records a run writes: one per (model, attack, ε), each with its provenance and
//! the attack's typed metadata.

use advrob_attack::AttackInfo;
use advrob_data::FileDigest;
use advrob_eval::EvalRecord;
use serde::{Deserialize, Serialize};

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

/// The version of the record schema this build writes. 2: keys cover the attack's full
/// settings, the test examples and the evaluation batch size, and records carry typed attack
/// metadata. Records without a `schema` field are version 1.
pub const SCHEMA: u32 = 2;

fn schema_1() -> u32 {
    1
}

/// One result: a model, an attack, an ε, the metrics and where they came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The version of this schema ([`SCHEMA`]).
    #[serde(default = "schema_1")]
    pub schema: u32,
    /// Identity of this record within its run ([`record_key`]): everything that changes the
    /// number — the model's key (architecture, training, defense, data, backend, seed), the
    /// attack's full settings, the test examples, the evaluation batch size — and ε.
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
    /// What the attack is. Records written before it existed lack it: reading fills it in from
    /// `attack_config` (never from the name).
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
    /// Architecture config (JSON of `NetConfig`, with its `arch`).
    pub model_config: serde_json::Value,
    /// Training config (JSON of `TrainConfig`).
    pub train_config: serde_json::Value,
    /// Training examples used.
    pub train_examples: usize,
    /// SHA-256 of the weights the record was evaluated with, as their safetensors export (the
    /// digest the checkpoint's manifest holds and verifies on load).
    pub checkpoint_sha256: String,
    /// Wall time of training (0 when the model came from the cache of an earlier run).
    #[serde(deserialize_with = "advrob_data::floats::null_as_nan")]
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

    /// The evaluation's digest in [`key`](Record::key), when the key is the one
    /// [`record_key`] gives for this record's model key, attack and ε; `None` when it is not.
    pub fn eval_key(&self) -> Option<&str> {
        let rest = self
            .key
            .strip_prefix(self.model_key())?
            .strip_prefix('/')?
            .strip_prefix(self.attack.as_str())?
            .strip_prefix('/')?;
        let (eval_key, _) = rest.rsplit_once('/')?;
        (!eval_key.is_empty()
            && record_key(self.model_key(), &self.attack, eval_key, self.eval.eps) == self.key)
            .then_some(eval_key)
    }

    /// The attack's metadata (reading a run guarantees it is there).
    ///
    /// # Panics
    ///
    /// Never for records read by [`crate::read_records`]; a record built by hand must set it.
    pub fn info(&self) -> &AttackInfo {
        self.attack_info
            .as_ref()
            .expect("reading a run fills in the attack's metadata")
    }
}

/// What a record's number depends on besides the model and ε: the attack's full settings (and its
/// whole grid when its result at one ε depends on the others: an ensemble's cascade, the
/// cumulative FGSM), the test examples evaluated and the evaluation batch size (which decides the
/// batches, hence the random draws).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalKey<'a> {
    /// The attack's settings, `{"kind": ..., ...}`.
    pub attack: &'a serde_json::Value,
    /// The attack's ε grid, where its results depend on it.
    pub grid: Option<&'a [f64]>,
    /// The digest of the dataset's files.
    pub data: &'a str,
    /// Test examples evaluated (the first of the test set).
    pub test_examples: usize,
    /// Evaluation batch size.
    pub batch_size: usize,
}

impl EvalKey<'_> {
    /// A short digest of all of it.
    pub fn digest(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        advrob_data::sha256_hex(json.as_bytes())[..16].to_string()
    }
}

/// ε as keys write it: −0 as 0.
pub fn eps_text(eps: f64) -> String {
    format!("{}", if eps == 0.0 { 0.0 } else { eps })
}

/// The key of a result: the model's key, the attack's name (for people), the digest of the
/// evaluation ([`EvalKey`]) and ε ([`eps_text`]).
pub fn record_key(model_key: &str, attack: &str, eval_key: &str, eps: f64) -> String {
    format!("{model_key}/{attack}/{eval_key}/{}", eps_text(eps))
}
