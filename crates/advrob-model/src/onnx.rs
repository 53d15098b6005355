//! A classifier read from an ONNX file ([`advrob_onnx`]): a [`Net`](crate::Net) like the built-in
//! architectures, evaluated and attacked (never trained), saved in a checkpoint as its file.

use std::path::Path;
use std::sync::Arc;

use advrob_onnx::{OnnxGraph, OnnxNet};
use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// What advrob knows of an ONNX model before reading it: the images it takes and the number of
/// classes the dataset has (the file is checked against both when it is read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnnxConfig {
    /// Images as `[channels, height, width]`.
    pub image: [usize; 3],
    /// Number of classes.
    pub classes: usize,
}

impl OnnxConfig {
    /// A model of ten classes taking images of `image` (`[channels, height, width]`).
    pub fn new(image: [usize; 3]) -> Self {
        OnnxConfig { image, classes: 10 }
    }
}

/// An ONNX classifier on a device, with the bytes of its file (what a checkpoint keeps).
#[derive(Module, Debug)]
pub struct OnnxModel {
    #[module(skip)]
    net: Arc<OnnxNet>,
    #[module(skip)]
    bytes: Arc<Vec<u8>>,
    #[module(skip)]
    config: OnnxConfig,
}

impl OnnxModel {
    /// Reads the ONNX file `path` onto `device`; errors name the file.
    pub fn load(path: &Path, config: &OnnxConfig, device: &Device) -> Result<OnnxModel> {
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        OnnxModel::from_bytes(bytes, config, device, path)
    }

    /// An ONNX model from the bytes of its file (`source` names the file in errors): every
    /// operator supported, the images of `config` fitting its input, and one logit per class out
    /// of a trial batch.
    pub fn from_bytes(
        bytes: Vec<u8>,
        config: &OnnxConfig,
        device: &Device,
        source: &Path,
    ) -> Result<OnnxModel> {
        let bad = |reason: String| ModelError::Onnx {
            path: source.to_path_buf(),
            reason,
        };
        let graph = OnnxGraph::from_bytes(&bytes).map_err(|e| bad(e.to_string()))?;
        log::info!(
            "{}: {} nodes, {} weights, input {}, opset {}{}; operators: {}",
            source.display(),
            graph.num_nodes(),
            graph.num_weights(),
            graph.input_shape_text(),
            graph.opset(),
            if graph.producer().is_empty() {
                String::new()
            } else {
                format!(", written by {}", graph.producer())
            },
            graph.operators().join(", ")
        );
        if graph.softmax_removed() {
            log::info!(
                "{}: the graph ends in Softmax; attacks and predictions use its input, the logits",
                source.display()
            );
        }
        let net = OnnxNet::new(graph, device);
        net.check_image(config.image)
            .map_err(|e| bad(e.to_string()))?;
        let [c, h, w] = config.image;
        let trial = Tensor::<4>::from_data(
            TensorData::new(vec![0.5f32; 2 * c * h * w], [2, c, h, w]),
            device,
        );
        let out = net.forward(trial).map_err(|e| bad(e.to_string()))?;
        let classes = out.dims()[1];
        if classes != config.classes {
            return Err(bad(format!(
                "the model has {classes} outputs per image; the dataset has {} classes",
                config.classes
            )));
        }
        Ok(OnnxModel {
            net: Arc::new(net),
            bytes: Arc::new(bytes),
            config: config.clone(),
        })
    }

    /// The bytes of the ONNX file.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The graph.
    pub fn graph(&self) -> &OnnxGraph {
        self.net.graph()
    }

    /// The config it was read with.
    pub fn config(&self) -> &OnnxConfig {
        &self.config
    }

    /// Logits of images `[B, C, H, W]` (the graph's input `[B, C, H, W]`, `[B, H, W]` for one
    /// channel, or `[B, C·H·W]` is made from it).
    ///
    /// # Panics
    ///
    /// When the graph fails on a batch after running a trial batch of the same image shape at
    /// load time (an operator that depends on the batch size in a way it does not support).
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.net
            .forward(images)
            .unwrap_or_else(|e| panic!("ONNX model: {e}"))
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.config.classes
    }
}
