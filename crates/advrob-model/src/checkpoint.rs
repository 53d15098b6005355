//! Checkpoints: the weights (burnpack) with the architecture config beside them as JSON, and an
//! export of the weights as safetensors for use outside burn.

use std::collections::BTreeMap;
use std::path::Path;

use advrob_data::{atomic_write, sha256_hex};
use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device};

use crate::deploy::{DeployConfig, Deployed};
use crate::error::{ModelError, Result};
use crate::mlp::{Mlp, MlpConfig};

/// File name of the weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.bpk";
/// File name of the architecture config inside a checkpoint directory.
pub const CONFIG_FILE: &str = "model.json";
/// File name of the deployment wrapper inside a checkpoint directory (absent: nothing wraps).
pub const DEPLOY_FILE: &str = "deploy.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn data_err(e: advrob_data::DataError) -> ModelError {
    ModelError::Data(e)
}

/// Writes `model` and its `config` into `dir` (created if needed), each file atomically, and
/// returns the SHA-256 of the weights file.
pub fn save(model: &Mlp, config: &MlpConfig, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = model
        .valid()
        .into_record()
        .into_bytes()
        .map_err(|e| ModelError::Checkpoint {
            path: weights.clone(),
            reason: e.to_string(),
        })?;
    let json = serde_json::to_string_pretty(config).map_err(|e| ModelError::Checkpoint {
        path: dir.join(CONFIG_FILE),
        reason: e.to_string(),
    })?;
    atomic_write(&dir.join(CONFIG_FILE), json.as_bytes()).map_err(data_err)?;
    atomic_write(&weights, &bytes).map_err(data_err)?;
    Ok(sha256_hex(&bytes))
}

/// Whether `dir` holds a complete checkpoint.
pub fn exists(dir: &Path) -> bool {
    dir.join(WEIGHTS_FILE).is_file() && dir.join(CONFIG_FILE).is_file()
}

/// Loads a checkpoint written by [`save`] onto `device`; returns the model, its config and the
/// SHA-256 of the weights file.
pub fn load(dir: &Path, device: &Device) -> Result<(Mlp, MlpConfig, String)> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    let config: MlpConfig = serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint {
        path: cfg_path.clone(),
        reason: e.to_string(),
    })?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).map_err(io(&weights))?;
    let digest = sha256_hex(&bytes);
    let bad = |reason: String| ModelError::Checkpoint {
        path: weights.clone(),
        reason,
    };
    let record =
        ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes)).map_err(|e| bad(e.to_string()))?;
    let model = config
        .init(device)?
        .try_load_record(record)
        .map_err(|e| bad(e.to_string()))?;
    Ok((model.valid(), config, digest))
}

/// [`save`] with the deployment wrapper written beside the weights (before them, so that a
/// checkpoint whose weights exist is complete).
pub fn save_deployed(model: &Deployed, config: &MlpConfig, dir: &Path) -> Result<String> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(DEPLOY_FILE);
    let json = serde_json::to_string_pretty(&model.config).map_err(|e| ModelError::Checkpoint {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    atomic_write(&path, json.as_bytes()).map_err(data_err)?;
    save(&model.mlp, config, dir)
}

/// [`load`] with the deployment wrapper (nothing wraps when the checkpoint has no
/// [`DEPLOY_FILE`]).
pub fn load_deployed(dir: &Path, device: &Device) -> Result<(Deployed, MlpConfig, String)> {
    let (mlp, config, digest) = load(dir, device)?;
    let path = dir.join(DEPLOY_FILE);
    let deploy = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let d: DeployConfig =
                serde_json::from_str(&text).map_err(|e| ModelError::Checkpoint {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
            d.check()?;
            d
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeployConfig::new(),
        Err(e) => return Err(io(&path)(e)),
    };
    Ok((
        Deployed {
            mlp,
            config: deploy,
        },
        config,
        digest,
    ))
}

/// Writes the weights as a safetensors file (`layers.{i}.weight` of shape `[in, out]` and
/// `layers.{i}.bias`, float32), atomically.
pub fn export_safetensors(model: &Mlp, path: &Path) -> Result<()> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    let to_bytes = |v: Vec<f32>| v.iter().flat_map(|f| f.to_le_bytes()).collect::<Vec<u8>>();
    let bad = |reason: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    for (i, layer) in model.layers.iter().enumerate() {
        let w = layer.weight.val();
        let dims = w.dims().to_vec();
        let v = w
            .into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| bad(format!("{e:?}")))?;
        tensors.insert(format!("layers.{i}.weight"), (dims, to_bytes(v)));
        if let Some(b) = &layer.bias {
            let b = b.val();
            let dims = b.dims().to_vec();
            let v = b
                .into_data()
                .try_into_vec_as::<f32>()
                .map_err(|e| bad(format!("{e:?}")))?;
            tensors.insert(format!("layers.{i}.bias"), (dims, to_bytes(v)));
        }
    }
    let views = tensors
        .iter()
        .map(|(k, (shape, data))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| bad(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| bad(e.to_string()))?;
    atomic_write(path, &bytes).map_err(data_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use burn::tensor::Tensor;

    #[test]
    fn save_load_round_trip_gives_the_same_function() {
        on_test_backends(|device| {
            let device = device.clone();
            let dir = tempfile::tempdir().expect("temp");
            let cfg = MlpConfig::new().with_hidden(vec![7, 5]).with_seed(9);
            let model = cfg.init(&device).expect("init");
            let digest = save(&model, &cfg, dir.path()).expect("save");
            assert!(exists(dir.path()));
            let (loaded, cfg2, digest2) = load(dir.path(), &device).expect("load");
            assert_eq!(cfg, cfg2);
            assert_eq!(digest, digest2);
            let x = Tensor::<3>::ones([2, 28, 28], &device) * 0.5;
            let a = model
                .forward(x.clone())
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            let b = loaded
                .forward(x)
                .into_data()
                .try_into_vec_as::<f32>()
                .expect("f32");
            assert_eq!(a, b);
        });
    }

    #[test]
    fn deployed_round_trip_keeps_the_wrapper() {
        on_test_backends(|device| {
            let dir = tempfile::tempdir().expect("temp");
            let cfg = MlpConfig::new().with_hidden(vec![3]);
            let model = Deployed {
                mlp: cfg.init(device).expect("init"),
                config: DeployConfig::new()
                    .with_quantize(Some(4))
                    .with_logit_scale(10.0),
            };
            save_deployed(&model, &cfg, dir.path()).expect("save");
            let (back, _, _) = load_deployed(dir.path(), device).expect("load");
            assert_eq!(back.config, model.config);
            // a plain checkpoint loads with nothing around it
            let plain = tempfile::tempdir().expect("temp");
            save(&model.mlp, &cfg, plain.path()).expect("save");
            let (back, _, _) = load_deployed(plain.path(), device).expect("load");
            assert!(back.config.is_identity());
        });
    }

    #[test]
    fn corrupt_weights_are_a_named_error() {
        on_test_backends(|device| {
            let dir = tempfile::tempdir().expect("temp");
            let cfg = MlpConfig::new().with_hidden(vec![3]);
            save(&cfg.init(device).expect("init"), &cfg, dir.path()).expect("save");
            std::fs::write(dir.path().join(WEIGHTS_FILE), b"not burnpack").expect("write");
            let err = load(dir.path(), device).expect_err("corrupt");
            assert!(err.to_string().contains(WEIGHTS_FILE), "{err}");
        });
    }

    #[test]
    fn safetensors_export_holds_every_layer() {
        on_test_backends(|device| {
            let dir = tempfile::tempdir().expect("temp");
            let cfg = MlpConfig::new().with_hidden(vec![4]);
            let model = cfg.init(device).expect("init");
            let p = dir.path().join("w.safetensors");
            export_safetensors(&model, &p).expect("export");
            let bytes = std::fs::read(&p).expect("read");
            let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse");
            let mut names = st.names();
            names.sort();
            assert_eq!(
                names,
                [
                    "layers.0.bias",
                    "layers.0.weight",
                    "layers.1.bias",
                    "layers.1.weight"
                ]
            );
            assert_eq!(st.tensor("layers.0.weight").expect("w").shape(), &[784, 4]);
        });
    }
}
