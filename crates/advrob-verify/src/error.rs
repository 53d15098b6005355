//! Errors of the verifier.

/// What can go wrong bounding or verifying a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The model has a part the verifier cannot bound soundly; names it.
    #[error("cannot bound this model: {0}")]
    Unsupported(String),
    /// A setting outside its domain; names the field.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A tensor could not be read back to the host.
    #[error("reading a tensor back from the device: {0}")]
    Readback(String),
}

impl VerifyError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        VerifyError::Invalid {
            field,
            reason: reason.into(),
        }
    }
}

impl From<advrob_model::backend::Readback> for VerifyError {
    fn from(e: advrob_model::backend::Readback) -> Self {
        VerifyError::Readback(e.0)
    }
}

/// The verifier's results.
pub type Result<T> = std::result::Result<T, VerifyError>;
