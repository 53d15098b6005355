//! ONNX image classifiers at run time, differentiable.
//!
//! [`OnnxGraph::load`] reads a `.onnx` file (the protobuf schema decoded by prost, no code
//! generation); [`OnnxNet::new`] builds it on any burn device; [`OnnxNet::forward`] maps images
//! `[B, C, H, W]` to logits with burn tensor operations, so burn's autodiff differentiates through
//! the whole graph: every gradient attack works on a model exported from PyTorch, TensorFlow or
//! JAX. No model is compiled into the binary and nothing is rebuilt per model.
//!
//! The operators are those of image classifiers as `torch.onnx.export` writes them
//! ([`SUPPORTED_OPS`]); a graph with any other is refused when it is read, naming the operator and
//! the node. Integer values (shapes, axes, pads) are computed on the host, so the Shape → Gather
//! → Concat → Reshape chains of `x.view(x.size(0), -1)` work with any batch size. A final Softmax
//! is left out ([`OnnxGraph::softmax_removed`]): attacks need logits.
//!
//! ```no_run
//! # fn main() -> Result<(), advrob_onnx::OnnxError> {
//! use burn::tensor::{Device, Tensor};
//! let graph = advrob_onnx::OnnxGraph::load(std::path::Path::new("model.onnx"))?;
//! let device = Device::default();
//! let net = advrob_onnx::OnnxNet::new(graph, &device);
//! let logits = net.forward(Tensor::<4>::zeros([8, 1, 28, 28], &device))?;
//! # Ok(()) }
//! ```

mod error;
mod graph;
mod net;
mod ops;
mod proto;
mod value;

pub use error::{OnnxError, Result};
pub use graph::OnnxGraph;
pub use net::OnnxNet;

/// The operators this crate builds (ONNX's default domain), sorted.
pub const SUPPORTED_OPS: &[&str] = &[
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Flatten",
    "Gather",
    "Gemm",
    "GlobalAveragePool",
    "Greater",
    "Identity",
    "LeakyRelu",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mul",
    "Neg",
    "Pad",
    "ReduceMean",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
    "Where",
];
