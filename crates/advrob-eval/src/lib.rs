#![doc = include_str!("../README.md")]

pub mod agreement;
pub mod binarization;
pub mod convergence;
mod counting;
mod evaluate;
pub mod probes;
mod record;

pub use agreement::{Agreement, EpsAgreement, OnBackend, agreement};
pub use binarization::{Binarization, binarization_test};
pub use convergence::{Convergence, convergence};
pub use evaluate::{EvalRequest, evaluate};
pub use probes::{Probe, probe};
pub use record::{Bits, ComponentResult, Costs, EvalRecord, MinNorm, Passes};

use advrob_attack::AttackError;
pub(crate) use advrob_model::backend::{host_f32 as host, host_i64 as host_int};

/// What can go wrong evaluating.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// The attack refused its parameters or failed.
    #[error(transparent)]
    Attack(#[from] AttackError),
    /// A tensor could not be read back to the host.
    #[error("reading a tensor back from the device: {0}")]
    Readback(String),
    /// A nonsensical request.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The argument.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl From<advrob_model::backend::Readback> for EvalError {
    fn from(e: advrob_model::backend::Readback) -> Self {
        EvalError::Readback(e.0)
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, EvalError>;
