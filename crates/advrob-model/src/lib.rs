#![doc = include_str!("../README.md")]

mod affine;
pub mod backend;
pub mod checkpoint;
mod classifier;
mod cnn;
mod conv_host;
pub mod defense;
mod dense;
mod dense_train;
pub mod deploy;
mod error;
mod gemm;
mod loss;
mod matmul;
pub mod memory;
mod mlp;
mod network;
mod onnx;
pub mod simd;
mod train;

pub use affine::{AffineFirst, FirstLayer};
pub use classifier::Classifier;
pub use cnn::{FgsmTutorial, FgsmTutorialConfig, Lenet, LenetConfig, MadryCnn, MadryCnnConfig};
pub use defense::{
    Defense, DefenseConfig, NoDefense, Stage, TeacherUse, TrainSetup, Trained, Undefended,
};
pub use dense::{ConvBlock, Dense, DenseForward, DenseLayer, PixelMap, Transposed};
pub use dense_train::{RowsLoss, argmax_rows, cross_entropy_rows};
pub use deploy::{DeployConfig, Deployed, Normalize, quantize};
pub use error::{ModelError, Result};
pub use loss::{LossKind, Targets, loss};
pub use mlp::{MAX_PARAMETERS, Mlp, MlpConfig};
pub use network::{Net, NetConfig};
pub use onnx::{OnnxConfig, OnnxModel};
pub use train::{
    EpochStats, Plain, Progress, TrainBatch, TrainConfig, TrainHook, TrainRecord, accuracy, train,
};
