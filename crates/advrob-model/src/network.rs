//! Every architecture behind one type: [`NetConfig`] chooses and builds one, [`Net`] is the built
//! network that training, deployment, checkpoints and attacks handle.

use advrob_data::rng::SplitMix64;
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::classifier::Classifier;
use crate::cnn::{FgsmTutorial, FgsmTutorialConfig, Lenet, LenetConfig, MadryCnn, MadryCnnConfig};
use crate::mlp::{Mlp, MlpConfig};
use crate::onnx::{OnnxConfig, OnnxModel};

/// The architecture of a network and its hyperparameters, the seed included. Written as JSON with
/// an `arch` field (`mlp`, `lenet`, `fgsm-tutorial`, `madry-cnn`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "arch", rename_all = "kebab-case")]
pub enum NetConfig {
    /// The multilayer perceptron of the study.
    Mlp(MlpConfig),
    /// LeNet-5.
    Lenet(LenetConfig),
    /// The network of PyTorch's FGSM tutorial.
    FgsmTutorial(FgsmTutorialConfig),
    /// The CNN of Madry et al. (2018).
    MadryCnn(MadryCnnConfig),
    /// A model read from an ONNX file ([`OnnxModel`]): evaluated, never trained.
    Onnx(OnnxConfig),
}

impl From<MlpConfig> for NetConfig {
    fn from(c: MlpConfig) -> Self {
        NetConfig::Mlp(c)
    }
}

impl NetConfig {
    /// The architecture's name (`mlp`, `lenet`, ...).
    pub fn arch(&self) -> &'static str {
        match self {
            NetConfig::Mlp(_) => "mlp",
            NetConfig::Lenet(_) => "lenet",
            NetConfig::FgsmTutorial(_) => "fgsm-tutorial",
            NetConfig::MadryCnn(_) => "madry-cnn",
            NetConfig::Onnx(_) => "onnx",
        }
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        match self {
            NetConfig::Mlp(c) => c.classes,
            NetConfig::Lenet(c) => c.classes,
            NetConfig::FgsmTutorial(c) => c.classes,
            NetConfig::MadryCnn(c) => c.classes,
            NetConfig::Onnx(c) => c.classes,
        }
    }

    /// The seed of the weight initialisation.
    pub fn seed(&self) -> u64 {
        match self {
            NetConfig::Mlp(c) => c.seed,
            NetConfig::Lenet(c) => c.seed,
            NetConfig::FgsmTutorial(c) => c.seed,
            NetConfig::MadryCnn(c) => c.seed,
            NetConfig::Onnx(_) => 0,
        }
    }

    /// The same architecture initialised from `seed`.
    pub fn with_seed(mut self, seed: u64) -> Self {
        match &mut self {
            NetConfig::Mlp(c) => c.seed = seed,
            NetConfig::Lenet(c) => c.seed = seed,
            NetConfig::FgsmTutorial(c) => c.seed = seed,
            NetConfig::MadryCnn(c) => c.seed = seed,
            NetConfig::Onnx(_) => {}
        }
        self
    }

    /// The JSON that identifies the architecture in cache keys: an MLP's config alone (as before
    /// there were other architectures, so that cached MLPs keep their keys), else the tagged
    /// config.
    pub fn key_json(&self) -> serde_json::Value {
        match self {
            NetConfig::Mlp(c) => serde_json::to_value(c),
            other => serde_json::to_value(other),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    /// Builds the network on `device`, its weights drawn on the host from its seed (the same on
    /// every backend).
    pub fn init(&self, device: &Device) -> crate::Result<Net> {
        Ok(match self {
            NetConfig::Mlp(c) => Net::Mlp(c.init(device)?),
            NetConfig::Lenet(c) => Net::Lenet(c.init(device)?),
            NetConfig::FgsmTutorial(c) => Net::FgsmTutorial(c.init(device)?),
            NetConfig::MadryCnn(c) => Net::MadryCnn(c.init(device)?),
            NetConfig::Onnx(_) => {
                return Err(crate::ModelError::invalid(
                    "arch",
                    "an ONNX model is read from its file (OnnxModel::load), not initialised",
                ));
            }
        })
    }
}

/// A built network of any architecture ([`NetConfig`]), returning logits.
#[derive(Module, Debug)]
pub enum Net {
    /// A multilayer perceptron.
    Mlp(Mlp),
    /// LeNet-5.
    Lenet(Lenet),
    /// The FGSM tutorial's network.
    FgsmTutorial(FgsmTutorial),
    /// Madry et al.'s CNN.
    MadryCnn(MadryCnn),
    /// A model read from an ONNX file.
    Onnx(OnnxModel),
}

impl From<Mlp> for Net {
    fn from(m: Mlp) -> Self {
        Net::Mlp(m)
    }
}

impl Net {
    /// Inference-mode logits (no dropout).
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, output: `[B, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Net::Mlp(m) => m.forward(images),
            Net::Lenet(m) => m.forward(images),
            Net::FgsmTutorial(m) => m.forward(images, None),
            Net::MadryCnn(m) => m.forward(images),
            Net::Onnx(m) => m.forward(images),
        }
    }

    /// Training-mode logits: dropout where the architecture has it, masks from `rng`.
    ///
    /// # Shapes
    ///
    /// - images: `[B, C, H, W]`, output: `[B, classes]`
    pub fn forward_train(&self, images: Tensor<4>, rng: &mut SplitMix64) -> Tensor<2> {
        match self {
            Net::Mlp(m) => m.forward_train(images, rng),
            Net::Lenet(m) => m.forward(images),
            Net::FgsmTutorial(m) => m.forward(images, Some(rng)),
            Net::MadryCnn(m) => m.forward(images),
            // inference only: no training-mode layers are built
            Net::Onnx(m) => m.forward(images),
        }
    }

    /// The same network with its last linear layer replaced by `weight` (`[inputs, outputs]`,
    /// row-major, `inputs` the width of the features that layer reads) and `bias` (`[outputs]`):
    /// a new head on the network's own features, as the binarization test builds
    /// (`advrob_eval::binarization`). `None` for a network read from ONNX (its last layer is not
    /// known) or when the sizes do not fit the layer.
    pub fn with_head(&self, weight: Vec<f32>, bias: Vec<f32>) -> Option<Net> {
        fn head(
            l: &burn::nn::Linear,
            weight: Vec<f32>,
            bias: Vec<f32>,
        ) -> Option<burn::nn::Linear> {
            let inputs = l.weight.dims()[0];
            let outputs = bias.len();
            if outputs == 0 || weight.len() != inputs * outputs {
                return None;
            }
            let device = l.weight.val().device();
            Some(burn::nn::Linear {
                weight: burn::module::Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(weight, [inputs, outputs]),
                    &device,
                )),
                bias: Some(burn::module::Param::from_tensor(Tensor::from_data(
                    burn::tensor::TensorData::new(bias, [outputs]),
                    &device,
                ))),
            })
        }
        let mut net = self.clone();
        match &mut net {
            Net::Mlp(m) => {
                let last = m.layers.last_mut()?;
                *last = head(last, weight, bias)?;
            }
            Net::Lenet(m) => m.fc3 = head(&m.fc3, weight, bias)?,
            Net::FgsmTutorial(m) => m.fc2 = head(&m.fc2, weight, bias)?,
            Net::MadryCnn(m) => m.fc2 = head(&m.fc2, weight, bias)?,
            Net::Onnx(_) => return None,
        }
        Some(net)
    }

    /// Number of classes (the width of the last layer).
    pub fn classes(&self) -> usize {
        let last = match self {
            Net::Mlp(m) => m.layers.last(),
            Net::Lenet(m) => Some(&m.fc3),
            Net::FgsmTutorial(m) => Some(&m.fc2),
            Net::MadryCnn(m) => Some(&m.fc2),
            Net::Onnx(m) => return m.classes(),
        };
        last.map_or(0, |l| l.weight.dims()[1])
    }
}

impl Classifier for Net {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            // the networks' own logits: the host chain on plain burn-ndarray tensors
            Net::Mlp(m) => m.logits(images),
            Net::Lenet(m) => m.logits(images),
            Net::MadryCnn(m) => m.logits(images),
            Net::FgsmTutorial(m) => m.logits(images),
            Net::Onnx(m) => m.forward(images),
        }
    }

    fn affine_first(&self) -> Option<crate::AffineFirst<'_>> {
        match self {
            Net::Mlp(m) => m.affine_first(),
            // a convolution's window of pixels touches a window of outputs: not done yet
            Net::Lenet(_) | Net::FgsmTutorial(_) | Net::MadryCnn(_) | Net::Onnx(_) => None,
        }
    }

    fn dense(&self) -> Option<crate::Dense<'_>> {
        match self {
            Net::Mlp(m) => m.dense(),
            Net::Lenet(m) => m.dense(),
            Net::MadryCnn(m) => m.dense(),
            Net::FgsmTutorial(m) => m.dense(),
            Net::Onnx(_) => None,
        }
    }
}
