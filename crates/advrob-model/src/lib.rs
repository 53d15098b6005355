#![doc = include_str!("../README.md")]

pub mod backend;
pub mod checkpoint;
mod error;
mod loss;
mod mlp;
mod train;

pub use error::{ModelError, Result};
pub use loss::{LossKind, Targets, loss};
pub use mlp::{Classifier, Mlp, MlpConfig};
pub use train::{
    EpochStats, Plain, Progress, TrainBatch, TrainConfig, TrainHook, TrainRecord, accuracy, train,
};
