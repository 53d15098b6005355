#![doc = include_str!("../README.md")]

pub mod backend;
pub mod checkpoint;
pub mod defense;
pub mod deploy;
mod error;
mod loss;
mod mlp;
mod train;

pub use defense::{
    Defense, DefenseConfig, NoDefense, Stage, TeacherUse, TrainSetup, Trained, Undefended,
};
pub use deploy::{DeployConfig, Deployed, quantize};
pub use error::{ModelError, Result};
pub use loss::{LossKind, Targets, loss};
pub use mlp::{Classifier, Mlp, MlpConfig};
pub use train::{
    EpochStats, Plain, Progress, TrainBatch, TrainConfig, TrainHook, TrainRecord, accuracy, train,
};
