//! How much memory this process may still allocate. An allocation that fails aborts a Rust
//! process (burn's tensors included), so a model too large for the machine is refused before it is
//! built, with an error that says how much it needs and how much there is.

/// Bytes this process may still allocate: the smaller of the memory the system has available
/// (`MemAvailable`) and what its address-space limit (`ulimit -v`) leaves above what it already
/// maps. `None` where the system does not say (not Linux).
pub fn available() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |text: &str, key: &str| -> Option<u64> {
        text.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|k| k * 1024)
    };
    let mut avail = kib(&meminfo, "MemAvailable:")?;
    let limit = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max address space"))?
                .split_whitespace()
                .nth(3)?
                .parse::<u64>()
                .ok()
        });
    if let Some(limit) = limit {
        let mapped = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|t| kib(&t, "VmSize:"))
            .unwrap_or(0);
        avail = avail.min(limit.saturating_sub(mapped));
    }
    Some(avail)
}

/// Refuses `what`, which needs about `bytes`, when this process cannot allocate that much.
pub fn check_fits(field: &'static str, what: &str, bytes: u64) -> crate::Result<()> {
    match available() {
        Some(avail) if bytes > avail => Err(crate::ModelError::invalid(
            field,
            format!(
                "{what} needs about {:.1} GB, more than the {:.1} GB this process can allocate",
                bytes as f64 / 1e9,
                avail as f64 / 1e9
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_machine_reports_some_memory_and_refuses_an_exabyte() {
        let a = available().expect("Linux reports memory");
        assert!(a > 1 << 20, "{a}");
        assert!(check_fits("hidden", "a model", 1 << 60).is_err());
        assert!(check_fits("hidden", "a model", 1 << 10).is_ok());
    }
}
