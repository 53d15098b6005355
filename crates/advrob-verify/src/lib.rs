#![doc = include_str!("../README.md")]

mod bounds;
mod certify;
mod error;
mod lower;
mod network;
mod optimise;
mod verify;

pub use bounds::{Intermediate, Method};
pub use certify::{LogitBounds, logit_bounds, margin_bounds};
pub use error::{Result, VerifyError};
pub use network::{CROWN_INTERMEDIATE_MAX_WIDTH, Network};
pub use verify::{ImageResult, Status, VerifySettings, verify};
