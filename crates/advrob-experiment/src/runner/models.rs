//! The model cache of one (dataset, backend, seed) cell: each model's plan (its configs, cache key
//! and checkpoint directory), trained, imported or loaded on demand, each at most once, with
//! locks so that two writers never train the same model.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use advrob_data::{Split, sha256_hex};
use advrob_model::{
    DeployConfig, Deployed, FgsmTutorialConfig, LenetConfig, MadryCnnConfig, MlpConfig, NetConfig,
    OnnxConfig, Stage, TrainConfig, TrainSetup, backend, checkpoint,
};
use burn::tensor::Device;

use super::{Cell, Event, Observer, json};
use crate::error::{ExperimentError, Result};
use crate::layout::{RunDir, TRAIN_FILE};
use crate::matrix::{Arch, DefenseSpec, Matrix, ModelSpec};
use crate::registry::Registry;
use crate::store::Lock;

/// The configs a model of the matrix is built and trained with: its architecture for images
/// `[channels, rows, columns]` (the data decides), and the matrix's training settings with the
/// model's own overrides. advrob's CNNs take one channel: with colour images (CIFAR-10) they are
/// refused naming the model; the MLP takes any image flattened, an ONNX model what its graph
/// takes.
pub fn model_configs(
    spec: &ModelSpec,
    matrix: &Matrix,
    seed: u64,
    [channels, rows, cols]: [usize; 3],
) -> Result<(NetConfig, TrainConfig)> {
    let seed = seed.wrapping_add(spec.seed_offset);
    let image = [rows, cols];
    if channels != 1 && matches!(spec.arch, Arch::Lenet | Arch::FgsmTutorial | Arch::MadryCnn) {
        return Err(ExperimentError::invalid(
            "arch",
            format!(
                "{:?} takes one-channel images; this dataset's have {channels} channels (use \
                 arch = \"mlp\", or bring the model as ONNX)",
                spec.arch
            ),
        )
        .in_model(&spec.name));
    }
    let net = match spec.arch {
        Arch::Mlp => NetConfig::Mlp(
            MlpConfig::new()
                .with_input(channels * rows * cols)
                .with_hidden(spec.hidden.clone())
                .with_dropout(spec.dropout)
                .with_seed(seed),
        ),
        Arch::Lenet => NetConfig::Lenet(LenetConfig::new().with_image(image).with_seed(seed)),
        Arch::FgsmTutorial => NetConfig::FgsmTutorial(
            FgsmTutorialConfig::new()
                .with_image(image)
                .with_dropout(spec.dropout)
                .with_seed(seed),
        ),
        Arch::MadryCnn => {
            NetConfig::MadryCnn(MadryCnnConfig::new().with_image(image).with_seed(seed))
        }
        Arch::Onnx => NetConfig::Onnx(OnnxConfig::new([channels, rows, cols])),
    };
    let train = TrainConfig::new()
        .with_epochs(spec.epochs.unwrap_or(matrix.train.epochs))
        .with_batch_size(spec.batch_size.unwrap_or(matrix.train.batch_size))
        .with_lr(matrix.train.lr)
        .with_loss(spec.loss.unwrap_or(matrix.train.loss))
        .with_seed(seed);
    Ok((net, train))
}

/// What is known of a trained model besides its weights.
#[derive(Debug, Clone)]
pub(super) struct ModelInfo {
    pub(super) checkpoint_sha256: String,
    pub(super) train_seconds: f64,
    pub(super) from_cache: bool,
    pub(super) stages: Vec<Stage>,
}

/// What `run` keeps beside a checkpoint: how the model was trained.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TrainFile {
    /// The architecture.
    pub model_config: NetConfig,
    /// The training settings.
    pub train_config: TrainConfig,
    /// The defense, as the matrix gave it.
    pub defense: DefenseSpec,
    /// The model it was fine-tuned from, if any.
    pub from: Option<String>,
    /// The teacher (or attack source) it learned from, if any.
    pub teacher: Option<String>,
    /// Every training stage with its per-epoch statistics.
    pub stages: Vec<Stage>,
    /// The model's name in the matrix it was trained for (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The model's cache key (absent in older checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl TrainFile {
    /// Refuses a checkpoint directory that does not hold model `name` of key `plan.key`: a
    /// directory moved or swapped under `models/` (its own manifest still verifies its files).
    /// Older checkpoints without a name and key are compared by their settings.
    pub(super) fn check_holds(&self, dir: &Path, name: &str, plan: &Plan) -> Result<()> {
        let holds = match (&self.name, &self.key) {
            (Some(n), Some(k)) => (n.as_str(), k.as_str()) == (name, plan.key.as_str()),
            _ => {
                json(&self.model_config)? == json(&plan.net)?
                    && json(&self.train_config)? == json(&plan.train)?
            }
        };
        if holds {
            return Ok(());
        }
        Err(ExperimentError::file(
            dir,
            format!(
                "holds model {} (key {}), not {name} (key {}): a checkpoint directory was moved or swapped; move it back, or delete it to train {name} again",
                self.name.as_deref().unwrap_or("of other settings"),
                self.key.as_deref().unwrap_or("unknown"),
                plan.key
            ),
        ))
    }
}

/// How one model of the matrix is made, for one (dataset, backend, seed).
#[derive(Debug, Clone)]
pub(super) struct Plan {
    pub(super) key: String,
    pub(super) dir: PathBuf,
    pub(super) net: NetConfig,
    pub(super) train: TrainConfig,
    pub(super) defense_name: String,
    pub(super) defense_config: serde_json::Value,
}

/// The models of a matrix for one (dataset, backend, seed): their cache keys and checkpoints,
/// trained or loaded on demand, each at most once.
pub(super) struct Models<'a> {
    pub(super) matrix: &'a Matrix,
    pub(super) run: RunDir,
    pub(super) registry: &'a Registry,
    pub(super) train_split: &'a Split,
    pub(super) backend: &'a str,
    pub(super) device: &'a Device,
    pub(super) seed: u64,
    pub(super) plans: Vec<Plan>,
    pub(super) ready: BTreeMap<usize, (Deployed, ModelInfo)>,
    pub(super) trained: usize,
    pub(super) loaded: usize,
}

impl<'a> Models<'a> {
    /// The models of `matrix` for one cell, trained or loaded when first asked for.
    pub(super) fn new(
        matrix: &'a Matrix,
        dir: &RunDir,
        registry: &'a Registry,
        cell: &Cell<'a>,
    ) -> Result<Self> {
        let Cell {
            ds,
            train_split,
            backend,
            device,
            seed,
            ..
        } = *cell;
        let mut plans: Vec<Plan> = Vec::new();
        for spec in &matrix.models {
            let (mut net, train) = model_configs(spec, matrix, seed, ds.test.images.image())?;
            let dep = |name: &Option<String>| -> Option<usize> {
                name.as_ref()
                    .and_then(|n| matrix.models.iter().position(|m| &m.name == n))
            };
            let (from, teacher) = (dep(&spec.from), dep(&spec.teacher));
            if let Some(f) = from {
                // a fine-tuned model keeps the architecture of the one it starts from
                net = plans[f].net.clone().with_seed(net.seed());
            }
            let imported = match &spec.weights {
                Some(w) => Some(imported_digest(w, spec)?),
                None => None,
            };
            let (defense_name, defense_config, _) = registry
                .describe_defense(&spec.defense)
                .map_err(|e| e.in_model(&spec.name))?;
            let key = sha256_hex(
                serde_json::to_string(&(
                    net.key_json(),
                    json(&train)?,
                    &defense_config,
                    from.map(|i| plans[i].key.clone()),
                    teacher.map(|i| plans[i].key.clone()),
                    ds.fingerprint(),
                    train_split.len(),
                    backend::numerics(backend),
                    imported,
                ))
                .map_err(|e| ExperimentError::invalid("settings", e.to_string()))?
                .as_bytes(),
            )[..16]
                .to_string();
            plans.push(Plan {
                dir: dir.checkpoint(&spec.name, backend, seed, &key),
                key,
                net,
                train,
                defense_name,
                defense_config,
            });
        }
        Ok(Self {
            matrix,
            run: dir.clone(),
            registry,
            train_split,
            backend,
            device,
            seed,
            plans,
            ready: BTreeMap::new(),
            trained: 0,
            loaded: 0,
        })
    }

    pub(super) fn index(&self, name: &str) -> Result<usize> {
        self.matrix
            .models
            .iter()
            .position(|m| m.name == name)
            .ok_or_else(|| ExperimentError::invalid("models", format!("no model named {name}")))
    }

    /// Model `i`, from memory, its checkpoint, or trained now (with what it builds on first).
    pub(super) fn get(
        &mut self,
        i: usize,
        observer: &mut dyn Observer,
    ) -> Result<(Deployed, ModelInfo)> {
        if let Some(m) = self.ready.get(&i) {
            return Ok(m.clone());
        }
        // another writer may be training it: wait, then load what it wrote
        let _lock = Lock::wait(&self.run.lock(&self.plans[i].dir, "train"))?;
        let got = if checkpoint::exists(&self.plans[i].dir) {
            let dir = &self.plans[i].dir;
            // its files verified against its manifest first, then what it holds
            let (model, _, sha) = checkpoint::load(dir, self.device)?;
            let train_file = read_train_file(dir)?;
            train_file.check_holds(dir, &self.matrix.models[i].name, &self.plans[i])?;
            let stages = train_file.stages;
            self.loaded += 1;
            (
                model,
                ModelInfo {
                    checkpoint_sha256: sha,
                    train_seconds: 0.0,
                    from_cache: true,
                    stages,
                },
            )
        } else {
            self.train(i, observer)?
        };
        self.ready.insert(i, got.clone());
        Ok(got)
    }

    /// Trains model `i` (loading or training what it builds on first) and writes its checkpoint;
    /// a model of imported weights is imported instead.
    pub(super) fn train(
        &mut self,
        i: usize,
        observer: &mut dyn Observer,
    ) -> Result<(Deployed, ModelInfo)> {
        let spec = &self.matrix.models[i];
        if let Some(weights) = &spec.weights {
            return self.import(i, weights);
        }
        let init = match &spec.from {
            Some(f) => Some(self.get(self.index(f)?, observer)?.0.net),
            None => None,
        };
        let teacher = match &spec.teacher {
            Some(t) => Some(self.get(self.index(t)?, observer)?.0),
            None => None,
        };
        let defense = self
            .registry
            .defense(&spec.defense, teacher)
            .map_err(|e| e.in_model(&spec.name))?;
        let plan = self.plans[i].clone();
        let mut setup = TrainSetup::new(
            plan.net.clone(),
            plan.train.clone(),
            self.train_split,
            self.device,
        );
        if let Some(m) = init {
            setup = setup.with_init(m);
        }
        let label = format!("train {} ({}, seed {})", spec.name, self.backend, self.seed);
        let mut stage_now: Option<String> = None;
        let trained = defense.fit(&setup, &mut |stage, p| {
            let total = (p.batches * p.epochs) as u64;
            if stage_now.as_deref() != Some(stage) {
                stage_now = Some(stage.to_string());
                let name = if stage == "train" {
                    label.clone()
                } else {
                    format!("{label} {stage}")
                };
                observer.event(Event::StageStarted {
                    label: &name,
                    total,
                });
            }
            observer.event(Event::StageProgress {
                done: (p.epoch as u64 - 1) * p.batches as u64 + p.batch as u64,
                epoch: p.epoch,
                epochs: p.epochs,
            });
        })?;
        let seconds: f64 = trained.stages.iter().map(|s| s.record.seconds).sum();
        let (loss, accuracy) = trained
            .stages
            .last()
            .and_then(|s| s.record.epochs.last())
            .map(|e| (e.loss, e.accuracy))
            .unwrap_or_default();
        observer.event(Event::TrainFinished {
            seconds,
            loss,
            accuracy,
        });
        let sha = self.save(i, &trained.model, &trained.stages)?;
        self.trained += 1;
        Ok((
            trained.model,
            ModelInfo {
                checkpoint_sha256: sha,
                train_seconds: seconds,
                from_cache: false,
                stages: trained.stages,
            },
        ))
    }
}

impl Models<'_> {
    /// Writes model `i`'s training record and checkpoint (its manifest last: the checkpoint is
    /// complete once it exists); returns the weights' digest.
    pub(super) fn save(&self, i: usize, model: &Deployed, stages: &[Stage]) -> Result<String> {
        let spec = &self.matrix.models[i];
        let plan = &self.plans[i];
        write_json(
            &plan.dir.join(TRAIN_FILE),
            &TrainFile {
                model_config: plan.net.clone(),
                train_config: plan.train.clone(),
                defense: spec.defense.clone(),
                from: spec.from.clone(),
                teacher: spec.teacher.clone(),
                stages: stages.to_vec(),
                name: Some(spec.name.clone()),
                key: Some(plan.key.clone()),
            },
        )?;
        Ok(checkpoint::save(model, &plan.net, &plan.dir)?)
    }

    /// Model `i` from the PyTorch weights `weights`, saved as a checkpoint like a trained one.
    pub(super) fn import(&mut self, i: usize, weights: &Path) -> Result<(Deployed, ModelInfo)> {
        let spec = &self.matrix.models[i];
        let plan = self.plans[i].clone();
        let net = checkpoint::import_pytorch(weights, &plan.net, &spec.names, self.device)
            .map_err(|e| ExperimentError::from(e).in_model(&spec.name))?;
        let model = Deployed {
            net,
            config: DeployConfig::new()
                .with_normalize(spec.normalize)
                .with_quantize(spec.quantize)
                .with_logit_scale(spec.logit_scale.unwrap_or(1.0)),
        };
        let sha = self.save(i, &model, &[])?;
        self.trained += 1;
        Ok((
            model,
            ModelInfo {
                checkpoint_sha256: sha,
                train_seconds: 0.0,
                from_cache: false,
                stages: Vec::new(),
            },
        ))
    }
}

/// The digest of an imported model's weights file, names and standardisation: part of its key.
pub(super) fn imported_digest(weights: &Path, spec: &ModelSpec) -> Result<String> {
    let bytes =
        std::fs::read(weights).map_err(|e| ExperimentError::io(weights, e).in_model(&spec.name))?;
    Ok(sha256_hex(
        format!(
            "{}{:?}{:?}{}",
            sha256_hex(&bytes),
            spec.names,
            spec.normalize.map(|n| (n.mean.to_bits(), n.std.to_bits())),
            // only a deployment that changes something enters the digest: earlier keys stay
            match (spec.quantize, spec.logit_scale) {
                (None, None) => String::new(),
                (q, s) => format!("{q:?}{:?}", s.map(f64::to_bits)),
            }
        )
        .as_bytes(),
    ))
}

/// Says so when a matrix trains the FGSM tutorial's network on burn-ndarray: its channel dropout
/// keeps its training in burn's graph, where a convolution is an im2col product on one thread (a
/// LeNet epoch of 60,000 images took 37 s that way and 18 s on burn-flex, 2026-12-06). LeNet and
/// Madry et al.'s CNN train on the host there instead (`advrob_model`'s host training), faster
/// than on burn-flex: a LeNet epoch on 10,000 images at 22–23k samples/s against flex's 4.5k.
pub(super) fn warn_slow_convolutions(matrix: &Matrix, backend_name: &str) {
    let cnns = cnns_trained_slowly(matrix, backend_name);
    if !cnns.is_empty() {
        log::warn!(
            "{} on ndarray: the FGSM tutorial's network trains in burn's graph there (its channel dropout), about twice burn-flex's time; the flex backend trains it faster",
            cnns.join(", ")
        );
    }
}

/// The CNNs `matrix` trains on `backend_name` through burn's graph where that is burn-ndarray
/// (the FGSM tutorial's network); imported weights are only evaluated, and the other CNNs train
/// on the host.
pub(super) fn cnns_trained_slowly<'m>(matrix: &'m Matrix, backend_name: &str) -> Vec<&'m str> {
    if backend_name != "ndarray" {
        return Vec::new();
    }
    matrix
        .models
        .iter()
        .filter(|m| m.arch == Arch::FgsmTutorial && m.weights.is_none())
        .map(|m| m.name.as_str())
        .collect()
}

fn write_json<T: serde::Serialize>(path: &Path, v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v).map_err(|e| ExperimentError::file(path, e))?;
    advrob_data::atomic_write(path, text.as_bytes())?;
    Ok(())
}

/// The training record kept beside a checkpoint by [`run`]; a damaged one is an error that says
/// how to recover.
pub fn read_train_file(ckpt: &Path) -> Result<TrainFile> {
    let p = ckpt.join(TRAIN_FILE);
    let text = std::fs::read_to_string(&p).map_err(|e| ExperimentError::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| {
        ExperimentError::file(
            &p,
            format!("{e}: delete {} to train it again", ckpt.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cnns_trained_in_burns_graph_on_ndarray_are_warned_about() {
        // LeNet and the Madry CNN train on the host on ndarray: no warning
        let mut cnn = crate::presets::cnn();
        assert!(cnns_trained_slowly(&cnn, "ndarray").is_empty());
        for m in &mut cnn.models {
            m.arch = Arch::FgsmTutorial;
        }
        let trained = cnns_trained_slowly(&cnn, "ndarray").len();
        assert!(trained > 0 && trained == cnn.models.len());
        assert!(cnns_trained_slowly(&cnn, "flex").is_empty());
        assert!(cnns_trained_slowly(&crate::presets::default_experiment(), "ndarray").is_empty());
        // a CNN imported from PyTorch weights is evaluated, not trained
        cnn.models[0].weights = Some(std::path::PathBuf::from("tutorial.safetensors"));
        assert_eq!(cnns_trained_slowly(&cnn, "ndarray").len(), trained - 1);
    }
}
