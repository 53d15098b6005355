#![doc = include_str!("../README.md")]

pub mod bench;
pub mod certified;
pub mod data;
mod error;
mod json_dir;
pub mod layout;
pub mod matrix;
pub mod observe;
pub mod presets;
pub mod record;
pub mod registry;
pub mod runner;
pub mod smoothed;
pub mod spec;
pub mod store;

pub use data::{DataSource, fetch_dataset, load_data};
pub use error::{ExperimentError, Result};
pub use layout::RunDir;
pub use matrix::{Arch, AttackSpec, DefenseSpec, Matrix, ModelSpec};
pub use record::Record;
pub use registry::{Described, Registry};
pub use runner::{
    Event, Observer, Quiet, RunOptions, RunSummary, Shard, run, run_jobs, train_models,
};
pub use store::{
    Migrated, Quarantined, RecordLog, RunRecords, migrate, read_records, read_run, validate,
};
