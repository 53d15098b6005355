//! Which burn backends this build has, and the one place a backend name becomes a [`Device`].
//!
//! Backends are Cargo features (`ndarray`, `wgpu`, `flex`) that the binaries switch on; feature
//! unification carries their choice down to this crate.

use burn::tensor::Device;

use crate::error::{ModelError, Result};

/// Names of the backends compiled into this build, default first.
pub fn compiled_backends() -> Vec<&'static str> {
    let mut v = Vec::new();
    if cfg!(any(test, feature = "ndarray")) {
        v.push("ndarray");
    }
    if cfg!(feature = "flex") {
        v.push("flex");
    }
    if cfg!(feature = "wgpu") {
        v.push("wgpu");
    }
    v
}

/// The device of backend `name` (one of [`compiled_backends`]); an unknown or not compiled-in name
/// is an error that lists the available ones.
pub fn device(name: &str) -> Result<Device> {
    match name {
        #[cfg(any(test, feature = "ndarray"))]
        // burn 0.22 deprecates ndarray in favour of flex; it stays our default CPU backend until
        // flex has proven itself here (see the README's backends section)
        #[allow(deprecated)]
        "ndarray" => Ok(Device::ndarray()),
        #[cfg(feature = "flex")]
        "flex" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        _ => {
            let known = ["ndarray", "flex", "wgpu"];
            let reason = if known.contains(&name) {
                format!(
                    "{name} is not compiled into this build (enable the Cargo feature `{name}`)"
                )
            } else {
                format!("unknown backend {name:?}")
            };
            Err(ModelError::invalid(
                "backend",
                format!("{reason}; available: {}", compiled_backends().join(", ")),
            ))
        }
    }
}

/// The devices tests run on: every compiled-in backend, or those named in the comma-separated
/// environment variable `ADVROB_TEST_BACKENDS`.
///
/// # Panics
///
/// On a name in `ADVROB_TEST_BACKENDS` that is not compiled in: a test run must not silently test
/// less than it was asked to.
pub fn test_devices() -> Vec<Device> {
    let names: Vec<String> = match std::env::var("ADVROB_TEST_BACKENDS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => compiled_backends().iter().map(|s| s.to_string()).collect(),
    };
    names
        .iter()
        .map(|n| match device(n) {
            Ok(d) => d,
            Err(e) => panic!("ADVROB_TEST_BACKENDS: {e}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_backend_lists_the_available_ones() {
        let err = device("cuda-9000").expect_err("unknown");
        let msg = err.to_string();
        assert!(
            msg.contains("cuda-9000") && msg.contains("available: ndarray"),
            "{msg}"
        );
    }
}
