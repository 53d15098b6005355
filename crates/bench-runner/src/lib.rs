#![doc = include_str!("../README.md")]

pub mod bench;
pub mod cli;
pub mod matrix;
pub mod presets;
pub mod progress;
pub mod record;
pub mod run;

pub use matrix::Matrix;
pub use run::{RunOptions, RunSummary, run};
