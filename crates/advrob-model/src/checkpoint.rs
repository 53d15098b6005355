//! Checkpoints: the weights (burnpack) with the architecture config beside them as JSON, an export
//! of the weights as safetensors for use outside burn, and a manifest that makes a checkpoint
//! checkable. burnpack files embed random ids, so two trainings of the same seed give different
//! files; the manifest holds what is reproducible instead — the digest of the weights as
//! safetensors, and of every config file — and [`load`] verifies it, so a swapped weights file
//! or an edited config is an error, not a silently different model.

use std::collections::BTreeMap;
use std::path::Path;

use advrob_data::{atomic_write, sha256_hex};
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::deploy::{DeployConfig, Deployed};
use crate::error::{ModelError, Result};
use crate::network::{Net, NetConfig};
use crate::onnx::OnnxModel;

/// File name of the weights inside a checkpoint directory.
pub const WEIGHTS_FILE: &str = "model.bpk";
/// File name of the architecture config inside a checkpoint directory.
pub const CONFIG_FILE: &str = "model.json";
/// File name of the deployment wrapper inside a checkpoint directory (absent: nothing wraps).
pub const DEPLOY_FILE: &str = "deploy.json";
/// File name of the weights exported as safetensors (advrob's names and layouts).
pub const SAFETENSORS_FILE: &str = "model.safetensors";
/// File name of the manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// File name of an ONNX model's file inside its checkpoint directory (what it is loaded from).
pub const ONNX_FILE: &str = "model.onnx";

/// What a checkpoint holds, as digests that do not change between two trainings of one seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// SHA-256 of the weights serialised as safetensors ([`weights_safetensors`]): the identity
    /// of the trained weights.
    pub weights_sha256: String,
    /// SHA-256 of every other file of the checkpoint, by name (configs, the safetensors export,
    /// the training record).
    pub files: BTreeMap<String, String>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn bad(path: &Path, reason: impl ToString) -> ModelError {
    ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn data_err(e: advrob_data::DataError) -> ModelError {
    ModelError::Data(e)
}

fn linear_params(prefix: &str, l: &Linear, out: &mut Vec<(String, TensorData)>) {
    out.push((format!("{prefix}.weight"), l.weight.val().into_data()));
    if let Some(b) = &l.bias {
        out.push((format!("{prefix}.bias"), b.val().into_data()));
    }
}

fn conv_params(prefix: &str, c: &Conv2d, out: &mut Vec<(String, TensorData)>) {
    out.push((format!("{prefix}.weight"), c.weight.val().into_data()));
    if let Some(b) = &c.bias {
        out.push((format!("{prefix}.bias"), b.val().into_data()));
    }
}

/// Every parameter of `net` with its name, in advrob's layouts: an MLP's `layers.{i}.weight` is
/// `[in, out]`, a CNN's `conv1.weight` `[out, in, kh, kw]`, `fc1.weight` `[in, out]`.
pub fn named_parameters(net: &Net) -> Vec<(String, TensorData)> {
    let mut out = Vec::new();
    match net {
        Net::Mlp(m) => {
            for (i, l) in m.layers.iter().enumerate() {
                linear_params(&format!("layers.{i}"), l, &mut out);
            }
        }
        Net::Lenet(m) => {
            conv_params("conv1", &m.conv1, &mut out);
            conv_params("conv2", &m.conv2, &mut out);
            linear_params("fc1", &m.fc1, &mut out);
            linear_params("fc2", &m.fc2, &mut out);
            linear_params("fc3", &m.fc3, &mut out);
        }
        Net::FgsmTutorial(m) => {
            conv_params("conv1", &m.conv1, &mut out);
            conv_params("conv2", &m.conv2, &mut out);
            linear_params("fc1", &m.fc1, &mut out);
            linear_params("fc2", &m.fc2, &mut out);
        }
        Net::MadryCnn(m) => {
            conv_params("conv1", &m.conv1, &mut out);
            conv_params("conv2", &m.conv2, &mut out);
            linear_params("fc1", &m.fc1, &mut out);
            linear_params("fc2", &m.fc2, &mut out);
        }
        // the graph's float initializers, by their names in the file
        Net::Onnx(m) => {
            for (name, dims, values) in m.graph().weights() {
                out.push((
                    name.to_string(),
                    TensorData::new(values.to_vec(), dims.to_vec()),
                ));
            }
        }
    }
    out
}

/// The weights of `net` serialised as safetensors (float32, [`named_parameters`]): the same
/// bytes for the same weights, whatever produced them.
pub fn weights_safetensors(net: &Net, path: &Path) -> Result<Vec<u8>> {
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, data) in named_parameters(net) {
        let shape = data.shape().to_vec();
        let v = data
            .try_into_vec_as::<f32>()
            .map_err(|e| bad(path, format!("{name}: {e:?}")))?;
        let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
        tensors.insert(name, (shape, bytes));
    }
    let views = tensors
        .iter()
        .map(|(k, (shape, data))| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (k.clone(), v))
                .map_err(|e| bad(path, e))
        })
        .collect::<Result<Vec<_>>>()?;
    safetensors::serialize(views, None).map_err(|e| bad(path, e))
}

/// Writes the weights as a safetensors file ([`weights_safetensors`]), atomically.
pub fn export_safetensors(net: &Net, path: &Path) -> Result<()> {
    let bytes = weights_safetensors(net, path)?;
    atomic_write(path, &bytes).map_err(data_err)
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let json = serde_json::to_string_pretty(v).map_err(|e| bad(path, e))?;
    atomic_write(path, json.as_bytes()).map_err(data_err)
}

/// Writes `model` (network and wrapper) and its `config` into `dir` (created if needed): the
/// configs, the safetensors export, the weights, then the manifest over them and every other file
/// already in `dir` (a training record written before, say), each file atomically. The manifest
/// goes last: a checkpoint is complete once it exists. Returns the weights' digest.
pub fn save(model: &Deployed, config: &NetConfig, dir: &Path) -> Result<String> {
    check_finite(&model.net, dir)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    write_json(&dir.join(CONFIG_FILE), config)?;
    write_json(&dir.join(DEPLOY_FILE), &model.config)?;
    let st = weights_safetensors(&model.net, &dir.join(SAFETENSORS_FILE))?;
    atomic_write(&dir.join(SAFETENSORS_FILE), &st).map_err(data_err)?;
    if let Net::Onnx(m) = &model.net {
        atomic_write(&dir.join(ONNX_FILE), m.bytes()).map_err(data_err)?;
    }
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = model
        .net
        .clone()
        .valid()
        .into_record()
        .into_bytes()
        .map_err(|e| bad(&weights, e))?;
    atomic_write(&weights, &bytes).map_err(data_err)?;
    let manifest = Manifest {
        weights_sha256: sha256_hex(&st),
        files: file_digests(dir)?,
    };
    write_json(&dir.join(MANIFEST_FILE), &manifest)?;
    Ok(manifest.weights_sha256)
}

/// Refuses a network whose parameters hold NaN or ±∞ (training diverged, or weights damaged):
/// every figure computed with it would be meaningless. `path` names where they came from.
pub fn check_finite(net: &Net, path: &Path) -> Result<()> {
    for (name, data) in named_parameters(net) {
        let n = data.iter::<f32>().filter(|x| !x.is_finite()).count();
        if n > 0 {
            return Err(bad(
                path,
                format!(
                    "{name} holds {n} values that are NaN or infinite (training diverged, or the weights are damaged): a model's weights must be finite numbers"
                ),
            ));
        }
    }
    Ok(())
}

/// SHA-256 of every file of `dir` but the weights and the manifest.
fn file_digests(dir: &Path) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !path.is_file() || name == WEIGHTS_FILE || name == MANIFEST_FILE || name.starts_with('.')
        {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        out.insert(name, sha256_hex(&bytes));
    }
    Ok(out)
}

/// Whether `dir` holds a complete checkpoint (its manifest is written last).
pub fn exists(dir: &Path) -> bool {
    dir.join(MANIFEST_FILE).is_file()
}

fn recovery(dir: &Path) -> String {
    format!("delete {} to train it again", dir.display())
}

/// Loads a checkpoint written by [`save`] onto `device` and verifies it against its manifest;
/// returns the model, its config and the weights' digest. A missing or damaged file, an edited
/// config or weights that are not the ones the manifest names are errors that say which file and
/// how to recover.
pub fn load(dir: &Path, device: &Device) -> Result<(Deployed, NetConfig, String)> {
    let mpath = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&mpath).map_err(|e| {
        bad(
            &mpath,
            format!(
                "{e} (a checkpoint of an older advrob, or an interrupted one): {}",
                recovery(dir)
            ),
        )
    })?;
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| bad(&mpath, format!("{e}: {}", recovery(dir))))?;
    let found = file_digests(dir)?;
    for (name, digest) in &manifest.files {
        match found.get(name) {
            Some(d) if d == digest => {}
            Some(_) => {
                return Err(bad(
                    &dir.join(name),
                    format!(
                        "changed since the checkpoint was written: {}",
                        recovery(dir)
                    ),
                ));
            }
            None => return Err(bad(&dir.join(name), format!("missing: {}", recovery(dir)))),
        }
    }
    let cfg_path = dir.join(CONFIG_FILE);
    let cfg_text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    let config: NetConfig = serde_json::from_str(&cfg_text)
        .map_err(|e| bad(&cfg_path, format!("{e}: {}", recovery(dir))))?;
    let deploy_path = dir.join(DEPLOY_FILE);
    let deploy: DeployConfig = match std::fs::read_to_string(&deploy_path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| bad(&deploy_path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => DeployConfig::new(),
        Err(e) => return Err(io(&deploy_path)(e)),
    };
    deploy.check()?;
    let weights = dir.join(WEIGHTS_FILE);
    let bytes = std::fs::read(&weights).map_err(io(&weights))?;
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| bad(&weights, format!("{e}: {}", recovery(dir))))?;
    let net = match &config {
        NetConfig::Onnx(c) => {
            let path = dir.join(ONNX_FILE);
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            Net::Onnx(OnnxModel::from_bytes(bytes, c, device, &path)?)
        }
        _ => config
            .init(device)?
            .try_load_record(record)
            .map_err(|e| bad(&weights, format!("{e}: {}", recovery(dir))))?
            .valid(),
    };
    check_finite(&net, &weights)?;
    let digest = sha256_hex(&weights_safetensors(&net, &weights)?);
    if digest != manifest.weights_sha256 {
        return Err(bad(
            &weights,
            format!(
                "holds other weights than its manifest names (SHA-256 {digest} of the weights, the manifest says {}): {}",
                manifest.weights_sha256,
                recovery(dir)
            ),
        ));
    }
    Ok((
        Deployed {
            net,
            config: deploy,
        },
        config,
        digest,
    ))
}

/// Where a network's parameters come from in a PyTorch `state_dict`: advrob's module names mapped
/// to PyTorch's where they differ (`"layers.0" = "fc1"`); every other module keeps its name.
pub type NameMap = BTreeMap<String, String>;

/// One tensor of a safetensors file as float32, with its shape.
fn tensor_f32(
    st: &safetensors::SafeTensors<'_>,
    name: &str,
    path: &Path,
) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .map_err(|e| bad(path, format!("{name}: {e}")))?;
    if t.dtype() != safetensors::Dtype::F32 {
        return Err(bad(
            path,
            format!(
                "{name} is {:?}; advrob loads float32 weights (convert with .float() before save_file)",
                t.dtype()
            ),
        ));
    }
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((t.shape().to_vec(), v))
}

/// Reads a PyTorch module's tensors out of a safetensors file, checking names and shapes.
struct Import<'a> {
    st: safetensors::SafeTensors<'a>,
    path: &'a Path,
    names: &'a NameMap,
    used: Vec<String>,
    device: &'a Device,
}

impl Import<'_> {
    fn name(&self, module: &str, what: &str) -> String {
        let m = self.names.get(module).map_or(module, String::as_str);
        format!("{m}.{what}")
    }

    fn take(&mut self, module: &str, what: &str, want: &[usize]) -> Result<Vec<f32>> {
        let name = self.name(module, what);
        let mut available: Vec<String> = self.st.names().into_iter().map(String::from).collect();
        available.sort();
        if !available.contains(&name) {
            return Err(bad(
                self.path,
                format!(
                    "no tensor {name} (for advrob's {module}.{what}); the file holds: {}",
                    available.join(", ")
                ),
            ));
        }
        let (shape, v) = tensor_f32(&self.st, &name, self.path)?;
        let bad_values = v.iter().filter(|x| !x.is_finite()).count();
        if bad_values > 0 {
            return Err(bad(
                self.path,
                format!(
                    "{name} holds {bad_values} values that are NaN or infinite: a model's weights must be finite numbers"
                ),
            ));
        }
        if shape != want {
            return Err(bad(
                self.path,
                format!("{name} has shape {shape:?}, advrob's {module}.{what} needs {want:?}"),
            ));
        }
        self.used.push(name);
        Ok(v)
    }

    /// A PyTorch `Linear` (`weight` `[out, in]`) into `l` (advrob's `[in, out]`).
    fn linear(&mut self, module: &str, l: &mut Linear) -> Result<()> {
        let [din, dout] = l.weight.dims();
        let w = self.take(module, "weight", &[dout, din])?;
        let mut t = vec![0f32; din * dout];
        for o in 0..dout {
            for i in 0..din {
                t[i * dout + o] = w[o * din + i];
            }
        }
        l.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(t, [din, dout]),
            self.device,
        ));
        let b = self.take(module, "bias", &[dout])?;
        l.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [dout]),
            self.device,
        )));
        Ok(())
    }

    /// A PyTorch `Conv2d` (`weight` `[out, in, kh, kw]`, the same layout as advrob's) into `c`.
    fn conv(&mut self, module: &str, c: &mut Conv2d) -> Result<()> {
        let dims = c.weight.dims();
        let w = self.take(module, "weight", &dims)?;
        c.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, dims), self.device));
        let b = self.take(module, "bias", &[dims[0]])?;
        c.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(b, [dims[0]]),
            self.device,
        )));
        Ok(())
    }
}

/// A network of architecture `config` with the weights of a PyTorch `state_dict` saved as
/// safetensors (`safetensors.torch.save_file(model.state_dict(), path)`): PyTorch's names (mapped
/// by `names` where they differ from advrob's) and layouts (`Linear.weight` `[out, in]`,
/// `Conv2d.weight` `[out, in, kh, kw]`), float32. A missing tensor, a wrong shape or dtype, or a
/// tensor the architecture has no place for is an error that lists what was expected and found.
pub fn import_pytorch(
    path: &Path,
    config: &NetConfig,
    names: &NameMap,
    device: &Device,
) -> Result<Net> {
    if let NetConfig::Onnx(c) = config {
        if !names.is_empty() {
            return Err(bad(
                path,
                "names map PyTorch state_dict names; an ONNX file needs none",
            ));
        }
        return Ok(Net::Onnx(OnnxModel::load(path, c, device)?));
    }
    let mut targets: BTreeMap<&str, &str> = BTreeMap::new();
    for (module, theirs) in names {
        if let Some(other) = targets.insert(theirs, module) {
            return Err(bad(
                path,
                format!(
                    "names: {other} and {module} both map to {theirs}: each of advrob's modules takes a tensor of its own"
                ),
            ));
        }
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e))?;
    let mut imp = Import {
        st,
        path,
        names,
        used: Vec::new(),
        device,
    };
    let mut net = config.init(device)?;
    match &mut net {
        Net::Mlp(m) => {
            for (i, l) in m.layers.iter_mut().enumerate() {
                imp.linear(&format!("layers.{i}"), l)?;
            }
        }
        Net::Lenet(m) => {
            imp.conv("conv1", &mut m.conv1)?;
            imp.conv("conv2", &mut m.conv2)?;
            imp.linear("fc1", &mut m.fc1)?;
            imp.linear("fc2", &mut m.fc2)?;
            imp.linear("fc3", &mut m.fc3)?;
        }
        Net::FgsmTutorial(m) => {
            imp.conv("conv1", &mut m.conv1)?;
            imp.conv("conv2", &mut m.conv2)?;
            imp.linear("fc1", &mut m.fc1)?;
            imp.linear("fc2", &mut m.fc2)?;
        }
        Net::MadryCnn(m) => {
            imp.conv("conv1", &mut m.conv1)?;
            imp.conv("conv2", &mut m.conv2)?;
            imp.linear("fc1", &mut m.fc1)?;
            imp.linear("fc2", &mut m.fc2)?;
        }
        // returned above
        Net::Onnx(_) => {}
    }
    let modules: Vec<String> = named_parameters(&net)
        .into_iter()
        .filter_map(|(n, _)| n.rsplit_once('.').map(|(m, _)| m.to_string()))
        .collect();
    if let Some(m) = names.keys().find(|m| !modules.contains(m)) {
        let mut list = modules.clone();
        list.dedup();
        return Err(bad(
            path,
            format!(
                "names: {m} is not a module of the {} architecture (its modules: {})",
                config.arch(),
                list.join(", ")
            ),
        ));
    }
    let mut unused: Vec<String> = imp
        .st
        .names()
        .into_iter()
        .filter(|n| !imp.used.iter().any(|u| u == *n))
        .map(String::from)
        .collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(bad(
            path,
            format!(
                "tensors the {} architecture has no place for: {} (a different architecture, or names to map)",
                config.arch(),
                unused.join(", ")
            ),
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::on_test_backends;
    use crate::mlp::MlpConfig;

    fn host(t: Tensor<2>) -> Vec<f32> {
        t.into_data().try_into_vec_as::<f32>().expect("f32")
    }

    #[test]
    fn save_load_round_trip_gives_the_same_function_and_wrapper() {
        on_test_backends(|device| {
            let dir = tempfile::tempdir().expect("temp");
            let cfg: NetConfig = MlpConfig::new().with_hidden(vec![7, 5]).with_seed(9).into();
            let model = Deployed {
                net: cfg.init(device).expect("init"),
                config: DeployConfig::new()
                    .with_quantize(Some(4))
                    .with_logit_scale(10.0),
            };
            let digest = save(&model, &cfg, dir.path()).expect("save");
            assert!(exists(dir.path()));
            let (back, cfg2, digest2) = load(dir.path(), device).expect("load");
            assert_eq!((&cfg, &digest), (&cfg2, &digest2));
            assert_eq!(back.config, model.config);
            let x = Tensor::<4>::ones([2, 1, 28, 28], device) * 0.5;
            assert_eq!(
                host(model.net.forward(x.clone())),
                host(back.net.forward(x))
            );
            // the digest is of the weights, reproducible: the export file has it too
            let st = std::fs::read(dir.path().join(SAFETENSORS_FILE)).expect("read");
            assert_eq!(sha256_hex(&st), digest2);
        });
    }

    #[test]
    fn a_swapped_weights_file_or_an_edited_config_is_refused_with_a_way_out() {
        on_test_backends(|device| {
            let save_in = |seed: u64| {
                let dir = tempfile::tempdir().expect("temp");
                let cfg: NetConfig = MlpConfig::new().with_hidden(vec![3]).with_seed(seed).into();
                let m = Deployed::plain(cfg.init(device).expect("init"));
                save(&m, &cfg, dir.path()).expect("save");
                dir
            };
            let (a, b) = (save_in(1), save_in(2));
            // b's weights in a's checkpoint: they load, and they are not the ones named
            std::fs::copy(b.path().join(WEIGHTS_FILE), a.path().join(WEIGHTS_FILE)).expect("copy");
            let e = load(a.path(), device).expect_err("swapped").to_string();
            assert!(e.contains(WEIGHTS_FILE) && e.contains("delete"), "{e}");
            // an edited deployment wrapper
            let c = save_in(3);
            std::fs::write(
                c.path().join(DEPLOY_FILE),
                "{\"quantize\": 2, \"logit_scale\": 1.0}",
            )
            .expect("write");
            let e = load(c.path(), device).expect_err("edited").to_string();
            assert!(e.contains(DEPLOY_FILE) && e.contains("changed"), "{e}");
            // garbage weights
            let d = save_in(4);
            std::fs::write(d.path().join(WEIGHTS_FILE), b"not burnpack").expect("write");
            let e = load(d.path(), device).expect_err("corrupt").to_string();
            assert!(e.contains(WEIGHTS_FILE), "{e}");
            // no manifest: an older or interrupted checkpoint
            let e2 = save_in(5);
            std::fs::remove_file(e2.path().join(MANIFEST_FILE)).expect("rm");
            assert!(!exists(e2.path()));
            let e = load(e2.path(), device)
                .expect_err("no manifest")
                .to_string();
            assert!(e.contains(MANIFEST_FILE) && e.contains("delete"), "{e}");
        });
    }

    #[test]
    fn every_architecture_exports_and_round_trips() {
        on_test_backends(|device| {
            for cfg in [
                NetConfig::Mlp(MlpConfig::new().with_hidden(vec![4])),
                NetConfig::Lenet(crate::LenetConfig::new()),
                NetConfig::FgsmTutorial(crate::FgsmTutorialConfig::new()),
            ] {
                let dir = tempfile::tempdir().expect("temp");
                let net = cfg.init(device).expect("init");
                let st_bytes = weights_safetensors(&net, dir.path()).expect("export");
                let st = safetensors::SafeTensors::deserialize(&st_bytes).expect("parse");
                assert!(st.names().iter().any(|n| n.ends_with(".weight")));
                save(&Deployed::plain(net), &cfg, dir.path()).expect("save");
                let (back, cfg2, _) = load(dir.path(), device).expect("load");
                assert_eq!(cfg2, cfg);
                assert_eq!(back.net.classes(), 10);
            }
        });
    }

    #[test]
    fn an_onnx_model_round_trips_through_a_checkpoint_and_a_changed_file_is_refused() {
        use crate::{Classifier, OnnxConfig};
        let onnx = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/pytorch/onnx/cnn_bn_legacy.onnx");
        on_test_backends(|device| {
            let cfg = NetConfig::Onnx(OnnxConfig::new([1, 28, 28]));
            let net = import_pytorch(&onnx, &cfg, &NameMap::new(), device).expect("onnx");
            let dir = tempfile::tempdir().expect("temp");
            let model = Deployed::plain(net);
            let digest = save(&model, &cfg, dir.path()).expect("save");
            let x: Vec<f32> = (0..3 * 28 * 28).map(|i| (i % 97) as f32 / 97.0).collect();
            let x = Tensor::<4>::from_data(TensorData::new(x, [3, 1, 28, 28]), device);
            let (back, cfg2, digest2) = load(dir.path(), device).expect("load");
            assert_eq!((cfg2, digest2), (cfg.clone(), digest));
            let (a, b) = (model.logits(x.clone()), back.logits(x));
            let (a, b) = (crate::backend::host_f32(a), crate::backend::host_f32(b));
            assert_eq!(a.expect("f32"), b.expect("f32"));
            // another ONNX file in its place: refused, naming the file
            std::fs::copy(
                onnx.with_file_name("lenet_legacy.onnx"),
                dir.path().join(ONNX_FILE),
            )
            .expect("copy");
            let e = load(dir.path(), device).expect_err("swapped").to_string();
            assert!(e.contains(ONNX_FILE) && e.contains("changed"), "{e}");
            // names are for PyTorch state_dicts
            let names = NameMap::from([("fc1".to_string(), "x".to_string())]);
            assert!(import_pytorch(&onnx, &cfg, &names, device).is_err());
        });
    }
}
