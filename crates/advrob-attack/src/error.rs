//! Errors of the attack crate.

/// What can go wrong configuring or running an attack.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttackError {
    /// A parameter outside its domain; names it.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The parameter.
        field: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// The model gave no gradient with respect to its input (not differentiable, or detached).
    #[error("the model returned no gradient with respect to its input")]
    NoGradient,
    /// A tensor could not be read back to the host.
    #[error("reading a tensor back from the device: {0}")]
    Readback(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, AttackError>;

/// Refuses an ε that is negative or not finite.
pub fn check_eps(eps: f64) -> Result<()> {
    if !eps.is_finite() || eps < 0.0 {
        return Err(AttackError::Invalid {
            field: "eps",
            reason: format!("{eps} is not a finite number ≥ 0"),
        });
    }
    Ok(())
}

impl From<advrob_model::backend::Readback> for AttackError {
    fn from(e: advrob_model::backend::Readback) -> Self {
        AttackError::Readback(e.0)
    }
}

/// Lets a training hook (adversarial training) use `?` on an attack.
impl From<AttackError> for advrob_model::ModelError {
    fn from(e: AttackError) -> Self {
        advrob_model::ModelError::Hook {
            context: "attack".into(),
            source: Box::new(e),
        }
    }
}
