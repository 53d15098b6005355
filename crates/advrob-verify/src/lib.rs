#![doc = include_str!("../README.md")]

mod bounds;
mod certify;
mod error;
mod lower;
mod network;
mod optimise;
mod smoothing;
mod verify;

pub use bounds::Method;
pub use certify::{LogitBounds, logit_bounds, margin_bounds};
pub use error::{Result, VerifyError};
pub use network::{CROWN_INTERMEDIATE_MAX_WIDTH, Intermediate, Network};
pub use smoothing::{
    Smoothed, SmoothingSettings, certified_accuracy, certify_smoothed, certify_with,
    clopper_pearson_lower, normal_cdf, normal_quantile,
};
pub use verify::{ImageResult, Status, VerifySettings, verify};
