#![doc = include_str!("../README.md")]

mod bounds;
mod certify;
mod error;
mod network;
mod optimise;
mod verify;

pub use bounds::Method;
pub use certify::{LogitBounds, logit_bounds, margin_bounds};
pub use error::{Result, VerifyError};
pub use network::Network;
pub use verify::{ImageResult, Status, VerifySettings, verify};
